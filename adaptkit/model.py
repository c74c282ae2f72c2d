"""Add, activate, disable and delete named adapters on a loaded model.

The model stays a normal ``PreTrainedModel`` with an unchanged forward signature: adapters live
in an ``AdapterSlot`` child of each target projection and run from a forward hook.
Each adapter owns its own copy of the parameters it trains besides itself (LayerNorms, head);
switching adapters swaps those values in place, so several tasks share one backbone.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import AdapterConfig
from .errors import AdapterError
from .layer import AdapterSlot, BottleneckAdapter
from .params import (
    SLOT_ATTR, adapter_parameter_names, head_parameter_names, layernorm_parameter_names,
    vocab_head_parameter_names,
)
from .targets import Site, resolve_sites

STATE_ATTR = "_adaptkit_state"
_BASE = None  # key of the base model's own LayerNorm/head values in AdapterState.task_values


@dataclass
class AdapterEntry:
    config: AdapterConfig
    sites: list[Site]


@dataclass
class AdapterState:
    """Book-keeping kept on the model (not a module, so it never enters a state dict)."""

    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    active: str | None = None
    hooks: dict[str, torch.utils.hooks.RemovableHandle] = field(default_factory=dict)
    original_requires_grad: dict[str, bool] = field(default_factory=dict)
    task_values: dict[str | None, dict[str, torch.Tensor]] = field(default_factory=dict)
    live: str | None = _BASE  # whose LayerNorm/head values are in the model right now


def get_state(model: nn.Module) -> AdapterState | None:
    return getattr(model, STATE_ATTR, None)


def _require_state(model: nn.Module, name: str | None = None) -> AdapterState:
    state = get_state(model)
    if state is None or not state.adapters:
        raise AdapterError("this model has no adapters; call adaptkit.add_adapter(model, config) first")
    if name is not None and name not in state.adapters:
        raise AdapterError(f"no adapter named {name!r}; this model has: {', '.join(state.adapters)}")
    return state


def add_adapter(model: nn.Module, config: AdapterConfig | None = None, name: str = "default",
                activate: bool = True, sites: list[Site] | None = None) -> list[Site]:
    """Insert adapter ``name`` and (by default) make it the one that runs and trains.

    The backbone is frozen; the active adapter, and per its config the LayerNorms and the
    task head, train. Returns the sites adapted. On any error the model is left as it was.
    """
    return insert_adapter(model, config or AdapterConfig(), name, activate, sites, initialise=True)


def insert_adapter(model: nn.Module, config: AdapterConfig, name: str, activate: bool,
                   sites: list[Site] | None, initialise: bool) -> list[Site]:
    """``add_adapter``; ``initialise=False`` skips the random init of weights a loader overwrites."""
    check_adapter_name(name)
    refuse_meta(model)
    state = get_state(model)
    if state is not None and name in state.adapters:
        raise AdapterError(f"an adapter named {name!r} already exists; delete it or choose another name")
    sites = resolve_sites(model, config) if sites is None else list(sites)
    created = state is None
    if created:
        state = AdapterState(original_requires_grad={n: p.requires_grad for n, p in model.named_parameters()})
        setattr(model, STATE_ATTR, state)
    try:
        _cover_new_task_names(model, state, config)
        state.adapters[name] = AdapterEntry(config, sites)
        for site in sites:
            target = model.get_submodule(site.name)
            _slot(target, site.name, state).adapters[name] = BottleneckAdapter(
                site.width, config, device=target.weight.device,
                dtype=adapter_dtype(target.weight.dtype, config), initialise=initialise)
        if activate:
            set_active_adapter(model, name)
        else:
            _apply_trainability(model, state)
    except BaseException:
        state.adapters.pop(name, None)
        _remove_from_slots(model, state, name, sites)
        if created:
            _restore_requires_grad(model, state)
            delattr(model, STATE_ATTR)
        raise
    return sites


def check_adapter_name(name: object) -> None:
    """Refuse names that cannot key a module dict (torch would raise a raw KeyError)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        raise AdapterError(f"adapter name {name!r} must be letters, digits, '_' or '-' (no dots)")
    if hasattr(nn.ModuleDict, name):
        raise AdapterError(f"adapter name {name!r} is the name of a torch.nn.ModuleDict attribute, "
                           f"which cannot hold an adapter; choose another, e.g. {name + '_task'!r}")


