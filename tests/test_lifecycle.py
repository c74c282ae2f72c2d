"""Contexts and the adapters' lifecycle, adaptkit beside PEFT, and strict checkpoint configs: each
either works as promised or is refused with an error that names the cause; never other numbers."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

import adaptkit
from tiny_models import logits, tiny_inputs, tiny_model


def adapted(*names, **config):
    model = tiny_model("bert")
    for seed, name in enumerate(names):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.2, **config), name=name)
        with torch.no_grad():
            for param in adaptkit.model.adapter_entry(model, name)[1].task_values().values():
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return model


# -- contexts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("context", ["using", "per_example_adapters"])
def test_deleting_an_adapter_a_live_context_routes_to_is_refused(context):
    model = adapted("a", "b")
    inputs = tiny_inputs(model)
    open_ = (adaptkit.using(model, "b") if context == "using" else adaptkit.per_example_adapters(model, ["b", None]))
    with open_:
        before = logits(model, inputs)
        with pytest.raises(adaptkit.AdapterError, match="route to it"):
            adaptkit.delete_adapter(model, "b")
        assert torch.equal(logits(model, inputs), before)  # still running b on its rows
        adaptkit.delete_adapter(model, "a")  # one no context routes to goes
    adaptkit.delete_adapter(model, "b")  # and after the context, b too
    assert adaptkit.list_adapters(model) == {}


def test_an_adapter_added_inside_adapters_disabled_does_not_run_there():
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    base = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.2), name="a")
    with adaptkit.adapters_disabled(model):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.5), name="new")
        assert torch.equal(logits(model, inputs), base)
    assert adaptkit.active_adapter(model) == "new"
    assert not torch.equal(logits(model, inputs), base)


def test_using_nests_innermost_first_and_rejects_unknown_names():
    model = adapted("a", "b")
    inputs = tiny_inputs(model)
    alone = {}
    for name in ("a", "b"):
        with adaptkit.using(model, name):
            alone[name] = logits(model, inputs)
    with adaptkit.using(model, "a"):
        with adaptkit.using(model, "b"):
            assert torch.equal(logits(model, inputs), alone["b"])
        assert torch.equal(logits(model, inputs), alone["a"])
        with adaptkit.adapters_disabled(model), adaptkit.using(model, "b"):
            assert torch.equal(logits(model, inputs), alone["b"])
    with pytest.raises(adaptkit.AdapterError, match="no adapter named 'c'"):
        with adaptkit.using(model, "c"):
            pass


def test_backward_outside_the_context_with_checkpointing_uses_the_forwards_routing():
    """A block recomputed in backward, after the context closed, reruns with the adapter its
    forward ran: gradients equal those of a model without checkpointing."""
    grads = []
    for checkpointing in (False, True):
        model = adapted("a", "b").train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adaptkit.set_trainable_adapters(model, ["b"])
        with adaptkit.using(model, "b"):
            loss = model(**tiny_inputs(model)).logits.square().sum()
        loss.backward()  # here the default routing is "b"'s opposite: "a" is active
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6)


# -- beside PEFT -----------------------------------------------------------------------------------

def test_an_adapter_saved_with_a_lora_attached_loads_on_the_plain_base(tmp_path):
    model = adapted("task")
    inputs = tiny_inputs(model)
    expected = logits(model, inputs)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False))
    adaptkit.set_active_adapter(peft_model, "task")
    adaptkit.save_adapter(peft_model, tmp_path / "task")
    meta = json.loads((tmp_path / "task" / adaptkit.CONFIG_NAME).read_text())
    names = list(meta["base_model"]["fingerprint"])
    assert names and not any("base_layer" in n or n.startswith("base_model.") or "lora" in n for n in names)
    fresh = tiny_model("bert")
    adaptkit.load_adapter(fresh, tmp_path / "task")
    assert torch.equal(logits(fresh, inputs), expected)


def peft_sequence_classifier(train_head: bool, task_type):
    model = adapted("task", train_head=train_head)
    config = LoraConfig(r=4, target_modules=["query", "value"], task_type=task_type)
    peft_model = get_peft_model(model, config)
    return model, peft_model


def test_peft_modules_to_save_on_the_head_and_an_adaptkit_head_are_refused_naming_both_ways():
    _, peft_model = peft_sequence_classifier(train_head=True, task_type="SEQ_CLS")
    with pytest.raises(adaptkit.AdapterError, match="train_head=False.*task_type=None"):
        adaptkit.set_active_adapter(peft_model, "task")


@pytest.mark.parametrize("owner", ["peft", "adaptkit"])
def test_the_head_trains_in_exactly_one_library(owner):
    """PEFT's SEQ_CLS copy of the classifier with an adaptkit adapter of train_head=False, or
    adaptkit's head copy with a LoRA without modules_to_save: the gradient reaches that one."""
    model, peft_model = peft_sequence_classifier(train_head=owner == "adaptkit",
                                                  task_type="SEQ_CLS" if owner == "peft" else None)
    adaptkit.set_active_adapter(peft_model, "task")
    peft_model.train()
    peft_model(**tiny_inputs(model)).logits.sum().backward()
    head_grads = {n: p.grad is not None and p.grad.abs().sum() > 0
                  for n, p in peft_model.named_parameters() if "classifier" in n and p.requires_grad}
    moving = {n for n, moved in head_grads.items() if moved}
    if owner == "peft":
        assert moving and all("modules_to_save" in n for n in moving)
    else:
        assert moving and all("adaptkit_task" in n for n in moving)
    assert moving == set(head_grads)  # every trainable head tensor gets its gradient
    norms = [p for n, p in peft_model.named_parameters() if "LayerNorm.adaptkit_task" in n]
    assert norms and all(p.grad is not None for p in norms)


