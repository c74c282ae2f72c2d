"""Each adapter owns what it trains: several adapters and the base in one graph, nested contexts,
state_dict and the save_pretrained / Trainer round trip."""

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

import adaptkit
from adaptkit.params import task_copy_parameter_names
from tiny_models import logits, tiny_inputs, tiny_model, without_dropout

LABELS = torch.tensor([0, 1])


def two_adapter_model(model_type="bert", dtype=torch.float32):
    """Adapters a and b with different sizes and LayerNorm/head values moved off the base."""
    model = tiny_model(model_type).to(dtype)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="a")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(4), name="b")
    with torch.no_grad():
        for i, name in enumerate(task_copy_parameter_names(model)):
            model.get_parameter(name).add_(0.05 * (i % 3 + 1) * (1 if ".a." in name else -1))
    return model


def loss_of(model, inputs):
    return nn.functional.cross_entropy(model(**inputs).logits, LABELS)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_two_adapters_train_in_one_backward_with_their_own_gradients():
    model = two_adapter_model()
    inputs = tiny_inputs(model)
    separate = {}
    for name in ("a", "b"):
        adaptkit.set_active_adapter(model, name)
        model.zero_grad()
        loss_of(model, inputs).backward()
        separate.update(grads(model))
    adaptkit.set_trainable_adapters(model, ["a", "b"])
    model.zero_grad()
    adaptkit.set_active_adapter(model, "a")
    la = loss_of(model, inputs)
    adaptkit.set_active_adapter(model, "b")
    (la + loss_of(model, inputs)).backward()
    together = grads(model)
    assert together.keys() == separate.keys()
    assert any(".a." in n for n in together) and any(".b." in n for n in together)
    for name, grad in together.items():
        torch.testing.assert_close(grad, separate[name], msg=name)


def test_a_loss_against_the_base_output_backpropagates():
    model = two_adapter_model()
    inputs = tiny_inputs(model)
    out = model(**inputs).logits
    with adaptkit.adapters_disabled(model), torch.no_grad():
        ref = model(**inputs).logits
    with adaptkit.adapters_disabled(model):
        ref_graph = model(**inputs).logits  # the base in the same graph, not under no_grad
    (nn.functional.mse_loss(out, ref) + nn.functional.mse_loss(out, ref_graph)).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".b." in n and p.requires_grad)
    assert torch.equal(ref, ref_graph.detach())


def test_disabled_contexts_nest_and_activation_inside_takes_effect_on_exit():
    model = two_adapter_model()
    inputs = tiny_inputs(model)
    with adaptkit.adapters_disabled(model):
        base = logits(model, inputs)
    adaptkit.set_active_adapter(model, "a")
    only_a = logits(model, inputs)
    adaptkit.set_active_adapter(model, "b")
    only_b = logits(model, inputs)
    with adaptkit.adapters_disabled(model):
        with adaptkit.adapters_disabled(model):
            assert torch.equal(logits(model, inputs), base)
        assert torch.equal(logits(model, inputs), base), "the outer context still holds"
        adaptkit.set_active_adapter(model, "a")
        assert adaptkit.active_adapter(model) == "a"
        assert torch.equal(logits(model, inputs), base)
    assert torch.equal(logits(model, inputs), only_a)
    assert not torch.equal(only_a, only_b)


def test_state_dict_keeps_base_values_under_base_names_and_each_adapters_own():
    model = tiny_model("bert")
    base = {n: t.clone() for n, t in model.state_dict().items()}
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="a")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(4), name="b")
    with torch.no_grad():
        for name in task_copy_parameter_names(model):
            model.get_parameter(name).add_(1.0)
    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in base.items())
    for adapter in ("a", "b"):
        own = f"bert.encoder.layer.0.output.LayerNorm.adaptkit_task.values.{adapter}.weight"
        assert torch.equal(state[own], base["bert.encoder.layer.0.output.LayerNorm.weight"] + 1)
        assert f"classifier.adaptkit_task.values.{adapter}.weight" in state
        assert f"bert.encoder.layer.0.output.dense.adaptkit.adapters.{adapter}.up.weight" in state


