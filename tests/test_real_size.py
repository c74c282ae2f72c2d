"""bert-base at its published size (random weights): the sizes where float32 index maths breaks."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import adaptkit
from adaptkit.checkpoint import fingerprint_positions
from tiny_models import logits


def test_fingerprint_positions_are_exact_above_2_pow_24():
    numel = 30522 * 768  # bert-base's word embeddings: float32 linspace rounds n-1 up to n here
    assert torch.linspace(0, numel - 1, 8)[-1].long().item() == numel, "float32 still rounds past the end"
    positions = fingerprint_positions(numel, 8)
    assert positions[0] == 0 and positions[-1] == numel - 1
    assert positions == sorted(positions) and len(set(positions)) == 8


def bert_base(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2)).eval()


@pytest.mark.slow
def test_bert_base_saves_and_reloads_onto_a_fresh_copy(tmp_path):
    model = bert_base(seed=0)
    assert model.bert.embeddings.word_embeddings.weight.numel() > 2 ** 24
    inputs = {"input_ids": torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(0))}
    base = logits(model, inputs)
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(64), name="task")
    assert len(sites) == 24
    report = adaptkit.count_parameters(model)
    assert report.trainable["adapters"] == 24 * (2 * 64 * 768 + 64 + 768)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.01)
    adapted = logits(model, inputs)
    assert not torch.equal(adapted, base)
    adaptkit.save_adapter(model, tmp_path / "task")

    fresh = bert_base(seed=0)
    adaptkit.load_adapter(fresh, tmp_path / "task")
    assert torch.equal(logits(fresh, inputs), adapted)
    with adaptkit.adapters_disabled(fresh):
        assert torch.equal(logits(fresh, inputs), base)
    with pytest.raises(adaptkit.BaseModelMismatchError, match="other pretrained weights"):
        adaptkit.load_adapter(bert_base(seed=1), tmp_path / "task")
