"""Which modules FSDP1 wraps as their own units, so trained and frozen tensors never share one."""

from __future__ import annotations

import functools

from torch import nn

from .model import _require_state


def fsdp_auto_wrap_policy(model: nn.Module):
    """An ``auto_wrap_policy`` for ``FullyShardedDataParallel`` (and accelerate's FSDP plugin):
    each module that holds an adapter's or a fusion's parameters (its projections, its
    LayerNorm and head copies) is a unit of its own, and so is each of the model's transformer blocks
    (``_no_split_modules``). FSDP1 flattens a unit's parameters into one, which with
    ``use_orig_params=False`` must be all trained or all frozen; this way every unit is. Add the
    adapters first. FSDP2 (``fully_shard``) needs no policy: shard each block, then the model."""
    from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy, transformer_auto_wrap_policy

    state = _require_state(model)
    holders = {id(module) for entry in [*state.adapters.values(), *state.fusions.values()]
               for owner in [*entry.site_modules.values(), *entry.own_copies.values()]
               for module in owner.modules() if any(True for _ in module.parameters(recurse=False))}
    block_names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = {type(m) for m in model.modules() if type(m).__name__ in block_names}
    return functools.partial(_or_policy, policies=[
        functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda module: id(module) in holders),
        functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=blocks),
    ])
