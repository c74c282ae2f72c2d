"""Add, route, disable and delete named adapters on a loaded model.

The model stays a normal ``PreTrainedModel`` with an unchanged forward signature. Adding an
adapter attaches slots (child modules holding its bottlenecks and its own copies of the
LayerNorms and head it trains) and one forward hook per adapted module; from then on running the
model writes nothing to it: each hook reads which adapter the calling thread routes to
(``using``, ``per_example_adapters``, ``adapters_disabled``, else ``set_active_adapter``'s
default) and computes that adapter's output. Several threads, and several adapters in one
graph, share the model safely.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import partial

import torch
from torch import nn
from transformers.cache_utils import Cache

from . import composition
from .config import PLACEMENT_VERSION, AdapterConfig
from .engines import refuse_sharded, reshard
from .errors import AdapterError
from .head import ClassificationHead, HeadSlot
from .layer import AdapterSlot, BottleneckAdapter, ModuleHook, RenormSlot, RoutedForward, SumSlot, TaskSlot, repeat_rows
from .params import SLOT_ATTR, TASK_ATTR, BaseParameters, base_parameters
from .routing import Average, Composition, Fuse, Routing, RowGroups, blocks_in, fuses_in, routed_names
from .state import STATE_ATTR, AdapterEntry, AdapterState, get_state, in_backward
from .targets import HEAD, SEQ_POST_LN, SEQ_PRE_LN, Site, norms_below_adapters, resolve_sites

#: Model types whose blocks run inside an autograd Function (Reformer's reversible layers) that
#: backward reaches only when its input requires grad: a frozen embedding would cut the adapters off.
NEED_INPUT_GRADS = {"reformer"}
#: Modules that run sequence-first (seq, batch, hidden), where a mixed batch's rows would be taken
#: along the sequence: every module of these model types (None), or those ending with these names.
SEQUENCE_FIRST: dict[str, tuple[str, ...] | None] = {
    "xlnet": None, "fsmt": None,
    "longformer": ("query", "key", "value", "query_global", "key_global", "value_global"),
    "led": ("query", "key", "value", "query_global", "key_global", "value_global"),
}
#: ``model.config`` attribute listing the adapters, so ``save_pretrained`` writes it to
#: config.json and ``restore_adapters`` can rebuild them from that folder.
CONFIG_KEY = "adaptkit_adapters"
#: The slot that runs a site of each kind (any other kind: ``AdapterSlot``).
SLOT_CLASSES: dict[str, type[AdapterSlot]] = {SEQ_POST_LN: RenormSlot, SEQ_PRE_LN: SumSlot, HEAD: HeadSlot}


def _require_state(model: nn.Module, name: str | Composition | None = None) -> AdapterState:
    """The model's adapters, with ``name`` (an adapter's name or a composition) checked to run on them."""
    state = get_state(model)
    if state is None or not state.adapters:
        raise AdapterError("this model has no adapters; call adaptkit.add_adapter(model, config) first")
    if isinstance(name, Composition):
        check_composition(model, state, name)
    elif name is not None and not isinstance(name, str):
        raise AdapterError(f"expected an adapter name or an adaptkit composition (adaptkit.Stack, Fuse, Parallel, "
                           f"Average), got {type(name).__module__}.{type(name).__name__} {name!r:.60}"
                           + ("; AdapterHub's blocks are not adaptkit's: use adaptkit's of the same name"
                              if type(name).__module__.startswith("adapters.") else ""))
    elif name is not None and name not in state.adapters:
        raise AdapterError(f"no adapter named {name!r}; this model has: {', '.join(state.adapters)}")
    return state


def check_composition(model: nn.Module, state: AdapterState, block: Composition) -> None:
    """A composition runs where AdapterHub's would: its adapters exist and share one placement
    (AdapterHub composes the adapters of one location), each Fuse has its fusion layers."""
    unknown = [n for n in block.flatten() if n not in state.adapters]
    if unknown:
        raise AdapterError(f"{block!r} names no adapter {unknown[0]!r}; this model has: {', '.join(state.adapters)}")
    placements = {(state.adapters[n].config.placement, tuple(state.adapters[n].config.target_modules or ()))
                  for n in block.flatten()}
    if len(placements) > 1:
        raise AdapterError(f"{block!r} composes adapters of different placements {sorted(p for p, _ in placements)}: "
                           "AdapterHub composes the adapters at one location of a layer, and adaptkit's placements "
                           "sit on different modules. Compose adapters added with one placement")
    missing = [f for f in fuses_in(block) if f.name not in state.fusions]
    if missing:
        reordered = [name for name, entry in state.fusions.items()
                     if sorted(entry.block.fused()) == sorted(missing[0].fused())]
        raise AdapterError(f"{missing[0]!r} has no fusion layers on this model"
                           + (f"; fusion {reordered[0]!r} fuses the same adapters in another order, and the order "
                              "counts (it is the fusion's name): route that one" if reordered else "")
                           + f"; or add them with adaptkit.add_fusion(model, {missing[0]!r}) or load them with "
                           "adaptkit.load_fusion")
    _refuse_scaled_average_on_sums(state, block)
    if block.channels > 1:
        _refuse_sequence_first(model, state, "Parallel")


def _refuse_scaled_average_on_sums(state: AdapterState, block: Composition) -> None:
    """When routed, before any forward: an Average whose weights scale the residual cannot run where
    the slot sees the sub-layer's output and residual summed (the adapters of one composition share
    their placement, so their sites are all of one kind)."""
    for average in blocks_in(block, Average):
        if any(SLOT_CLASSES.get(site.kind, AdapterSlot).sums
               for name in average.flatten() for site in state.adapters[name].sites):
            composition.refuse_scaled_average(average)


def add_adapter(model: nn.Module, config: AdapterConfig | None = None, name: str = "default",
                activate: bool = True, sites: list[Site] | None = None) -> list[Site]:
    """Insert adapter ``name`` and (by default) make it the one that runs and trains.

    The first adapter freezes every parameter of the model; from then on adaptkit sets
    ``requires_grad`` only on its own parameters (the trained adapter, and per its config its
    LayerNorms and head), so a parameter unfrozen by hand afterwards stays as set. Returns the
    sites adapted. On any error the model is left as it was. Refused while another thread runs
    the model.
    """
    return insert_adapter(model, config or AdapterConfig(), name, activate, sites, initialise=True)


def insert_adapter(model: nn.Module, config: AdapterConfig, name: str, activate: bool,
                   sites: list[Site] | None, initialise: bool) -> list[Site]:
    """``add_adapter``; ``initialise=False`` skips the random init of weights a loader overwrites."""
    check_adapter_name(name)
    _check_config(config)
    refuse_meta(model)
    refuse_sharded(model, f"add adapter {name!r}")
    state = get_state(model)
    refuse_peft(model, first=state is None)
    if state is not None:
        state.refuse_while_busy(f"add adapter {name!r}")
        if name in state.adapters:
            raise AdapterError(f"an adapter named {name!r} already exists; delete it or choose another name")
        if activate and state.trainable is None:
            state.fixed.refuse(model, f"add adapter {name!r} as the one that trains", None)
    base = state.base if state is not None else base_parameters(model)
    sites = resolve_sites(model, config) if sites is None else list(sites)
    _check_sites_exist(model, sites)
    task_modules = _owning_modules(task_parameter_names(model, config, base))
    created = state is None
    if created:
        state = AdapterState(model, base)
        setattr(model, STATE_ATTR, state)
        model.requires_grad_(False)
        state.hooks["model"] = _attach_to_model(model, state)
        if _needs_input_grads(model):
            model.enable_input_require_grads()
    previous = state.active
    entry = AdapterEntry(config, sites)
    try:
        state.adapters[name] = entry
        for site in sites:
            target = model.get_submodule(site.name)
            weight = next(target.parameters())
            module = site_module(site, config, device=weight.device, dtype=adapter_dtype(weight.dtype, config),
                                 initialise=initialise)
            # in the model's mode: an eval model runs a new adapter's (and head's) dropout as identity
            _slot(target, site.name, state, SLOT_CLASSES.get(site.kind, AdapterSlot)).adapters[name] = module.train(
                target.training)
            entry.site_modules[site.name] = module
        for module_name in task_modules:
            module = model.get_submodule(module_name)
            dtype = adapter_dtype(next(module.parameters(recurse=False)).dtype, config)
            entry.own_copies[module_name] = _slot(module, module_name, state, TaskSlot).add(name, module, dtype)
        if activate:
            state.active = name
        apply_choices(model, state)
    except BaseException:
        state.adapters.pop(name, None)
        state.active = previous
        _remove_from_slots(model, state, name, [s.name for s in sites] + task_modules)
        if created:
            _forget(model, state)
        else:
            apply_choices(model, state)
        raise
    return sites


def site_module(site: Site, config: AdapterConfig, device: torch.device | str = "cpu",
                dtype: torch.dtype | None = None, initialise: bool = True) -> nn.Module:
    """What an adapter holds at a site: a bottleneck, or at a head site its own head."""
    if site.kind == HEAD:
        return ClassificationHead(site.width, config.head, device=device, dtype=dtype, initialise=initialise)
    return BottleneckAdapter(site.width, config, device=device, dtype=dtype, initialise=initialise)


def _owning_modules(parameter_names: Iterable[str]) -> list[str]:
    """The modules that hold these parameters directly, each once, in order."""
    return list(dict.fromkeys(n.rpartition(".")[0] for n in parameter_names))


def check_adapter_name(name: object) -> None:
    """Refuse names that cannot key a module dict (torch would raise a raw KeyError)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        raise AdapterError(f"adapter name {name!r} must be letters, digits, '_' or '-' (no dots)")
    if hasattr(nn.ModuleDict(), name):  # an instance: ``training``, ``_modules`` are set in __init__
        raise AdapterError(f"adapter name {name!r} is the name of a torch.nn.ModuleDict attribute, "
                           f"which cannot hold an adapter; choose another, e.g. {name + '_task'!r}")


