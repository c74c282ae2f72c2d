"""What adaptkit keeps beside a model: its adapters, what each owns, and who is running it.

Kept on the model as a plain attribute (not a module, so it never enters a state dict). Routing
for the calling thread lives in a context variable; the model's modules are changed only by the
management calls (add, delete, load, set_active_adapter), which refuse while another thread is
inside a forward or a routing context of this model.
"""

from __future__ import annotations

import contextvars
import copy
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import AdapterConfig, FusionConfig
from .engines import TrainingFixedBy
from .errors import AdapterError
from .params import BaseParameters
from .routing import Fuse, Routing, fuses_in, routed_names
from .targets import Site

STATE_ATTR = "_adaptkit_state"
_UNSET = object()


@dataclass
class AdapterEntry:
    """One adapter and everything it owns, found when it is added: save, load, counting and
    trainability read these, never the model's parameter names."""

    config: AdapterConfig
    sites: list[Site]
    #: site name -> the adapter's module there (a bottleneck, or its own head)
    site_modules: dict[str, nn.Module] = field(default_factory=dict)
    #: owning module name -> the adapter's copy of that module's own parameters (norm, head)
    own_copies: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def task_modules(self) -> list[str]:
        return list(self.own_copies)

    def task_values(self) -> dict[str, nn.Parameter]:
        """The adapter's own LayerNorm and head values, keyed by the base parameters' names."""
        return {f"{module}.{key}" if module else key: param
                for module, own in self.own_copies.items() for key, param in own.named_parameters()}

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in [*self.site_modules.values(), *self.own_copies.values()] for p in m.parameters()]


@dataclass
class FusionEntry(AdapterEntry):
    """An AdapterFusion and what it owns, as an adapter's are found: its fusion layer per site
    (``site_modules``) and its copy of the task head (``own_copies``); ``config`` is its
    ``FusionConfig``."""

    config: FusionConfig
    block: Fuse | None = None
    head: dict | None = None  # an own head's spec (AdapterHub's fusion head on a bare model)


