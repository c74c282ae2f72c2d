"""Which adapter a forward runs, decided per call and per thread, never by writing to the model.

A model's routing is one value: an adapter's name, ``None`` (the base model), a composition of
adapters (``Stack``, ``Fuse``, ``Parallel``, ``Average``: AdapterHub's blocks, run by
``adaptkit.composition``) or ``RowGroups`` (each example its own adapter or composition). ``AdapterState.current()`` reads it from a context variable that
``using`` / ``adapters_disabled`` / ``per_example_adapters`` set for the calling thread (or asyncio
task) alone, else from the model's default (``set_active_adapter``). The hooks that run adapters
read it on every call, so two threads with different adapters share one model and its modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, Union

import torch

from .errors import AdapterError


@dataclass(frozen=True)
class RowGroups:
    """Per-example routing: the rows of a batch of ``size`` that each adapter runs on (rows of
    no group run the base model)."""

    size: int
    groups: tuple[tuple[Union[str, "Composition"], torch.Tensor], ...]

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
        return tuple(n for routing, _ in self.groups for n in routed_names(routing))


class Composition:
    """A block of adapters, as AdapterHub's ``adapters.composition`` names them; immutable and
    hashable, so it keys row groups and fusions. Children are adapter names or blocks, nested as
    AdapterHub allows (checked on creation: ``ALLOWED_NESTINGS``, and below the second level only
    a Stack)."""

    __slots__ = ("children",)
    children: tuple[Union[str, "Composition"], ...]

    def __init__(self, *children: Union[str, "Composition"]) -> None:
        if not children:
            raise AdapterError(f"{type(self).__name__}() needs at least one adapter name or block")
        for child in children:
            if not isinstance(child, (str, Composition)):
                raise AdapterError(f"{type(self).__name__} takes adapter names and composition blocks, got "
                                   f"{type(child).__name__} {child!r:.60}")
            if isinstance(child, Composition) and type(child) not in ALLOWED_NESTINGS[type(self)]:
                allowed = ", ".join(t.__name__ for t in ALLOWED_NESTINGS[type(self)])
                raise AdapterError(f"cannot nest {type(child).__name__} inside {type(self).__name__} (AdapterHub "
                                   f"allows only adapter names and {allowed} there)")
        object.__setattr__(self, "children", tuple(children))
        _check_depth(self, 0)

    def __setattr__(self, key, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self):
        """Pickled (``torch.save`` of a model with a fusion) in its AdapterHub dict form: the default
        rebuild sets attributes, which an immutable block refuses."""
        return composition_from_dict, (self.to_dict(),)

    def __copy__(self) -> "Composition":
        return self

    def __deepcopy__(self, memo: dict) -> "Composition":
        return self

    def _key(self) -> tuple:
        return (type(self).__name__, self.children)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Composition) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.children))})"

    def flatten(self) -> tuple[str, ...]:
        """Every adapter named in the block, each once, in order."""
        return tuple(dict.fromkeys(n for c in self.children for n in routed_names(c)))

    def first(self) -> str:
        child = self.children[0]
        return child if isinstance(child, str) else child.first()

    def last(self) -> str:
        child = self.children[-1]
        return child if isinstance(child, str) else child.last()

    @property
    def channels(self) -> int:
        """How many copies of the batch the block runs on (AdapterHub's ``parallel_channels``)."""
        return max(1 if isinstance(c, str) else c.channels for c in self.children)

    def to_dict(self) -> dict:
        """AdapterHub's ``to_dict`` form (JSON)."""
        return {"type": type(self).__name__, "children": [
            c.to_dict() if isinstance(c, Composition) else {"type": "single", "children": [c]}
            for c in self.children]}


def composition_from_dict(data: object) -> Composition:
    """A block from its ``to_dict`` form (AdapterHub's), or an ``AdapterError`` naming what is wrong."""
    blocks = {cls.__name__: cls for cls in (Stack, Fuse, Parallel, Average)}
    if not isinstance(data, dict) or data.get("type") not in blocks or not isinstance(data.get("children"), list):
        raise AdapterError(f"not a composition of {sorted(blocks)}: {str(data)[:80]}")
    children = [c["children"][0] if isinstance(c, dict) and c.get("type") == "single" else composition_from_dict(c)
                for c in data["children"]]
    kwargs = data.get("kwargs") or {}
    return blocks[data["type"]](*children, **({"weights": kwargs["weights"], "normalize_weights": False}
                                              if "weights" in kwargs else {}))


class Stack(Composition):
    """Each child's output feeds the next (MAD-X: a language adapter under a task adapter)."""

    __slots__ = ()


class Fuse(Composition):
    """AdapterFusion (Pfeiffer et al. 2021): attention over the children's bottleneck outputs,
    computed by the fusion layers ``adaptkit.add_fusion`` adds for these adapters."""

    __slots__ = ()

    def __init__(self, *children: Union[str, Composition]) -> None:
        super().__init__(*children)
        names = self.fused()
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise AdapterError(f"Fuse{names!r} fuses {twice[0]!r} twice: the attention would weigh one "
                               "adapter's output as two; name each adapter once")

    def fused(self) -> tuple[str, ...]:
        """The adapters whose outputs the fusion attends over: each child's last adapter."""
        return tuple(c if isinstance(c, str) else c.last() for c in self.children)

    @property
    def name(self) -> str:
        """AdapterHub's name of the fusion: the fused adapters, joined by commas."""
        return ",".join(self.fused())


class Parallel(Composition):
    """The batch is run once per child (copies stacked along the batch: child ``i`` owns rows
    ``i·B .. (i+1)·B - 1`` of every output), each copy with its own adapter, LayerNorms and head."""

    __slots__ = ()

    @property
    def channels(self) -> int:
        return len(self.children)


class Average(Composition):
    """The children's outputs averaged as AdapterHub 1.3.0 does: ``mean_i(w_i · out_i)``, the mean
    over the n children of each weighted output (so ``Σ w_i out_i / n``; weights normalised to sum 1
    unless ``normalize_weights=False``; default ``1/n`` each)."""

    __slots__ = ("weights",)
    weights: tuple[float, ...]

    def __init__(self, *children: Union[str, Composition], weights=None, normalize_weights: bool = True) -> None:
        super().__init__(*children)
        if weights is None:
            weights = [1 / len(children)] * len(children)
        else:
            weights = list(weights)
            if len(weights) != len(children) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                        for w in weights):
                raise AdapterError(f"Average of {len(children)} children takes {len(children)} numeric weights, "
                                   f"got {weights!r}")
            if normalize_weights:
                total = sum(weights)
                if total == 0:
                    raise AdapterError(f"Average weights {weights!r} sum to 0 and cannot be normalised to sum 1; "
                                       "pass weights with a non-zero sum, or normalize_weights=False to use them as given")
                weights = [w / total for w in weights]
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))

    def _key(self) -> tuple:
        return (*super()._key(), self.weights)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, weights={list(self.weights)})"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "kwargs": {"weights": list(self.weights)}}


