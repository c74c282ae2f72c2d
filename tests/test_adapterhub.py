"""AdapterHub folders (written by adapters 1.3.0 on transformers 4.57, committed as fixtures by
benchmarks/adapterhub_compat.py) load and reproduce AdapterHub's outputs; everything else is refused."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

import adaptkit
from adaptkit import adapterhub, convert
from benchmarks import adapterhub_compat as compat
FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.glob("adapterhub_*"))


def base_of(folder: Path, auto=AutoModel, **overrides):
    described = json.loads((folder / "base_config.json").read_text())
    config = AutoConfig.for_model(described["model_type"], **{**described["fields"], **overrides})
    model = auto.from_config(config, attn_implementation="eager")
    compat.seeded_weights(model)
    return model.eval()


def outputs(model, expected):
    with torch.no_grad():
        return model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"])


def test_the_fixtures_cover_each_architecture_and_both_configs():
    assert len(CASES) >= 6
    for model_type in ("bert", "roberta", "gpt2"):
        for case in ("seq_bn", "double_seq_bn"):
            assert f"adapterhub_{model_type}_{case}" in CASES


@pytest.mark.parametrize("case", CASES)
def test_adapterhub_outputs_are_reproduced(case):
    folder = FIXTURES / case
    expected = load_file(str(folder / "expected.safetensors"))
    model = base_of(folder)
    bare = (outputs(model, expected).last_hidden_state - expected["bare_hidden"]).abs().max().item()
    name = adaptkit.load_adapter(model, folder)
    assert name == "task" and adaptkit.active_adapter(model) == "task"
    out = outputs(model, expected)
    tolerance = max(1e-5, 2 * bare)
    effect = (expected["hidden"] - expected["bare_hidden"]).abs().max().item()
    # the base models agree across versions far better than the adapter changes the output, so a
    # tolerance from their gap can never pass an adapter that is not applied
    assert effect > 1e-2 and tolerance < effect / 100
    assert (out.last_hidden_state - expected["hidden"]).abs().max() <= tolerance
    if "logits" in expected:
        assert (out.logits - expected["logits"]).abs().max() <= tolerance
    with adaptkit.adapters_disabled(model):
        assert "logits" not in outputs(model, expected)


def test_converter_command_writes_an_adaptkit_checkpoint(tmp_path):
    folder = FIXTURES / "adapterhub_bert_seq_bn"
    expected = load_file(str(folder / "expected.safetensors"))
    base_of(folder).save_pretrained(tmp_path / "base")
    assert convert.main([str(folder), str(tmp_path / "converted"), "--base", str(tmp_path / "base")]) == 0
    meta = json.loads((tmp_path / "converted" / adaptkit.CONFIG_NAME).read_text())
    assert meta["config"]["placement"] == "pfeiffer" and meta["config"]["head"]["type"] == "classification"
    model = base_of(folder)
    adaptkit.load_adapter(model, tmp_path / "converted")
    torch.testing.assert_close(outputs(model, expected).logits, expected["logits"], atol=1e-5, rtol=0)


def edited(tmp_path, change, case="adapterhub_bert_seq_bn", file="adapter_config.json"):
    """A copy of a fixture with one JSON file changed."""
    folder = tmp_path / case
    shutil.copytree(FIXTURES / case, folder)
    data = json.loads((folder / file).read_text())
    change(data)
    (folder / file).write_text(json.dumps(data))
    return folder


def assert_refused(model, folder, match, **kwargs):
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(adaptkit.CheckpointError, match=match):
        adaptkit.load_adapter(model, folder, **kwargs)
    assert adaptkit.list_adapters(model) == {}
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[n], t) for n, t in before.items())


def set_config(**fields):
    return lambda data: data["config"].update(fields)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(config={"architecture": "lora", "r": 8, "alpha": 8}), "LoRA"),
    (lambda d: d.update(config={"architecture": "prefix_tuning", "prefix_length": 30}), "prefix tuning"),
    (lambda d: d.update(config={"architecture": "union", "configs": []}), "ConfigUnion"),
    (set_config(phm_layer=True), "Compacter"),
    (set_config(is_parallel=True), "parallel"),
    (set_config(ln_after=True), "ln_after"),
    (set_config(ln_before=True), "ln_before"),
    (set_config(use_gating=True), "use_gating"),
    (set_config(inv_adapter="nice"), "inv_adapter"),
    (set_config(stochastic_depth=0.1), "stochastic_depth"),
    (set_config(original_ln_after=False), "original_ln_after"),
    (set_config(residual_before_ln="post_add"), "residual_before_ln"),
    (set_config(residual_before_ln=False), "residual_before_ln"),
    (set_config(mh_adapter=True), "mh_adapter"),
    (set_config(reduction_factor={"0": 8, "default": 16}), "reduction_factor"),
    (set_config(non_linearity="gelu_new"), "non_linearity"),
    (set_config(brand_new_field=1), "brand_new_field"),
])
def test_other_methods_and_unsupported_fields_are_refused_by_name(tmp_path, change, match):
    folder = edited(tmp_path, change)
    assert_refused(base_of(folder), folder, match)


def test_fusion_and_other_heads_are_refused(tmp_path):
    folder = edited(tmp_path, lambda d: d["config"].update(head_type="tagging"), file="head_config.json")
    model = base_of(folder)
    assert_refused(model, folder, "head type 'tagging'")
    assert adaptkit.load_adapter(model, folder, load_head=False) == "task"
    (folder / adapterhub.FUSION_CONFIG).write_text("{}")
    assert_refused(base_of(folder), folder, "AdapterFusion")


def test_the_base_is_checked(tmp_path):
    folder = FIXTURES / "adapterhub_bert_seq_bn"
    with pytest.raises(adaptkit.BaseModelMismatchError, match="hidden size"):
        adaptkit.load_adapter(base_of(folder, hidden_size=64), folder)
    with pytest.raises(adaptkit.BaseModelMismatchError, match="other depth"):
        adaptkit.load_adapter(base_of(folder, num_hidden_layers=3), folder)
    with pytest.raises(adaptkit.BaseModelMismatchError, match="roberta"):
        adaptkit.load_adapter(base_of(FIXTURES / "adapterhub_roberta_seq_bn"), folder)
    # a model with a head of its own takes the adapter, not AdapterHub's head
    classifier = base_of(folder, AutoModelForSequenceClassification)
    assert_refused(classifier, folder, "AutoModel.from_pretrained")
    adaptkit.load_adapter(classifier, folder, load_head=False)
    assert adaptkit.list_adapters(classifier)["task"].head is None


class Boom:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_pickles_are_read_weights_only(tmp_path, capsys):
    folder = edited(tmp_path, lambda d: None)
    with open(folder / adapterhub.WEIGHTS, "wb") as handle:
        pickle.dump({"bert.encoder.layer.0.output.adapters.task.adapter_up.weight": Boom()}, handle)
    assert_refused(base_of(folder), folder, "is refused: it pickles more than tensors.*arbitrary code execution")
    assert "a pickle ran code" not in capsys.readouterr().out


def test_the_head_survives_save_pretrained_and_refuses_mixed_batches(tmp_path):
    folder = FIXTURES / "adapterhub_gpt2_seq_bn"
    expected = load_file(str(folder / "expected.safetensors"))
    model = base_of(folder)
    adaptkit.load_adapter(model, folder)
    model.save_pretrained(tmp_path)
    fresh = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert adaptkit.restore_adapters(fresh, tmp_path) == ["task"]
    torch.testing.assert_close(outputs(fresh, expected).logits, expected["logits"], atol=1e-5, rtol=0)
    with adaptkit.per_example_adapters(fresh, ["task"] * 3), pytest.raises(adaptkit.AdapterError, match="heads"):
        outputs(fresh, expected)
    adaptkit.delete_adapter(fresh, "task")
    assert not any("adaptkit" in n for n, _ in fresh.named_parameters())
