"""Keep freed CPU memory in the process for the next training step (glibc malloc settings).

By default glibc hands large freed blocks back to the kernel, and the next step faults them back
in page by page. A training step frees and re-allocates its activations every time, so on the CPU
those page faults cost a share of every step that grows with the activations kept for backward
(benchmarks/overhead.py records the faults per step with and without). Process-wide, so adaptkit
never applies it on its own: ``adaptkit-glue train`` and ``compare`` call it, library users call it
once before training.
"""

from __future__ import annotations

import ctypes
import platform

# glibc's mallopt parameters (malloc.h) and its ceiling for the mmap threshold on 64-bit (32 MiB);
# 32-bit glibc refuses this value, and then nothing is changed.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel after each step.

    Sets ``M_MMAP_THRESHOLD`` to its maximum (32 MiB on 64-bit: blocks below it come from the
    reusable heap, not fresh mappings; larger ones are still mapped afresh) and
    ``M_TRIM_THRESHOLD`` to -1 (never shrink the heap).
    Results do not change (the allocator only decides where tensors live); the cost is that the
    process's resident memory stays at its peak instead of shrinking between steps. Returns False,
    changing nothing, where the C library is not glibc (macOS, Windows, musl) or refuses the value."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: it is the one glibc can refuse, and a refusal leaves everything as it was.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and mallopt(_M_TRIM_THRESHOLD, -1))
