"""The bottleneck adapter module and the hook that applies it to a projection's output."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Union

import torch
from torch import nn

from .config import AdapterConfig
from .errors import AdapterError
from .params import SLOT_ATTR, TASK_ATTR

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
}


class UninitialisedLinear(nn.Linear):
    """An ``nn.Linear`` whose weights are left as allocated: its owner initialises them, or a
    loader overwrites them. Skips torch's Kaiming init, which ``nn.utils.skip_init`` still runs on
    meta tensors (half of an adapter load's time)."""

    def reset_parameters(self) -> None:
        pass


class BottleneckAdapter(nn.Module):
    """``h + up(dropout(act(down(h))))``: 2·m·d + m + d parameters (Houlsby et al. 2019)."""

    def __init__(self, hidden_size: int, config: AdapterConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, initialise: bool = True) -> None:
        """``initialise=False`` leaves the weights unset, for a caller that overwrites them
        (torch's own Linear init is always skipped: ``reset_parameters`` replaces it)."""
        super().__init__()
        bottleneck = config.bottleneck_size(hidden_size)
        linear = partial(UninitialisedLinear, device=device, dtype=dtype)
        self.down = linear(hidden_size, bottleneck)
        self.act = _ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        self.up = linear(bottleneck, hidden_size)
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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.added_to(hidden, hidden)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """The bottleneck runs in the adapter's dtype (float32 on a 16-bit base), its result is
        in the model's."""
        return self.up(self._inner(hidden)).to(hidden.dtype)

    def added_to(self, onto: torch.Tensor, source: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """``onto + delta(source)``. Where the dtypes agree, the up-projection accumulates into
        ``onto + bias``: two passes over one hidden-sized output instead of four over two (bias
        copy, product, sum), the adapter's main cost beside a projection on the CPU.
        ``overwrite``: nothing else holds ``onto`` and no gradient is taken, so the sum is written
        into it (no new tensor)."""
        inner = self._inner(source)
        if (not onto.is_contiguous() or not onto.dtype == inner.dtype == self.up.weight.dtype
                or torch.is_autocast_enabled(onto.device.type)):  # an in-place product never autocasts
            return onto + self.up(inner).to(onto.dtype)
        flat = onto.view(-1, onto.shape[-1])
        total = flat.add_(self.up.bias) if overwrite else flat + self.up.bias  # in place on a new tensor is safe
        total.addmm_(inner.reshape(-1, inner.shape[-1]), self.up.weight.t())
        return total.view(onto.shape)

    def _inner(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.down(hidden.to(self.down.weight.dtype))))


@dataclass(frozen=True)
class RowGroups:
    """Per-example routing: the rows of a batch of ``size`` that each adapter runs on (rows of
    no group run the base model)."""

    size: int
    groups: tuple[tuple[str, torch.Tensor], ...]

    def rows_of(self, value: object, where: str) -> None:
        """Refuse an output whose first dimension is not this batch (beam search expands it)."""
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != self.size:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise AdapterError(
                f"per_example_adapters names {self.size} examples, but {where} gave {shape}: "
                "mixed batches need the batch first and unexpanded. Beam "
                "search and num_return_sequences > 1 expand it: decode greedily, or run one "
                "adapter at a time")


Routing = Union[str, RowGroups, None]


class _Slot(nn.Module):
    """What both slots share: which adapter (or which rows per adapter) runs now."""

    def __init__(self) -> None:
        super().__init__()
        self.active: str | None = None
        self.rows: RowGroups | None = None

    def owned(self) -> nn.ModuleDict:
        raise NotImplementedError

    def attach(self, module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Register the hooks that run this slot on ``module``."""
        raise NotImplementedError

    def route(self, routing: Routing) -> None:
        owned = self.owned()
        if isinstance(routing, RowGroups):
            self.active = None
            self.rows = RowGroups(routing.size, tuple(g for g in routing.groups if g[0] in owned))
        else:
            self.active = routing if routing in owned else None
            self.rows = None


class AdapterSlot(_Slot):
    """Holds the named adapters of one projection and applies the routed one to its output.

    It is attached as a child of the projection (so adapters follow the model's device and dtype
    and keep the original parameter names intact) and runs from a forward hook, so the
    projection keeps its class: transformers 5 records outputs by module class. In a mixed batch
    the projection runs once and each adapter's delta goes to its own rows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()

    def owned(self) -> nn.ModuleDict:
        return self.adapters

    def attach(self, module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        return [module.register_forward_hook(self.hook)]

    def hook(self, module: nn.Module, args: tuple, output):  # noqa: ARG002 - hook signature
        hidden = output[0] if isinstance(output, tuple) else output
        adapted = self.add_deltas(hidden, hidden, overwrite=self._only_holder(module, output))
        if adapted is None:
            return output
        return (adapted,) + output[1:] if isinstance(output, tuple) else adapted

    def _only_holder(self, module: nn.Module, output: object) -> bool:
        """Whether the sum may be written into ``module``'s output: without autograd, an
        ``nn.Linear``'s output is a new tensor, and no hook has seen it before this one."""
        hooks = iter(module._forward_hooks.values())
        return (not torch.is_grad_enabled() and type(module) is nn.Linear and type(output) is torch.Tensor
                and not nn.modules.module._global_forward_hooks
                and getattr(next(hooks, None), "__self__", None) is self)

    def add_deltas(self, source: torch.Tensor, onto: torch.Tensor, overwrite: bool = False) -> torch.Tensor | None:
        """``onto`` plus the routed adapters' deltas of ``source`` (each on its own rows in a
        mixed batch), or None when no adapter runs here; ``overwrite`` as in ``added_to``."""
        if self.rows is not None:
            self.rows.rows_of(source, "an adapted module")
            if not self.rows.groups:
                return None
            # one scatter of every group's delta: one copy of the output
            rows = [rows.to(source.device) for _, rows in self.rows.groups]
            deltas = [self.adapters[name].delta(source[r]) for (name, _), r in zip(self.rows.groups, rows)]
            return onto.index_add(0, torch.cat(rows), torch.cat(deltas).to(onto.dtype))
        if self.active is not None:
            return self.adapters[self.active].added_to(onto, source, overwrite)
        return None


class RenormSlot(AdapterSlot):
    """AdapterHub's SeqBn in a post-LN block, from the feed-forward's own LayerNorm: that norm
    gets ``y = h + x`` (feed-forward output plus residual); the adapter sees ``LN(y)`` and the
    norm runs again on ``y + delta``, i.e. ``LN(h + x + up(act(down(LN(h + x)))))``.

    Its hook runs before the norm's ``TaskSlot`` restores the base values, so both norm calls
    use the routed adapter's LayerNorm.
    """

    def attach(self, module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        return [module.register_forward_hook(self.hook, prepend=True)]

    def hook(self, module: nn.Module, args: tuple, output):
        if self.rows is not None and self.rows.groups and hasattr(module, TASK_ATTR):
            raise AdapterError(
                "per_example_adapters cannot mix placement='pfeiffer' adapters that train their "
                "LayerNorms on a post-LN model (the norm runs twice, with each adapter's values): "
                "run one adapter at a time, or train them with train_layernorms=False")
        adapted = self.add_deltas(output, args[0])
        return output if adapted is None else module.forward(adapted)


class TaskSlot(_Slot):
    """Each adapter's own copy of the parameters one module holds directly (a LayerNorm's
    weight and bias, a head Linear's), put in place for the forward while that adapter is routed.

    Attached as a child of the module, so ``state_dict`` keeps the base values under their own
    names and every adapter's under ``<module>.adaptkit_task.values.<adapter>.<param>``. The swap
    exchanges Parameter objects, never data: several adapters and the base can share one graph,
    and any norm class works (LayerNorm, RMSNorm, T5LayerNorm, Gemma's 1 + w). In a mixed batch
    the module runs on the whole batch with the base values, then again on each adapter's rows
    with that adapter's values.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values = nn.ModuleDict()
        self._base: dict[str, torch.Tensor] = {}

    def owned(self) -> nn.ModuleDict:
        return self.values

    def attach(self, module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        return [module.register_forward_pre_hook(self.pre_hook),
                module.register_forward_hook(self.post_hook, with_kwargs=True, always_call=True)]

    def add(self, name: str, module: nn.Module, dtype: torch.dtype | None) -> None:
        """Give adapter ``name`` a copy of ``module``'s own parameters (in ``dtype`` if given)."""
        own = nn.Module()
        for key, param in module.named_parameters(recurse=False):
            copy = param.detach().to(dtype or param.dtype, copy=True)
            own.register_parameter(key, nn.Parameter(copy, requires_grad=False))
        self.values[name] = own

    def pre_hook(self, module: nn.Module, args: tuple) -> None:  # noqa: ARG002 - hook signature
        if self.active is not None:
            self._put(module, self.active)

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output):
        if self._base:
            self._restore(module)
        elif self.rows is not None and self.rows.groups:
            where = f"{type(module).__name__} (a trained LayerNorm or head)"
            self.rows.rows_of(output, where)
            all_rows, parts = [], []
            for name, rows in self.rows.groups:
                rows = rows.to(output.device)

                def pick(value):
                    batched = isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == self.rows.size
                    return value[rows] if batched else value

                self._put(module, name)
                try:
                    part = module.forward(*map(pick, args), **{k: pick(v) for k, v in kwargs.items()})
                finally:
                    self._restore(module)
                parts.append(self._with_own_adapter(module, name, part))
                all_rows.append(rows)
            output = output.index_copy(0, torch.cat(all_rows), torch.cat(parts).to(output.dtype))
        return output

    def _with_own_adapter(self, module: nn.Module, name: str, output: torch.Tensor) -> torch.Tensor:
        """A module rerun for adapter ``name``'s rows skips its hooks: where the adapter also sits
        on this module (``target_modules=["dense"]`` reaches RoBERTa's ``classifier.dense``) and its
        slot's hook ran before this one, its delta is added here (a hook that runs after adds it
        to the finished output itself)."""
        slot = getattr(module, SLOT_ATTR, None)
        if not (isinstance(slot, AdapterSlot) and name in slot.adapters):
            return output
        owners = [getattr(hook, "__self__", None) for hook in module._forward_hooks.values()]
        if owners.index(slot) > owners.index(self):
            return output
        return slot.adapters[name].added_to(output, output)

    def _put(self, module: nn.Module, name: str) -> None:
        own = self.values[name]
        self._base = {key: module._parameters[key] for key in own._parameters}
        for key, param in own._parameters.items():
            base_dtype = self._base[key].dtype
            module._parameters[key] = param if param.dtype == base_dtype else param.to(base_dtype)

    def _restore(self, module: nn.Module) -> None:
        module._parameters.update(self._base)
        self._base = {}
