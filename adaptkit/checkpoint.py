"""Small per-task checkpoints: ``adapter_config.json`` + ``adapter_model.safetensors``.

Only what the adapter trained is saved (adapter weights, its LayerNorms, its head), with a
description of the base model so that loading onto another base fails loudly. No pickle:
safetensors and JSON only, both written atomically, the tensor file checksummed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .atomic import atomic_paths, json_text, sha256_file
from .adapterhub import FUSION_CONFIG, is_adapterhub_folder, load_adapterhub
from .config import AdapterConfig, fields_of_format
from .engines import barrier_if, class_name, clean_name, refuse_sharded, sharded_by, shape_of, unwrap, whole_tensors, writes_here
from .errors import AdapterConfigError, BaseModelMismatchError, CheckpointError
from .fetch import local_folder
from .head import refuse_beside_a_head
from .install import expected_shapes, install_adapter
from .model import adapter_entry, refuse_meta, refuse_shadowed_heads
from .params import SLOT_ATTR, TASK_ATTR, BaseParameters, base_parameters, is_adaptkit_name, own_name, peft_parameter_ids
from .state import AdapterEntry, get_state
from .targets import HEAD, Site, find_blocks, site_width

# 2: fingerprint positions stored, dtypes recorded, train_vocab_head;
# 3: placement "pfeiffer" is AdapterHub's SeqBn (formats 1-2 "pfeiffer" load as "houlsby-ffn");
# 4: every config field present (formats 1-3 fill the fields they predate: config.fields_of_format)
FORMAT_VERSION = 4
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FUSION_CONFIG_NAME = "fusion_config.json"  # a fusion's own checkpoint (adaptkit.fusion_checkpoint)
FUSION_WEIGHTS_NAME = "fusion_model.safetensors"
_FINGERPRINT_TENSORS = 3
_FINGERPRINT_VALUES = 8


def save_adapter(model: nn.Module, directory: str | Path, name: str | None = None,
                 dtype: torch.dtype | None = None, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write adapter ``name`` (default: the active one) to ``directory``; returns the directory.

    Floating tensors are written in float32 (exact for fp32, bf16 and fp16 values alike) unless
    ``dtype`` asks for another, such as the model's bf16 for a file half the size. Both files are
    written whole or not at all.

    On a sharded model (FSDP2, FSDP1 — pass the FSDP-wrapped model —, DeepSpeed ZeRO-3) saving
    gathers the adapter's tensors: call it on every rank; rank 0 writes. Or pass ``state_dict``, the
    whole model's gathered state dict (``accelerator.get_state_dict(model)``), and save where you
    like. DDP, DeepSpeed and PEFT wrappers are looked through.
    """
    outer, model = model, unwrap(model)
    name, entry = adapter_entry(model, name)
    refuse_meta(model)  # before any file is written
    state = get_state(model)
    refuse_shadowed_heads(model, state)
    directory = Path(directory)
    file_dtype = dtype or torch.float32
    engine = None if state_dict is not None else sharded_by(model)
    collective = engine is not None
    with whole_tensors(model, outer, state_dict, engine) as tensor:
        tensors = file_tensors(adapter_tensor_names(name, entry), tensor, file_dtype)
        base_model = describe_base(model, state.base, tensor)
    if writes_here(collective):
        trained = next((p.dtype for m in entry.site_modules.values() for p in m.parameters()), None)
        meta = {
            "format_version": FORMAT_VERSION,
            "adaptkit_version": __version__,
            "name": name,
            "config": entry.config.to_dict(),
            "sites": [{"name": s.name, "kind": s.kind, "width": s.width} for s in entry.sites],
            "base_model": base_model,
            "dtypes": {"base": _dtype_name(next(model.get_submodule(entry.sites[0].name).parameters()).dtype)
                       if entry.sites else None,
                       "trained": _dtype_name(trained) if trained else None,
                       "file": _dtype_name(file_dtype)},
            "trained_parameters": sum(v.numel() for v in tensors.values()),
        }
        write_checkpoint(directory, tensors, meta)
    barrier_if(collective)
    return directory


def adapter_tensor_names(name: str, entry: AdapterEntry, kind: str = "adapter") -> dict[str, str]:
    """Each tensor of adapter (or, with ``kind="fusion"``, fusion) ``name``: its key in the file ->
    its parameter's name in the model."""
    names = {}
    for site, module in entry.site_modules.items():
        for key in _own_keys(module):
            names[f"{kind}:{site}:{key}"] = _dotted(site, SLOT_ATTR, f"{kind}s", name, key)
    for owner, own in entry.own_copies.items():
        for key in _own_keys(own):
            names[f"task:{_dotted(owner, key)}"] = _dotted(owner, TASK_ATTR, "values", name, key)
    return names