def _check_config(config: object) -> None:
    if not isinstance(config, AdapterConfig):
        fix = (f"to name the adapter, pass name={config!r}" if isinstance(config, str) else
               "for a dict of fields use AdapterConfig.from_dict(fields)" if isinstance(config, dict) else
               "e.g. AdapterConfig.houlsby(size=64)")
        raise AdapterError(f"add_adapter(model, config, name) takes an AdapterConfig as config, got "
                           f"{type(config).__name__} {config!r:.60}; {fix}")


def refuse_peft(model: nn.Module, first: bool) -> None:
    """A PEFT wrapper hides the transformers model's head; the first adapter's freeze would freeze
    PEFT's own layers (LoRA) too: adaptkit goes first, PEFT after."""
    wrapper = type(model).__module__.startswith("peft.")
    if wrapper or (first and any(type(m).__module__.startswith("peft.") for m in model.modules())):
        what = f"a PEFT {type(model).__name__}" if wrapper else "a model that already has PEFT layers"
        raise AdapterError(
            f"adaptkit adapters go on the transformers model before PEFT's, not on {what}: add them "
            "first, then wrap the model with get_peft_model (adaptkit leaves LoRA's parameters as PEFT "
            "sets them; call set_active_adapter after wrapping, since PEFT freezes every parameter "
            "but its own)")