class AdapterState:
    """The adapters of one model, its default routing, and the threads running it."""

    def __init__(self, model: nn.Module, base: BaseParameters) -> None:
        self.adapters: dict[str, AdapterEntry] = {}
        self.fusions: dict[str, FusionEntry] = {}  # by the Fuse's name ("a,b")
        self.active: Routing = None  # an adapter's name, a composition, or None
        self.trainable: list[str | Fuse] | None = None  # None: the active adapter (a composition: its fusions) trains
        self.base = base
        self.hooks: dict[str, list[torch.utils.hooks.RemovableHandle]] = {}
        self.original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._fresh_runtime(model)

    def _fresh_runtime(self, model: nn.Module | None) -> None:
        self.model_ref = weakref.ref(model) if model is not None else lambda: None
        self.routing_var: contextvars.ContextVar = contextvars.ContextVar(f"adaptkit_routing_{id(self)}",
                                                                          default=_UNSET)
        # this thread's inputs already hold a Parallel's copies of the batch (generate_parallel)
        self.copied_var: contextvars.ContextVar = contextvars.ContextVar(f"adaptkit_copied_{id(self)}", default=False)
        self.lock = threading.RLock()
        self.forwards: Counter[int] = Counter()  # thread id -> forwards of this model in flight
        self.contexts: Counter[int] = Counter()  # thread id -> routing contexts open
        self.pinned: Counter[str] = Counter()  # adapter or Fuse name -> open contexts that route to it
        self.fixed = TrainingFixedBy()  # an engine that fixed which parameters train
        self.generation = 0  # counts changes of which parameters train

    _RUNTIME = ("model_ref", "routing_var", "copied_var", "lock", "forwards", "contexts", "pinned", "fixed", "generation")

    def __getstate__(self) -> dict:
        """Pickled (``torch.save(model)``) without what belongs to this process's threads."""
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, values: dict) -> None:
        self.__dict__.update(values)
        self._fresh_runtime(None)  # the model is bound again by the next get_state

    def __deepcopy__(self, memo: dict) -> AdapterState:
        """A copy of the whole model gets its own state; a copy of a part of it (PEFT's
        ``modules_to_save`` copies a head) keeps routing with this model."""
        model = self.model_ref()
        if model is None or id(model) not in memo:
            return self
        new = AdapterState.__new__(AdapterState)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key not in self._RUNTIME:
                setattr(new, key, copy.deepcopy(value, memo))
        new._fresh_runtime(memo[id(model)])
        return new

    # -- routing -----------------------------------------------------------------------------
    def current(self) -> Routing:
        """What a forward in this thread runs now: the innermost open context's routing, else
        the model's active adapter."""
        routing = self.routing_var.get()
        return self.active if routing is _UNSET else routing

    def open_context(self, routing: Routing) -> contextvars.Token:
        with self.lock:
            self.contexts[threading.get_ident()] += 1
            self.pinned.update(_pins(routing))
        return self.routing_var.set(routing)

    def close_context(self, token: contextvars.Token, routing: Routing) -> None:
        self.routing_var.reset(token)
        with self.lock:
            _decrement(self.contexts, threading.get_ident())
            for name in _pins(routing):
                _decrement(self.pinned, name)

    def run_as(self, routing: Routing) -> contextvars.Token:
        """Route this thread without opening a context (a block recomputed in backward)."""
        return self.routing_var.set(routing)

    # -- forwards in flight --------------------------------------------------------------------
    def forward_started(self, module: nn.Module, args: tuple) -> None:  # noqa: ARG002 - hook signature
        self.fixed.check_forward(module, self.generation)
        with self.lock:
            self.forwards[threading.get_ident()] += 1

    def forward_ended(self, module: nn.Module, args: tuple, output: object) -> None:  # noqa: ARG002
        with self.lock:
            _decrement(self.forwards, threading.get_ident())

    def copies_the_batch(self) -> bool:
        """Whether this thread's forwards copy the batch for a Parallel: it is inside a call of the
        model (whose input hook copies it), in backward, rerunning a checkpointed block of one, or
        its inputs hold the copies already (``generate_parallel``)."""
        with self.lock:
            inside = self.forwards[threading.get_ident()] > 0
        return inside or in_backward() or self.copied_var.get()

    def refuse_while_busy(self, action: str) -> None:
        """Changing the model's modules while another thread runs it would change them under
        that thread's forward (and torch's hook dicts while it iterates them): refused."""
        me = threading.get_ident()
        with self.lock:
            running = sum(n for t, n in self.forwards.items() if t != me)
            holding = sum(n for t, n in self.contexts.items() if t != me)
        if running or holding:
            what = " and ".join(part for part in (
                f"{running} forward(s) in flight" if running else "",
                f"{holding} routing context(s) open" if holding else "") if part)
            raise AdapterError(
                f"cannot {action} while other threads use this model ({what}): adding, loading, "
                "deleting or activating adapters changes modules those threads run. Do it before "
                "serving starts, or wait for the other threads; per-request routing needs no "
                "change: use adaptkit.using(model, name) in each thread")

    def refuse_pinned(self, name: str, action: str) -> None:
        """``action`` names what goes: "delete adapter", "delete fusion"."""
        with self.lock:
            count = self.pinned[name]
        if count > 0:
            raise AdapterError(
                f"cannot {action} {name!r}: {count} open using()/per_example_adapters "
                "context(s) route to it, and their forwards would silently run without it. Leave "
                "those contexts first")


def in_backward() -> bool:
    """Whether autograd's backward is running in this thread (a checkpointed block's rerun)."""
    return torch._C._current_graph_task_id() != -1


def _pins(routing: Routing) -> tuple[str, ...]:
    """What an open context keeps from deletion: its adapters, and its fusions by name."""
    return routed_names(routing) + tuple(f.name for f in fuses_in(routing))


def _decrement(counts: Counter, key) -> None:
    """One fewer; a key at zero goes (threads come and go in a server)."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


def get_state(model: nn.Module) -> AdapterState | None:
    state = getattr(model, STATE_ATTR, None)
    if state is not None and state.model_ref() is None and STATE_ATTR in vars(model):
        state.model_ref = weakref.ref(model)  # unpickled: its model is this one
    return state
