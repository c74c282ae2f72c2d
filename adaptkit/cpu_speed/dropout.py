"""Dropout masks drawn in bulk on the CPU: the same Bernoulli distribution in under half the time.

torch's CPU kernel for ``bernoulli_`` draws a mask element by element, a cost every training method
pays alike and GPUs do not (benchmarks/investigations/dropout_masks.py times both kernels; benchmarks/overhead.py
runs its training steps with either). Inside ``fast_cpu_dropout()``, ``bernoulli_(p)`` with a
float ``p`` on CPU tensors (what ``nn.Dropout``, ``F.dropout`` and the attention's dropout call, and
``torch.bernoulli(x, p)``) draws 64 random bits at a time from the same generator and compares each
32-bit half with ``p``: one Bernoulli(p) draw per 32 bits, exact to 2^-32. Seeded runs stay
reproducible; they draw other masks than torch's kernel, so results differ from runs without it as
two seeds differ.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

_HALF = 2 ** 31  # a 32-bit draw is uniform on [-2^31, 2^31)
_CHUNK = 1 << 20  # draws made at a time: 5 MiB of temporary buffers for a contiguous mask of any size
assert _CHUNK % 2 == 0  # an even chunk uses whole 64-bit words, so chunks draw the masks of one go


def _bernoulli_(self: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """``self.bernoulli_(p)`` for a float ``p``: 1 with probability ``p``, from 32 random bits each.

    The draws come in chunks of an even size, so the masks are the same as drawn in one go."""
    if not 0 <= p <= 1:
        raise RuntimeError(f"bernoulli_ expects p to be in [0, 1], but got p={p}")
    if self.is_complex():
        raise NotImplementedError(f'"bernoulli_scalar_cpu_" not implemented for {self.dtype}')
    if any(stride == 0 and size > 1 for size, stride in zip(self.shape, self.stride())):
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a "
                           "single memory location. Please clone() the tensor before performing the operation.")
    threshold = round(p * 2 ** 32) - _HALF  # P(draw < threshold) = p, to within 2^-32
    if threshold >= _HALF:
        return self.fill_(1)
    target = self if self.is_contiguous() else torch.empty(self.shape, dtype=self.dtype)  # full size, once
    flat = target.view(-1)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start:start + _CHUNK]
        words = torch.empty((part.numel() + 1) // 2, dtype=torch.int64)
        words.random_(-2 ** 63, None, generator=generator)  # all 64 bits uniform: two 32-bit draws each
        part.copy_(words.view(torch.int32)[:part.numel()] < threshold)
    return self if target is self else self.copy_(target)


@contextlib.contextmanager
def fast_cpu_dropout() -> Iterator[None]:
    """Within the block, CPU dropout masks come from :func:`_bernoulli_` instead of torch's kernel.

    It replaces torch's CPU kernel for ``bernoulli_(float p)`` process-wide until the block ends
    (every thread sees it: do not enter it around code that must draw torch's own numbers). Blocks
    nest, and each exit, by error too, removes only its own replacement. GPU tensors keep torch's
    kernels, and ``torch.bernoulli(probabilities)`` (a tensor of p) is not affected. Enter it from
    one thread: ``warnings.catch_warnings`` around the registration is not thread-safe."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that a kernel is overridden: that is the point
            library.impl("bernoulli_.float", _bernoulli_, "CPU")
        yield
    finally:
        # Library's own way to unregister (private, in torch since 2.1; torch.library._scoped_library
        # uses it): the kernel registered before this block is the active one again.
        library._destroy()