class CountCopies(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("copy_", "clone", "detach_"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_switching_disabling_and_deleting_copy_no_tensor_data():
    model = two_adapter_model()
    with CountCopies() as counter:
        adaptkit.set_active_adapter(model, "a")
        adaptkit.set_active_adapter(model, "b")
        with adaptkit.adapters_disabled(model):
            pass
        adaptkit.set_trainable_adapters(model, ["a", "b"])
        adaptkit.delete_adapter(model, "b")
    assert counter.count == 0


def test_bf16_base_gets_fp32_layernorms_and_head_that_move_after_a_small_step():
    model = tiny_model("llama").to(torch.bfloat16)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    own = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in own.values()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in own.items()}
    optimizer = torch.optim.AdamW(own.values(), lr=1e-4)
    loss_of(model, tiny_inputs(model)).float().backward()
    optimizer.step()
    norms = [n for n in own if "norm" in n]
    assert norms and all(not torch.equal(own[n], before[n]) for n in norms), "RMSNorm weights of 1.0 move by 1e-4"
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if "adaptkit" not in n)


def test_save_pretrained_gives_the_base_and_restore_adapters_gives_them_back(tmp_path):
    model = two_adapter_model()
    inputs = tiny_inputs(model)
    with adaptkit.adapters_disabled(model):
        base = logits(model, inputs)
    adaptkit.set_active_adapter(model, "a")
    only_a = logits(model, inputs)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(reloaded, inputs), base), "from_pretrained of the folder is exactly the base"
    assert adaptkit.restore_adapters(reloaded, tmp_path) == ["a", "b"]
    assert adaptkit.active_adapter(reloaded) == "a"
    assert torch.equal(logits(reloaded, inputs), only_a)
    assert adaptkit.list_adapters(reloaded)["b"].size == 4


def test_restore_adapters_refuses_a_folder_without_them(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    with pytest.raises(adaptkit.CheckpointError, match="lists no adaptkit adapters.*load_adapter"):
        adaptkit.restore_adapters(model, tmp_path)
    assert adaptkit.list_adapters(model) == {}


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def trainer_run(tmp_path, folder, resume=None, stop_at=None):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="task")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (16, 8), generator=generator)
    data = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": int(row[0] % 2)} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path / folder), max_steps=6, save_steps=3,
                             per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
                             use_cpu=True, seed=0, logging_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[StopAt(stop_at)] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def test_trainer_checkpoint_resume_and_save_model_round_trip(tmp_path):
    straight, trainer = trainer_run(tmp_path, "straight")
    trainer_run(tmp_path, "interrupted", stop_at=3)
    resumed, _ = trainer_run(tmp_path, "resumed", resume=str(tmp_path / "interrupted" / "checkpoint-3"))
    own = {n: p for n, p in straight.named_parameters() if p.requires_grad}
    assert own and all(torch.equal(p, resumed.get_parameter(n)) for n, p in own.items())

    trainer.save_model(str(tmp_path / "saved"))
    inputs = tiny_inputs(straight)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    with adaptkit.adapters_disabled(straight):
        assert torch.equal(logits(reloaded, inputs), logits(straight.eval(), inputs))
    adaptkit.restore_adapters(reloaded, tmp_path / "saved")
    assert torch.equal(logits(reloaded, inputs), logits(straight, inputs))


def two_adapter_gradients(checkpointing, use_reentrant=False):
    model = without_dropout(two_adapter_model())
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.train()
    inputs = tiny_inputs(model)
    adaptkit.set_trainable_adapters(model, ["a", "b"])
    adaptkit.set_active_adapter(model, "a")
    la = loss_of(model, inputs)
    adaptkit.set_active_adapter(model, "b")
    (la + loss_of(model, inputs)).backward()
    return grads(model)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing_reruns_each_block_with_its_own_adapter(use_reentrant):
    plain, checkpointed = two_adapter_gradients(False), two_adapter_gradients(True, use_reentrant)
    assert plain.keys() == checkpointed.keys() and any(".a." in n for n in plain)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)
