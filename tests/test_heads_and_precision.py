"""What an adapter trains beside itself: task heads yes, vocabulary heads no; fp32 on 16-bit bases."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import adaptkit
from tiny_models import tiny_config, tiny_inputs, tiny_model


def untied_lm(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    config = tiny_config("llama")
    config.tie_word_embeddings = False
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def test_untied_lm_head_is_no_task_head_by_default(tmp_path):
    model = untied_lm()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    report = adaptkit.count_parameters(model)
    assert report.total["vocab_head"] == model.lm_head.weight.numel() > 0
    assert report.trainable["vocab_head"] == 0 and report.trainable["head"] == 0
    assert not model.lm_head.weight.requires_grad
    assert "vocab_head" in str(report)
    adaptkit.save_adapter(model, tmp_path)
    with safe_open(str(tmp_path / adaptkit.WEIGHTS_NAME), "pt") as handle:
        assert not any("lm_head" in key for key in handle.keys())


def test_vocab_head_trains_when_asked_as_the_adapters_own_copy(tmp_path):
    model = untied_lm()
    inputs = tiny_inputs(model)
    base_head = model.lm_head.weight.detach().clone()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="plain")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8, train_vocab_head=True), name="vocab")
    own = model.lm_head.adaptkit_task.values["vocab"].weight
    assert own.requires_grad and not model.lm_head.weight.requires_grad
    assert adaptkit.count_parameters(model).trainable["vocab_head"] == own.numel()
    with torch.no_grad():
        own.add_(1.0)
    vocab_logits = model(**inputs).logits
    adaptkit.set_active_adapter(model, "plain")
    assert torch.equal(model.lm_head.weight, base_head)
    assert not torch.allclose(model(**inputs).logits, vocab_logits)
    adaptkit.save_adapter(model, tmp_path, name="vocab")
    fresh = untied_lm()
    adaptkit.load_adapter(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, vocab_logits)
    assert torch.equal(fresh.lm_head.weight, base_head)


def test_bf16_base_adapters_move_after_a_small_step_and_the_file_says_so(tmp_path):
    model = untied_lm(dtype=torch.bfloat16)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    adapters = {n: p for n, p in model.named_parameters() if ".adaptkit." in n}
    assert {p.dtype for p in adapters.values()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in adapters.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = tiny_inputs(model)["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    moved = [n for n, p in adapters.items() if not torch.equal(p, before[n])]
    assert len(moved) == len(adapters), "every adapter tensor moves after one step at lr 1e-4"
    adaptkit.save_adapter(model, tmp_path / "fp32")
    meta = json.loads((tmp_path / "fp32" / adaptkit.CONFIG_NAME).read_text())
    assert meta["dtypes"] == {"base": "bfloat16", "trained": "float32", "file": "float32"}
    adaptkit.save_adapter(model, tmp_path / "bf16", dtype=torch.bfloat16)
    with safe_open(str(tmp_path / "bf16" / adaptkit.WEIGHTS_NAME), "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.bfloat16}
    fresh = untied_lm(dtype=torch.bfloat16)
    adaptkit.load_adapter(fresh, tmp_path / "fp32")
    for name, param in fresh.named_parameters():
        if name in adapters:
            assert torch.equal(param, adapters[name]), name


@pytest.mark.parametrize("fixture, build", [
    ("format1_bert", lambda: tiny_model("bert")),
    ("format1_llama_causal", lambda: untied_lm()),
])
def test_format_1_checkpoints_still_load_and_compute_the_same(fixture, build):
    """The same up to float32 rounding: the expected logits were written on another CPU, whose
    kernels round differently in the last bits (its vector capability was not recorded; this
    machine's is AVX2); the tolerance stays far below what the loaded adapter changes, so an
    adapter not applied cannot pass."""
    directory = Path(__file__).parent / "fixtures" / fixture
    model = build()
    inputs = tiny_inputs(model)
    with torch.no_grad():
        base = model(**inputs).logits
    adaptkit.load_adapter(model, directory)
    expected = load_file(directory / "expected_logits.safetensors")["logits"]
    tolerance = 1e-5
    assert (expected - base).abs().max() > 100 * tolerance
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expected, atol=tolerance, rtol=0)