#: AdapterHub's ``ALLOWED_NESTINGS`` for the blocks adaptkit runs (Split, BatchSplit and MultiTask
#: are not offered: ``per_example_adapters`` routes examples).
ALLOWED_NESTINGS: dict[type, tuple[type, ...]] = {
    Stack: (Fuse, Parallel, Average),
    Fuse: (Stack,),
    Parallel: (Stack, Average),
    Average: (Stack,),
}


def _check_depth(block: Composition, level: int) -> None:
    """AdapterHub's ``validate_composition``: below the second level, only Stacks."""
    if level > 1 and not isinstance(block, Stack):
        raise AdapterError(f"composition too deep: AdapterHub allows only a Stack at level {level}, got {block!r}")
    for child in block.children:
        if isinstance(child, Composition):
            _check_depth(child, level + 1)


Routing = Union[str, Composition, RowGroups, None]
Block = TypeVar("Block", bound=Composition)


def routed_names(routing: Routing) -> tuple[str, ...]:
    """The adapters a routing runs."""
    if isinstance(routing, (RowGroups, Composition)):
        return routing.names if isinstance(routing, RowGroups) else routing.flatten()
    return () if routing is None else (routing,)


def blocks_in(routing: Routing, kind: type[Block]) -> tuple[Block, ...]:
    """The blocks of type ``kind`` a routing runs, at any depth, each once."""
    if isinstance(routing, RowGroups):
        return tuple(dict.fromkeys(b for r, _ in routing.groups for b in blocks_in(r, kind)))
    if not isinstance(routing, Composition):
        return ()
    inner = tuple(b for c in routing.children for b in blocks_in(c, kind))
    return tuple(dict.fromkeys(((routing,) if isinstance(routing, kind) else ()) + inner))


def fuses_in(routing: Routing) -> tuple[Fuse, ...]:
    """The Fuse blocks a routing runs, each once."""
    return blocks_in(routing, Fuse)


def copy_owner(routing: Union[str, Composition, None]) -> Union[str, Parallel, None]:
    """Whose LayerNorm and head copies (and own head) run for a routing: the adapter's own; for a
    block AdapterHub's head choice: the last child's (a Fuse's own fusion head first, keyed by its
    name), or per copy of the batch under a Parallel."""
    while isinstance(routing, (Stack, Average)):
        routing = routing.children[-1]
    return routing
