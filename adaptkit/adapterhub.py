"""Load what AdapterHub's ``save_adapter`` wrote (``adapters`` 1.3.0, which pins transformers 4.57)
onto a transformers 5 model, computing what AdapterHub computes.

A folder holds ``adapter_config.json`` (the method's config and the base's type and width),
``pytorch_adapter.bin`` or ``adapter.safetensors``, and with a head ``head_config.json`` and
``pytorch_model_head.bin`` / ``model_head.safetensors``. Bottleneck adapters (SeqBn,
DoubleSeqBn and the variants adaptkit computes exactly) load on BERT, RoBERTa and GPT-2, with a
classification head as the adapter's own head; every other method, field value and head type is
refused by name. Pickles are read with ``torch.load(weights_only=True)`` only. AdapterHub records
no sample of the base's weights, so only the base's type, width, depth and head kind are checked.

As a command: ``adaptkit-from-adapterhub SRC DST --base MODEL`` (``adaptkit.convert``) writes an
adaptkit checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .config import AdapterConfig
from .errors import BaseModelMismatchError, CheckpointError
from .head import refuse_beside_a_head
from .install import install_adapter
from .model import refuse_meta, site_module
from .targets import ATTENTION, HEAD, Site, block_of, find_blocks, resolve_sites

CONFIG, WEIGHTS, SAFE_WEIGHTS = "adapter_config.json", "pytorch_adapter.bin", "adapter.safetensors"
HEAD_CONFIG, HEAD_WEIGHTS, SAFE_HEAD_WEIGHTS = "head_config.json", "pytorch_model_head.bin", "model_head.safetensors"
FUSION_CONFIG = "adapter_fusion_config.json"

#: Model types whose AdapterHub placements adaptkit reproduces (benchmarks/adapterhub_compat.py),
#: with AdapterHub's name for each adapter location in a block and where its head reads.
LOCATIONS = {
    "bert": {"attention.output": "mh_adapter", "output": "output_adapter"},
    "roberta": {"attention.output": "mh_adapter", "output": "output_adapter"},
    "gpt2": {"attention_adapters": "mh_adapter", "output_adapters": "output_adapter"},
}
HEAD_TOKEN = {"bert": "first", "roberta": "first", "gpt2": "last"}

#: AdapterHub's non-bottleneck methods, by their config's ``architecture``.
OTHER_METHODS = {"lora": "LoRA (or (IA)^3)", "prefix_tuning": "prefix tuning", "prompt_tuning": "prompt tuning",
                 "union": "a ConfigUnion (MAM, UniPELT)", "reft": "ReFT", "mtl_lora": "MTL-LoRA"}
#: Bottleneck fields and the one value adaptkit computes (any other is refused naming the field).
FIXED = {"ln_before": False, "ln_after": False, "use_gating": False, "inv_adapter": None,
         "inv_adapter_reduction_factor": None, "cross_adapter": False, "stochastic_depth": 0.0,
         "original_ln_after": True}
#: Fields read below, or that make no difference to a trained adapter's outputs.
HANDLED = {"architecture", "mh_adapter", "output_adapter", "reduction_factor", "non_linearity",
           "original_ln_before", "residual_before_ln", "adapter_residual_before_ln", "scaling",
           "leave_out", "dropout", "init_weights", "init_weights_seed", "phm_layer", "is_parallel",
           # PHM settings: they only matter with phm_layer, which is refused
           "phm_dim", "factorized_phm_W", "shared_W_phm", "shared_phm_rule", "factorized_phm_rule",
           "phm_c_init", "phm_init_range", "learn_phm", "hypercomplex_nonlinearity", "phm_rank", "phm_bias"}
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "silu", "tanh": "tanh"}
_KEY = re.compile(r"^(?:.*\.)?(?:encoder\.layer|h)\.(\d+)\.(.+)\.adapters\.([^.]+)\.(.+)$")
_PARAMS = {"adapter_down.0.weight": "down.weight", "adapter_down.0.bias": "down.bias",
           "adapter_up.weight": "up.weight", "adapter_up.bias": "up.bias"}


def is_adapterhub_folder(directory: str | Path) -> bool:
    path = Path(directory)
    return path.is_dir() and (path / CONFIG).is_file() and any(
        (path / f).is_file() for f in (WEIGHTS, SAFE_WEIGHTS))


def load_adapterhub(model: nn.Module, directory: str | Path, name: str | None = None,
                    activate: bool = True, load_head: bool = True) -> str:
    """Add the AdapterHub adapter saved in ``directory`` to ``model``; returns its name.

    Everything is read and checked before the model is touched; a failure after that removes
    the adapter again. A head loads onto the bare base model (``AutoModel``) and adds ``logits``
    to its output; ``load_head=False`` leaves it out.
    """
    refuse_meta(model)
    directory = Path(directory)
    if (directory / FUSION_CONFIG).is_file():
        raise CheckpointError(f"{directory} holds an AdapterFusion ({FUSION_CONFIG}), not an adapter: load it with "
                              "adaptkit.load_fusion(model, folder) after loading each fused adapter from its own folder")
    meta = _read_json(directory / CONFIG)
    ah_config = meta.get("config")
    if not isinstance(ah_config, dict):
        raise CheckpointError(f"{directory / CONFIG} has no config object: not written by AdapterHub's save_adapter")
    model_type = _check_base(model, meta, directory / CONFIG)
    activation, reduction, seq_bn = _read_bottleneck(ah_config, directory / CONFIG, model_type)
    weights = _load_tensors(directory, SAFE_WEIGHTS, WEIGHTS)
    config = AdapterConfig(reduction_factor=reduction, activation=activation, init="bert",
                           dropout=float(ah_config.get("dropout", 0.0)), train_layernorms=False,
                           train_head=False, placement=_placement(ah_config, seq_bn),
                           leave_out=sorted({int(i) for i in ah_config.get("leave_out") or []}) or None)
    sites, tensors = _adapter_tensors(model, model_type, config, ah_config, weights, meta, directory)
    head_folder = directory if load_head and (directory / HEAD_CONFIG).is_file() else None
    if head_folder is not None:
        config = dataclasses.replace(config, head=_head_spec(model, model_type, head_folder))
        head_site = Site("", HEAD, model.config.hidden_size)
        head = _load_tensors(head_folder, SAFE_HEAD_WEIGHTS, HEAD_WEIGHTS)
        tensors.update(_head_tensors(head, config, head_site, head_folder))
        sites.append(head_site)
    return install_adapter(model, config, name or str(meta.get("name") or "adapterhub"), sites, tensors, activate)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} could not be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds no JSON object: not written by AdapterHub's save_adapter")
    return data


def _check_base(model: nn.Module, meta: dict[str, Any], path: Path) -> str:
    """The base's type and width must be the adapter's, and AdapterHub's placement must be one
    adaptkit reproduces for that type."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if meta.get("model_type") != model_type or meta.get("hidden_size") != getattr(config, "hidden_size", None):
        raise BaseModelMismatchError(
            f"{path} is an adapter for a {meta.get('model_type')} model of hidden size "
            f"{meta.get('hidden_size')} ({meta.get('model_name') or 'unnamed'}), but this model is "
            f"{model_type} of hidden size {getattr(config, 'hidden_size', None)}; load the base the adapter was trained on")
    if model_type not in LOCATIONS:
        raise CheckpointError(
            f"{path} is an adapter for {model_type}; adaptkit reproduces AdapterHub's placements on "
            f"{', '.join(sorted(LOCATIONS))} only (checked by benchmarks/adapterhub_compat.py)")
    return model_type


