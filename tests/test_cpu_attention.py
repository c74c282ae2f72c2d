"""adaptkit.fast_cpu_attention: torch's attention with dropout (same masks, same function) in fewer
passes, only inside the block, only where it applies (test_cpu_kernels_in_train: train enters it)."""

import contextlib

import pytest
import torch
from transformers import AttentionInterface, AutoModelForSequenceClassification

from adaptkit.cpu_speed import attention as cpu_attention
from adaptkit.cpu_speed.attention import DropoutAttention, fast_cpu_attention
from tiny_models import tiny_config, tiny_inputs

B, H, T, D = 3, 4, 7, 8


def heads(seed: int) -> list[torch.Tensor]:
    """q, k, v as transformers passes them: (batch, heads, tokens, size) views of (batch, tokens, ...)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=generator).transpose(1, 2).requires_grad_() for _ in range(3)]


def padding_mask(dead_row: bool) -> torch.Tensor:
    mask = torch.rand(B, 1, T, T, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[..., 0] = True
    if dead_row:
        mask[1, 0, 4] = False  # a query that may attend to nothing
    return mask


def additive(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))


MASKS = {"none": lambda: None, "padding": lambda: padding_mask(False),
         "padding with a fully masked row": lambda: padding_mask(True),
         "float": lambda: torch.randn(B, 1, 1, T, generator=torch.Generator().manual_seed(3))}


@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_it_computes_torchs_math_path_with_the_same_mask(mask_kind):
    """Outputs and the gradients of q, k and v equal torch's own math attention given the mask
    ``bernoulli_`` draws from the same seed (its test hook ``dropout_mask``), to float32 rounding."""
    mask, p, scale = MASKS[mask_kind](), 0.25, 0.3
    ours, reference = heads(0), heads(0)
    bias, dead = cpu_attention._bias_and_dead_rows(mask, False, T, torch.float32)
    torch.manual_seed(5)
    out = DropoutAttention.apply(*ours, bias, dead, scale, p)
    torch.manual_seed(5)
    keep = torch.empty(B, H, T, T).bernoulli_(1 - p).bool()
    torch_mask = additive(mask) if mask is not None and mask.dtype == torch.bool else mask
    expected, _ = torch.ops.aten._scaled_dot_product_attention_math(
        *reference, torch_mask, p, False, keep, scale=scale)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    out.backward(grad)
    expected.backward(grad)
    assert torch.allclose(out, expected, atol=1e-6)
    for mine, theirs in zip(ours, reference):
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-5)
        assert mine.grad.abs().max() > 0.05  # the gradient is there to compare
    if mask_kind == "padding with a fully masked row":
        assert torch.all(out[1, :, 4] == 0) and torch.all(ours[0].grad[1, :, 4] == 0)


def test_dropout_is_applied_and_keeps_the_expectation():
    q, k, v = (x.detach() for x in heads(0))
    torch.manual_seed(0)
    outs = torch.stack([DropoutAttention.apply(q, k, v, None, None, 0.3, 0.5) for _ in range(4000)])
    no_dropout = torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1) @ v
    assert not torch.allclose(outs[0], outs[1])
    assert torch.allclose(outs.mean(0), no_dropout, atol=0.05)


def dropout_everywhere(model_type: str, **overrides):
    config = tiny_config(model_type)
    for name in ("attention_dropout", "attention_probs_dropout_prob", "attn_pdrop", "dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.3)
    for name, value in overrides.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).train()


def loss_and_grads(model, inputs, seed: int, context) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(seed)
    with context:
        loss = model(**inputs, labels=torch.tensor([0, 1])).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def count_fast_calls(monkeypatch) -> list[int]:
    calls = []
    apply = DropoutAttention.apply
    monkeypatch.setattr(DropoutAttention, "apply", lambda *a: (calls.append(1), apply(*a))[1])
    return calls


@pytest.mark.parametrize("model_type, overrides, padded", [
    ("bert", {}, True), ("roberta", {}, True), ("gpt2", {}, True),
    ("gpt2", {}, False),  # no mask at all: sdpa's is_causal
    ("bart", {}, True),  # a causal decoder and cross-attention
    ("llama", {"num_key_value_heads": 2}, True),  # grouped-query attention
])
def test_a_training_step_is_the_same_with_and_without_it(model_type, overrides, padded, monkeypatch):
    """Same seed, same model: the loss and every gradient agree with torch's attention to float32
    rounding (the dropout masks are the same draws); the padding leaves causal rows empty."""
    model = dropout_everywhere(model_type, **overrides)
    inputs = tiny_inputs(model)
    if padded:
        inputs["attention_mask"][0, :3] = 0
    reference = loss_and_grads(model, inputs, 3, contextlib.nullcontext())
    calls = count_fast_calls(monkeypatch)
    loss, grads = loss_and_grads(model, inputs, 3, fast_cpu_attention())
    assert calls  # it did run
    assert torch.allclose(loss, reference[0], atol=1e-6)
    assert grads.keys() == reference[1].keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, reference[1][name], atol=2e-6), name
    other_seed, _ = loss_and_grads(model, inputs, 4, fast_cpu_attention())
    assert not torch.allclose(other_seed, loss)  # the masks are drawn, not fixed


@pytest.mark.parametrize("case", ["eval mode", "bf16", "trained position bias (T5)", "weights requested"])
def test_what_it_does_not_cover_goes_to_torch_unchanged(case, monkeypatch):
    model = dropout_everywhere("t5" if "T5" in case else "bert")
    inputs = tiny_inputs(model)
    kwargs = {}
    if case == "eval mode":
        model.eval()
    elif case == "bf16":
        model.to(torch.bfloat16)
    elif case == "weights requested":
        kwargs["output_attentions"] = True
    calls = count_fast_calls(monkeypatch)
    outputs = []
    for context in (contextlib.nullcontext(), fast_cpu_attention()):
        torch.manual_seed(7)
        with context, torch.no_grad():
            outputs.append(model(**inputs, **kwargs).logits)
    assert not calls
    assert torch.equal(*outputs)


def test_a_mask_that_trains_goes_to_the_replaced_function():
    seen = []

    def replaced(*args, **kwargs):
        seen.append(kwargs)
        return "replaced"
    routed = cpu_attention._routed(replaced)
    q, k, v = heads(0)
    bias = torch.zeros(B, 1, T, T, requires_grad=True)
    module = torch.nn.Module()
    assert routed(module, q, k, v, bias, dropout=0.1, scaling=0.3) == "replaced"
    assert routed(module, q, k, v, None, dropout=0.0, scaling=0.3) == "replaced"
    assert routed(module, q, k, v, None, dropout=0.1, scaling=0.3)[0].shape == (B, T, H, D)
    assert seen == [{"dropout": 0.1, "scaling": 0.3}, {"dropout": 0.0, "scaling": 0.3}]  # passed on as given


def test_nested_blocks_and_an_error_restore_what_was_there():
    original = AttentionInterface._global_mapping["sdpa"]
    with pytest.raises(KeyError):
        with fast_cpu_attention():
            outer = AttentionInterface._global_mapping["sdpa"]
            assert outer is not original
            with fast_cpu_attention():
                assert AttentionInterface._global_mapping["sdpa"] not in (original, outer)
            assert AttentionInterface._global_mapping["sdpa"] is outer
            raise KeyError("stop")
    assert AttentionInterface._global_mapping["sdpa"] is original


def test_a_users_own_sdpa_function_is_what_it_falls_back_to(monkeypatch):
    """A function registered as "sdpa" before the block gets every call the block does not take,
    and is registered again afterwards."""
    seen = []
    original = AttentionInterface._global_mapping["sdpa"]

    def mine(*args, **kwargs):
        seen.append(kwargs.get("dropout"))
        return original(*args, **kwargs)
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", mine)
    model = dropout_everywhere("bert")
    inputs = tiny_inputs(model)
    with fast_cpu_attention():
        model(**inputs)  # training: the block's own path
        assert not seen
        model.eval()(**inputs)
        assert seen == [0.0, 0.0]  # both layers, in eval mode
    assert AttentionInterface._global_mapping["sdpa"] is mine