def refuse_meta(model: nn.Module) -> None:
    """Adapters need real weights next to them: on meta they would be created empty and
    computed on nothing, so a model with meta tensors is refused, naming them."""
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise AdapterError(
            f"{len(on_meta)} of this model's tensors are on the meta device (first: "
            f"{', '.join(on_meta[:3])}): it was built with init_empty_weights / torch.device('meta') "
            "or loaded with a device_map that offloads layers to CPU or disk. adaptkit needs the "
            "weights materialised: load the model onto the devices that will run it (e.g. "
            "device_map='cpu' or {'': 0}, no offload_folder), or load its weights after to_empty(), "
            "then add or load the adapter")


def adapter_dtype(base_dtype: torch.dtype, config: AdapterConfig) -> torch.dtype:
    """float32 beside a 16-bit base (unless ``keep_fp32`` is off), else the base's dtype."""
    if config.keep_fp32 and base_dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return base_dtype


def _remove_from_slots(model: nn.Module, state: AdapterState, name: str, sites: list[Site]) -> None:
    """Take adapter ``name`` out of its sites' slots; an emptied slot goes with its hook."""
    for site in sites:
        target = model.get_submodule(site.name)
        slot: AdapterSlot | None = getattr(target, SLOT_ATTR, None)
        if slot is None:
            continue
        if name in slot.adapters:
            del slot.adapters[name]
        if not slot.adapters:
            state.hooks.pop(site.name).remove()
            delattr(target, SLOT_ATTR)


def _slot(target: nn.Module, site_name: str, state: AdapterState) -> AdapterSlot:
    """The projection's slot, attached with its hook on first use."""
    slot = getattr(target, SLOT_ATTR, None)
    if slot is None:
        slot = AdapterSlot()
        target.add_module(SLOT_ATTR, slot)
        state.hooks[site_name] = target.register_forward_hook(slot.hook)
    return slot


def _restore_requires_grad(model: nn.Module, state: AdapterState) -> None:
    for param_name, param in model.named_parameters():
        param.requires_grad_(state.original_requires_grad.get(param_name, True))


def set_active_adapter(model: nn.Module, name: str) -> None:
    """Run and train adapter ``name`` (with its own LayerNorm and head values)."""
    state = _require_state(model, name)
    _swap_task_values(model, state, name)
    state.active = name
    _set_slots(model, name)
    _apply_trainability(model, state)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name``; with the last one gone the model is the base model again."""
    state = _require_state(model, name)
    if state.active == name:
        _swap_task_values(model, state, _BASE)
        state.active = None
        _set_slots(model, None)
    state.task_values.pop(name, None)
    _remove_from_slots(model, state, name, state.adapters.pop(name).sites)
    if state.adapters:
        _apply_trainability(model, state)
    else:
        _restore_requires_grad(model, state)
        delattr(model, STATE_ATTR)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Inside, the model computes exactly what the base model does (base LayerNorms and head)."""
    state = _require_state(model)
    active = state.active
    _swap_task_values(model, state, _BASE)
    _set_slots(model, None)
    try:
        yield
    finally:
        if active is not None:
            _swap_task_values(model, state, active)
            _set_slots(model, active)


def list_adapters(model: nn.Module) -> dict[str, AdapterConfig]:
    state = get_state(model)
    return {n: e.config for n, e in state.adapters.items()} if state else {}


def active_adapter(model: nn.Module) -> str | None:
    state = get_state(model)
    return state.active if state else None


