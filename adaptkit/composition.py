"""What a composition of bottleneck adapters computes at one site: AdapterHub 1.3.0's recursion
(``methods/adapter_layer_base.py`` and ``methods/bottleneck.py``), step for step.

AdapterHub carries a state through the blocks: the hidden states, the adapter residual, the last
bottleneck's up-projection (for Fuse) and the last adapter's name. Before an adapter (or a block)
its ``pre_forward`` runs: at a Houlsby-style site (``AdapterSlot``: the sub-layer's output ``h``,
the model adding its residual and LayerNorm afterwards) the residual is the hidden state itself; at
a SeqBn site (``RenormSlot``: the LayerNorm of ``h + x``; GPT-2's block output) the residual is
``h`` and the adapter reads ``LN(h + x)``. There adaptkit sees only the sum ``h + x``, so it carries
every residual-side tensor shifted by ``x``; steps that would need ``x`` on its own (AdapterHub's
Average, which scales the residual by Σw/n; a second ``pre_forward`` of an already normalised
state, as a Stack nested in a Fuse, Parallel or Average does) are refused, naming the block (an
Average's weights when it is routed, ``refuse_scaled_average``; the rest here, per site).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from .errors import AdapterError
from .routing import Average, Composition, Fuse, Parallel, Stack


@dataclass(frozen=True)
class Site:
    """What a composition needs from the slot it runs in."""

    adapters: nn.ModuleDict
    fusions: nn.ModuleDict
    #: the module's computation (the routed LayerNorm) at a SeqBn site of a post-LN block, else None
    norm: Callable | None
    #: the site sees the sub-layer output plus its residual (SeqBn), not the output alone
    sums: bool


@dataclass(frozen=True)
class State:
    """AdapterHub's ``BottleneckState``; at a SeqBn site ``hidden`` is shifted by ``x`` unless
    ``normalised`` (it went through ``pre_forward``), ``residual`` always is."""

    hidden: torch.Tensor
    residual: torch.Tensor
    up: torch.Tensor | None = None
    last: str | None = None
    normalised: bool = False


def run(site: Site, block: Composition, hidden: torch.Tensor) -> torch.Tensor | None:
    """The site's output under ``block``: the sub-layer output (a SeqBn site: the LayerNorm's output)
    computed from ``hidden`` (the module's output; a SeqBn site: the LayerNorm's input). None: no
    adapter of the block is here, and AdapterHub runs the site as the base model does."""
    if not set(block.flatten()) & set(site.adapters):
        return None
    state = _BLOCKS[type(block)](site, block, State(hidden, hidden), 0)
    if state.normalised:  # AdapterHub's post_forward: LN(hidden + x)
        _refuse_shift(block, "the last adapter's output would be normalised again with the residual")
    return site.norm(state.hidden) if site.norm is not None else state.hidden


def _pre_forward(site: Site, state: State, block: Composition) -> tuple[State, torch.Tensor]:
    """AdapterHub's ``Adapter.pre_forward`` (``residual_before_ln=True``): the new state and the
    fusion query (``query_before_ln=False``: the hidden state the adapters read)."""
    if not site.sums:
        return replace(state, residual=state.hidden), state.hidden
    if state.normalised:
        _refuse_shift(block, "a Stack inside a Fuse, Parallel or Average normalises the state twice")
    hidden = site.norm(state.hidden) if site.norm is not None else state.hidden
    return replace(state, hidden=hidden, residual=state.hidden, normalised=True), hidden


def _single(site: Site, name: str, state: State) -> State:
    """``compose_single``: the adapter's bottleneck on the hidden state, plus the residual."""
    up = site.adapters[name].delta(state.hidden)
    return replace(state, hidden=state.residual + up, up=up, last=name, normalised=False)


def _child(site: Site, child, state: State, level: int) -> State | None:
    """A child block, or a child adapter without its own ``pre_forward`` (None: not at this site)."""
    if isinstance(child, Composition):
        return _BLOCKS[type(child)](site, child, state, level + 1)
    return _single(site, child, state) if child in site.adapters else None


