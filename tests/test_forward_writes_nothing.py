"""Running the model writes nothing to it: no module attribute, Parameter or buffer is set while it
runs (training, inference, mixed batches, checkpointed blocks), and every parameter is used inside
its own module's call, where module hooks (ZeRO-3, FSDP, profilers) see it."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import adaptkit
from tiny_models import tiny_inputs, tiny_model


class CountingDict(dict):
    """A module's parameter/buffer/module dict that counts item writes and deletions."""

    writes = 0

    def __setitem__(self, key, value):
        CountingDict.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        CountingDict.writes += 1
        super().__delitem__(key)

    def update(self, *args, **kwargs):
        CountingDict.writes += 1
        super().update(*args, **kwargs)


@contextlib.contextmanager
def counted_writes(model: nn.Module, monkeypatch):
    """Counts attribute writes on the model's modules and item writes to their parameter, buffer and
    module dicts while the block runs."""
    modules = {id(m) for m in model.modules()}
    writes = []
    setattr_, delattr_ = nn.Module.__setattr__, nn.Module.__delattr__

    def counting_setattr(self, key, value):
        if id(self) in modules:
            writes.append((type(self).__name__, key))
        setattr_(self, key, value)

    def counting_delattr(self, key):
        if id(self) in modules:
            writes.append((type(self).__name__, f"del {key}"))
        delattr_(self, key)

    for module in model.modules():
        for attr in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(module, attr, CountingDict(getattr(module, attr)))
    CountingDict.writes = 0
    monkeypatch.setattr(nn.Module, "__setattr__", counting_setattr)
    monkeypatch.setattr(nn.Module, "__delattr__", counting_delattr)
    yield writes
    writes.extend(["dict item"] * CountingDict.writes)


def adapted(model_type: str = "bert"):
    model = tiny_model(model_type)
    for name in ("a", "b"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.2), name=name)
    adaptkit.add_fusion(model, adaptkit.Fuse("a", "b"), activate=False)
    adaptkit.set_trainable_adapters(model, ["a", "b", adaptkit.Fuse("a", "b")])
    return model


RUNS = {
    "inference": lambda model, inputs: model(**inputs),
    "training step": lambda model, inputs: model(**inputs).logits.sum().backward(),
    "two adapters in one graph": lambda model, inputs: (
        _with(model, "a", inputs).sum() + _with(model, "b", inputs).sum()).backward(),
    "mixed batch": lambda model, inputs: _mixed(model, inputs).sum().backward(),
    "disabled": lambda model, inputs: _disabled(model, inputs),
    "compositions": lambda model, inputs: sum(
        _with(model, block, inputs).sum() for block in (
            adaptkit.Stack("a", adaptkit.Fuse("a", "b")), adaptkit.Parallel("a", "b"), adaptkit.Average("a", "b"))
    ).backward(),
}


def _with(model, name, inputs):
    with adaptkit.using(model, name):
        return model(**inputs).logits


def _mixed(model, inputs):
    with adaptkit.per_example_adapters(model, ["a", "b"]):
        return model(**inputs).logits


def _disabled(model, inputs):
    with adaptkit.adapters_disabled(model):
        return model(**inputs).logits


@pytest.mark.parametrize("model_type", ["bert", "llama", "gpt2"])
@pytest.mark.parametrize("run", RUNS)
def test_no_write_to_the_model_while_it_runs(model_type, run, monkeypatch):
    model = adapted(model_type).train()
    inputs = tiny_inputs(model)
    with counted_writes(model, monkeypatch) as writes:
        RUNS[run](model, inputs)
    assert writes == []


def test_no_write_with_activation_checkpointing(monkeypatch):
    """Checkpointing enabled after the adapters were added: its wrappers are put in place when it
    is enabled, not by the first forward."""
    model = adapted("llama").train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    inputs = tiny_inputs(model)
    with counted_writes(model, monkeypatch) as writes:
        (_with(model, "a", inputs).sum() + _with(model, "b", inputs).sum()).backward()
    assert writes == []


def test_every_parameter_is_used_inside_its_own_modules_call():
    """A parameter read while its module is not running (what the old per-forward swap and the
    fused sum reading ``up.weight`` did) is caught: each module's own parameters are fetched on its
    pre-hook and withdrawn on its post-hook, as ZeRO-3 does."""
    model = adapted("bert").train()
    owner = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    running: list[nn.Module] = []
    outside = []

    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") == "__get__":  # reading .dtype or .shape computes nothing
                return func(*args, **(kwargs or {}))
            for value in [*args, *(kwargs or {}).values()]:
                for tensor in value if isinstance(value, (list, tuple)) else [value]:
                    module = owner.get(id(tensor)) if isinstance(tensor, nn.Parameter) else None
                    if module is not None and not any(module is m for m in running):
                        outside.append((type(module).__name__, func.__name__, [type(m).__name__ for m in running[-2:]]))
            return func(*args, **(kwargs or {}))

    def enter(module, args):
        running.append(module)

    def leave(module, args, output):
        running.pop()

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter, prepend=True))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        inputs = tiny_inputs(model)
        with Watch():
            for run in ("training step", "mixed batch", "compositions"):
                RUNS[run](model, inputs)
            with torch.no_grad():
                model(**inputs)  # the in-place sum of inference
    finally:
        for handle in handles:
            handle.remove()
    assert outside == []
