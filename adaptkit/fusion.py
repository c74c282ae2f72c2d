"""AdapterFusion (Pfeiffer et al. 2021): a small attention layer per site over the fused adapters'
bottleneck outputs, trained on a target task with the adapters frozen.

A fusion's layers sit in each site's slot beside the adapters (``<module>.adaptkit.fusions["a,b"]``,
keyed by AdapterHub's name of the ``Fuse``), its copy of the task head in the head's ``TaskSlot``
under the same key. They run when the routing is a composition holding that ``Fuse``
(``adaptkit.composition``) and train when it is active or named in ``set_trainable_adapters``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import nn

from .config import FusionConfig
from .engines import refuse_sharded, sharded_by
from .errors import AdapterError
from .head import ClassificationHead, HeadSlot
from .layer import TaskSlot, UninitialisedLinear
from .model import _remove_from_slots, _require_state, _slot, adapter_dtype, apply_choices, set_active_adapter
from .params import SLOT_ATTR
from .routing import Fuse, fuses_in
from .state import AdapterState, FusionEntry
from .targets import HEAD, Site


#: The open ``fusion_regularization()`` block's terms, keyed by value layer (None: no block open).
_collected: contextvars.ContextVar[dict[int, torch.Tensor] | None] = contextvars.ContextVar(
    "adaptkit_fusion_regularization", default=None)


def value_regularization(weight: torch.Tensor) -> torch.Tensor:
    """AdapterHub's pull of a value matrix towards the identity: ``0.01 · Σ (I − V)²``."""
    return 0.01 * (torch.eye(weight.shape[0], device=weight.device, dtype=weight.dtype) - weight).pow(2).sum()


class ValueLinear(UninitialisedLinear):
    """A fusion's value matrix. Inside its own call, the one place every sharding engine holds its
    weight whole, it also hands its regularization to an open ``fusion_regularization()`` block."""

    def __init__(self, width: int, regularize: bool, device: torch.device | str, dtype: torch.dtype | None) -> None:
        super().__init__(width, width, bias=False, device=device, dtype=dtype)
        self.regularize = regularize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        collected = _collected.get()
        if collected is not None and self.regularize and self.weight.requires_grad and torch.is_grad_enabled():
            collected.setdefault(id(self), value_regularization(self.weight))
        return super().forward(x)


class CollectedRegularization:
    """What a ``fusion_regularization()`` block gathered: ``total()`` to add to the loss."""

    def __init__(self, terms: dict[int, torch.Tensor]) -> None:
        self.terms = terms

    def total(self) -> torch.Tensor:
        """The sum over the value layers that ran and train (0 when none did)."""
        return torch.stack(list(self.terms.values())).sum() if self.terms else torch.zeros(())


@contextlib.contextmanager
def fusion_regularization() -> Iterator[CollectedRegularization]:
    """Collect the value regularization of the dynamic fusions that run and train inside the block,
    each value layer once, computed inside its own call: it works on every engine, sharded ones
    (FSDP, ZeRO-3) included, where ``fusion_regularization_loss`` cannot read the matrices.
    ``with adaptkit.fusion_regularization() as reg: loss = model(**batch).loss``, then backpropagate
    ``loss + reg.total()``. Per thread (a context variable)."""
    collected = CollectedRegularization({})
    token = _collected.set(collected.terms)
    try:
        yield collected
    finally:
        _collected.reset(token)


