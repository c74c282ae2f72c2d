"""Add and load are all-or-nothing: refused input and failures half-way leave the model as it was."""

import accelerate
import pytest
import torch

import adaptkit
from adaptkit import layer
from tiny_models import logits, tiny_config, tiny_inputs, tiny_model
from transformers import (
    AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, BertForSequenceClassification,
)


def snapshot(model):
    return ({n: p.detach().clone() for n, p in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            sum(len(m._forward_hooks) for m in model.modules()))


def assert_unchanged(model, before):
    values, grads, hooks = snapshot(model)
    assert values.keys() == before[0].keys()
    assert all(torch.equal(values[n], before[0][n]) for n in values)
    assert grads == before[1] and hooks == before[2]


@pytest.mark.parametrize("name", ["train", "eval", "to", "keys", "forward", "items", "update", "training",
                                  "_modules"])
def test_names_of_module_dict_attributes_are_refused_up_front(name):
    model = tiny_model("bert")
    before = snapshot(model)
    with pytest.raises(adaptkit.AdapterError, match="torch.nn.ModuleDict attribute"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name=name)
    assert_unchanged(model, before)
    assert adaptkit.list_adapters(model) == {}


def test_failure_half_way_through_add_removes_every_trace(monkeypatch):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="kept")
    before, active = snapshot(model), adaptkit.active_adapter(model)
    built = []
    real = layer.BottleneckAdapter.__init__

    def fail_third(self, *args, **kwargs):
        built.append(1)
        if len(built) == 3:
            raise MemoryError("simulated")
        real(self, *args, **kwargs)

    monkeypatch.setattr(layer.BottleneckAdapter, "__init__", fail_third)
    with pytest.raises(MemoryError):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="broken")
    assert_unchanged(model, before)
    assert list(adaptkit.list_adapters(model)) == ["kept"] and adaptkit.active_adapter(model) == active

    fresh = tiny_model("bert")
    before = snapshot(fresh)
    built.clear()
    with pytest.raises(MemoryError):
        adaptkit.add_adapter(fresh, adaptkit.AdapterConfig.houlsby(8), name="broken")
    assert_unchanged(fresh, before)
    assert not hasattr(fresh, "_adaptkit_state")


def test_failure_half_way_through_load_removes_the_adapter(tmp_path, monkeypatch):
    trained = tiny_model("bert")
    adaptkit.add_adapter(trained, adaptkit.AdapterConfig.houlsby(8), name="rte")
    adaptkit.save_adapter(trained, tmp_path / "rte")
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="kept")
    before = snapshot(model)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("adaptkit.state.AdapterEntry.task_values", crash)  # after the adapter's weights
    with pytest.raises(KeyboardInterrupt):
        adaptkit.load_adapter(model, tmp_path / "rte")
    assert_unchanged(model, before)
    assert list(adaptkit.list_adapters(model)) == ["kept"] and adaptkit.active_adapter(model) == "kept"


def test_load_skips_the_random_init_it_would_overwrite(tmp_path, monkeypatch):
    trained = tiny_model("bert")
    adaptkit.add_adapter(trained, adaptkit.AdapterConfig.houlsby(8))
    adaptkit.save_adapter(trained, tmp_path)
    calls = []
    monkeypatch.setattr(layer.BottleneckAdapter, "reset_parameters", lambda self, config: calls.append(1))
    model = tiny_model("bert")
    adaptkit.load_adapter(model, tmp_path)
    assert calls == []
    inputs = tiny_inputs(model)
    assert torch.equal(logits(model, inputs), logits(trained, inputs))


def meta_model():
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(tiny_config("bert"))


def test_meta_model_is_refused_naming_the_tensors(tmp_path):
    model = meta_model()
    with pytest.raises(adaptkit.AdapterError, match=r"on the meta device \(first: bert\.embeddings.*device_map"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    assert not any("adaptkit" in n for n, _ in model.named_parameters())
    trained = tiny_model("bert")
    adaptkit.add_adapter(trained, adaptkit.AdapterConfig.houlsby(8))
    adaptkit.save_adapter(trained, tmp_path)
    with pytest.raises(adaptkit.AdapterError, match="meta device"):
        adaptkit.load_adapter(model, tmp_path)
    assert adaptkit.list_adapters(model) == {}


def test_offloaded_model_is_refused_and_still_runs(tmp_path):
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    expected = logits(model, inputs)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    with pytest.raises(adaptkit.AdapterError, match="offloads layers"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    assert torch.equal(logits(model, inputs), expected)


@pytest.mark.parametrize("config, fix", [("sentiment", "pass name='sentiment'"),
                                         ({"size": 16}, "AdapterConfig.from_dict")])
def test_a_config_that_is_not_an_adapter_config_is_refused_naming_the_fix(config, fix):
    """AdapterHub and PEFT take the name first: add_adapter(model, "sentiment")."""
    model = tiny_model("bert")
    before = snapshot(model)
    with pytest.raises(adaptkit.AdapterError, match=f"takes an AdapterConfig.*{fix}"):
        adaptkit.add_adapter(model, config)
    assert_unchanged(model, before)


def test_sites_the_model_lacks_are_refused_before_anything_changes():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="kept")
    for target in (model, tiny_model("bert")):
        before, active = snapshot(target), adaptkit.active_adapter(target)
        sites = [adaptkit.Site("bert.encoder.layer.0.output.dense", "custom", 64), adaptkit.Site("nope.dense", "custom", 64)]
        with pytest.raises(adaptkit.AdapterError, match="1 of the 2 adapter sites.*'nope.dense'"):
            adaptkit.add_adapter(target, adaptkit.AdapterConfig.houlsby(8), name="new", sites=sites)
        assert_unchanged(target, before)
        assert adaptkit.active_adapter(target) == active
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="new")  # nothing left behind


def test_restore_onto_another_class_is_refused_and_leaves_the_model_as_loaded(tmp_path):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="s")
    model.save_pretrained(tmp_path)
    for auto in (AutoModel, AutoModelForTokenClassification):
        other = auto.from_pretrained(tmp_path)
        before = snapshot(other)
        with pytest.raises(adaptkit.CheckpointError, match=f"saved from BertForSequenceClassification.*this "
                                                            f"model is {type(other).__name__}"):
            adaptkit.restore_adapters(other, tmp_path)
        assert_unchanged(other, before)
        assert adaptkit.list_adapters(other) == {}
    right = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert adaptkit.restore_adapters(right, tmp_path) == ["s"]


def test_restore_from_a_folder_a_subclass_saved(tmp_path):
    """A class of the user's own (a custom loss) saves a folder its transformers parent restores."""
    class WeightedLoss(BertForSequenceClassification):
        pass

    model = WeightedLoss(tiny_config("bert"))
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="s")
    model.save_pretrained(tmp_path)
    parent = BertForSequenceClassification.from_pretrained(tmp_path)
    assert adaptkit.restore_adapters(parent, tmp_path) == ["s"]
    inputs = tiny_inputs(model)
    torch.testing.assert_close(logits(parent.eval(), inputs), logits(model.eval(), inputs), atol=0, rtol=0)