def file_tensors(names: dict[str, str], tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Each file key's tensor whole (``tensor``: from ``whole_tensors``), as its own contiguous CPU
    copy, floating ones in ``dtype``. A copy: a gathered shard's storage is freed after the gather."""
    copies = {}
    for key, param_name in names.items():
        value = tensor(param_name).detach()
        copies[key] = value.to("cpu", dtype=dtype if value.is_floating_point() else value.dtype).contiguous().clone()
    return copies


def _own_keys(module: nn.Module) -> list[str]:
    """A module's parameter names as built (FSDP1 wraps units inside it)."""
    return [clean_name(key) for key, _ in module.named_parameters()]


def _dotted(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                     weights_name: str = WEIGHTS_NAME, config_name: str = CONFIG_NAME) -> None:
    """The tensor file and the config that checksums it (an adapter's, or a fusion's): both
    written, then both renamed into place, so a failure on the way leaves the folder as it was."""
    with atomic_paths(directory / weights_name, directory / config_name) as (weights_tmp, config_tmp):
        save_file(tensors, str(weights_tmp), metadata={"format": "pt", "adaptkit": __version__})
        meta["files"] = {weights_name: {"sha256": sha256_file(weights_tmp), "bytes": weights_tmp.stat().st_size}}
        config_tmp.write_text(json_text(meta), encoding="utf-8")


def load_adapter(model: nn.Module, directory: str | Path, name: str | None = None,
                 activate: bool = True, load_head: bool = True, revision: str | None = None) -> str:
    """Add the adapter saved in ``directory`` (a folder, or a Hub repo id) to ``model``;
    returns its name.

    Everything is checked before the model is touched: the files and their checksum, the base
    model, the kind of head, the set of tensors and their shapes; a failure after that removes
    the adapter again. ``load_head=False`` loads the adapter and its LayerNorms but not its
    head (nor an own head, AdapterHub's), for a model whose head is of another kind or for the
    bare encoder (names saved under the task model's ``bert.`` are mapped onto it). A folder
    written by AdapterHub's ``save_adapter`` loads through ``adaptkit.adapterhub.load_adapterhub``.
    """
    refuse_meta(model)
    refuse_sharded(model, "load an adapter")
    fusion = next((f for f in (FUSION_CONFIG_NAME, FUSION_CONFIG) if (Path(directory) / f).is_file()), None)
    if fusion is not None:
        raise CheckpointError(f"{directory} holds an AdapterFusion ({fusion}), not an adapter: load the fused "
                              "adapters from their own folders, then the fusion with adaptkit.load_fusion(model, folder)")
    if is_adapterhub_folder(directory):
        return load_adapterhub(model, directory, name=name, activate=activate, load_head=load_head)
    directory = local_folder(directory, [CONFIG_NAME, WEIGHTS_NAME], revision)
    meta = read_checkpoint_meta(directory)
    config = _config_of(meta, directory)
    check_structure(model, meta["base_model"], directory)
    tensors = _read_tensors(directory / WEIGHTS_NAME)
    if not load_head:
        meta, tensors = _without_own_head(meta, tensors)
    elif _own_head_sites(meta):
        refuse_beside_a_head(model, directory)
    meta, tensors = _in_this_models_names(model, meta, tensors)
    state = get_state(model)
    base = state.base if state is not None else base_parameters(model)
    norms = set(base.norms)
    head_keys = [k for k in tensors if k.startswith("task:") and k[len("task:"):] not in norms]
    if load_head:
        _check_head_kind(model, meta["base_model"], head_keys, directory, base)
    else:
        tensors = {k: v for k, v in tensors.items() if k not in head_keys}
        config = dataclasses.replace(config, train_head=False, train_vocab_head=False, head=None)
    check_fingerprint(model, meta["base_model"], directory)
    sites = [Site(**s) for s in meta["sites"]]
    _check_sites(model, sites, directory)
    _check_tensor_set(tensors, expected_shapes(model, config, sites, base), directory / WEIGHTS_NAME, model, base)
    return install_adapter(model, config, name or meta["name"], sites, tensors, activate)


def _own_head_sites(meta: dict[str, Any]) -> set[str]:
    """The sites of an adapter's own head (AdapterHub's), on the model itself."""
    return {site["name"] for site in meta["sites"] if site["kind"] == HEAD}


def _without_own_head(meta: dict[str, Any], tensors: dict[str, torch.Tensor]):
    """The checkpoint less an adapter's own head: its site and tensors."""
    heads = _own_head_sites(meta)
    return ({**meta, "sites": [site for site in meta["sites"] if site["name"] not in heads]},
            {k: v for k, v in tensors.items() if not (k.startswith("adapter:") and k.split(":")[1] in heads)})


def _in_this_models_names(model: nn.Module, meta: dict[str, Any],
                          tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An adapter saved from a model with a task head names its modules under the backbone's
    attribute (``bert.encoder...``), the bare backbone (``AutoModel``) without it: trained with a
    head, it loads onto the bare encoder (``load_head=False``), and the other way round."""
    heads = _own_head_sites(meta)
    rename = _backbone_renaming(model, [site["name"] for site in meta["sites"] if site["name"] not in heads])
    if rename is None:
        return meta, tensors
    base = meta["base_model"]
    meta = {**meta, "sites": [site if site["name"] in heads else {**site, "name": rename(site["name"])}
                              for site in meta["sites"]],
            "base_model": {**base, "fingerprint": {rename(k): v for k, v in (base.get("fingerprint") or {}).items()}}}

    def key(name: str) -> str:
        kind, _, rest = name.partition(":")
        if kind == "adapter":
            site, _, param = rest.rpartition(":")
            return f"adapter:{site if site in heads else rename(site)}:{param}"
        return f"{kind}:{rename(rest)}"

    return meta, {key(k): v for k, v in tensors.items()}


def _backbone_renaming(model: nn.Module, site_names: list[str]):
    """The renaming (drop or add ``<base_model_prefix>.``) that makes saved site names this
    model's modules, or None when they already are (or no renaming would make them so)."""
    prefix = getattr(model, "base_model_prefix", "")
    modules = dict(model.named_modules())
    if not prefix or not site_names or all(n in modules for n in site_names):
        return None
    lead = prefix + "."
    if all(n.startswith(lead) and n[len(lead):] in modules for n in site_names):
        return lambda n: n[len(lead):] if n.startswith(lead) else n
    if all(lead + n in modules for n in site_names):
        return lambda n: lead + n
    return None


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """Parse and sanity-check ``adapter_config.json`` and the checksum of the tensor file."""
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            saved_model = (directory / "config.json").is_file()
            raise CheckpointError(f"{path} not found: an adapter checkpoint directory holds "
                                  f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by adaptkit.save_adapter)"
                                  + ("; a folder of save_pretrained / Trainer.save_model gives its adapters "
                                     "back with adaptkit.restore_adapters" if saved_model else ""))
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); re-save the adapter") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{config_path} holds no JSON object: not an adaptkit adapter config")
    missing = [k for k in ("format_version", "name", "config", "sites", "base_model", "files") if k not in meta]
    if missing:
        raise CheckpointError(f"{config_path} lacks {missing}: not an adaptkit adapter config")
    _check_fields(meta, config_path)
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format version {meta['format_version']}, newer than this adaptkit "
            f"({__version__}, format {FORMAT_VERSION}); upgrade adaptkit to load it")
    recorded = meta["files"][WEIGHTS_NAME]["sha256"]
    actual = sha256_file(weights_path)
    if recorded != actual:
        raise CheckpointError(
            f"{weights_path} does not match the checksum recorded in {CONFIG_NAME} "
            f"(recorded {str(recorded)[:12]}…, file {actual[:12]}…): the file is truncated, edited "
            "or from another save; re-save or re-download the adapter")
    return meta


