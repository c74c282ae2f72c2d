"""Adapters beside the engines that replicate or shard a model: DDP, FSDP (1 and 2), DeepSpeed.

The order that works with every engine: add (or load) the adapters and choose which one trains,
then wrap or shard the model (``accelerator.prepare``, ``fully_shard``, ``deepspeed.initialize``),
then build the optimizer. What would break that order silently is refused here, by name:

- adding, loading or deleting adapters on a model whose parameters are already sharded (FSDP's
  DTensors or flat parameters, ZeRO-3's partitions): the engine would never shard the new ones;
- changing which adapter trains once DDP or DeepSpeed has fixed the parameters it synchronises
  (ranks would drift apart, or the new adapter would never be stepped). FSDP2 reduces whatever has
  a gradient, so switching there works (the model is resharded first, so the change reaches the
  sharded parameters).

Saving reads each tensor whole: ``whole_tensors`` gathers the shards (a collective: every rank
calls ``save_adapter``, rank 0 writes), or reads them from a gathered state dict.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from .errors import AdapterError
from .params import PEFT_PREFIX

ORDER = ("add and load the adapters and choose which one trains, then wrap or shard the model "
         "(accelerator.prepare, fully_shard, FullyShardedDataParallel, deepspeed.initialize), then "
         "build the optimizer")
_DRIFT_FIX = (f"The order that works: {ORDER}. To evaluate another adapter on the wrapped model, route "
              "to it without training it: `with adaptkit.using(model, name):`")
#: What wrappers put into parameter names: FSDP1's module and activation-checkpointing wrappers,
#: torch.compile's original module.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
#: Wrapper prefixes of a state dict taken from a wrapper rather than the model (DDP, DeepSpeed,
#: PEFT).
_STATE_DICT_PREFIXES = ("module.", PEFT_PREFIX)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside DDP, FSDP1, DeepSpeed, torch.compile and PEFT wrappers."""
    while True:
        kind = type(model)
        if kind.__name__ in ("DistributedDataParallel", "FullyShardedDataParallel", "DeepSpeedEngine") \
                and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif kind.__module__.startswith("peft.") and callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
        else:
            return model


def class_name(model: nn.Module) -> str:
    """The model's own class name (FSDP2's ``fully_shard`` makes it ``FSDP<class>``)."""
    kind = type(model)
    if any(base.__name__ == "FSDPModule" for base in kind.__mro__[1:]):
        kind = next(base for base in kind.__bases__ if base.__name__ != "FSDPModule")
    return kind.__name__


def clean_name(name: str) -> str:
    """A parameter's name in the model as built, without wrapper segments."""
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


# -- what has been done to the model -----------------------------------------------------------
def sharded_by(model: nn.Module) -> str | None:
    """The engine whose shards replaced this model's parameters, if any."""
    from torch.distributed.tensor import DTensor

    for param in model.parameters():
        if isinstance(param, DTensor):
            return "FSDP2 (fully_shard)"
        if hasattr(param, "ds_id"):
            return "DeepSpeed ZeRO-3"
        if type(param).__name__ == "FlatParameter" or getattr(param, "_fsdp_flattened", False):
            return "FSDP (FullyShardedDataParallel)"
    return None


def refuse_sharded(model: nn.Module, action: str) -> None:
    engine = sharded_by(model)
    if engine is not None:
        raise AdapterError(
            f"cannot {action}: this model's parameters are already sharded by {engine}, which "
            f"would never shard or gather the adapter's. The order that works: {ORDER}")


class TrainingFixedBy:
    """Remembers the DDP wrapper seen running the model (DDP marks only its own forward), and finds
    a DeepSpeed engine by the hook it puts on the model: both fix, when they are built, which
    parameters they synchronise."""

    def __init__(self) -> None:
        self.ddp: Callable[[], nn.Module | None] = lambda: None
        self.checked: tuple[int, int] | None = None  # (wrapper id, choice generation) verified

    def engine(self, model: nn.Module) -> str | None:
        if self.ddp() is not None:
            return "DistributedDataParallel"
        hooks = [*model._forward_pre_hooks.values(), *model._forward_hooks.values()]
        if any(getattr(h, "__qualname__", "").startswith("DeepSpeedEngine.") for h in hooks):
            return "DeepSpeed"
        if any(type(p).__name__ == "FlatParameter" for p in model.parameters()):
            return "FSDP (FullyShardedDataParallel) with use_orig_params=False"
        return None

    def refuse(self, model: nn.Module, action: str, would_train: list[nn.Parameter] | None) -> None:
        """Refuse a change after which ``would_train`` train (None: new parameters), unless the
        engine synchronises exactly those (DDP records their number and bytes; under DeepSpeed and
        FSDP1 any change is refused)."""
        engine = self.engine(model)
        ddp = self.ddp()
        if engine is None or (would_train is not None and ddp is not None and _ddp_reduces(ddp, would_train)):
            return
        raise AdapterError(
            f"cannot {action}: {engine} wraps this model and synchronises only the parameters "
            "that trained when it was built, so the ranks would silently drift apart (or the "
            f"newly trained adapter would never be stepped). {_DRIFT_FIX}")

    def check_forward(self, model: nn.Module, generation: int) -> None:
        """At a forward under DDP: the parameters that train now must be those DDP reduces (a change
        between wrapping and this forward would otherwise go unnoticed)."""
        ddp = torch.nn.parallel.DistributedDataParallel._get_active_ddp_module()
        if ddp is None or not torch.is_grad_enabled():
            return
        if self.ddp() is not ddp:
            if not any(m is model for m in ddp.module.modules()):
                return
            self.ddp = weakref.ref(ddp)
        if self.checked == (id(ddp), generation):
            return
        trained = [p for p in ddp.module.parameters() if p.requires_grad]
        if not _ddp_reduces(ddp, trained):
            raise AdapterError(
                f"the parameters that train changed after DistributedDataParallel wrapped this model "
                f"(it reduces {ddp._get_ddp_logging_data().get('num_parameter_tensors')} tensors, "
                f"{len(trained)} train now): the ranks would silently drift apart. {_DRIFT_FIX}")
        self.checked = (id(ddp), generation)


