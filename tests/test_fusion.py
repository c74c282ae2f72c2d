"""AdapterFusion: only the fusion layers (and the fusion's head) train, the fused adapters stay as
they were; a fusion saves and loads exactly, as its own small checkpoint, and is refused beside
other adapters of the same names."""

from __future__ import annotations

import json

import pytest
import torch

import adaptkit
from adaptkit import Fuse, FusionConfig, Stack
from adaptkit.state import get_state
from tiny_models import tiny_inputs, tiny_model, without_dropout

NAMES = ("sst2", "mrpc", "rte")


def with_adapters(seed: int = 0, placement: str = "pfeiffer"):
    model = without_dropout(tiny_model("bert", seed=0))
    torch.manual_seed(seed)
    for name in NAMES:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig(placement=placement, size=8, init_std=0.2), name=name)
    return model


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train(model, steps: int = 3, inputs=None):
    inputs = inputs or tiny_inputs(model, batch=4)
    labels = torch.tensor([0, 1, 1, 0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        regularization = adaptkit.fusion_regularization_loss(model)
        (loss + (regularization if regularization is not None else 0)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def logits(model, inputs, routing):
    with torch.no_grad(), adaptkit.using(model, routing):
        return model(**inputs).logits


def test_training_a_fusion_moves_only_its_layers_and_its_head():
    model = with_adapters()
    block = adaptkit.add_fusion(model, Fuse(*NAMES))
    fusion = get_state(model).fusions[block.name]
    own = {id(p) for p in fusion.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == own and len(fusion.site_modules) == 2 and fusion.own_copies  # one site per layer, a head
    report = adaptkit.count_parameters(model)
    assert report.trainable["adapters"] == 2 * (2 * (64 * 64 + 64) + 64 * 64)  # query, key, value per layer
    assert report.trainable["head"] == 64 * 2 + 2 and report.trainable["other"] == 0
    before = snapshot(model)
    assert adaptkit.fusion_regularization_loss(model).item() < 1e-6  # the value matrices start at the identity
    train(model)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    fusion_names = {n for n, p in model.named_parameters() if id(p) in own}
    assert moved == fusion_names  # adapters, base, LayerNorm copies: unchanged
    assert any(".fusions.sst2,mrpc,rte.query." in n for n in moved) and any("classifier" in n for n in moved)
    assert adaptkit.fusion_regularization_loss(model).item() > 1e-6


def test_static_fusion_has_no_value_matrix_and_no_regularization():
    model = with_adapters()
    adaptkit.add_fusion(model, Fuse("sst2", "rte"), config="static")
    layer = next(iter(get_state(model).fusions["sst2,rte"].site_modules.values()))
    assert {n for n, _ in layer.named_parameters()} == {"query.weight", "query.bias", "key.weight", "key.bias"}
    assert adaptkit.fusion_regularization_loss(model) is None


def test_the_regularization_collected_in_the_forward_equals_the_one_read_after_it():
    """``fusion_regularization()`` gathers each value layer's term inside its own call (where
    sharding engines hold it whole): the same value and gradients as ``fusion_regularization_loss``;
    nothing without grad, for a frozen fusion, or from a forward in another thread."""
    import threading

    model = with_adapters()
    adaptkit.add_fusion(model, Fuse(*NAMES))
    inputs = tiny_inputs(model, batch=4)
    train(model, steps=2)  # the value matrices leave the identity
    model.train()
    with adaptkit.fusion_regularization() as collected:
        model(**inputs)
    read = adaptkit.fusion_regularization_loss(model)
    assert len(collected.terms) == 2 and read.item() > 1e-6
    assert torch.allclose(collected.total(), read, rtol=1e-6, atol=0)
    values = [layer.value.weight for layer in get_state(model).fusions["sst2,mrpc,rte"].site_modules.values()]
    assert all(torch.allclose(a, b) for a, b in zip(torch.autograd.grad(collected.total(), values),
                                                    torch.autograd.grad(read, values)))
    model.activation_checkpointing_enable()  # transformers 5's default, non-reentrant: the same terms
    with adaptkit.fusion_regularization() as checkpointed:
        model(**inputs).logits.sum().backward()
    assert len(checkpointed.terms) == 2 and torch.allclose(checkpointed.total(), read, rtol=1e-6, atol=0)
    model.activation_checkpointing_disable()
    with adaptkit.fusion_regularization() as collected:
        other = threading.Thread(target=model, kwargs=inputs)
        other.start()
        other.join()
        assert collected.terms == {}  # another thread's forward adds nothing here
        with torch.no_grad():
            model(**inputs)
        assert collected.terms == {} and collected.total().item() == 0.0
        adaptkit.set_trainable_adapters(model, ["sst2"])  # the fusion frozen
        model(**inputs)
    assert collected.terms == {}


def test_reading_the_regularization_on_a_sharded_model_is_refused_naming_the_collected_one(monkeypatch):
    model = with_adapters()
    adaptkit.add_fusion(model, Fuse(*NAMES))
    monkeypatch.setattr("adaptkit.fusion.sharded_by", lambda model: "DeepSpeed ZeRO-3")
    with pytest.raises(adaptkit.AdapterError, match=r"ZeRO-3 keeps them sharded.*adaptkit.fusion_regularization\(\)"):
        adaptkit.fusion_regularization_loss(model)


def test_fusion_config_refuses_temperature_by_name():
    with pytest.raises(adaptkit.AdapterConfigError, match="temperature"):
        FusionConfig(temperature=True)
    with pytest.raises(adaptkit.AdapterConfigError, match="unknown fusion config field"):
        FusionConfig.from_dict({"query": True, "gate": 1})


def test_save_and_load_are_exact(tmp_path):
    model = with_adapters(placement="houlsby")
    train(model, steps=1)  # the active adapter (rte) moves away from its init; the others keep theirs
    block = adaptkit.add_fusion(model, Stack("sst2", Fuse(*NAMES)).children[1])
    train(model)
    inputs = tiny_inputs(model, batch=3, seed=7)
    routing = Stack("mrpc", block)
    expected = logits(model, inputs, routing)
    for name in NAMES:
        adaptkit.save_adapter(model, tmp_path / name, name)
    adaptkit.save_fusion(model, tmp_path / "fusion", block)
    meta = json.loads((tmp_path / "fusion" / adaptkit.checkpoint.FUSION_CONFIG_NAME).read_text())
    assert set(meta["adapters"]) == set(NAMES) and meta["base_model"]["fingerprint"]

    fresh = without_dropout(tiny_model("bert", seed=0))
    for name in NAMES:
        adaptkit.load_adapter(fresh, tmp_path / name)
    assert adaptkit.load_fusion(fresh, tmp_path / "fusion") == block
    assert adaptkit.active_adapter(fresh) == block
    assert torch.equal(logits(fresh, inputs, routing), expected)
    assert {id(p) for p in fresh.parameters() if p.requires_grad} == {
        id(p) for p in get_state(fresh).fusions[block.name].parameters()}


def test_load_refusals_name_the_problem_and_leave_the_model_as_it_was(tmp_path):
    model = with_adapters()
    block = adaptkit.add_fusion(model, Fuse(*NAMES))
    adaptkit.save_fusion(model, tmp_path / "fusion", block)
    with pytest.raises(adaptkit.CheckpointError, match="adaptkit.load_fusion"):
        adaptkit.load_adapter(model, tmp_path / "fusion")

    other = with_adapters(seed=1)  # same names, other adapters
    before = snapshot(other)
    with pytest.raises(adaptkit.CheckpointError, match="trained with another adapter 'mrpc'"):
        adaptkit.load_fusion(other, tmp_path / "fusion")
    fewer = with_adapters()
    adaptkit.delete_adapter(fewer, "rte")
    with pytest.raises(adaptkit.CheckpointError, match="lacks: load the adapters|which this model lacks"):
        adaptkit.load_fusion(fewer, tmp_path / "fusion")
    assert get_state(other).fusions == {} and snapshot(other).keys() == before.keys()
    assert all(torch.equal(p, before[n]) for n, p in snapshot(other).items())

    damaged = tmp_path / "fusion" / adaptkit.checkpoint.FUSION_WEIGHTS_NAME
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(adaptkit.CheckpointError, match="checksum"):
        adaptkit.load_fusion(with_adapters(), tmp_path / "fusion")


def test_a_fused_adapter_is_kept_until_its_fusion_goes():
    model = with_adapters()
    inputs = tiny_inputs(model)
    base = logits(model, inputs, "rte")
    adaptkit.add_fusion(model, Fuse("sst2", "rte"))
    with pytest.raises(adaptkit.AdapterError, match="delete the fusion first"):
        adaptkit.delete_adapter(model, "rte")
    with adaptkit.using(model, Fuse("sst2", "rte")):
        with pytest.raises(adaptkit.AdapterError, match="cannot delete fusion 'sst2,rte'"):
            adaptkit.delete_fusion(model, "sst2,rte")
    adaptkit.delete_fusion(model, Fuse("sst2", "rte"))
    assert adaptkit.active_adapter(model) is None
    assert not any(".fusions." in n for n, _ in model.named_parameters())
    assert torch.equal(logits(model, inputs, "rte"), base)
    adaptkit.delete_adapter(model, "rte")


def trained_fusion_under_a_stack():
    """A trained fusion active under a Stack: the model, the Stack, inputs and its logits there."""
    model = with_adapters()
    adaptkit.add_fusion(model, Fuse("sst2", "rte"))
    train(model)
    stack = Stack("mrpc", Fuse("sst2", "rte"))
    adaptkit.set_active_adapter(model, stack)
    inputs = tiny_inputs(model, batch=4)
    return model, stack, inputs, logits(model, inputs, stack)


def test_save_pretrained_restores_trained_fusions_and_the_active_composition(tmp_path):
    """A save_pretrained folder brings back the adapters, the trained fusion (its layers and head
    copy) and the active composition: the restored model computes exactly what was saved."""
    model, stack, inputs, expected = trained_fusion_under_a_stack()
    model.save_pretrained(tmp_path)
    fresh = without_dropout(type(model).from_pretrained(tmp_path))
    assert sorted(adaptkit.restore_adapters(fresh, tmp_path)) == sorted(NAMES)
    assert [f.block for f in get_state(fresh).fusions.values()] == [Fuse("sst2", "rte")]
    assert adaptkit.active_adapter(fresh) == stack
    with torch.no_grad():
        assert torch.equal(fresh.eval()(**inputs).logits, expected)
    assert torch.equal(logits(fresh, inputs, Fuse("sst2", "rte")), logits(model, inputs, Fuse("sst2", "rte")))


def test_a_damaged_fusion_record_restores_nothing(tmp_path):
    model = with_adapters()
    adaptkit.add_fusion(model, Fuse("sst2", "rte"))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["adaptkit_adapters"]["fusions"]["sst2,rte"]["config"]["temperature"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    fresh = type(model).from_pretrained(tmp_path)
    with pytest.raises(adaptkit.CheckpointError, match="damaged"):
        adaptkit.restore_adapters(fresh, tmp_path)
    assert not any(adaptkit.params.is_adaptkit_name(n) for n, _ in fresh.named_parameters())


def test_a_model_with_a_fusion_and_an_active_composition_deep_copies_and_pickles_whole():
    """Compositions are immutable: copies and pickles rebuild them from AdapterHub's dict form
    (the default rebuild sets attributes, which they refuse; DDP references and torch.save need it)."""
    import copy
    import io
    import pickle

    from adaptkit import Average, Parallel
    for block in (Fuse("sst2", "rte"), Stack("mrpc", Fuse("sst2", "rte")), Parallel("sst2", Stack("mrpc", "rte")),
                  Average("sst2", "rte", weights=[0.3, 0.7])):
        assert pickle.loads(pickle.dumps(block)) == block and copy.deepcopy(block) is block
    model, stack, inputs, expected = trained_fusion_under_a_stack()
    twin = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (twin, torch.load(buffer, weights_only=False)):
        assert adaptkit.active_adapter(other) == stack and torch.equal(logits(other, inputs, stack), expected)