def _read_bottleneck(config: dict[str, Any], path: Path, model_type: str) -> tuple[str, float, bool]:
    """(activation, reduction factor, whether it is SeqBn's placement), or a refusal naming the
    method or the field adaptkit does not compute."""
    architecture = config.get("architecture")
    if architecture not in (None, "bottleneck"):
        raise CheckpointError(
            f"{path} describes a {OTHER_METHODS.get(architecture, repr(architecture))} adapter (architecture "
            f"{architecture!r}); adaptkit loads AdapterHub's bottleneck adapters only (SeqBn, DoubleSeqBn)")
    if config.get("phm_layer"):
        raise CheckpointError(f"{path} describes a Compacter adapter (phm_layer=true): its PHM layers are not "
                              "bottleneck projections adaptkit computes; only SeqBn and DoubleSeqBn load")
    if config.get("is_parallel"):
        raise CheckpointError(f"{path} describes a parallel adapter (is_parallel=true, ParBn/MAM); adaptkit "
                              "computes sequential bottleneck adapters only (SeqBn, DoubleSeqBn)")
    unknown = sorted(set(config) - HANDLED - set(FIXED))
    if unknown:
        raise CheckpointError(f"{path}: AdapterHub config field(s) {unknown} are unknown to adaptkit's loader "
                              "(written by a newer AdapterHub?); it loads adapters 1.3.0's bottleneck fields")
    for field, value in FIXED.items():
        if config.get(field, value) != value:
            raise CheckpointError(f"{path}: {field}={json.dumps(config[field])} is not supported (adaptkit "
                                  f"computes {field}={json.dumps(value)}); such an adapter does not load")
    activation = str(config.get("non_linearity", "")).lower()
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{path}: non_linearity={config.get('non_linearity')!r} is not supported; "
                              f"adaptkit computes {', '.join(ACTIVATIONS)}")
    seq_bn = bool(config.get("original_ln_before"))
    residual = config.get("residual_before_ln", True)
    if seq_bn and residual is not True:
        raise CheckpointError(f"{path}: residual_before_ln={json.dumps(residual)} with original_ln_before=true is "
                              "not supported; adaptkit computes SeqBn's residual_before_ln=true")
    if seq_bn and config.get("mh_adapter"):
        raise CheckpointError(f"{path}: mh_adapter=true with original_ln_before=true is not supported; adaptkit "
                              "places a SeqBn adapter after the feed-forward sub-layer only (output_adapter)")
    if not (config.get("mh_adapter") or config.get("output_adapter")):
        raise CheckpointError(f"{path}: mh_adapter and output_adapter are both false: the config places no adapter")
    return ACTIVATIONS[activation], _reduction_factor(config.get("reduction_factor"), path), seq_bn