def _check_sites_exist(model: nn.Module, sites: list[Site]) -> None:
    """Sites named for another model class (``bert.encoder...`` on a bare ``BertModel``) are refused
    before anything is added."""
    modules = dict(model.named_modules())
    missing = [site.name for site in sites if site.name not in modules]
    if missing:
        raise AdapterError(
            f"{len(missing)} of the {len(sites)} adapter sites are not modules of this "
            f"{type(model).__name__} (first: {missing[0]!r}): a site names a module of the model it goes "
            "on (model.named_modules()); an adapter placed on another model class loads onto that class")


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
            "then add, load or save the adapter")


def adapter_dtype(base_dtype: torch.dtype, config: AdapterConfig) -> torch.dtype:
    """float32 beside a 16-bit base (unless ``keep_fp32`` is off), else the base's dtype."""
    if config.keep_fp32 and base_dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return base_dtype


def _remove_from_slots(model: nn.Module, state: AdapterState, name: str, modules: list[str]) -> None:
    """Take adapter (or fusion) ``name`` out of these modules' slots; an emptied slot goes, with
    what runs it."""
    for module_name in dict.fromkeys(modules):
        module = model.get_submodule(module_name)
        for attr in (SLOT_ATTR, TASK_ATTR):
            slot = getattr(module, attr, None)
            if slot is None:
                continue
            kept = [slot.adapters, slot.fusions] if attr == SLOT_ATTR else [slot.values]
            for owned in kept:
                if name in owned:
                    del owned[name]
            if not any(kept):
                for handle in state.hooks.pop(f"{module_name}:{attr}"):
                    handle.remove()
                delattr(module, attr)


