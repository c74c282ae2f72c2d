"""Adapters on every registry architecture and on the structural fallback."""

import pytest
import torch

import adaptkit
from adaptkit.params import (
    adapter_parameter_names, base_name, head_parameter_names, layernorm_parameter_names,
    task_copy_parameter_names,
)
from adaptkit.targets import PFEIFFER_REGISTRY
from tiny_models import FALLBACK_TYPES, REGISTRY_TYPES, logits, tiny_inputs, tiny_model

ALL_TYPES = REGISTRY_TYPES + FALLBACK_TYPES[:3]
SIZE = 8


def per_adapter(d: int, m: int = SIZE) -> int:
    return 2 * m * d + m + d


def loss_of(model, inputs, labels):
    return torch.nn.functional.cross_entropy(model(**inputs).logits, labels)


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer", "houlsby-ffn"])
@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_identity_init_trainable_set_and_counts(model_type, placement):
    model = tiny_model(model_type)
    inputs = tiny_inputs(model)
    base = logits(model, inputs)
    if placement == "pfeiffer" and model_type not in PFEIFFER_REGISTRY:
        with pytest.raises(adaptkit.TargetModuleError, match="placement='houlsby-ffn'"):
            adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=SIZE, placement=placement))
        assert adaptkit.list_adapters(model) == {}
        return
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=SIZE, placement=placement, init="zero"),
                                 name="zero")
    assert torch.equal(logits(model, inputs), base), "zero init must be the exact identity"

    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=SIZE, placement=placement), name="near")
    near = logits(model, inputs)
    assert not torch.equal(near, base)
    torch.testing.assert_close(near, base, atol=5e-3, rtol=0)

    kinds = {s.kind for s in sites}
    expected = {"houlsby": {"attention", "ffn"}, "houlsby-ffn": {"ffn"}}.get(placement)
    assert kinds == (expected or {PFEIFFER_REGISTRY[model_type][1]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    copies = task_copy_parameter_names(model, "near")
    assert trainable == set(adapter_parameter_names(model, "near")) | set(copies)
    assert {base_name(n) for n in copies} == set(layernorm_parameter_names(model)) | set(head_parameter_names(model))
    assert adapter_parameter_names(model, "near") and head_parameter_names(model)

    report = adaptkit.count_parameters(model)
    assert report.trainable["adapters"] == sum(per_adapter(s.width) for s in sites)
    assert report.total["adapters"] == 2 * report.trainable["adapters"]
    assert report.trainable["other"] == 0


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_training_moves_only_trainables_and_checkpoint_roundtrips(model_type, tmp_path):
    model = tiny_model(model_type)
    inputs, labels = tiny_inputs(model, batch=4), torch.tensor([0, 1, 1, 0])
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=SIZE), name="task")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        loss = loss_of(model, inputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"frozen tensor {name} changed"

    trained = logits(model, inputs)
    adaptkit.save_adapter(model, tmp_path)
    fresh = tiny_model(model_type)
    assert not torch.equal(logits(fresh, inputs), trained)
    adaptkit.load_adapter(fresh, tmp_path)
    assert torch.equal(logits(fresh, inputs), trained)

    trained_bytes = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = (tmp_path / adaptkit.WEIGHTS_NAME).stat().st_size
    assert trained_bytes <= size <= trained_bytes + 32_000


@pytest.mark.parametrize("model_type", FALLBACK_TYPES)
def test_fallback_finds_both_projections_per_block(model_type):
    assert model_type not in adaptkit.REGISTRY
    model = tiny_model(model_type)
    sites = adaptkit.resolve_sites(model, adaptkit.AdapterConfig.houlsby(size=SIZE))
    assert [s.kind for s in sites].count("attention") == 2
    assert [s.kind for s in sites].count("ffn") == 2
    assert all(s.width == 64 for s in sites)
