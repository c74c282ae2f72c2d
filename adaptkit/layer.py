"""The bottleneck adapter module and the hook that applies it to a projection's output."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .config import AdapterConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh,
}


class BottleneckAdapter(nn.Module):
    """``h + up(dropout(act(down(h))))``: 2·m·d + m + d parameters (Houlsby et al. 2019)."""

    def __init__(self, hidden_size: int, config: AdapterConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, initialise: bool = True) -> None:
        """``initialise=False`` leaves the weights unset, for a caller that overwrites them
        (torch's own Linear init is always skipped: ``reset_parameters`` replaces it)."""
        super().__init__()
        bottleneck = config.bottleneck_size(hidden_size)
        linear = partial(nn.utils.skip_init, nn.Linear, device=device, dtype=dtype)
        self.down = linear(hidden_size, bottleneck)
        self.act = _ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        self.up = linear(bottleneck, hidden_size)
        if initialise:
            self.reset_parameters(config)

    @torch.no_grad()
    def reset_parameters(self, config: AdapterConfig) -> None:
        """Start near (houlsby) or exactly at (zero) the identity function."""
        std = config.init_std
        for linear in (self.down, self.up):
            nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(linear.bias)
        if config.init == "zero":
            nn.init.zeros_(self.up.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The bottleneck runs in the adapter's dtype (float32 on a 16-bit base), the sum in the
        model's."""
        delta = self.up(self.dropout(self.act(self.down(hidden.to(self.down.weight.dtype)))))
        return hidden + delta.to(hidden.dtype)


class AdapterSlot(nn.Module):
    """Holds the named adapters of one projection and applies the routed one to its output.

    It is attached as a child of the projection (so adapters follow the model's device and dtype
    and keep the original parameter names intact) and runs from a forward hook, so the
    projection keeps its class: transformers 5 records outputs by module class.
    """

    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        self.active: str | None = None

    def route(self, name: str | None) -> None:
        self.active = name if name in self.adapters else None

    def hook(self, module: nn.Module, args: tuple, output):  # noqa: ARG002 - hook signature
        if self.active is None:
            return output
        adapter = self.adapters[self.active]
        if isinstance(output, tuple):
            return (adapter(output[0]),) + output[1:]
        return adapter(output)


class TaskSlot(nn.Module):
    """Each adapter's own copy of the parameters one module holds directly (a LayerNorm's
    weight and bias, a head Linear's), put in place for the forward while that adapter is routed.

    Attached as a child of the module, so ``state_dict`` keeps the base values under their own
    names and every adapter's under ``<module>.adaptkit_task.values.<adapter>.<param>``. The swap
    exchanges Parameter objects, never data: several adapters and the base can share one graph,
    and any norm class works (LayerNorm, RMSNorm, T5LayerNorm, Gemma's 1 + w).
    """

    def __init__(self) -> None:
        super().__init__()
        self.values = nn.ModuleDict()
        self.active: str | None = None
        self._base: dict[str, torch.Tensor] = {}

    def route(self, name: str | None) -> None:
        self.active = name if name in self.values else None

    def add(self, name: str, module: nn.Module, dtype: torch.dtype | None) -> None:
        """Give adapter ``name`` a copy of ``module``'s own parameters (in ``dtype`` if given)."""
        own = nn.Module()
        for key, param in module.named_parameters(recurse=False):
            copy = param.detach().to(dtype or param.dtype, copy=True)
            own.register_parameter(key, nn.Parameter(copy, requires_grad=False))
        self.values[name] = own

    def pre_hook(self, module: nn.Module, args: tuple) -> None:  # noqa: ARG002 - hook signature
        if self.active is None or self.active not in self.values:
            return
        own = self.values[self.active]
        self._base = {key: module._parameters[key] for key in own._parameters}
        for key, param in own._parameters.items():
            base_dtype = self._base[key].dtype
            module._parameters[key] = param if param.dtype == base_dtype else param.to(base_dtype)

    def post_hook(self, module: nn.Module, args: tuple, output):  # noqa: ARG002 - hook signature
        if self._base:
            module._parameters.update(self._base)
            self._base = {}
        return output