def _check_fields(meta: dict[str, Any], config_path: Path) -> None:
    """Each field of the config file has the type adaptkit writes, or a ``CheckpointError``
    names it (a hand edit must not surface as a TypeError from deep inside the loader)."""
    def is_site(site: Any) -> bool:
        return (isinstance(site, dict) and set(site) == {"name", "kind", "width"}
                and isinstance(site["name"], str) and isinstance(site["kind"], str)
                and isinstance(site["width"], int) and not isinstance(site["width"], bool))

    files = meta["files"]
    checks = {
        "format_version": (isinstance(meta["format_version"], int)
                           and not isinstance(meta["format_version"], bool)
                           and meta["format_version"] >= 1, "a positive integer"),
        "name": (isinstance(meta["name"], str), "a string"),
        "config": (isinstance(meta["config"], dict), "an object of AdapterConfig fields"),
        "sites": (isinstance(meta["sites"], list) and all(map(is_site, meta["sites"])),
                  "a list of {name, kind, width} objects"),
        "base_model": (isinstance(meta["base_model"], dict), "an object describing the base"),
        "files": (isinstance(files, dict) and isinstance(files.get(WEIGHTS_NAME), dict)
                  and isinstance(files[WEIGHTS_NAME].get("sha256"), str),
                  f"an object with {WEIGHTS_NAME}'s sha256"),
    }
    for field_name, (ok, expected) in checks.items():
        if not ok:
            raise CheckpointError(
                f"{config_path}: field {field_name!r} must be {expected}, got "
                f"{json.dumps(meta[field_name])[:80]}; the file was edited or damaged: re-save the adapter")