def _slot(module: nn.Module, module_name: str, state: AdapterState, kind: type) -> AdapterSlot | TaskSlot:
    """The module's slot of this kind, attached on first use with what runs it: a forward hook
    for adapters, the routed forward for copies of the module."""
    attr = TASK_ATTR if kind is TaskSlot else SLOT_ATTR
    slot = getattr(module, attr, None)
    if slot is not None and type(slot) is not kind:
        raise AdapterError(f"{module_name} already holds adapters placed as {type(slot).__name__}; "
                           "an adapter of another placement cannot share it: delete those first")
    if slot is None:
        slot = kind()
        module.add_module(attr, slot)
        state.hooks[f"{module_name}:{attr}"] = [
            RoutedForward(module, state) if kind is TaskSlot
            else module.register_forward_hook(ModuleHook(state), with_kwargs=True)]
    return slot


def _needs_input_grads(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in NEED_INPUT_GRADS


def _forget(model: nn.Module, state: AdapterState) -> None:
    """With no adapter left, the model is the base again: its trainability and config too."""
    for handle in state.hooks.pop("model"):
        handle.remove()
    if _needs_input_grads(model):
        model.disable_input_require_grads()
    for param_name, param in model.named_parameters():
        if param_name in state.original_requires_grad:  # one added since (LoRA) keeps its own
            param.requires_grad_(state.original_requires_grad[param_name])
    delattr(model, STATE_ATTR)
    if hasattr(getattr(model, "config", None), CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)


def set_active_adapter(model: nn.Module, name: str | Composition) -> None:
    """Run adapter ``name`` (with its own LayerNorms and head), or a composition of adapters
    (``Stack``, ``Fuse``, ``Parallel``, ``Average``), wherever no routing context is open; it
    trains unless ``set_trainable_adapters`` chose otherwise (a composition: its fusion layers,
    the adapters frozen). The model-wide default: per-request routing from several threads is
    ``using``'s job. Refused while another thread runs the model."""
    state = _require_state(model, name)
    state.refuse_while_busy(f"activate adapter {name!r}")
    if state.trainable is None and name != state.active:
        state.fixed.refuse(model, f"activate adapter {name!r} (the active adapter is the one that trains)",
                           _would_train(model, state, trains_of([name])))
    state.active = name
    apply_choices(model, state)


def set_trainable_adapters(model: nn.Module, names: Iterable[str | Fuse] | None) -> None:
    """Train these adapters (with their LayerNorms and heads), e.g. several tasks in one step, and
    the fusion layers (and fusion head) of these ``Fuse`` blocks, with the fused adapters frozen
    unless named too; ``None`` returns to the default: the active adapter trains (an active
    composition: its fusions). Fix it before DDP wraps the model."""
    state = _require_state(model)
    names = None if names is None else list(_name_list(names, "set_trainable_adapters"))
    for name in names or []:
        if isinstance(name, Composition) and not isinstance(name, Fuse):
            raise AdapterError(f"set_trainable_adapters takes adapter names and Fuse blocks (whose fusion layers "
                               f"train), not {name!r}: name the adapters of the {type(name).__name__} to train them")
        _require_state(model, name)
    state.refuse_while_busy("change which adapters train")
    trains = trains_of(names if names is not None else [state.active] * (state.active is not None))
    if trains != trained_adapters(state):
        state.fixed.refuse(model, "change which adapters train", _would_train(model, state, trains))
    state.trainable = names
    apply_choices(model, state)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name``; with the last one gone the model is the base model again. Refused
    while a routing context uses it or another thread runs the model."""
    state = _require_state(model, name)
    state.refuse_pinned(name, "delete adapter")
    fused = [f for f, entry in state.fusions.items() if name in entry.block.flatten()]
    if fused:
        raise AdapterError(f"cannot delete adapter {name!r}: fusion {fused[0]!r} fuses it; delete the fusion first "
                           "(adaptkit.delete_fusion)")
    state.refuse_while_busy(f"delete adapter {name!r}")
    refuse_sharded(model, f"delete adapter {name!r}")
    if name in trained_adapters(state):
        state.fixed.refuse(model, f"delete adapter {name!r}, which trains",
                           _would_train(model, state, trained_adapters(state) - {name}))
    entry = state.adapters.pop(name)
    if name in routed_names(state.active):
        state.active = None
    if state.trainable is not None and name in state.trainable:
        state.trainable.remove(name)
    _remove_from_slots(model, state, name, [s.name for s in entry.sites] + entry.task_modules)
    if state.adapters:
        apply_choices(model, state)
    else:
        _forget(model, state)


@contextlib.contextmanager
def using(model: nn.Module, name: str | Composition | None) -> Iterator[None]:
    """Inside, this thread's (or asyncio task's) forwards of ``model`` run adapter ``name`` or a
    composition (``None``: the base model), whatever other threads run at the same time. Contexts
    nest: the innermost one routes. Training and ``backward`` inside see the same routing."""
    state = _require_state(model, name)
    with _routed(state, name):
        yield


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Inside, this thread's forwards compute exactly what the base model does (base LayerNorms
    and head), adapters added inside included. Contexts nest; ``set_active_adapter`` inside
    takes effect once the outermost one exits."""
    with _routed(_require_state(model), None):
        yield


