"""The placements' computations, and the "pfeiffer" rename (formats 1-2 meant "houlsby-ffn")."""

import json

import pytest
import torch

import adaptkit
from adaptkit.layer import BottleneckAdapter
from adaptkit.params import SLOT_ATTR
from benchmarks import sweep
from tiny_models import logits, tiny_inputs, tiny_model


def adapter_of(module) -> BottleneckAdapter:
    return getattr(module, SLOT_ATTR).adapters["seq"]


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_pfeiffer_at_a_post_ln_block_is_adapterhubs_seq_bn(model_type):
    """LN(h + x + up(relu(down(LN(h + x))))), written out here on the block's own output module."""
    model = tiny_model(model_type)
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(init="houlsby", init_std=0.2), name="seq")
    adapted = logits(model, inputs)
    outputs = [layer.output for layer in model.base_model.encoder.layer]

    def seq_bn(output, hidden_states, input_tensor):
        h = output.dropout(output.dense(hidden_states))
        down_up = adapter_of(output.LayerNorm)
        ln = output.LayerNorm
        return ln(h + input_tensor + down_up.up(torch.relu(down_up.down(ln(h + input_tensor)))))

    with adaptkit.adapters_disabled(model):
        for output in outputs:
            output.forward = seq_bn.__get__(output)
        try:
            reference = logits(model, inputs)
        finally:
            for output in outputs:
                del output.forward
    assert (adapted - reference).abs().max() < 1e-5
    assert (adapted - logits(tiny_model(model_type), inputs)).abs().max() > 1e-3


def test_pfeiffer_at_a_pre_ln_block_adapts_the_block_output():
    """GPT-2: up(relu(down(h + r))) + h + r, with h + r the block's output."""
    model = tiny_model("gpt2")
    inputs = tiny_inputs(model)
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(init="houlsby", init_std=0.2), name="seq")
    assert [s.name for s in sites] == ["transformer.h.0", "transformer.h.1"]
    adapted = logits(model, inputs)
    with adaptkit.adapters_disabled(model):
        handles = [block.register_forward_hook(
            lambda block, args, out: out + adapter_of(block).up(torch.relu(adapter_of(block).down(out))))
            for block in model.transformer.h]
        reference = logits(model, inputs)
        for handle in handles:
            handle.remove()
    assert (adapted - reference).abs().max() < 1e-5


def test_pfeiffer_is_refused_off_its_registry_naming_the_alternative():
    model = tiny_model("llama")
    with pytest.raises(adaptkit.TargetModuleError, match="placement='houlsby-ffn'"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.pfeiffer(size=8))
    assert adaptkit.list_adapters(model) == {}


def test_adapterhub_defaults_by_name():
    seq, double = adaptkit.AdapterConfig.seq_bn(), adaptkit.AdapterConfig.double_seq_bn(size=8)
    assert (seq.placement, seq.activation, seq.init, seq.reduction_factor) == ("pfeiffer", "relu", "bert", 16)
    assert (double.placement, double.activation, double.init, double.size) == ("houlsby", "swish", "bert", 8)
    weights = BottleneckAdapter(768, seq).down.weight
    assert abs(weights.std().item() - 0.02) < 2e-3 and weights.abs().max() > 0.05  # untruncated


def test_mixed_batches_with_post_ln_pfeiffer():
    """Rows of a mixed batch each get their adapter, also where the adapter trains the LayerNorm
    that runs twice (each row's norm calls use its own adapter's values)."""
    model = tiny_model("bert")
    inputs = tiny_inputs(model, batch=2)
    for name in ("a", "b"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(init_std=0.2, init="houlsby",
                                                                  train_layernorms=False), name=name)
    alone = {}
    for name in ("a", "b"):
        adaptkit.set_active_adapter(model, name)
        alone[name] = logits(model, inputs)
    with adaptkit.per_example_adapters(model, ["a", "b"]):
        mixed = logits(model, inputs)
    torch.testing.assert_close(mixed, torch.stack([alone["a"][0], alone["b"][1]]))
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(init_std=0.2, init="houlsby"), name="ln")
    with torch.no_grad():  # LayerNorm values off the base's, so a base norm in either call shows
        for param in adaptkit.model.adapter_entry(model, "ln")[1].task_values().values():
            param.add_(torch.randn_like(param) * 0.3)
    alone["ln"] = logits(model, inputs)
    with adaptkit.adapters_disabled(model):
        base = logits(model, inputs)
    with adaptkit.per_example_adapters(model, ["ln", None]):
        mixed = logits(model, inputs)
    torch.testing.assert_close(mixed, torch.stack([alone["ln"][0], base[1]]))
    assert (alone["ln"][0] - base[0]).abs().max() > 1e-3


@pytest.mark.parametrize("format_version", [1, 2])
def test_old_pfeiffer_checkpoints_load_as_houlsby_ffn(tmp_path, format_version):
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=4, placement="houlsby-ffn", init_std=0.2))
    expected = logits(model, inputs)
    adaptkit.save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / adaptkit.CONFIG_NAME).read_text())
    assert meta["format_version"] == 4
    meta["format_version"], meta["config"]["placement"] = format_version, "pfeiffer"
    if format_version == 1:
        del meta["config"]["train_vocab_head"]
    (tmp_path / adaptkit.CONFIG_NAME).write_text(json.dumps(meta))
    fresh = tiny_model("bert")
    adaptkit.load_adapter(fresh, tmp_path)
    assert adaptkit.list_adapters(fresh)["default"].placement == "houlsby-ffn"
    assert torch.equal(logits(fresh, inputs), expected)


def test_old_pfeiffer_save_pretrained_records_restore_as_houlsby_ffn(tmp_path):
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=4, placement="houlsby-ffn", init_std=0.2))
    expected = logits(model, inputs)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    record = config["adaptkit_adapters"]
    assert record.pop("placement_version") == 2
    record["adapters"]["default"]["config"]["placement"] = "pfeiffer"
    (tmp_path / "config.json").write_text(json.dumps(config))
    fresh = type(model).from_pretrained(tmp_path).eval()
    adaptkit.restore_adapters(fresh, tmp_path)
    assert adaptkit.list_adapters(fresh)["default"].placement == "houlsby-ffn"
    assert torch.equal(logits(fresh, inputs), expected)


def test_sweep_keys_carry_the_placement_semantics():
    old_key = sweep.Run("rte", sweep.adapter(64, "houlsby-ffn"), 1e-3, 1, 2).key
    new = sweep.Run("rte", sweep.adapter(64, "pfeiffer"), 1e-3, 1, 2)
    assert json.loads(new.key)["placement_version"] == 2
    assert "placement_version" not in json.loads(old_key)
    assert new.key != old_key.replace("houlsby-ffn", "pfeiffer")


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_pfeiffer_checkpoints_round_trip(tmp_path, model_type):
    model = tiny_model(model_type)
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(init="houlsby", init_std=0.2), name="seq")
    expected = logits(model, inputs)
    adaptkit.save_adapter(model, tmp_path)
    fresh = tiny_model(model_type)
    adaptkit.load_adapter(fresh, tmp_path)
    assert {s.kind for s in adaptkit.model.adapter_entry(fresh, "seq")[1].sites} == {
        "seq-post-ln" if model_type == "bert" else "seq-pre-ln"}
    assert torch.equal(logits(fresh, inputs), expected)