class FusionLayer(nn.Module):
    """AdapterHub's ``BertFusion``: ``softmax(Q(q) · K(up_i)) · V(up_i)`` over the adapters ``i``,
    plus the residual (before or after, per the config). Its weights keep float32 beside a 16-bit
    model; it reads and returns the model's dtype."""

    def __init__(self, width: int, config: FusionConfig, dropout: float, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, initialise: bool = True) -> None:
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(dropout)
        for name in ("query", "key"):
            if getattr(config, name):
                self.add_module(name, UninitialisedLinear(width, width, device=device, dtype=dtype))
        if config.value:
            self.value = ValueLinear(width, config.regularization, device=device, dtype=dtype)
        if initialise:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT's init (std 0.02, zero bias); the value matrix at the identity (1e-6 elsewhere)
        with ``value_initialized``."""
        for linear in self.children():
            if isinstance(linear, nn.Linear):
                nn.init.normal_(linear.weight, std=0.02)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        if self.config.value and self.config.value_initialized:
            self.value.weight.fill_(1e-6).fill_diagonal_(1.0)

    def forward(self, query: torch.Tensor, ups: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``query`` and ``residual``: (batch, tokens, d); ``ups``: (batch, tokens, adapters, d)."""
        out_dtype, dtype = residual.dtype, next(self.parameters(), residual).dtype
        query, ups, residual = query.to(dtype), ups.to(dtype), residual.to(dtype)
        config = self.config
        if config.residual_before:  # AdapterHub adds in place to the tensor its keys and values share
            ups = ups + residual[:, :, None, :]
        keys = self.key(ups) if config.key else ups
        values = self.value(ups) if config.value and config.value_before_softmax else ups
        scores = (self.query(query) if config.query else query).unsqueeze(2) @ keys.transpose(-2, -1)
        probs = torch.softmax(self.dropout(scores.squeeze(2)), dim=-1)  # temperature 1 (annealing refused)
        mixed = (probs.unsqueeze(2) @ values).squeeze(2)
        if config.value and not config.value_before_softmax:
            mixed = self.value(mixed)
        if not config.residual_before:
            mixed = mixed + residual
        return mixed.to(out_dtype)


def add_fusion(model: nn.Module, block: Fuse | list[str], config: FusionConfig | str = "dynamic",
               train_head: bool = True, activate: bool = True) -> Fuse:
    """Add fusion layers over the adapters of ``block`` (a ``Fuse``, or a list of adapter names),
    at every site they share; ``train_head``: the fusion gets its own copy of the task head, as
    an adapter does. ``activate``: route to the ``Fuse`` and train its layers (the adapters stay
    frozen). Returns the ``Fuse``. On any error the model is left as it was."""
    block = block if isinstance(block, Fuse) else Fuse(*_names(block))
    config = _fusion_config(config)
    state = _require_state(model)
    if block.name in state.fusions:
        raise AdapterError(f"fusion {block.name!r} already exists; delete it first (adaptkit.delete_fusion)")
    sites = fusion_sites(model, state, block)
    insert_fusion(model, state, block, config, sites, train_head, initialise=True)
    if activate:
        set_active_adapter(model, block)
    return block


def fusion_sites(model: nn.Module, state: AdapterState, block: Fuse) -> list[Site]:
    """The sites every fused adapter has (AdapterHub's fusion goes where the adapters' locations
    agree); refused when they differ, naming the first that does."""
    fused = block.name.split(",")
    unknown = [n for n in fused if n not in state.adapters]
    if unknown:
        raise AdapterError(f"{block!r} fuses {unknown[0]!r}, which this model has no adapter of; "
                           f"it has: {', '.join(state.adapters)}")
    sites = [s for s in state.adapters[fused[0]].sites if s.kind != HEAD]
    for name in fused[1:]:
        other = [s for s in state.adapters[name].sites if s.kind != HEAD]
        if other != sites:
            raise AdapterError(f"{block!r}: adapters {fused[0]!r} and {name!r} sit at different sites ({len(sites)} and "
                               f"{len(other)}); fuse adapters added with one placement and the same layers")
    if not sites:
        raise AdapterError(f"{block!r}: the fused adapters have no bottleneck sites")
    return sites