def adapter_entry(model: nn.Module, name: str | None = None) -> tuple[str, AdapterEntry]:
    """The named adapter, or the active one."""
    state = _require_state(model, name)
    name = name or state.active
    if name is None:
        raise AdapterError("no adapter is active; pass the adapter's name")
    return name, state.adapters[name]


def task_parameter_names(model: nn.Module, config: AdapterConfig) -> list[str]:
    """The non-adapter parameters an adapter with this config trains."""
    names = layernorm_parameter_names(model) if config.train_layernorms else []
    names += head_parameter_names(model) if config.train_head else []
    return names + (vocab_head_parameter_names(model) if config.train_vocab_head else [])


def task_values(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The LayerNorm and head values that belong to adapter ``name``, live or stashed."""
    state = _require_state(model, name)
    params = dict(model.named_parameters())
    names = task_parameter_names(model, state.adapters[name].config)
    stored = params if state.live == name else state.task_values.get(name, state.task_values.get(_BASE, params))
    return {n: stored[n] for n in names}


def _shared_task_names(model: nn.Module, state: AdapterState) -> list[str]:
    """What switching swaps: LayerNorms and head, and the vocabulary head only while some
    adapter trains it (copying a 65M-parameter ``lm_head`` on every switch is what it avoids)."""
    vocab = any(e.config.train_vocab_head for e in state.adapters.values())
    return (layernorm_parameter_names(model) + head_parameter_names(model)
            + (vocab_head_parameter_names(model) if vocab else []))


@torch.no_grad()
def _cover_new_task_names(model: nn.Module, state: AdapterState, config: AdapterConfig) -> None:
    """Before the first adapter that trains the vocabulary head joins, stash its base values:
    until then no adapter could change them, so the live ones are the base's."""
    base = state.task_values.get(_BASE)
    if config.train_vocab_head and base is not None:
        params = dict(model.named_parameters())
        for n in vocab_head_parameter_names(model):
            base.setdefault(n, params[n].detach().clone())


@torch.no_grad()
def _swap_task_values(model: nn.Module, state: AdapterState, to: str | None) -> None:
    """Stash the live LayerNorm/head values and copy ``to``'s in place (optimizers keep
    their references). An adapter seen for the first time starts from the base values."""
    if state.live == to:
        return
    params = dict(model.named_parameters())
    names = _shared_task_names(model, state)
    state.task_values[state.live] = {n: params[n].detach().clone() for n in names}
    base = state.task_values[_BASE]
    incoming = state.task_values.get(to, base)
    for n in names:
        params[n].copy_(incoming.get(n, base[n]))
    if to is not _BASE:
        state.task_values.pop(to, None)
    state.live = to


@torch.no_grad()
def load_task_values(model: nn.Module, name: str, values: dict[str, torch.Tensor]) -> None:
    """Set adapter ``name``'s LayerNorm/head values (live if it is active, else stashed)."""
    state = _require_state(model, name)
    params = dict(model.named_parameters())
    if state.live == name:
        for n, value in values.items():
            params[n].copy_(value)
        return
    stash = state.task_values.get(name)
    if stash is None:
        base = state.task_values.get(_BASE)
        stash = {n: (base[n] if base else params[n]).detach().clone()
                 for n in _shared_task_names(model, state)}
        state.task_values[name] = stash
    for n, value in values.items():
        stash[n].copy_(value)


def _set_slots(model: nn.Module, name: str | None) -> None:
    for module in model.modules():
        if isinstance(module, AdapterSlot):
            module.active = name if name in module.adapters else None


def _apply_trainability(model: nn.Module, state: AdapterState) -> None:
    """Freeze everything but the active adapter and what its config trains."""
    trainable: set[str] = set()
    if state.active is not None:
        trainable.update(adapter_parameter_names(model, state.active))
        trainable.update(task_parameter_names(model, state.adapters[state.active].config))
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name in trainable)
