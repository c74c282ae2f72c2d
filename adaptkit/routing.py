"""Which adapter a forward runs, decided per call and per thread, never by writing to the model.

A model's routing is one value: an adapter's name, ``None`` (the base model) or ``RowGroups``
(each example its own adapter). ``AdapterState.current()`` reads it from a context variable that
``using`` / ``adapters_disabled`` / ``per_example_adapters`` set for the calling thread (or asyncio
task) alone, else from the model's default (``set_active_adapter``). The hooks that run adapters
read it on every call, so two threads with different adapters share one model and its modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .errors import AdapterError


@dataclass(frozen=True)
class RowGroups:
    """Per-example routing: the rows of a batch of ``size`` that each adapter runs on (rows of
    no group run the base model)."""

    size: int
    groups: tuple[tuple[str, torch.Tensor], ...]

    def check_rows(self, value: object, where: str) -> None:
        """Refuse an output whose first dimension is not this batch (beam search expands it)."""
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != self.size:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise AdapterError(
                f"per_example_adapters names {self.size} examples, but {where} gave {shape}: mixed "
                "batches need every adapted module's output batch-first and unexpanded. A tensor the "
                "whole batch shares (DeBERTa's relative position embeddings, which a trained LayerNorm "
                "normalises) cannot be split by example: run one adapter at a time (adaptkit.using), "
                "or mix adapters that leave that module frozen (train_layernorms=False). Beam search and "
                "num_return_sequences > 1 expand the batch: decode greedily")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.groups)


Routing = Union[str, RowGroups, None]


def routed_names(routing: Routing) -> tuple[str, ...]:
    """The adapters a routing runs."""
    if isinstance(routing, RowGroups):
        return routing.names
    return () if routing is None else (routing,)
