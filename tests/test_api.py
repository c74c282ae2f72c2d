"""Named adapters, disabling, config, training modes, and errors for bad input."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

import adaptkit
from tiny_models import logits, tiny_config, tiny_inputs, tiny_model, without_dropout


def train_steps(model, inputs, steps=3, lr=1e-2):
    labels = torch.tensor([1, 0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(**inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_several_adapters_switch_disable_delete():
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    base = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="rte")
    train_steps(model, inputs)
    rte = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.pfeiffer(size=4), name="mrpc")
    assert adaptkit.active_adapter(model) == "mrpc"
    train_steps(model, inputs)
    mrpc = logits(model, inputs)
    assert not torch.equal(rte, mrpc)

    adaptkit.set_active_adapter(model, "rte")
    assert torch.equal(logits(model, inputs), rte), "switching back restores the task's LayerNorms and head"
    with adaptkit.adapters_disabled(model):
        assert torch.equal(logits(model, inputs), base)
    assert torch.equal(logits(model, inputs), rte)

    adaptkit.delete_adapter(model, "rte")
    assert adaptkit.list_adapters(model).keys() == {"mrpc"}
    adaptkit.set_active_adapter(model, "mrpc")
    assert torch.equal(logits(model, inputs), mrpc)
    adaptkit.delete_adapter(model, "mrpc")
    assert torch.equal(logits(model, inputs), base)
    assert not any("adaptkit" in n for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_save_inactive_adapter_and_load_under_new_name(tmp_path):
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    train_steps(model, inputs)
    trained_a = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="b")
    adaptkit.save_adapter(model, tmp_path / "a", name="a")
    fresh = tiny_model("bert")
    assert adaptkit.load_adapter(fresh, tmp_path / "a", name="renamed") == "renamed"
    assert torch.equal(logits(fresh, inputs), trained_a)


def test_add_with_duplicate_or_bad_name_is_refused():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, name="x")
    with pytest.raises(adaptkit.AdapterError, match="already exists"):
        adaptkit.add_adapter(model, name="x")
    with pytest.raises(adaptkit.AdapterError, match="no dots"):
        adaptkit.add_adapter(model, name="a.b")
    with pytest.raises(adaptkit.AdapterError, match="no adapter named 'y'"):
        adaptkit.set_active_adapter(model, "y")


def test_config_json_roundtrip_and_reduction_factor():
    config = adaptkit.AdapterConfig(reduction_factor=16, placement="houlsby-ffn", activation="tanh",
                                    target_modules=None, dropout=0.1)
    again = adaptkit.AdapterConfig.from_json(config.to_json())
    assert again == config
    assert again.bottleneck_size(384) == 24
    sites = adaptkit.add_adapter(tiny_model("bert"), config)
    assert all(s.kind == "ffn" for s in sites)


@pytest.mark.parametrize("bad, message", [
    ({"size": 0}, "positive integer"),
    ({"size": -3}, "positive integer"),
    ({"reduction_factor": 0}, "reduction_factor"),
    ({"placement": "parallel"}, "placement must be one of"),
    ({"activation": "softmax"}, "activation must be one of"),
    ({"dropout": 1.5}, "dropout"),
    ({"target_modules": "dense"}, "list of module names"),
])
def test_bad_config_values(bad, message):
    with pytest.raises(adaptkit.AdapterConfigError, match=message):
        adaptkit.AdapterConfig(**bad)


def test_unknown_config_field_names_the_valid_ones():
    with pytest.raises(adaptkit.AdapterConfigError, match=r"unknown adapter config field.*'sise'.*valid fields"):
        adaptkit.AdapterConfig.from_dict({"sise": 8})


def test_explicit_targets_and_target_matching_nothing():
    model = tiny_model("bert")
    sites = adaptkit.add_adapter(
        model, adaptkit.AdapterConfig(size=4, target_modules=["attention.output.dense", r"re:.*\.1\.output\.dense"]))
    assert {s.name for s in sites} == {
        "bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.1.attention.output.dense",
        "bert.encoder.layer.1.output.dense"}
    with pytest.raises(adaptkit.TargetModuleError, match=r"'attn\.c_proj' matches no module; candidates: .*"
                       r"bert\.encoder\.layer\.N\.attention\.self\.query"):
        adaptkit.add_adapter(tiny_model("bert"),
                             adaptkit.AdapterConfig(target_modules=["attention.output.dense", "attn.c_proj"]))


def test_target_that_is_not_a_projection():
    with pytest.raises(adaptkit.TargetModuleError, match="not Linear/Conv1D"):
        adaptkit.add_adapter(tiny_model("bert"), adaptkit.AdapterConfig(target_modules=["attention.output"]))


def test_model_without_transformer_blocks():
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    with pytest.raises(adaptkit.TargetModuleError, match=r"no transformer blocks found in Mlp.*candidates: fc1, fc2"):
        adaptkit.add_adapter(Mlp())


def test_gradient_checkpointing_trains_adapters():
    def adapter_grads(checkpointing: bool):
        model = without_dropout(tiny_model("bert"))  # both models compute the same function
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
        calls = []
        model.bert.encoder.layer[0].output.dense.register_forward_hook(lambda *_: calls.append(1))
        nn.functional.cross_entropy(model(**tiny_inputs(model)).logits, torch.tensor([0, 1])).backward()
        return {n: p.grad for n, p in model.named_parameters() if "adaptkit" in n}, len(calls)

    grads, calls = adapter_grads(checkpointing=True)
    assert calls == 2, "the block ran again in the backward pass: checkpointing is on"
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    plain, plain_calls = adapter_grads(checkpointing=False)
    assert plain_calls == 1
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain[name])


def test_adapters_keep_fp32_on_a_16_bit_base_unless_asked_and_run_under_autocast():
    model = tiny_model("llama").to(torch.bfloat16)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    assert {p.dtype for n, p in model.named_parameters() if "adaptkit" in n} == {torch.float32}
    assert model(**tiny_inputs(model)).logits.dtype == torch.bfloat16
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, keep_fp32=False), name="narrow")
    assert {p.dtype for n, p in model.named_parameters() if ".narrow." in n} == {torch.bfloat16}
    assert model(**tiny_inputs(model)).logits.dtype == torch.bfloat16

    model32 = tiny_model("bert")
    adaptkit.add_adapter(model32, adaptkit.AdapterConfig.houlsby(size=8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model32(**tiny_inputs(model32)).logits
    out.float().sum().backward()
    assert all(p.grad is not None for n, p in model32.named_parameters() if "adaptkit" in n)


def test_generate_and_hidden_states_still_work():
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_config("gpt2")).eval()
    adaptkit.add_adapter(lm, adaptkit.AdapterConfig.houlsby(size=8))
    assert adaptkit.count_parameters(lm).trainable["head"] == 0, "a tied LM head is not a task head"
    ids = torch.tensor([[5, 6, 7]])
    out = lm.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 6)
    hidden = lm(ids, output_hidden_states=True).hidden_states
    assert len(hidden) == lm.config.num_hidden_layers + 1


def test_parameter_report_reads_as_a_table():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    report = adaptkit.count_parameters(model)
    text = str(report)
    assert "adapters" in text and "layernorms" in text and "head" in text
    data = report.to_dict()
    assert data["trainable"] == report.trainable_count
    assert json.dumps(data)
    assert 0 < report.trainable_percent < 100


def _owned_by(model, name: str) -> dict[str, bool]:
    """requires_grad of every tensor adapter ``name`` owns (its adapter weights, LayerNorms, head)."""
    return {n: p.requires_grad for n, p in model.named_parameters() if f".{name}." in n and "adaptkit" in n}


def test_an_adapter_added_without_activation_neither_runs_nor_trains():
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    train_steps(model, inputs)
    trained_a = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="b", activate=False)
    assert adaptkit.active_adapter(model) == "a" and torch.equal(logits(model, inputs), trained_a)
    assert not any(_owned_by(model, "b").values()) and all(_owned_by(model, "a").values())
    adaptkit.set_trainable_adapters(model, ["a", "b"])
    assert all(_owned_by(model, "b").values())
    adaptkit.set_trainable_adapters(model, None)  # back to the default: the active adapter trains
    assert not any(_owned_by(model, "b").values()) and all(_owned_by(model, "a").values())


def test_deleting_the_active_adapter_leaves_the_others_idle(tmp_path):
    model = tiny_model("bert")
    inputs = tiny_inputs(model)
    base = logits(model, inputs)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="b")
    train_steps(model, inputs)
    adaptkit.delete_adapter(model, "b")
    assert adaptkit.active_adapter(model) is None and list(adaptkit.list_adapters(model)) == ["a"]
    assert torch.equal(logits(model, inputs), base), "no active adapter: the base model computes"
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(adaptkit.AdapterError, match="no adapter is active"):
        adaptkit.save_adapter(model, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    adaptkit.save_adapter(model, tmp_path / "a", name="a")  # by name it still saves


def test_per_example_adapters_needs_a_name_per_example():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    with pytest.raises(adaptkit.AdapterError, match="got none"), adaptkit.per_example_adapters(model, []):
        pass
    with pytest.raises(adaptkit.AdapterError, match=r"unknown: \['x'\]; this model has: a"), \
            adaptkit.per_example_adapters(model, ["a", "x"]):
        pass


def test_adapter_dropout_acts_in_train_mode_only():
    model = without_dropout(tiny_model("bert"))  # only the adapter's dropout, added next, is left
    inputs = tiny_inputs(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, dropout=0.5, init_std=0.5), name="a")
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(**inputs).logits, model(**inputs).logits)
    model.eval()
    assert torch.equal(logits(model, inputs), logits(model, inputs))


def test_adaptkit_sets_only_its_own_parameters_trainable_after_the_first_freeze():
    """add_adapter freezes the model once; switching, disabling and mixing leave a parameter the user
    unfroze since (new token embeddings) as the user set it, and deleting the last adapter gives
    every parameter its trainability from before."""
    model = tiny_model("bert")
    model.classifier.weight.requires_grad_(False)
    original = {n: p.requires_grad for n, p in model.named_parameters()}
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="b")
    assert not any(p.requires_grad for n, p in model.named_parameters() if "adaptkit" not in n)
    embeddings = model.bert.embeddings.word_embeddings.weight
    embeddings.requires_grad_(True)
    with adaptkit.adapters_disabled(model):
        pass
    adaptkit.set_active_adapter(model, "a")
    adaptkit.set_trainable_adapters(model, ["a", "b"])
    with adaptkit.per_example_adapters(model, ["a", "b"]):
        pass
    assert embeddings.requires_grad
    assert all(_owned_by(model, "a").values()) and all(_owned_by(model, "b").values())
    adaptkit.delete_adapter(model, "a")
    adaptkit.delete_adapter(model, "b")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == original


def test_a_peft_model_is_refused_and_lora_added_after_keeps_its_trainability():
    from peft import LoraConfig, get_peft_model

    model = tiny_model("bert")
    lora = get_peft_model(tiny_model("bert"), LoraConfig(r=2, target_modules=["query"]))
    with pytest.raises(adaptkit.AdapterError, match="not on a PEFT PeftModel.*get_peft_model"):
        adaptkit.add_adapter(lora, adaptkit.AdapterConfig.houlsby(size=8))
    with pytest.raises(adaptkit.AdapterError, match="not on a model that already has PEFT layers"):
        adaptkit.add_adapter(lora.get_base_model(), adaptkit.AdapterConfig.houlsby(size=8))
    assert not any("adaptkit" in n for n, _ in lora.named_parameters())
    assert any(p.requires_grad for n, p in lora.named_parameters() if "lora_" in n)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="a")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["query"]))
    adaptkit.set_active_adapter(model, "a")  # PEFT froze every parameter but LoRA's
    with adaptkit.adapters_disabled(model):
        pass
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(".adaptkit.adapters.a." in n for n in trainable)
    assert all("lora_" in n or "adaptkit" in n for n in trainable)
