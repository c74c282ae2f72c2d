"""The default schedule, set by optimizer steps rather than epochs alone.

A small dataset at batch 32 for 3 epochs gets a few dozen optimizer steps: too few for a new
head and adapters to leave the majority class (300 rows: 30 steps, one class predicted for every
dev row). So, unless the user sets them, the batch is small for small data and the epochs are as
many as it takes to reach a minimum number of steps. Imports nothing heavy: ``--help`` states it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: Below this many training rows the default batch is SMALL_BATCH, from it on LARGE_BATCH.
SMALL_DATA_ROWS = 2000
SMALL_BATCH, LARGE_BATCH = 8, 32
#: The default epochs: at least MIN_EPOCHS, and more until MIN_STEPS optimizer steps, at most MAX_EPOCHS.
MIN_EPOCHS, MIN_STEPS, MAX_EPOCHS = 3, 300, 20

HELP = (f"default: batch {SMALL_BATCH} below {SMALL_DATA_ROWS:,} training rows, else {LARGE_BATCH}; epochs: "
        f"{MIN_EPOCHS}, or more until {MIN_STEPS} optimizer steps (at most {MAX_EPOCHS} epochs)")


@dataclass(frozen=True)
class Schedule:
    """What a run trains for; ``automatic`` names the settings the defaults chose."""

    batch_size: int
    epochs: int
    steps_per_epoch: int
    automatic: tuple[str, ...]

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def to_dict(self) -> dict:
        return {**asdict(self), "automatic": list(self.automatic), "steps": self.steps}

    def describe(self) -> str:
        chosen = f" ({' and '.join(self.automatic)} by the small-data defaults)" if self.automatic else ""
        return f"{self.epochs} epochs at batch {self.batch_size}: {self.steps} optimizer steps{chosen}"


def schedule(rows: int, batch_size: int | None, epochs: int | None, grad_accum: int = 1) -> Schedule:
    """The batch (per process) and epochs for ``rows`` training rows; given values are kept."""
    automatic = tuple(name for name, value in (("batch", batch_size), ("epochs", epochs)) if value is None)
    if batch_size is None:
        batch_size = SMALL_BATCH if rows < SMALL_DATA_ROWS else LARGE_BATCH
    steps_per_epoch = math.ceil(math.ceil(rows / batch_size) / grad_accum)
    if epochs is None:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
    return Schedule(batch_size, epochs, steps_per_epoch, automatic)