def _config_of(meta: dict[str, Any], directory: Path) -> AdapterConfig:
    """The adapter's config: a current-format file names every field; an older one gets the
    fields its format predates, with the values that reproduce what it computed then. Formats 1
    and 2 called today's "houlsby-ffn" placement "pfeiffer"."""
    path = directory / CONFIG_NAME
    try:
        fields = fields_of_format(meta["config"], meta["format_version"])
        return AdapterConfig.from_dict(fields)
    except (AdapterConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: its adapter config is invalid ({exc}); the file was edited or "
                              "damaged: re-save the adapter") from None


def describe_base(model: nn.Module, base: BaseParameters, tensor=None) -> dict[str, Any]:
    """What the adapter was trained on: type, sizes, name, and a sample of frozen weights
    (read whole through ``tensor(name)`` on a sharded model)."""
    return {**_structure(model, base), "fingerprint": _fingerprint(model, base, tensor)}


def _structure(model: nn.Module, base: BaseParameters | None = None) -> dict[str, Any]:
    """The base's type, class, name and sizes: what loading compares before any weight (the
    number of labels, recorded on save, needs the base's head)."""
    config = getattr(model, "config", None)
    return {
        "model_type": getattr(config, "model_type", None),
        "architecture": class_name(model),
        "name_or_path": getattr(config, "_name_or_path", None) or None,
        "hidden_size": getattr(config, "hidden_size", None),
        "num_blocks": len(find_blocks(model)),
        "num_labels": getattr(config, "num_labels", None) if base is not None and base.head else None,
    }