def _reduction_factor(value: Any, path: Path) -> float:
    """One factor for every layer; a per-layer mapping loads when all its values agree."""
    if isinstance(value, dict):
        factors = set(value.values())
        if len(factors) != 1:
            raise CheckpointError(f"{path}: reduction_factor={json.dumps(value)} gives layers different widths, "
                                  "which adaptkit does not support (one reduction factor per adapter)")
        value = factors.pop()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise CheckpointError(f"{path}: reduction_factor={json.dumps(value)} is not a positive number")
    return float(value)


def _placement(config: dict[str, Any], seq_bn: bool) -> str:
    if seq_bn:
        return "pfeiffer"
    return "houlsby" if config.get("mh_adapter") else "houlsby-ffn"


def _load_tensors(directory: Path, safe_name: str, pickle_name: str) -> dict[str, torch.Tensor]:
    """The safetensors file, else the pickle read with ``weights_only=True`` (no code runs)."""
    safe, pickled = directory / safe_name, directory / pickle_name
    try:
        if safe.is_file():
            return load_file(str(safe))
        if pickled.is_file():
            tensors = torch.load(str(pickled), map_location="cpu", weights_only=True)
            if isinstance(tensors, dict) and all(isinstance(v, torch.Tensor) for v in tensors.values()):
                return tensors
            raise CheckpointError(f"{pickled} holds no state dict of tensors")
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # weights_only met an object whose loading would run code
        raise CheckpointError(f"{pickled} is refused: it pickles more than tensors, and adaptkit reads pickles only "
                              "with weights_only=True; torch's reason, whole: " + " ".join(str(exc).split())) from None
    except Exception as exc:  # safetensors and torch.load raise many types for damaged files
        raise CheckpointError(f"{safe if safe.is_file() else pickled} could not be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); re-save the adapter") from None
    raise CheckpointError(f"{directory} holds neither {safe_name} nor {pickle_name}")