def _ddp_reduces(ddp: nn.Module, trained: list[nn.Parameter]) -> bool:
    """Whether these are the parameters DDP reduces: as many tensors, as many bytes, as it
    recorded when it was built (it keeps no list)."""
    ignored = {id(p) for n, p in ddp.module.named_parameters() if n in ddp.parameters_to_ignore}
    unique = {id(p): p for p in trained if id(p) not in ignored}
    logged = ddp._get_ddp_logging_data()
    return (len(unique), sum(p.numel() * p.element_size() for p in unique.values())) == (
        logged.get("num_parameter_tensors"), logged.get("total_parameter_size_bytes"))


def reshard(model: nn.Module) -> None:
    """FSDP2 may leave a module unsharded after a forward without gradients, with its full
    parameters registered in place of the sharded ones: a ``requires_grad`` change made then would
    be lost at the next reshard, so the sharded ones are put back first."""
    for module in model.modules():
        if callable(getattr(module, "reshard", None)) and type(module).__name__.startswith("FSDP"):
            module.reshard()


# -- reading tensors whole ----------------------------------------------------------------------
@contextlib.contextmanager
def whole_tensors(model: nn.Module, outer: nn.Module, state_dict: Mapping[str, torch.Tensor] | None,
                  engine: str | None) -> Iterator[Callable[[str], torch.Tensor]]:
    """Inside, ``tensor(name)`` gives the whole value of the model's parameter ``name`` (its name as
    built). From ``state_dict`` when given (gathered beforehand, e.g. ``accelerator.get_state_dict``),
    else from the model, gathering shards: FSDP2's and ZeRO-3's one tensor at a time, FSDP1's flat
    parameters all at once (``summon_full_params``); ``engine`` is ``sharded_by(model)``. Gathering
    is a collective: every rank must get here."""
    if state_dict is not None:
        yield _from_state_dict(state_dict)
        return
    params = {clean_name(n): p for n, p in model.named_parameters()}
    if engine == "DeepSpeed ZeRO-3":
        yield lambda name: _gathered_zero3(params[name])
        return
    if engine == "FSDP (FullyShardedDataParallel)":
        if type(outer).__name__ != "FullyShardedDataParallel":
            raise AdapterError(
                "this model is sharded by FSDP (FullyShardedDataParallel): pass the FSDP-wrapped model "
                "itself to save_adapter (on every rank), or a gathered state dict: "
                "save_adapter(model, directory, state_dict=accelerator.get_state_dict(model))")
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(outer, writeback=False):
            params = {clean_name(n): p for n, p in outer.named_parameters()}
            yield lambda name: params[name]
        return
    yield lambda name: _whole(params[name])


def _gathered_zero3(param: nn.Parameter) -> torch.Tensor:
    """One ZeRO-3 parameter, whole (one at a time: a multi-billion model is never whole at once)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
        return param.data.detach().clone()


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Callable[[str], torch.Tensor]:
    cleaned = {}
    for key, value in state_dict.items():
        key = clean_name(key)
        for prefix in _STATE_DICT_PREFIXES:
            key = key.removeprefix(prefix)
        cleaned[key] = value

    def tensor(name: str) -> torch.Tensor:
        if name not in cleaned:
            sample = ", ".join(list(cleaned)[:3])
            raise AdapterError(
                f"the state_dict passed to save_adapter has no {name!r} (its keys look like: {sample}): "
                "pass the whole model's gathered state dict, e.g. accelerator.get_state_dict(model) "
                "called on every rank")
        return _whole(cleaned[name])

    return tensor


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """What this rank holds of a parameter: ZeRO-3's partition (its parameter is empty outside a
    forward), else the parameter (FSDP2's sharded DTensor included). A snapshot of the best epoch
    taken and restored on every rank acts on this."""
    return getattr(param, "ds_tensor", param)


def shape_of(param: torch.Tensor) -> torch.Size:
    """A parameter's whole shape (ZeRO-3 leaves an empty local tensor and records the shape)."""
    return getattr(param, "ds_shape", None) or param.shape


def writes_here(collective: bool) -> bool:
    """Whether this process writes the files: every caller of a plain save (the usual
    ``if accelerator.is_main_process``), but rank 0 alone of a collective one."""
    import torch.distributed as dist

    return not (collective and dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier_if(collective: bool) -> None:
    """After a collective save, every rank returns once the files are there."""
    import torch.distributed as dist

    if collective and dist.is_available() and dist.is_initialized():
        dist.barrier()
