"""The bottleneck adapter, the slots that hold adapters on a module, and the one hook that runs them.

An adapted module keeps its class and its parameters. Beside them it gets child slots: an
``AdapterSlot`` (``<module>.adaptkit``) holding each adapter's bottleneck (or own head) there, and a
``TaskSlot`` (``<module>.adaptkit_task``) holding each adapter's own copy of the module itself when
the adapter trains that module's parameters (a LayerNorm, a head Linear). One forward hook,
installed when the first slot arrives, reads the routing of the calling thread and replaces the
module's output by the routed adapter's: its copy's output, plus its bottleneck's delta (for a
composition, what ``adaptkit.composition`` computes from the slot's adapters and fusions). Nothing of
the model is written while it runs, and every parameter is used inside its own module's call, so
module hooks (ZeRO-3, FSDP, profilers) see each one.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn

from . import composition
from .config import AdapterConfig
from .errors import AdapterError
from .params import SLOT_ATTR, TASK_ATTR
from .routing import Composition, Fuse, Parallel, RowGroups, copy_owner

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
}


class UninitialisedLinear(nn.Linear):
    """An ``nn.Linear`` whose weights are left as allocated: its owner initialises them, or a
    loader overwrites them. Skips torch's Kaiming init, which ``nn.utils.skip_init`` still runs on
    meta tensors (half of an adapter load's time)."""

    def reset_parameters(self) -> None:
        pass


class AccumulatingLinear(UninitialisedLinear):
    """The up-projection: ``onto + linear(x)``, accumulated into ``onto + bias`` where the dtypes
    agree (two passes over one hidden-sized output instead of four over two: bias copy, product,
    sum — the adapter's main cost beside a projection on the CPU). Inside its own call, so hooks
    on it see its weights used."""

    def forward(self, x: torch.Tensor, onto: torch.Tensor | None = None, overwrite: bool = False) -> torch.Tensor:
        """``overwrite``: nothing else holds ``onto`` and no gradient is taken, so the sum is
        written into it (no new tensor)."""
        if onto is None:
            return super().forward(x)
        if (not onto.is_contiguous() or not onto.dtype == x.dtype == self.weight.dtype
                or torch.is_autocast_enabled(onto.device.type)):  # an in-place product never autocasts
            return onto + super().forward(x).to(onto.dtype)
        flat = onto.view(-1, onto.shape[-1])
        total = flat.add_(self.bias) if overwrite else flat + self.bias  # in place on a new tensor is safe
        total.addmm_(x.reshape(-1, x.shape[-1]), self.weight.t())
        return total.view(onto.shape)


class BottleneckAdapter(nn.Module):
    """``h + up(dropout(act(down(h))))``: 2·m·d + m + d parameters (Houlsby et al. 2019)."""

    def __init__(self, hidden_size: int, config: AdapterConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, initialise: bool = True) -> None:
        """``initialise=False`` leaves the weights unset, for a caller that overwrites them
        (torch's own Linear init is always skipped: ``reset_parameters`` replaces it)."""
        super().__init__()
        bottleneck = config.bottleneck_size(hidden_size)
        self.down = UninitialisedLinear(hidden_size, bottleneck, device=device, dtype=dtype)
        self.act = _ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        self.up = AccumulatingLinear(bottleneck, hidden_size, device=device, dtype=dtype)
        if initialise:
            self.reset_parameters(config)

    @torch.no_grad()
    def reset_parameters(self, config: AdapterConfig) -> None:
        """Start near (houlsby, bert) or exactly at (zero) the identity function."""
        std = config.init_std
        for linear in (self.down, self.up):
            if config.init == "bert":  # AdapterHub's default: BERT's own init, std 0.02
                nn.init.normal_(linear.weight, std=0.02)
            else:
                nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(linear.bias)
        if config.init == "zero":
            nn.init.zeros_(self.up.weight)

    def forward(self, source: torch.Tensor, onto: torch.Tensor | None = None, overwrite: bool = False) -> torch.Tensor:
        """``onto + delta(source)``; ``onto`` defaults to ``source`` (the adapter's own skip)."""
        return self.added_to(source if onto is None else onto, source, overwrite)

    def delta(self, source: torch.Tensor) -> torch.Tensor:
        """The bottleneck runs in the adapter's dtype (float32 on a 16-bit base), its result is
        in the model's."""
        return self.up(self._inner(source)).to(source.dtype)

    def added_to(self, onto: torch.Tensor, source: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """``onto + delta(source)``, the up-projection accumulating into the sum."""
        return self.up(self._inner(source), onto=onto, overwrite=overwrite)

    def _inner(self, source: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.down(source.to(self.down.weight.dtype))))


class AdapterSlot(nn.Module):
    """Holds the named adapters of one module; the routed one adds its delta to the output.

    A child of the module, so adapters follow the model's device and dtype and the module's own
    parameter names stay intact; run from the module's hook, so the module keeps its class
    (transformers 5 records outputs by module class).
    """

    #: why a mixed batch cannot run this slot's adapters (None: it can, row by row)
    refuses_rows: str | None = None
    #: the slot sees the sub-layer's output plus its residual (AdapterHub's SeqBn), not the output alone
    sums = False

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()  # AdapterFusion layers, keyed by the Fuse's name ("a,b")

    def adapted_output(self, module: nn.Module, adapter: nn.Module, args: tuple, kwargs: dict, output, norm,  # noqa: ARG002
              overwrite: bool):
        """The output with ``adapter`` applied; ``output`` is the (routed) module's output and
        ``norm`` runs the (routed) module again."""
        hidden = output[0] if isinstance(output, tuple) else output
        adapted = adapter(hidden, hidden, overwrite)
        return (adapted,) + output[1:] if isinstance(output, tuple) else adapted

    def compose(self, module: nn.Module, block: Composition, args: tuple, kwargs: dict, output, norm):  # noqa: ARG002
        """The output under a composition of this slot's adapters (unchanged where none is here)."""
        hidden = output[0] if isinstance(output, tuple) else output
        adapted = composition.run(composition.Site(self.adapters, self.fusions, None, self.sums), block, hidden)
        if adapted is None:
            return output
        return (adapted,) + output[1:] if isinstance(output, tuple) else adapted


class SumSlot(AdapterSlot):
    """A pre-LN block's output (GPT-2's SeqBn site): the adapter reads and adds to ``h + r``, as
    ``AdapterSlot`` computes; a composition knows it sees the sum."""

    sums = True


class RenormSlot(AdapterSlot):
    """AdapterHub's SeqBn in a post-LN block, from the feed-forward's own LayerNorm: that norm
    gets ``y = h + x`` (feed-forward output plus residual); the adapter sees ``LN(y)`` and the
    norm runs again on ``y + delta``, i.e. ``LN(h + x + up(act(down(LN(h + x)))))``, with the
    routed adapter's own LayerNorm in both calls where it trains one."""

    sums = True

    def adapted_output(self, module, adapter, args, kwargs, output, norm, overwrite):  # noqa: ARG002
        return norm(args[0] + adapter.delta(output))

    def compose(self, module, block, args, kwargs, output, norm):  # noqa: ARG002
        adapted = composition.run(composition.Site(self.adapters, self.fusions, norm, True), block, args[0])
        return output if adapted is None else adapted


class TaskSlot(nn.Module):
    """Each adapter's own copy of the module it is attached to: the module's class with its own
    parameters (a LayerNorm's weight and bias, a head Linear's), so any norm class works
    (LayerNorm, RMSNorm, T5LayerNorm, Gemma's 1 + w). ``state_dict`` keeps the base values under
    their own names and every adapter's under ``<module>.adaptkit_task.values.<adapter>.<param>``."""

    def __init__(self) -> None:
        super().__init__()
        self.values = nn.ModuleDict()

    def add(self, name: str, module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
        """Give adapter ``name`` a copy of ``module`` with its own parameters (in ``dtype``)."""
        self.values[name] = own_copy(module, dtype)
        return self.values[name]


def own_copy(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """A module of ``module``'s class and settings (eps, shape, ...) computing with its own copy of
    ``module``'s direct parameters and buffers; no hooks, no slots. Children the forward may call
    are the base's, shared as plain attributes (not registered: their parameters stay the base's)."""
    clone = copy.copy(module)
    clone.__dict__.update(nn.Module().__dict__)  # fresh parameter, buffer, module and hook dicts
    clone.__dict__.pop("forward", None)  # the class's forward, not one set on the module (adaptkit's, accelerate's)
    clone.training = module.training
    for key, param in module._parameters.items():
        copied = None if param is None else param.detach().to(dtype or param.dtype, copy=True)
        clone.register_parameter(key, None if copied is None else nn.Parameter(copied, requires_grad=False))
    for key, buffer in module._buffers.items():
        clone.register_buffer(key, None if buffer is None else buffer.clone(),
                              persistent=key not in module._non_persistent_buffers_set)
    for key, child in module._modules.items():
        if key not in (SLOT_ATTR, TASK_ATTR):
            object.__setattr__(clone, key, child)
    return clone


class RoutedForward:
    """The forward of a module that adapters keep their own copy of (a LayerNorm, a head Linear),
    set on the module once, when the first copy arrives: it runs the routed adapter's copy instead
    of the module's own parameters (in a mixed batch, each adapter's copy on its rows), so the
    module computes once. ``remove`` (a hook handle's interface) gives the module its forward back."""

    def __init__(self, module: nn.Module, state) -> None:
        self.module, self.state = module, state
        self.inner = vars(module).get("forward")  # a forward set on the instance before (accelerate's)
        module.forward = self

    def __call__(self, *args, **kwargs):
        routing = self.state.current()
        if isinstance(routing, RowGroups):
            return self._rows(routing, args, kwargs)
        return self.for_adapter(routing)(*args, **kwargs)

    def for_adapter(self, routing):
        """What the module computes for an adapter (or composition): the owner's copy's forward
        (``routing.copy_owner``; per copy of the batch under a Parallel), or the module's own."""
        task = getattr(self.module, TASK_ATTR, None)
        owner = copy_owner(routing)
        if isinstance(owner, Parallel):
            return partial(_per_channel, [self.for_adapter(child) for child in owner.children])
        name = owned_key(owner, task.values if task is not None else {})
        return self.base if name is None else partial(_call_own, task.values[name])

    def base(self, *args, **kwargs):
        return self.inner(*args, **kwargs) if self.inner is not None else type(self.module).forward(
            self.module, *args, **kwargs)

    def _rows(self, routing: RowGroups, args: tuple, kwargs: dict):
        output = self.base(*args, **kwargs)
        task = getattr(self.module, TASK_ATTR, None)
        mine = [(n, rows) for n, rows in routing.groups
                if task is not None and owned_key(copy_owner(n), task.values) is not None]
        if not mine:
            return output
        hidden = _first_tensor(output)
        routing.check_rows(hidden, f"{type(self.module).__name__} (a trained LayerNorm or head)")
        rows = [r.to(hidden.device) for _, r in mine]
        parts = [_first_tensor(self.for_adapter(name)(*_pick(args, r, routing.size), **_pick(kwargs, r, routing.size)))
                 for (name, _), r in zip(mine, rows)]
        adapted = hidden.index_copy(0, torch.cat(rows), torch.cat(parts).to(hidden.dtype))
        return (adapted,) + tuple(output[1:]) if isinstance(output, tuple) else adapted

    def remove(self) -> None:
        if vars(self.module).get("forward") is self:
            if self.inner is None:
                del self.module.forward
            else:
                self.module.forward = self.inner


class ModuleHook:
    """The forward hook adaptkit puts on each module that holds adapters: the routed adapter
    applies to the module's output (which the module's ``RoutedForward``, if any, already computed
    with that adapter's copy). In a mixed batch each adapter's rows get its own."""

    def __init__(self, state) -> None:
        self.state = state

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output):
        slot = getattr(module, SLOT_ATTR, None)
        routing = self.state.current()
        if routing is None or slot is None:
            return output
        if isinstance(routing, RowGroups):
            return self._rows(module, slot, routing, args, kwargs, output)
        if isinstance(routing, str) and routing not in slot.adapters:
            return output
        if (isinstance(routing, Composition) and routing.channels > 1 and module is not self.state.model_ref()
                and not self.state.copies_the_batch()):  # the model's own hook (a head's) runs after its call ends
            raise AdapterError(f"{routing!r} copies the batch at the model's input, but {type(module).__name__} runs "
                               "outside a call of the model (a submodule called directly, e.g. model.bert(...), or an "
                               "encoder-decoder's encoder under generate): call the model itself, route that call to "
                               "one adapter, or generate with adaptkit.generate_parallel")
        return _run_routed(slot, module, routing, args, kwargs, output, self._only_holder(module, output))

    def _rows(self, module: nn.Module, slot: AdapterSlot, routing: RowGroups, args: tuple, kwargs: dict, output):
        mine = [(n, rows) for n, rows in routing.groups
                if (n in slot.adapters if isinstance(n, str) else set(n.flatten()) & set(slot.adapters))]
        if not mine:
            return output
        if slot.refuses_rows:
            raise AdapterError(slot.refuses_rows)
        hidden = _first_tensor(output)
        routing.check_rows(hidden, f"{type(module).__name__} (an adapted module)")
        rows = [r.to(hidden.device) for _, r in mine]
        if type(slot).adapted_output is AdapterSlot.adapted_output and all(isinstance(n, str) for n, _ in mine):
            # deltas only: one scatter of every group's
            deltas = [slot.adapters[n].delta(hidden[r]) for (n, _), r in zip(mine, rows)]
            adapted = hidden.index_add(0, torch.cat(rows), torch.cat(deltas).to(hidden.dtype))
        else:
            parts = [_first_tensor(_run_routed(slot, module, n, _pick(args, r, routing.size),
                                               _pick(kwargs, r, routing.size), _pick(output, r, routing.size), False))
                     for (n, _), r in zip(mine, rows)]
            adapted = hidden.index_copy(0, torch.cat(rows), torch.cat(parts).to(hidden.dtype))
        return (adapted,) + tuple(output[1:]) if isinstance(output, tuple) else adapted

    def _only_holder(self, module: nn.Module, output: object) -> bool:
        """Whether the sum may be written into ``module``'s output: without autograd, an
        ``nn.Linear``'s output is a new tensor, and no hook has seen it before this one."""
        hooks = iter(module._forward_hooks.values())
        return (not torch.is_grad_enabled() and type(module) is nn.Linear and type(output) is torch.Tensor
                and not nn.modules.module._global_forward_hooks and next(hooks, None) is self)


def _run_routed(slot: AdapterSlot, module: nn.Module, routing, args: tuple, kwargs: dict, output, overwrite: bool):
    """The slot's output for one adapter or composition."""
    norm = _norm_of(module, routing)
    if isinstance(routing, Composition):
        return slot.compose(module, routing, args, kwargs, output, norm)
    return slot.adapted_output(module, slot.adapters[routing], args, kwargs, output, norm, overwrite)


def _norm_of(module: nn.Module, routing):
    """The module's computation for an adapter or composition (a renormalising slot runs it again)."""
    routed = vars(module).get("forward")
    return routed.for_adapter(routing) if isinstance(routed, RoutedForward) else module.forward


def owned_key(owner, keys) -> str | None:
    """The key of ``keys`` (an adapter's, or a fusion's ``"a,b"``) whose copy runs for ``owner``
    (``copy_owner``'s answer): a Fuse's own copy, else its last child's."""
    while isinstance(owner, Fuse):
        if owner.name in keys:
            return owner.name
        owner = copy_owner(owner.children[-1])
    return owner if isinstance(owner, str) and owner in keys else None


def _per_channel(computations: list, *args, **kwargs):
    """Under a Parallel the batch holds one copy per child: each copy's rows get its child's
    computation (``computations[i]``)."""
    like = _first_tensor(args[0] if args else next(iter(kwargs.values())))
    size = like.shape[0] // len(computations)
    parts = []
    for index, compute in enumerate(computations):
        rows = torch.arange(index * size, (index + 1) * size, device=like.device)
        parts.append(compute(*_pick(args, rows, like.shape[0]), **_pick(kwargs, rows, like.shape[0])))
    first = torch.cat([_first_tensor(p) for p in parts])
    return (first,) + tuple(parts[0][1:]) if isinstance(parts[0], tuple) else first


def _call_own(own: nn.Module, *args, **kwargs):
    """Run an adapter's copy of a module: a float32 copy beside a 16-bit model computes in float32
    and returns the model's dtype (its input's)."""
    dtype = next(own.parameters()).dtype
    like = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    if like is None or like.dtype == dtype:
        return own(*args, **kwargs)
    cast = partial(_cast_floating, dtype=dtype)
    output = own(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    return _cast_floating(output, like.dtype)


def _cast_floating(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_cast_floating(v, dtype) for v in value)
    return value


def _pick(value, rows: torch.Tensor, size: int):
    """A batched tensor's rows, in a tuple or dict of arguments too (anything else as it is)."""
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
        return value[rows]
    if isinstance(value, tuple):
        return tuple(_pick(v, rows, size) for v in value)
    if isinstance(value, dict):
        return {k: _pick(v, rows, size) for k, v in value.items()}
    return value


def repeat_rows(inputs: tuple[tuple, dict], copies: int) -> tuple[tuple, dict]:
    """A call's ``(args, kwargs)`` with every batch-first tensor repeated ``copies`` times along the
    batch (the batch: the first of ``input_ids``, ``inputs_embeds``, ``pixel_values``, else the
    first tensor argument)."""
    args, kwargs = inputs
    batch = next((v for v in [*(kwargs.get(k) for k in ("input_ids", "inputs_embeds", "pixel_values")), *args]
                  if isinstance(v, torch.Tensor) and v.dim()), None)
    if batch is None:
        return inputs
    return _repeat(args, batch.shape[0], copies), _repeat(kwargs, batch.shape[0], copies)


def _repeat(value, size: int, copies: int):
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat(v, size, copies) for v in value)
    if isinstance(value, dict):
        return {k: _repeat(v, size, copies) for k, v in value.items()}
    return value


def _first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