# -- strict checkpoint configs ---------------------------------------------------------------------

def saved(tmp_path):
    model = adapted("task")
    adaptkit.save_adapter(model, tmp_path)
    return json.loads((tmp_path / adaptkit.CONFIG_NAME).read_text())


def rewrite(tmp_path, meta):
    (tmp_path / adaptkit.CONFIG_NAME).write_text(json.dumps(meta))


@pytest.mark.parametrize("field", ["activation", "train_layernorms", "layers", "init_std"])
def test_a_current_format_config_missing_a_field_is_refused_naming_it(tmp_path, field):
    meta = saved(tmp_path)
    del meta["config"][field]
    rewrite(tmp_path, meta)
    fresh = tiny_model("bert")
    with pytest.raises(adaptkit.CheckpointError, match=f"'{field}'.*missing"):
        adaptkit.load_adapter(fresh, tmp_path)
    assert adaptkit.list_adapters(fresh) == {}


@pytest.mark.parametrize("field, value", [("size", True), ("train_head", "yes"), ("dropout", "0.1"),
                                          ("init_std", False), ("activation", 3)])
def test_a_field_of_the_wrong_type_is_a_checkpoint_error_naming_it(tmp_path, field, value):
    meta = saved(tmp_path)
    meta["config"][field] = value
    rewrite(tmp_path, meta)
    with pytest.raises(adaptkit.CheckpointError, match=field):
        adaptkit.load_adapter(tiny_model("bert"), tmp_path)


def test_an_older_format_gets_the_fields_it_predates(tmp_path):
    model = adapted("task")
    inputs = tiny_inputs(model)
    expected = logits(model, inputs)
    adaptkit.save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / adaptkit.CONFIG_NAME).read_text())
    meta["format_version"] = 3
    for field in ("layers", "leave_out", "train_embedding_norm", "head"):
        del meta["config"][field]
    rewrite(tmp_path, meta)
    fresh = tiny_model("bert")
    adaptkit.load_adapter(fresh, tmp_path)
    assert torch.equal(logits(fresh, inputs), expected)


def test_saving_from_a_model_on_meta_refuses_before_writing(tmp_path):
    model = adapted("task").to("meta")
    with pytest.raises(adaptkit.AdapterError, match="meta device"):
        adaptkit.save_adapter(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- copies ----------------------------------------------------------------------------------------

def test_a_deep_copy_routes_on_its_own_and_a_pickled_model_comes_back_whole():
    import copy
    import io
    model = adapted("a", "b")
    inputs = tiny_inputs(model)
    adaptkit.set_active_adapter(model, "a")
    on_a = logits(model, inputs)
    twin = copy.deepcopy(model)
    adaptkit.set_active_adapter(twin, "b")
    adaptkit.delete_adapter(twin, "a")
    assert torch.equal(logits(model, inputs), on_a) and set(adaptkit.list_adapters(model)) == {"a", "b"}
    assert not torch.equal(logits(twin, inputs), on_a)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(logits(loaded, inputs), on_a)
    with adaptkit.using(loaded, "b"):
        assert torch.equal(logits(loaded, inputs), logits(twin, inputs))


# -- torch's own module API ------------------------------------------------------------------------

def test_adaptkit_modules_leave_torchs_module_methods_alone():
    """DeepSpeed, accelerate and transformers' init walk the model with ``Module.apply(fn)`` and
    friends: an adaptkit module overriding one of them (a slot's ``apply``) breaks them all."""
    import inspect

    from adaptkit import head, layer

    allowed = {"forward", "extra_repr"}
    classes = [c for m in (layer, head) for _, c in inspect.getmembers(m, inspect.isclass)
               if issubclass(c, torch.nn.Module) and c.__module__.startswith("adaptkit")]
    shadowed = {f"{c.__name__}.{name}" for c in classes for name in vars(c)
                if callable(vars(torch.nn.Module).get(name)) and not name.startswith("__") and name not in allowed}
    assert classes and not shadowed
    model = adapted("a")
    seen = []
    model.apply(lambda module: seen.append(module))  # as deepspeed.initialize and _init_weights do
    assert len(seen) == len(list(model.modules()))
