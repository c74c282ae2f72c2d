"""Small per-task checkpoints: ``adapter_config.json`` + ``adapter_model.safetensors``.

Only what the adapter trained is saved (adapter weights, its LayerNorms, its head), with a
description of the base model so that loading onto another base fails loudly. No pickle:
safetensors and JSON only, both written atomically, the tensor file checksummed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .atomic import atomic_path, sha256_file, write_json_atomic
from .config import AdapterConfig
from .errors import BaseModelMismatchError, CheckpointError
from .layer import AdapterSlot
from .model import (
    adapter_entry, add_adapter, load_task_values, set_active_adapter, task_parameter_names, task_values,
)
from .params import SLOT_ATTR, adapter_parameter_names, head_parameter_names, layernorm_parameter_names
from .targets import Site, find_blocks, output_width

FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_FINGERPRINT_TENSORS = 3
_FINGERPRINT_VALUES = 8


def save_adapter(model: nn.Module, directory: str | Path, name: str | None = None) -> Path:
    """Write adapter ``name`` (default: the active one) to ``directory``; returns the directory."""
    name, entry = adapter_entry(model, name)
    directory = Path(directory)
    tensors = {f"adapter:{site.name}:{key}": value
               for site in entry.sites
               for key, value in _slot_of(model, site.name).adapters[name].state_dict().items()}
    tensors.update((f"task:{n}", value) for n, value in task_values(model, name).items())
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "adaptkit": __version__})
        checksum, size = sha256_file(tmp), tmp.stat().st_size
    write_json_atomic(directory / CONFIG_NAME, {
        "format_version": FORMAT_VERSION,
        "adaptkit_version": __version__,
        "name": name,
        "config": entry.config.to_dict(),
        "sites": [{"name": s.name, "kind": s.kind, "width": s.width} for s in entry.sites],
        "base_model": describe_base(model),
        "files": {WEIGHTS_NAME: {"sha256": checksum, "bytes": size}},
        "trained_parameters": sum(v.numel() for v in tensors.values()),
    })
    return directory


def load_adapter(model: nn.Module, directory: str | Path, name: str | None = None,
                 activate: bool = True) -> str:
    """Add the adapter saved in ``directory`` to ``model``; returns its name.

    Everything is checked before the model is touched: the files and their checksum, the base
    model, the set of tensors and their shapes.
    """
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    check_base(model, meta["base_model"], directory)
    config = AdapterConfig.from_dict(meta["config"])
    sites = [Site(**s) for s in meta["sites"]]
    _check_sites(model, sites, directory)
    tensors = _read_tensors(directory / WEIGHTS_NAME)
    expected = _expected_shapes(model, config, sites)
    _check_tensor_set(tensors, expected, directory / WEIGHTS_NAME, model)
    name = name or meta["name"]
    add_adapter(model, config, name=name, activate=False, sites=sites)
    with torch.no_grad():
        for site in sites:
            adapter = _slot_of(model, site.name).adapters[name]
            for key, param in adapter.state_dict().items():
                param.copy_(tensors[f"adapter:{site.name}:{key}"])
    load_task_values(model, name, {k[len("task:"):]: v for k, v in tensors.items() if k.startswith("task:")})
    if activate:
        set_active_adapter(model, name)
    return name


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """Parse and sanity-check ``adapter_config.json`` and the checksum of the tensor file."""
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found: an adapter checkpoint directory holds "
                                  f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by adaptkit.save_adapter)")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); re-save the adapter") from None
    missing = [k for k in ("format_version", "name", "config", "sites", "base_model", "files") if k not in meta]
    if missing:
        raise CheckpointError(f"{config_path} lacks {missing}: not an adaptkit adapter config")
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format version {meta['format_version']}, newer than this adaptkit "
            f"({__version__}, format {FORMAT_VERSION}); upgrade adaptkit to load it")
    recorded = meta["files"].get(WEIGHTS_NAME, {}).get("sha256")
    actual = sha256_file(weights_path)
    if recorded != actual:
        raise CheckpointError(
            f"{weights_path} does not match the checksum recorded in {CONFIG_NAME} "
            f"(recorded {str(recorded)[:12]}…, file {actual[:12]}…): the file is truncated, edited "
            "or from another save; re-save or re-download the adapter")
    return meta


def describe_base(model: nn.Module) -> dict[str, Any]:
    """What the adapter was trained on: type, sizes, name, and a sample of frozen weights."""
    config = getattr(model, "config", None)
    return {
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "name_or_path": getattr(config, "_name_or_path", None) or None,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_blocks": len(find_blocks(model)),
        "num_labels": getattr(config, "num_labels", None) if head_parameter_names(model) else None,
        "fingerprint": _fingerprint(model),
    }


def _fingerprint(model: nn.Module) -> dict[str, list[float]]:
    """A few values at fixed positions of a few frozen backbone tensors. Compared with a
    tolerance on load, so a base reloaded in fp16/bf16 still matches but other weights do not."""
    skip = set(adapter_parameter_names(model)) | set(head_parameter_names(model)) | set(
        layernorm_parameter_names(model))
    candidates = [(n, p) for n, p in model.named_parameters() if n not in skip and p.dim() >= 2]
    if not candidates:
        return {}
    picks = sorted({round(i * (len(candidates) - 1) / max(1, _FINGERPRINT_TENSORS - 1))
                    for i in range(_FINGERPRINT_TENSORS)})
    fingerprint = {}
    for index in picks:
        name, param = candidates[index]
        flat = param.detach().reshape(-1)
        positions = torch.linspace(0, flat.numel() - 1, _FINGERPRINT_VALUES).long().to(flat.device)
        fingerprint[name] = [float(v) for v in flat[positions].float().cpu()]
    return fingerprint


def check_base(model: nn.Module, recorded: dict[str, Any], directory: Path) -> None:
    """Raise ``BaseModelMismatchError`` naming both bases if ``model`` is not the recorded base."""
    current = describe_base(model)
    for key in ("model_type", "hidden_size", "num_blocks"):
        if recorded.get(key) != current[key]:
            raise BaseModelMismatchError(
                f"adapter {directory} was trained on {_describe(recorded)}, but this model is "
                f"{_describe(current)} ({key}: {recorded.get(key)} vs {current[key]}); load the "
                "base model the adapter was trained on")
    params = dict(model.named_parameters())
    for name, values in recorded.get("fingerprint", {}).items():
        if name not in params:
            raise BaseModelMismatchError(
                f"adapter {directory} expects weight {name!r} in its base "
                f"{_describe(recorded)}; this model ({_describe(current)}) has none")
        flat = params[name].detach().reshape(-1)
        positions = torch.linspace(0, flat.numel() - 1, len(values)).long().to(flat.device)
        have = flat[positions].float().cpu().tolist()
        if not all(math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-3) for a, b in zip(have, values)):
            raise BaseModelMismatchError(
                f"adapter {directory} was trained on {_describe(recorded)}, but this model "
                f"({_describe(current)}) has different weights in {name!r}: same architecture, "
                "other pretrained weights. Load the base model the adapter was trained on")


def _describe(base: dict[str, Any]) -> str:
    return (f"{base.get('name_or_path') or 'an unnamed model'} ({base.get('model_type')}, "
            f"hidden {base.get('hidden_size')}, {base.get('num_blocks')} blocks)")


def _slot_of(model: nn.Module, site_name: str) -> AdapterSlot:
    return getattr(model.get_submodule(site_name), SLOT_ATTR)


def _check_sites(model: nn.Module, sites: list[Site], directory: Path) -> None:
    modules = dict(model.named_modules())
    for site in sites:
        module = modules.get(site.name)
        if module is None or output_width(module) != site.width:
            raise BaseModelMismatchError(
                f"adapter {directory} has an adapter on {site.name!r} (width {site.width}), which "
                "this model lacks or has with another width; load the base model it was trained on")


def _expected_shapes(model: nn.Module, config: AdapterConfig,
                     sites: list[Site]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for site in sites:
        m, d = config.bottleneck_size(site.width), site.width
        shapes.update({f"adapter:{site.name}:down.weight": (m, d), f"adapter:{site.name}:down.bias": (m,),
                       f"adapter:{site.name}:up.weight": (d, m), f"adapter:{site.name}:up.bias": (d,)})
    params = dict(model.named_parameters())
    shapes.update((f"task:{n}", tuple(params[n].shape)) for n in task_parameter_names(model, config))
    return shapes


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def _check_tensor_set(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                      path: Path, model: nn.Module) -> None:
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not hold the tensors its config describes: "
            + (f"missing {missing[:5]}{' …' if len(missing) > 5 else ''} " if missing else "")
            + (f"unexpected {extra[:5]}{' …' if len(extra) > 5 else ''}" if extra else "")
            + "; re-save the adapter")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            hint = ""
            if key.startswith("task:") and key[5:] in head_parameter_names(model):
                labels = getattr(getattr(model, "config", None), "num_labels", "?")
                hint = (f" The task head differs: this model has {labels} labels; load the base "
                        "with the num_labels the adapter was trained with.")
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, this model expects "
                f"{shape}.{hint}")