def _adapter_tensors(model: nn.Module, model_type: str, config: AdapterConfig, ah_config: dict[str, Any],
                     weights: dict[str, torch.Tensor], meta: dict[str, Any],
                     directory: Path) -> tuple[list[Site], dict[str, torch.Tensor]]:
    """The sites AdapterHub's weights sit at in this model, and the weights under adaptkit's keys
    (a ``scaling`` folded into the up-projection)."""
    path = directory / (SAFE_WEIGHTS if (directory / SAFE_WEIGHTS).is_file() else WEIGHTS)
    blocks = find_blocks(model)
    by_place = places(model, resolve_sites(model, config))
    found: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        match = _KEY.match(key)
        location = LOCATIONS[model_type].get(match.group(2)) if match else None
        if location is None or match.group(3) != meta.get("name"):
            raise CheckpointError(f"{path}: tensor {key!r} is not a {model_type} bottleneck adapter weight of "
                                  f"adapter {meta.get('name')!r}; re-save the adapter with AdapterHub's save_adapter")
        found.setdefault((int(match.group(1)), location), {})[match.group(4)] = value
    expected = {(i, loc) for i in range(len(blocks)) if config.adapts_block(i, len(blocks))
                for loc in ("mh_adapter", "output_adapter") if ah_config.get(loc)}
    if set(found) != expected:
        extra, missing = sorted(set(found) - expected), sorted(expected - set(found))
        raise BaseModelMismatchError(
            f"{path} has adapters at (layer, location) {sorted(found)[:6]}, this {len(blocks)}-layer model expects "
            f"{sorted(expected)[:6]} (missing {missing[:3]}, unexpected {extra[:3]}): a base of another depth, "
            "or a damaged file; load the base the adapter was trained on")
    sites, tensors = [], {}
    for place in sorted(found):
        site, params = by_place[place], dict(found[place])
        scaling = params.pop("scaling", ah_config.get("scaling", 1.0))
        if isinstance(scaling, str):
            raise CheckpointError(f"{path}: scaling={scaling!r} but no 'scaling' tensor at layer {place[0]}")
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown or len(params) != len(_PARAMS):
            raise CheckpointError(f"{path}: layer {place[0]}'s {place[1]} holds {sorted(params)}, not AdapterHub's "
                                  f"bottleneck weights {sorted(_PARAMS)}")
        own = {_PARAMS[k]: v.float() for k, v in params.items()}
        scale = torch.as_tensor(scaling, dtype=torch.float32)
        own["up.weight"] = own["up.weight"] * (scale.reshape(-1, 1) if scale.dim() else scale)
        own["up.bias"] = own["up.bias"] * scale
        _check_shapes(site_module(site, config, device="meta", initialise=False), own, path, f"{site.name}")
        sites.append(site)
        tensors.update((f"adapter:{site.name}:{k}", v) for k, v in own.items())
    return sites, tensors


def places(model: nn.Module, sites: list[Site]) -> dict[tuple[int, str], Site]:
    """Each site by AdapterHub's (layer, location) for it: "mh_adapter" after attention, else "output_adapter"."""
    blocks = find_blocks(model)
    layer_of = {b: i for i, b in enumerate(blocks)}
    return {(layer_of[block_of(s.name, blocks)], "mh_adapter" if s.kind == ATTENTION else "output_adapter"): s
            for s in sites}


def _head_spec(model: nn.Module, model_type: str, directory: Path) -> dict[str, Any]:
    """AdapterHub's classification head as ``AdapterConfig.head``; other head types are refused."""
    path = directory / HEAD_CONFIG
    meta = _read_json(path)
    head = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if head.get("head_type") != "classification":
        raise CheckpointError(f"{path}: head type {head.get('head_type')!r} is not supported; adaptkit loads "
                              "AdapterHub's 'classification' head. Pass load_head=False to load the adapter alone")
    if meta.get("model_type") not in (None, model_type):
        raise BaseModelMismatchError(f"{path}: the head was trained on {meta.get('model_type')}, this model is {model_type}")
    refuse_beside_a_head(model, directory)
    activation = head.get("activation_function")
    if activation is not None and activation.lower() not in ACTIVATIONS:
        raise CheckpointError(f"{path}: activation_function={activation!r} is not supported; adaptkit "
                              f"computes {', '.join(ACTIVATIONS)}")
    dropout = head.get("dropout_prob")
    for source in ("classifier_dropout", "hidden_dropout_prob"):  # AdapterHub's order of fallbacks
        if dropout is None:
            dropout = getattr(model.config, source, None)
    return {"type": "classification", "num_labels": int(head.get("num_labels", 2)),
            "layers": int(head.get("layers", 2)), "activation": activation and activation.lower(),
            "token": "pooler" if head.get("use_pooler") else HEAD_TOKEN[model_type],
            "dropout": float(dropout or 0.0), "bias": bool(head.get("bias", True))}


def _head_tensors(weights: dict[str, torch.Tensor], config: AdapterConfig, site: Site,
                  directory: Path) -> dict[str, torch.Tensor]:
    own = {re.sub(r"^heads\.[^.]+\.", "", k): v.float() for k, v in weights.items()}
    _check_shapes(site_module(site, config, device="meta", initialise=False), own,
                  directory / HEAD_WEIGHTS, "the classification head")
    return {f"adapter:{site.name}:{k}": v for k, v in own.items()}


def _check_shapes(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path, where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise CheckpointError(f"{path}: {where} holds {got}, adaptkit expects {expected} from its config; "
                              "the file does not match its adapter_config.json/head_config.json")
