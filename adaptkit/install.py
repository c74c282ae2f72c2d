"""Adding an adapter whose tensors are already known (a checkpoint, an AdapterHub folder)."""

from __future__ import annotations

import torch
from torch import nn

from .config import AdapterConfig
from .model import active_adapter, delete_adapter, insert_adapter, set_active_adapter, site_module, task_parameter_names
from .params import BaseParameters
from .state import AdapterEntry, get_state
from .targets import Site


def install_adapter(model: nn.Module, config: AdapterConfig, name: str, sites: list[Site],
                    tensors: dict[str, torch.Tensor], activate: bool) -> str:
    """Add the adapter and copy in its checked tensors (``adapter:<site>:<key>``,
    ``task:<parameter>``), through the adapter's own map; on any failure the model is left as
    it was."""
    previous = active_adapter(model)
    insert_adapter(model, config, name, activate=False, sites=sites, initialise=False)
    entry = get_state(model).adapters[name]
    try:
        copy_tensors(entry, tensors, "adapter")
        if activate:
            set_active_adapter(model, name)
    except BaseException:
        delete_adapter(model, name)
        if previous is not None and active_adapter(model) != previous:
            set_active_adapter(model, previous)
        raise
    return name


@torch.no_grad()
def copy_tensors(entry: AdapterEntry, tensors: dict[str, torch.Tensor], kind: str) -> None:
    """Copy checked tensors into an adapter's (or fusion's) modules: ``<kind>:<site>:<key>`` into
    its module at each site, ``task:<parameter>`` into its LayerNorm and head copies."""
    for site_name, module in entry.site_modules.items():
        for key, value in module.state_dict().items():
            value.copy_(tensors[f"{kind}:{site_name}:{key}"])
    for param_name, param in entry.task_values().items():
        param.copy_(tensors[f"task:{param_name}"])


def expected_shapes(model: nn.Module, config: AdapterConfig, sites: list[Site],
                    base: BaseParameters) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the modules the adapter builds at its sites (built on meta)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for site in sites:
        module = site_module(site, config, device="meta", initialise=False)
        shapes.update((f"adapter:{site.name}:{key}", tuple(value.shape)) for key, value in module.state_dict().items())
    shapes.update((f"task:{n}", tuple(model.get_parameter(n).shape)) for n in task_parameter_names(model, config, base))
    return shapes