@contextlib.contextmanager
def per_example_adapters(model: nn.Module, names: Sequence[str | Composition | None]) -> Iterator[None]:
    """Inside, example ``i`` of each batch this thread runs uses adapter ``names[i]`` (``None``:
    the base model; a composition other than Parallel, which copies the batch), with that
    adapter's LayerNorms and head: several tasks in one forward. The
    projections run once for the whole batch; each adapter adds its delta to its own rows. Which
    adapters train is ``set_trainable_adapters``'s choice. Greedy ``generate`` works; beam search
    is refused."""
    state = _require_state(model)
    names = list(_name_list(names, "per_example_adapters"))
    _refuse_sequence_first(model, state, "per_example_adapters")
    for block in {n for n in names if isinstance(n, Composition)}:
        if block.channels > 1:
            raise AdapterError(f"per_example_adapters cannot route examples to {block!r}: a Parallel copies the whole "
                               "batch. Run it with adaptkit.using, or route each example to one adapter")
        _require_state(model, block)
    unknown = sorted({n for n in names if n is not None and not isinstance(n, Composition)
                      and n not in state.adapters}, key=str)
    if not names or unknown:
        raise AdapterError("per_example_adapters needs one adapter name (or None) per example; "
                           + (f"unknown: {unknown}; this model has: {', '.join(state.adapters)}"
                              if unknown else "got none"))
    if isinstance(state.current(), RowGroups):
        raise AdapterError("per_example_adapters contexts do not nest: leave the outer one first")
    device = next(model.parameters()).device
    groups: dict[str | Composition, list[int]] = {}
    for row, name in enumerate(names):
        if name is not None:
            groups.setdefault(name, []).append(row)
    with _routed(state, RowGroups(len(names), tuple(
            (name, torch.tensor(rows, device=device)) for name, rows in groups.items()))):
        yield


@contextlib.contextmanager
def _routed(state: AdapterState, routing: Routing) -> Iterator[None]:
    token = state.open_context(routing)
    try:
        yield
    finally:
        state.close_context(token, routing)


def _refuse_sequence_first(model: nn.Module, state: AdapterState, what: str) -> None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SEQUENCE_FIRST:
        return
    suffixes = SEQUENCE_FIRST[model_type]
    sites = [s.name for e in state.adapters.values() for s in e.sites
             if suffixes is None or s.name.rsplit(".", 1)[-1] in suffixes]
    if sites:
        where = "its blocks run" if suffixes is None else f"{sites[0]!r} runs"
        raise AdapterError(f"{what} cannot split the batch on {model_type}: {where} "
                           "sequence-first, so rows are not examples; run one adapter at a time"
                           + ("" if suffixes is None else ", or place the adapters on other modules"))


def _name_list(names: object, caller: str) -> object:
    """A lone string would be taken letter by letter."""
    if isinstance(names, str):
        raise AdapterError(f"{caller} takes a list of adapter names, got the string {names!r}: pass [{names!r}]")
    return names