def _base_weights(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """The base model's parameters under their own names (-> their names in the model, and
    themselves): adaptkit's and PEFT's own tensors left out, PEFT's ``base_layer`` /
    ``original_module`` wrappers and other wrappers' segments taken off the names."""
    peft = peft_parameter_ids(model)
    return {own_name(clean_name(n)): (clean_name(n), p) for n, p in model.named_parameters()
            if id(p) not in peft and not is_adaptkit_name(n)}


def _fingerprint(model: nn.Module, base: BaseParameters, tensor=None) -> dict[str, dict[str, list]]:
    """Values at fixed positions of the first, middle and last frozen matrix inside the blocks
    (shared by every head class of one backbone). Compared with a tolerance on load, so a base
    reloaded in fp16/bf16 still matches but other weights do not."""
    skip = {*base.head, *base.norms, *base.vocab_head}
    weights = _base_weights(model)
    frozen = [(n, p) for n, (_, p) in weights.items() if n not in skip and len(shape_of(p)) >= 2]
    prefixes = tuple(block + "." for block in find_blocks(model))
    candidates = [(n, p) for n, p in frozen if prefixes and n.startswith(prefixes)] or frozen
    if not candidates:
        return {}
    picks = sorted({round(i * (len(candidates) - 1) / max(1, _FINGERPRINT_TENSORS - 1))
                    for i in range(_FINGERPRINT_TENSORS)})
    fingerprint = {}
    for index in picks:
        name, param = candidates[index]
        positions = fingerprint_positions(shape_of(param).numel(), _FINGERPRINT_VALUES)
        value = param if tensor is None else tensor(weights[name][0])
        fingerprint[name] = {"positions": positions, "values": _values_at(value, positions)}
    return fingerprint


def fingerprint_positions(numel: int, count: int) -> list[int]:
    """``count`` evenly spread flat indices, exact in integer arithmetic: a float32 linspace
    rounds above 2^24 elements and can index one past the end."""
    return [i * (numel - 1) // max(1, count - 1) for i in range(count)]


def _values_at(param: torch.Tensor, positions: list[int]) -> list[float]:
    flat = param.detach().reshape(-1)
    return flat[torch.tensor(positions, device=flat.device)].float().cpu().tolist()


def check_structure(model: nn.Module, recorded: dict[str, Any], directory: Path) -> None:
    """Raise ``BaseModelMismatchError`` naming both bases if type or sizes differ."""
    current = _structure(model)
    for key in ("model_type", "hidden_size", "num_blocks"):
        if recorded.get(key) != current[key]:
            raise BaseModelMismatchError(
                f"adapter {directory} was trained on {_describe(recorded)}, but this model is "
                f"{_describe(current)} ({key}: {recorded.get(key)} vs {current[key]}); load the "
                "base model the adapter was trained on")


def check_fingerprint(model: nn.Module, recorded: dict[str, Any], directory: Path) -> None:
    """Raise ``BaseModelMismatchError`` if the sampled frozen weights differ (other weights)."""
    params = {n: p for n, (_, p) in _base_weights(model).items()}
    for name, sample in (recorded.get("fingerprint") or {}).items():
        if name not in params:
            raise BaseModelMismatchError(
                f"adapter {directory} expects weight {name!r} in its base "
                f"{_describe(recorded)}; this model ({_describe(_structure(model))}) has none")
        numel = params[name].numel()
        if isinstance(sample, list):  # format 1: values at float32-linspace positions
            values = sample
            positions = torch.linspace(0, numel - 1, len(values)).long().clamp(max=numel - 1).tolist()
        else:
            values, positions = sample.get("values", []), sample.get("positions", [])
        in_range = len(values) == len(positions) and all(0 <= p < numel for p in positions)
        have = _values_at(params[name], positions) if in_range else []
        if not in_range or not all(math.isclose(a, b, rel_tol=1e-2, abs_tol=1e-3)
                                   for a, b in zip(have, values)):
            raise BaseModelMismatchError(
                f"adapter {directory} was trained on {_describe(recorded)}, but this model "
                f"({_describe(_structure(model))}) has different weights in {name!r}: same "
                "architecture, other pretrained weights. Load the base model the adapter was trained on")


def _check_head_kind(model: nn.Module, recorded: dict[str, Any], head_keys: list[str],
                     directory: Path, base: BaseParameters) -> None:
    """A head trained on one model class is refused on another (a per-token head would
    silently score the pooled vector), naming both classes and the way out."""
    trained_on, this = recorded.get("architecture"), type(model).__name__
    if head_keys and trained_on != this:
        kind = "whose head is of another kind" if base.head else "which has no task head"
        raise CheckpointError(
            f"adapter {directory} holds a head trained on {trained_on} ({len(head_keys)} tensors, "
            f"first {head_keys[0][len('task:'):]!r}), but this model is {this}, {kind}. Load the base as "
            f"{trained_on} to use the adapter with its head, or pass load_head=False to load the adapter "
            "and its LayerNorms without the head")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _describe(base: dict[str, Any]) -> str:
    return (f"{base.get('name_or_path') or 'an unnamed model'} ({base.get('model_type')}, "
            f"hidden {base.get('hidden_size')}, {base.get('num_blocks')} blocks)")


def _check_sites(model: nn.Module, sites: list[Site], directory: Path) -> None:
    modules = dict(model.named_modules())
    for site in sites:
        module = modules.get(site.name)
        if module is None or site_width(model, module) != site.width:
            raise BaseModelMismatchError(
                f"adapter {directory} has an adapter on {site.name!r} (width {site.width}), which "
                "this model lacks or has with another width; load the base model it was trained on")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def _check_tensor_set(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                      path: Path, model: nn.Module, base: BaseParameters) -> None:
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        head = {f"task:{n}" for n in base.head + base.vocab_head}
        fix = ("; it was saved without a head for this model's: pass load_head=False to load the adapter "
               "and its LayerNorms (this model's own head then runs, frozen)"
               if missing and not extra and set(missing) <= head else "; re-save the adapter")
        raise CheckpointError(
            f"{path} does not hold the tensors its config describes: "
            + (f"missing {missing[:5]}{' …' if len(missing) > 5 else ''} " if missing else "")
            + (f"unexpected {extra[:5]}{' …' if len(extra) > 5 else ''}" if extra else "") + fix)
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            hint = ""
            if key.startswith("task:") and key[5:] in base.head:
                labels = getattr(getattr(model, "config", None), "num_labels", "?")
                hint = (f" The task head differs: this model has {labels} labels; load the base "
                        "with the num_labels the adapter was trained with.")
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, this model expects "
                f"{shape}.{hint}")
