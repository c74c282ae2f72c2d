"""Opt-in speed tools for training on the CPU: process-wide torch and glibc settings, not adapters.

Nothing in adaptkit's adapter core imports this package, so a library user who never calls these
gets no patch of torch and no change to the C library. ``adaptkit-glue train`` and ``compare`` use
them on CPU runs (each with an opt-out flag, recorded in ``run_config.json``):

- ``fast_cpu_attention()``: while the block is active, transformers' "sdpa" attention on float32
  CPU tensors with dropout runs adaptkit's own autograd Function (same function, same masks).
- ``fast_cpu_dropout()``: while the block is active, ``Tensor.bernoulli_`` with a float ``p`` on
  CPU tensors is replaced process-wide by a bulk draw (same distribution, other masks).
- ``reuse_freed_memory()``: glibc keeps freed memory for the next step (``mallopt``), for the rest
  of the process.
"""

from .attention import fast_cpu_attention
from .dropout import fast_cpu_dropout
from .memory import reuse_freed_memory

__all__ = ["fast_cpu_attention", "fast_cpu_dropout", "reuse_freed_memory"]