def insert_fusion(model: nn.Module, state: AdapterState, block: Fuse, config: FusionConfig, sites: list[Site],
                  train_head: bool, initialise: bool, head: dict | None = None) -> FusionEntry:
    """Build the fusion's layers and head copy (``initialise=False``: a loader overwrites them);
    ``head``: the spec of an own head (AdapterHub's) at the ``HEAD`` site among ``sites``."""
    state.refuse_while_busy(f"add fusion {block.name!r}")
    refuse_sharded(model, f"add fusion {block.name!r}")
    entry = FusionEntry(config=config, sites=sites, block=block, head=head)
    dropout = config.dropout_prob or getattr(getattr(model, "config", None), "attention_probs_dropout_prob", 0.0) or 0.0
    state.fusions[block.name] = entry
    try:
        for site in sites:
            target = model.get_submodule(site.name)
            weight = next(target.parameters())
            dtype = adapter_dtype(weight.dtype, state.adapters[block.last()].config)
            if site.kind == HEAD:
                layer = ClassificationHead(site.width, head, device=weight.device, dtype=dtype, initialise=initialise)
                slot = _slot(target, site.name, state, HeadSlot)
            else:
                layer = FusionLayer(site.width, config, dropout, device=weight.device, dtype=dtype, initialise=initialise)
                slot = getattr(target, SLOT_ATTR)
            slot.fusions[block.name] = layer.train(target.training)
            entry.site_modules[site.name] = layer
        if train_head:
            for module_name in dict.fromkeys(n.rpartition(".")[0] for n in state.base.head):
                module = model.get_submodule(module_name)
                dtype = adapter_dtype(next(module.parameters(recurse=False)).dtype, state.adapters[block.last()].config)
                entry.own_copies[module_name] = _slot(module, module_name, state, TaskSlot).add(block.name, module, dtype)
        apply_choices(model, state)
    except BaseException:
        remove_fusion(model, state, block.name)
        raise
    return entry


def delete_fusion(model: nn.Module, block: Fuse | str) -> None:
    """Remove a fusion's layers and head copy; refused while a routing context uses it or another
    thread runs the model. The fused adapters stay."""
    state = _require_state(model)
    name = block.name if isinstance(block, Fuse) else block
    if name not in state.fusions:
        raise AdapterError(f"no fusion {name!r}; this model has: {', '.join(state.fusions) or 'none'}")
    state.refuse_pinned(name, "delete fusion")
    state.refuse_while_busy(f"delete fusion {name!r}")
    refuse_sharded(model, f"delete fusion {name!r}")
    if any(f.name == name for f in fuses_in(state.active)):
        state.active = None
    if state.trainable is not None:
        state.trainable = [t for t in state.trainable if not (isinstance(t, Fuse) and t.name == name)]
    remove_fusion(model, state, name)


def remove_fusion(model: nn.Module, state: AdapterState, name: str) -> None:
    """Take the fusion's modules out of their slots (a slot it emptied goes)."""
    entry = state.fusions.pop(name)
    _remove_from_slots(model, state, name, [*entry.site_modules, *entry.own_copies])
    apply_choices(model, state)


def fusion_regularization_loss(model: nn.Module) -> torch.Tensor | None:
    """AdapterHub's value-matrix regularization for the fusions that train and ask for it
    (``regularization=True``): ``0.01 · Σ (I − V)²`` over their layers; add it to the loss (AdapterHub's
    trainer backpropagates it at each step). None when no such fusion trains. It reads the matrices
    whole, so on a sharded model collect it in the forward instead (``fusion_regularization``)."""
    state = _require_state(model)
    engine = sharded_by(model)
    if engine is not None:
        raise AdapterError(f"fusion_regularization_loss reads the value matrices whole, and {engine} keeps them "
                           "sharded outside their layers' call: collect the regularization in the forward instead: "
                           "`with adaptkit.fusion_regularization() as reg: loss = model(**batch).loss`, then "
                           "backpropagate `loss + reg.total()`")
    terms = [value_regularization(layer.value.weight)
             for entry in state.fusions.values() if entry.config.regularization and entry.config.value
             for layer in entry.site_modules.values() if layer.value.weight.requires_grad]
    return torch.stack(terms).sum() if terms else None


def _names(names) -> list[str]:
    if isinstance(names, str):
        raise AdapterError(f"add_fusion takes a Fuse or a list of adapter names, got the string {names!r}: "
                           f"pass adaptkit.Fuse({', '.join(repr(n) for n in names.split(','))})")
    return list(names)


def _fusion_config(config: FusionConfig | str) -> FusionConfig:
    presets = {"dynamic": FusionConfig.dynamic, "static": FusionConfig.static}
    if isinstance(config, FusionConfig):
        return config
    if isinstance(config, str) and config in presets:
        return presets[config]()
    raise AdapterError(f"fusion config must be a FusionConfig or one of {sorted(presets)}, got {config!r}")