def _stack(site: Site, block: Stack, state: State, level: int) -> State:
    for child in block.children:
        if isinstance(child, Composition):
            state = _BLOCKS[type(child)](site, child, state, level + 1)
        elif child in site.adapters:
            state = _single(site, child, _pre_forward(site, state, block)[0])
    return state


def _fuse(site: Site, block: Fuse, state: State, level: int) -> State:
    state, query = _pre_forward(site, state, block)
    outputs = [s for s in (_child(site, c, state, level) for c in block.children) if s is not None]
    if not outputs:
        return replace(state, last=block.last())
    if block.name not in site.fusions:
        raise AdapterError(f"{block!r} has no fusion layer at this site: add it with adaptkit.add_fusion(model, "
                           f"{block!r}) (or load_fusion) before routing to it")
    layer = site.fusions[block.name]
    if site.sums and (layer.config.residual_before or layer.config.query_before_ln):
        _refuse_shift(block, "its fusion config reads the feed-forward output before the residual is added "
                      "(residual_before / query_before_ln)")
    ups = torch.stack([s.up for s in outputs], dim=2)  # batch, tokens, adapters, features
    fused = layer(query, ups, state.residual)
    return replace(state, hidden=fused, last=block.last(), normalised=False)


def _parallel(site: Site, block: Parallel, state: State, level: int) -> State:
    """The batch arrives already copied once per child (``model`` copies the inputs): child ``i``
    runs on its rows. An absent child passes its rows through."""
    rows = state.hidden.shape[0]
    if rows % block.channels:
        raise AdapterError(f"{block!r} runs on {block.channels} copies of the batch, but this site got {rows} rows: "
                           "an input the model did not copy (pass inputs through the model's forward)")
    size = rows // block.channels
    state, _ = _pre_forward(site, state, block)
    parts = []
    for index, child in enumerate(block.children):
        piece = State(state.hidden[index * size:(index + 1) * size], state.residual[index * size:(index + 1) * size],
                      None, state.last, state.normalised)
        parts.append(_child(site, child, piece, level) or piece)
    if len({p.normalised for p in parts}) > 1:
        _refuse_shift(block, "a child absent from this site would leave its rows normalised")
    return State(torch.cat([p.hidden for p in parts]), torch.cat([p.residual for p in parts]), None,
                 parts[-1].last, parts[0].normalised)


def _average(site: Site, block: Average, state: State, level: int) -> State:
    """``mean_i(w_i · out_i)`` over the children (AdapterHub divides the weighted sum by n)."""
    state, _ = _pre_forward(site, state, block)
    outputs = [_child(site, c, state, level) for c in block.children]
    if any(o is None for o in outputs):
        missing = [c for c, o in zip(block.children, outputs) if o is None]
        raise AdapterError(f"{block!r}: {missing!r} have no adapter at this site; AdapterHub's Average needs every "
                           "child at each site it averages (add the adapters with the same placement and layers)")
    hidden = sum(w * o.hidden for w, o in zip(block.weights, outputs)) / len(outputs)
    return replace(state, hidden=hidden, up=None, last=outputs[-1].last, normalised=False)


def refuse_scaled_average(block: Average) -> None:
    """For an Average at SeqBn sites (``model.check_composition`` calls it when the block is routed):
    AdapterHub's Average multiplies the residual by Σw/n, which a SeqBn site cannot tell apart from the output."""
    scale = sum(block.weights) / len(block.weights)
    if abs(scale - 1.0) > 1e-12:
        _refuse_shift(block, f"AdapterHub's Average scales the residual by Σw/n = {scale:g}")


def _refuse_shift(block: Composition, why: str) -> None:
    raise AdapterError(
        f"{block!r} cannot run on adapters placed 'pfeiffer' (AdapterHub's SeqBn): {why}, which needs the "
        "feed-forward output and its residual apart, and adaptkit's SeqBn site sees only their sum. Use "
        "adapters placed 'houlsby' or 'houlsby-ffn', or a composition without that step"
        + (" (an Average whose weights sum to the number of children, normalize_weights=False)"
           if isinstance(block, Average) else ""))


_BLOCKS = {Stack: _stack, Fuse: _fuse, Parallel: _parallel, Average: _average}
