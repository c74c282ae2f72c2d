"""``generate`` under a ``Parallel``: each child's continuation of one batch, as AdapterHub's.

A ``Parallel`` copies the batch at the model's input, but ``generate`` keeps its own state per row
(the tokens so far, which rows finished, the cache) for the batch it was given. So, as AdapterHub
does, the batch is copied once before ``generate`` starts, and its forwards run on the copies as
they are.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import AdapterError
from .layer import repeat_rows
from .model import _require_state, using
from .routing import Composition


def generate_parallel(model: nn.Module, block: Composition, **inputs: Any) -> Any:
    """``model.generate(**inputs)`` with ``block`` (a ``Parallel``, or a composition holding one)
    routing; every batch-first input (``input_ids``, ``attention_mask``...) is copied once per child
    first. Returns what ``generate`` returns, with n·B rows: child ``i``'s at ``i·B .. (i+1)·B − 1``."""
    if not isinstance(block, Composition) or block.channels == 1:
        raise AdapterError(f"generate_parallel runs a Parallel, got {block!r}: for one adapter or a composition "
                           "without a Parallel, call model.generate inside adaptkit.using(model, ...)")
    state = _require_state(model, block)
    if not any(inputs.get(k) is not None for k in ("input_ids", "inputs_embeds")):
        raise AdapterError("generate_parallel needs the batch as input_ids= (or inputs_embeds=), to copy it per child")
    _, copied = repeat_rows(((), inputs), block.channels)
    token = state.copied_var.set(True)
    try:
        with using(model, block):
            return model.generate(**copied)
    finally:
        state.copied_var.reset(token)