def list_adapters(model: nn.Module) -> dict[str, AdapterConfig]:
    state = get_state(model)
    return {n: e.config for n, e in state.adapters.items()} if state else {}


def active_adapter(model: nn.Module) -> str | Composition | None:
    state = get_state(model)
    return state.active if state else None


def adapter_entry(model: nn.Module, name: str | None = None) -> tuple[str, AdapterEntry]:
    """The named adapter, or the active one."""
    state = _require_state(model, name)
    name = name or state.active
    if name is None:
        raise AdapterError("no adapter is active; pass the adapter's name")
    if isinstance(name, Composition):
        raise AdapterError(f"the active routing is the composition {name!r}, not one adapter; pass the adapter's "
                           "name (a fusion saves with adaptkit.save_fusion)")
    return name, state.adapters[name]


def task_parameter_names(model: nn.Module, config: AdapterConfig, base: BaseParameters) -> list[str]:
    """The base parameters (LayerNorms, head) an adapter with this config has its own copy of."""
    names = base.norms if config.train_layernorms else []
    frozen = norms_below_adapters(model, config, names)
    names = [n for n in names if n not in frozen]
    names += base.head if config.train_head else []
    return names + (base.vocab_head if config.train_vocab_head else [])


def apply_choices(model: nn.Module, state: AdapterState) -> None:
    """Set which of adaptkit's parameters train (the rest of the model is left as it is) and
    record the adapters in ``model.config`` for ``save_pretrained``."""
    refuse_shadowed_heads(model, state)
    trains = trained_adapters(state)
    reshard(model)
    for name, entry in [*state.adapters.items(), *state.fusions.items()]:
        for param in entry.parameters():
            param.requires_grad_(name in trains)
    state.generation += 1
    if getattr(model, "config", None) is not None:
        active = state.active.to_dict() if isinstance(state.active, Composition) else state.active
        setattr(model.config, CONFIG_KEY, {
            "active": active, "placement_version": PLACEMENT_VERSION,
            "adapters": {name: {"config": entry.config.to_dict(), "sites": [vars(s) for s in entry.sites]}
                         for name, entry in state.adapters.items()},
            "fusions": {name: {"fuse": entry.block.to_dict(), "config": entry.config.to_dict(),
                               "sites": [vars(s) for s in entry.sites],
                               "train_head": bool(entry.own_copies), "head": entry.head}
                        for name, entry in state.fusions.items()}})


def trained_adapters(state: AdapterState) -> set[str]:
    """The adapters and fusions whose parameters train: the chosen ones, else the active one."""
    return trains_of(state.trainable if state.trainable is not None else [state.active] * (state.active is not None))


def trains_of(chosen: Iterable[str | Composition]) -> set[str]:
    """What trains when ``chosen`` train: an adapter's name itself, a composition its fusions."""
    chosen = list(chosen)
    return {n for n in chosen if isinstance(n, str)} | {f.name for n in chosen for f in fuses_in(n)}


def _would_train(model: nn.Module, state: AdapterState, trains: set[str]) -> list[nn.Parameter]:
    """The model's parameters that would train if adapters ``trains`` trained (the others as now)."""
    owned = {id(p): name for name, entry in [*state.adapters.items(), *state.fusions.items()]
             for p in entry.parameters()}
    return [p for p in model.parameters() if (owned[id(p)] in trains if id(p) in owned else p.requires_grad)]


def refuse_shadowed_heads(model: nn.Module, state: AdapterState) -> None:
    """PEFT's ``modules_to_save`` (added for ``task_type="SEQ_CLS"``) runs and trains its own copy
    of the head instead of the module adaptkit's adapter holds a copy of: one library owns the
    head, and adaptkit refuses to pretend it trains one PEFT shadows."""
    for wrapper_name, wrapper in model.named_modules():
        original = getattr(wrapper, "original_module", None)
        if isinstance(original, nn.Module) and hasattr(wrapper, "modules_to_save"):
            owners = [n for n, e in state.adapters.items() for own in e.own_copies.values()
                      if any(own is m for m in original.modules())]
            if owners:
                raise AdapterError(
                    f"PEFT's modules_to_save wraps {wrapper_name!r}, whose parameters adaptkit adapter "
                    f"{owners[0]!r} trains its own copy of: PEFT's copy would run and train instead. Choose "
                    "one owner of the head: PEFT's (add the adaptkit adapter with train_head=False) or "
                    "adaptkit's (create the LoRA without modules_to_save, e.g. LoraConfig(task_type=None))")


