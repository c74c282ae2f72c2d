"""A fusion's own small checkpoint: ``fusion_config.json`` + ``fusion_model.safetensors``.

It holds the fusion layers (and its head), the base model's fingerprint as an adapter checkpoint
does, and the fused adapters' names with a hash of each one's tensors: a fusion is trained on
those adapters' outputs, so loading it beside other adapters of the same names is refused. The
adapters themselves are saved and loaded on their own (``save_adapter`` / ``load_adapter``).
AdapterHub's ``save_adapter_fusion`` folders (``adapter_fusion_config.json``) load too; they record
no hashes, so only the adapters' names and places are checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .adapterhub import (FUSION_CONFIG, HEAD_CONFIG, HEAD_WEIGHTS, LOCATIONS, SAFE_HEAD_WEIGHTS, _check_base,
                         _head_spec, _head_tensors, _load_tensors, _read_json, places)
from .atomic import sha256_file
from .checkpoint import (FUSION_CONFIG_NAME, FUSION_WEIGHTS_NAME, _read_tensors, adapter_tensor_names,
                         check_fingerprint, check_structure, describe_base, file_tensors, write_checkpoint)
from .config import AdapterConfig, FusionConfig
from .engines import barrier_if, refuse_sharded, sharded_by, unwrap, whole_tensors, writes_here
from .errors import AdapterError, AdapterConfigError, CheckpointError
from .fusion import FusionLayer, fusion_sites, insert_fusion, remove_fusion
from .head import ClassificationHead, refuse_beside_a_head
from .install import copy_tensors
from .model import _require_state, refuse_meta, set_active_adapter
from .routing import Fuse, composition_from_dict
from .state import AdapterState
from .targets import HEAD, Site

FORMAT_VERSION = 1
AH_WEIGHTS, AH_SAFE_WEIGHTS = "pytorch_model_adapter_fusion.bin", "model_adapter_fusion.safetensors"
_AH_KEY = re.compile(r"^(?:.*\.)?(?:encoder\.layer|h)\.(\d+)\.(.+)\.adapter_fusion_layer\.([^.]+)\.(.+)$")


def adapter_hash(state: AdapterState, name: str, tensor) -> str:
    """sha256 of adapter ``name``'s tensors (its bottlenecks, own head, LayerNorm and head copies,
    keyed as in its file; ``tensor``: from ``whole_tensors``) as float32, in key order: equal
    exactly when the adapter computes the same."""
    digest = hashlib.sha256()
    for key, value in sorted(file_tensors(adapter_tensor_names(name, state.adapters[name]), tensor,
                                          torch.float32).items()):
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def save_fusion(model: nn.Module, directory: str | Path, block: Fuse | str) -> Path:
    """Write fusion ``block`` (a ``Fuse`` or its name, "a,b") to ``directory`` in float32; returns it.

    On a sharded model (FSDP2, FSDP1 — pass the FSDP-wrapped model —, DeepSpeed ZeRO-3) saving
    gathers the fusion's and the fused adapters' tensors: call it on every rank; rank 0 writes.
    DDP, DeepSpeed and PEFT wrappers are looked through."""
    outer, model = model, unwrap(model)
    state = _require_state(model)
    name = block.name if isinstance(block, Fuse) else block
    if name not in state.fusions:
        raise AdapterError(f"no fusion {name!r} to save; this model has: {', '.join(state.fusions) or 'none'}")
    refuse_meta(model)
    entry, directory = state.fusions[name], Path(directory)
    engine = sharded_by(model)
    with whole_tensors(model, outer, None, engine) as tensor:
        tensors = file_tensors(adapter_tensor_names(name, entry, "fusion"), tensor, torch.float32)
        hashes = {n: adapter_hash(state, n, tensor) for n in entry.block.flatten()}
        base_model = describe_base(model, state.base, tensor)
    if writes_here(engine is not None):
        write_checkpoint(directory, tensors, {
            "format_version": FORMAT_VERSION, "adaptkit_version": __version__, "name": name,
            "fuse": entry.block.to_dict(), "config": entry.config.to_dict(), "head": entry.head,
            "train_head": bool(entry.own_copies), "adapters": hashes,
            "sites": [{"name": s.name, "kind": s.kind, "width": s.width} for s in entry.sites],
            "base_model": base_model,
        }, FUSION_WEIGHTS_NAME, FUSION_CONFIG_NAME)
    barrier_if(engine is not None)
    return directory


def load_fusion(model: nn.Module, directory: str | Path, activate: bool = True, load_head: bool = True) -> Fuse:
    """Add the fusion saved in ``directory`` (by ``save_fusion``, or AdapterHub's
    ``save_adapter_fusion``) over the model's adapters of the same names; returns its ``Fuse``
    (active, its layers training, with ``activate``). Everything is checked before the model is
    touched; a failure after that removes the fusion again."""
    refuse_meta(model)
    refuse_sharded(model, "load a fusion")
    directory = Path(directory)
    if (directory / FUSION_CONFIG).is_file():
        return _load_adapterhub_fusion(model, directory, activate, load_head)
    meta = _read_meta(directory)
    state = _require_state(model)
    block = _fuse_of(meta, directory)
    check_structure(model, meta["base_model"], directory)
    check_fingerprint(model, meta["base_model"], directory)
    with whole_tensors(model, model, None, None) as tensor:  # not sharded: refused above
        for name, recorded in meta["adapters"].items():
            if name not in state.adapters:
                raise CheckpointError(f"fusion {directory} fuses adapter {name!r}, which this model lacks: load the "
                                      f"adapters it was trained with first ({', '.join(meta['adapters'])}), then the "
                                      "fusion")
            found = adapter_hash(state, name, tensor)
            if found != recorded:
                raise CheckpointError(f"fusion {directory} was trained with another adapter {name!r} (its tensors' "
                                      f"hash {recorded[:12]}…, this model's {found[:12]}…): load the adapter the "
                                      "fusion was trained with")
    sites = [Site(**s) for s in meta["sites"]]
    tensors = _read_tensors(directory / FUSION_WEIGHTS_NAME)
    head = meta.get("head")
    if not load_head:
        heads = tuple(f"fusion:{s.name}:" for s in sites if s.kind == HEAD)
        sites = [s for s in sites if s.kind != HEAD]
        tensors = {k: v for k, v in tensors.items() if not k.startswith(("task:", *heads))}
        head = None
    elif head is not None:
        refuse_beside_a_head(model, directory)
    config = _config_of(meta.get("config"), directory / FUSION_CONFIG_NAME)
    return _install(model, state, block, config, sites, tensors, bool(meta.get("train_head")) and load_head, head,
                    directory / FUSION_WEIGHTS_NAME, activate)


def _read_meta(directory: Path) -> dict[str, Any]:
    config_path, weights_path = directory / FUSION_CONFIG_NAME, directory / FUSION_WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found: a fusion folder holds {FUSION_CONFIG_NAME} and "
                                  f"{FUSION_WEIGHTS_NAME} (adaptkit.save_fusion), or AdapterHub's {FUSION_CONFIG}")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} could not be read as JSON ({exc}); re-save the fusion") from None
    needed = ("format_version", "name", "fuse", "config", "adapters", "sites", "base_model", "files")
    if not isinstance(meta, dict) or any(k not in meta for k in needed) or not isinstance(meta["adapters"], dict):
        raise CheckpointError(f"{config_path} lacks fields of {list(needed)}: not an adaptkit fusion config")
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{config_path} has fusion format {meta['format_version']}, newer than this adaptkit's "
                              f"({FORMAT_VERSION}); upgrade adaptkit to load it")
    if sha256_file(weights_path) != (meta["files"].get(FUSION_WEIGHTS_NAME) or {}).get("sha256"):
        raise CheckpointError(f"{weights_path} does not match the checksum in {FUSION_CONFIG_NAME}: the file is "
                              "truncated, edited or from another save; re-save the fusion")
    return meta


def _fuse_of(meta: dict[str, Any], directory: Path) -> Fuse:
    try:
        block = composition_from_dict(meta["fuse"])
    except AdapterError as exc:
        raise CheckpointError(f"{directory / FUSION_CONFIG_NAME}: its fuse is damaged ({exc})") from None
    if not isinstance(block, Fuse) or block.name != meta["name"]:
        raise CheckpointError(f"{directory / FUSION_CONFIG_NAME}: its fuse {block!r} is not fusion {meta['name']!r}")
    return block


def _config_of(fields: Any, path: Path) -> FusionConfig:
    try:
        return FusionConfig.from_dict(fields if isinstance(fields, dict) else {})
    except (AdapterConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: its fusion config is not supported ({exc})") from None


def _install(model: nn.Module, state: AdapterState, block: Fuse, config: FusionConfig, sites: list[Site],
             tensors: dict[str, torch.Tensor], train_head: bool, head: dict | None, path: Path,
             activate: bool) -> Fuse:
    """Check the tensors against the modules the fusion builds, then add it and copy them in."""
    if block.name in state.fusions:
        raise CheckpointError(f"this model already has fusion {block.name!r}; delete it first (adaptkit.delete_fusion)")
    if [s for s in sites if s.kind != HEAD] != fusion_sites(model, state, block):
        raise CheckpointError(f"{path}: the fusion's sites are not those of the model's adapters {block.name!r}: "
                              "adapters of another placement or other layers carry these names")
    expected = {}
    for site in sites:  # built on meta: their shapes only
        module = (ClassificationHead(site.width, head, device="meta", initialise=False) if site.kind == HEAD
                  else FusionLayer(site.width, config, 0.0, device="meta", initialise=False))
        expected.update((f"fusion:{site.name}:{k}", tuple(v.shape)) for k, v in module.state_dict().items())
    if train_head:
        expected.update((f"task:{n}", tuple(model.get_parameter(n).shape)) for n in state.base.head)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        other = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise CheckpointError(f"{path} does not hold the fusion's tensors: missing {missing[:3]}, unexpected "
                              f"{extra[:3]}, other shapes {other[:3]}; re-save the fusion (a head saved for "
                              "another model class: pass load_head=False)")
    previous = state.active
    entry = insert_fusion(model, state, block, config, sites, train_head, initialise=False, head=head)
    try:
        copy_tensors(entry, tensors, "fusion")
        if activate:
            set_active_adapter(model, block)
    except BaseException:
        remove_fusion(model, state, block.name)
        if state.active != previous:
            state.active = previous
        raise
    return block


def _load_adapterhub_fusion(model: nn.Module, directory: Path, activate: bool, load_head: bool) -> Fuse:
    """AdapterHub's ``save_adapter_fusion`` folder: its layers under
    ``...layer.<i>.<location>.adapter_fusion_layer.<name>.<param>`` (pickle read with
    ``weights_only=True``, or safetensors), its head (``with_head``) as the fusion's own head."""
    meta = _read_json(directory / FUSION_CONFIG)
    state = _require_state(model)
    model_type = _check_base(model, meta, directory / FUSION_CONFIG)
    names = meta.get("adapter_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{directory / FUSION_CONFIG} lists no adapter_names: not written by save_adapter_fusion")
    block = Fuse(*names)
    missing = [n for n in names if n not in state.adapters]
    if missing:
        raise CheckpointError(f"AdapterFusion {directory} fuses adapter {missing[0]!r}, which this model lacks: load "
                              f"each fused adapter first ({', '.join(names)}), e.g. adaptkit.load_adapter(model, "
                              "its AdapterHub folder, name=...), then the fusion")
    config = _config_of(meta.get("config"), directory / FUSION_CONFIG)
    sites = fusion_sites(model, state, block)
    by_place = places(model, sites)
    weights = _load_tensors(directory, AH_SAFE_WEIGHTS, AH_WEIGHTS)
    tensors = {}
    for key, value in weights.items():
        layer, location, fusion, param = _ah_key(key)
        place = (layer, LOCATIONS[model_type].get(location)) if layer is not None else None
        if place not in by_place or fusion != block.name:
            raise CheckpointError(f"{directory / AH_WEIGHTS}: tensor {key!r} is not a fusion weight of {block.name!r} at "
                                  "a site of its adapters in this model; load the adapters it was trained with")
        tensors[f"fusion:{by_place[place].name}:{param}"] = value.float()
    head = None
    if load_head and (directory / HEAD_CONFIG).is_file():
        head = _head_spec(model, model_type, directory)
        head_site = Site("", HEAD, model.config.hidden_size)
        own = _load_tensors(directory, SAFE_HEAD_WEIGHTS, HEAD_WEIGHTS)
        tensors.update((k.replace("adapter:", "fusion:", 1), v) for k, v in _head_tensors(own, AdapterConfig(head=head),
                                                                                           head_site, directory).items())
        sites = [*sites, head_site]
    return _install(model, state, block, config, sites, tensors, False, head, directory / AH_WEIGHTS, activate)


def _ah_key(key: str) -> tuple[int | None, str, str, str]:
    """(layer, location, fusion name, parameter) of an AdapterHub fusion weight's name."""
    match = _AH_KEY.match(key)
    return (int(match.group(1)), *match.group(2, 3, 4)) if match else (None, "", "", "")
