"""What the cost benchmarks (overhead.py, efficiency.py) measure with: a fixed batch and a peak RSS.

Only torch at module level: efficiency.py's AdapterHub worker imports this under transformers 4.57.
"""

from __future__ import annotations

from pathlib import Path

import torch

TOKEN_RANGE = (1000, 30000)


def random_batch(batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids and binary labels: content does not change the cost of a dense encoder."""
    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(*TOKEN_RANGE, (batch, seq_len), generator=gen),
            "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,), generator=gen)}


def vm_hwm_bytes() -> int:
    """This process's peak RSS from ``VmHWM`` in /proc/self/status.

    Not ``ru_maxrss``: on Linux that survives execve, so a child started by a large parent reports
    the parent's peak until it exceeds it."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