def _attach_to_model(model: nn.Module, state: AdapterState) -> list:
    """The model-level hooks: forwards in flight (for refusing changes while another thread
    runs), and activation checkpointing rerunning blocks with their forward's routing."""
    handles = [model.register_forward_pre_hook(state.forward_started),
               model.register_forward_pre_hook(partial(_copies_for_parallel, state), with_kwargs=True),
               model.register_forward_hook(state.forward_ended, always_call=True)]
    return handles + [CheckpointRouting(model, state)]


def _copies_for_parallel(state: AdapterState, model: nn.Module, args: tuple, kwargs: dict):  # noqa: ARG001
    """Under a Parallel the model runs once per child on one batch: every batch-first input (ids,
    masks, labels) is repeated that many times along the batch. AdapterHub copies at the first
    adapted layer instead; the layers below compute the same values on each copy."""
    routing = state.current()
    if not isinstance(routing, Composition) or routing.channels == 1 or state.copied_var.get():
        return None
    if any(isinstance(value, Cache) for value in kwargs.values()):
        raise AdapterError(f"{routing!r} copies the batch at the model's input, but this call continues a cache "
                           "(generate, or a decoding loop) that holds one row per example, as generate's own state "
                           f"does: use adaptkit.generate_parallel(model, {routing!r}, input_ids=..., ...), which copies "
                           "the batch before generate starts")
    return repeat_rows((args, kwargs), routing.channels)


class CheckpointRouting:
    """Activation checkpointing reruns blocks inside backward, which may come after the routing
    context exited, from another thread, or for a graph that holds two adapters: each rerun must
    see the routing its forward saw.

    Every checkpointing function transformers sets (``_gradient_checkpointing_func``) is wrapped,
    at add time and whenever ``_set_gradient_checkpointing`` runs afterwards (never during a
    forward): the wrapper notes the routing of each checkpointed call and routes the rerun with it.
    Works for reentrant and non-reentrant checkpointing alike. ``remove`` (a hook handle's
    interface) unwraps everything. Its pieces are plain objects, so the model still pickles.
    """

    def __init__(self, model: nn.Module, state: AdapterState) -> None:
        self.model, self.state = model, state
        self.wrapped: list[nn.Module] = []
        if callable(getattr(model, "_set_gradient_checkpointing", None)):
            model._set_gradient_checkpointing = _SetAndWrap(self)
        self.wrap_all()

    def wrap_all(self) -> None:
        for owner in self.model.modules():
            function = getattr(owner, "_gradient_checkpointing_func", None)
            if callable(function) and not isinstance(function, _RerunWithForwardRouting):
                owner._gradient_checkpointing_func = _RerunWithForwardRouting(self.state, function)
                self.wrapped.append(owner)

    def remove(self) -> None:
        for owner in self.wrapped:
            function = getattr(owner, "_gradient_checkpointing_func", None)
            if isinstance(function, _RerunWithForwardRouting):
                owner._gradient_checkpointing_func = function.original
        self.wrapped.clear()
        if isinstance(vars(self.model).get("_set_gradient_checkpointing"), _SetAndWrap):
            del self.model._set_gradient_checkpointing


class _SetAndWrap:
    """The model's own ``_set_gradient_checkpointing``, then the wrapping of what it set."""

    def __init__(self, routing: CheckpointRouting) -> None:
        self.routing = routing

    def __call__(self, *args, **kwargs):
        result = type(self.routing.model)._set_gradient_checkpointing(self.routing.model, *args, **kwargs)
        self.routing.wrap_all()
        return result


class _RerunWithForwardRouting:
    """A checkpointing function whose reruns in backward see the routing of their forward."""

    def __init__(self, state: AdapterState, original) -> None:
        self.state, self.original = state, original

    def __call__(self, function, *args, **kwargs):
        state, routing = self.state, self.state.current()

        def run(*inner_args, **inner_kwargs):
            if not in_backward():
                return function(*inner_args, **inner_kwargs)
            token = state.run_as(routing)
            try:
                return function(*inner_args, **inner_kwargs)
            finally:
                state.routing_var.reset(token)

        return self.original(run, *args, **kwargs)


