"""Attention with dropout on the CPU in fewer passes over the attention probabilities.

With dropout on (training), torch's CPU ``scaled_dot_product_attention`` cannot use its fused kernel
and runs its math path: three extra passes over the scores to find fully masked rows, a float dropout
mask scaled in a pass of its own, and three score-sized tensors kept for backward (the
probabilities, the mask and the dropped probabilities). Inside ``fast_cpu_attention()``,
transformers' "sdpa" attention on float32 CPU tensors with dropout runs :class:`DropoutAttention`
instead: the same function (the same dropout mask, from the same draw of the same generator), with
the masked rows found on the small mask, the dropout scale applied to the output, two score-sized
tensors kept for backward and its gradient in three passes. Everything else goes to the function it
replaced. benchmarks/overhead.py times training steps with and without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv

_SDPA = "sdpa"


class DropoutAttention(torch.autograd.Function):
    """``softmax(scale * q k^T + bias)`` with dropout, times ``v``; rows in ``dead_rows`` are all 0.

    The dropout mask is ``empty_like(probabilities).bernoulli_(1 - p)``, torch's own dropout draw,
    so a seeded run draws the masks torch's math path would. Kept for backward: q, k, v, the
    probabilities and the dropped probabilities (unscaled)."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                bias: torch.Tensor | None, dead_rows: torch.Tensor | None, scale: float, p: float) -> torch.Tensor:
        scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
        if bias is not None:
            scores.add_(bias)
        probs = torch.softmax(scores, dim=-1)
        del scores
        if dead_rows is not None:
            probs.masked_fill_(dead_rows, 0.0)  # what torch's _safe_softmax gives a fully masked row
        dropped = torch.empty_like(probs).bernoulli_(1 - p).mul_(probs)
        ctx.save_for_backward(query, key, value, probs, dropped)
        ctx.scale, ctx.keep_scale = scale, 1 / (1 - p)
        return torch.matmul(dropped, value).mul_(ctx.keep_scale)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, probs, dropped = ctx.saved_tensors
        grad_query = grad_key = grad_value = None
        if ctx.needs_input_grad[2]:
            grad_value = torch.matmul(dropped.transpose(-2, -1), grad_out).mul_(ctx.keep_scale)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # softmax's backward is probs * (g - rowsum(probs * g)) with g = (grad_out v^T) * mask / (1-p),
            # and probs * mask is the dropped probabilities: (1-p) * probs * g is ``kept`` below.
            kept = torch.matmul(grad_out, value.transpose(-2, -1)).mul_(dropped)
            grad_scores = kept.addcmul_(probs, kept.sum(-1, keepdim=True), value=-1)
            factor = ctx.scale * ctx.keep_scale
            if ctx.needs_input_grad[0]:
                grad_query = torch.matmul(grad_scores, key).mul_(factor)
            if ctx.needs_input_grad[1]:
                grad_key = torch.matmul(grad_scores.transpose(-2, -1), query).mul_(factor)
        return grad_query, grad_key, grad_value, None, None, None, None


def _bias_and_dead_rows(mask: torch.Tensor | None, causal: bool, length: int,
                        dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The additive bias of a boolean (True attends) or float mask, or of a causal one, and the rows
    it masks entirely (None when none), both at the mask's own small shape."""
    if causal:
        return torch.full((length, length), float("-inf"), dtype=dtype).triu_(1), None
    if mask is None:
        return None, None
    if mask.dtype == torch.bool:
        bias = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, float("-inf"))
        dead = ~mask.any(dim=-1, keepdim=True)
    else:
        bias, dead = mask, torch.isneginf(mask).all(dim=-1, keepdim=True)
    return bias, (dead if dead.any() else None)


def _fast_path_causal(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      mask: torch.Tensor | None, kwargs: dict[str, Any]) -> bool | None:
    """None where the call goes to the replaced function; else whether it is causal, decided as
    transformers' sdpa function decides it."""
    if not 0 < kwargs.get("dropout", 0.0) < 1 or kwargs.get("softcap") is not None:
        return None
    if kwargs.get("output_attentions") or kwargs.get("position_bias") is not None:
        return None
    if torch.compiler.is_compiling() or query.dim() != 4:
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (query, key, value)):
        return None
    groups = getattr(module, "num_key_value_groups", 1)
    if key.shape[1] * groups != query.shape[1]:
        return None
    q_length, kv_length = query.shape[2], key.shape[2]
    is_causal = kwargs.get("is_causal")
    causal = bool((is_causal if is_causal is not None else getattr(module, "is_causal", True))
                  and q_length > 1 and mask is None)
    if causal and kv_length != q_length:
        return None
    if mask is not None:
        scores_shape = (query.shape[0], query.shape[1], q_length, kv_length)
        if (mask.requires_grad or mask.dtype not in (torch.bool, torch.float32)
                or _broadcast(mask.shape, scores_shape) != scores_shape):
            return None
    return causal


def _broadcast(shape: torch.Size, target: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return tuple(torch.broadcast_shapes(shape, target))
    except RuntimeError:
        return None


def _routed(replaced: Callable[..., Any]) -> Callable[..., Any]:
    """transformers' attention-function signature: float32 CPU attention with dropout through
    :class:`DropoutAttention`, every other call to ``replaced``."""

    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        causal = None if args else _fast_path_causal(module, query, key, value, attention_mask, kwargs)
        if causal is None:
            return replaced(module, query, key, value, attention_mask, *args, **kwargs)
        groups = getattr(module, "num_key_value_groups", 1)
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
        bias, dead_rows = _bias_and_dead_rows(attention_mask, causal, query.shape[2], query.dtype)
        scaling = kwargs.get("scaling")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = DropoutAttention.apply(query, key, value, bias, dead_rows, scale, kwargs["dropout"])
        return out.transpose(1, 2).contiguous(), None

    return attention


@contextlib.contextmanager
def fast_cpu_attention() -> Iterator[None]:
    """Within the block, models that use transformers' "sdpa" attention (its default on the CPU)
    run float32 CPU attention with dropout through :class:`DropoutAttention`.

    The same outputs and gradients as torch's math path to float32 rounding, with the same dropout
    masks; eval mode, GPUs, bf16 and fp16, trained position biases and requested attention weights
    go to the function it replaced. It replaces the function process-wide until the block ends, as
    a model-local ``attn_implementation`` could not for models loaded elsewhere: enter it from one
    thread. Blocks nest; each exit, by error too, puts back what its entry found."""
    replaced = AttentionInterface._global_mapping[_SDPA]
    AttentionInterface.register(_SDPA, _routed(replaced))
    try:
        yield
    finally:
        AttentionInterface.register(_SDPA, replaced)
