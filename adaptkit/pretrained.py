"""The Hugging Face round trip: ``save_pretrained`` / ``Trainer.save_model`` folders.

Such a folder holds the base model's values under their own names (``from_pretrained`` of it is
exactly the base) and every adapter's and fusion's tensors under adaptkit's names, with their
configs in ``config.json`` (``model.config.adaptkit_adapters``). ``restore_adapters`` brings them back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from torch import nn

from .config import AdapterConfig, FusionConfig, upgrade_placement
from .errors import AdapterConfigError, AdapterError, CheckpointError
from .fetch import local_folder
from .fusion import insert_fusion, remove_fusion
from .model import CONFIG_KEY, delete_adapter, insert_adapter, refuse_meta, set_active_adapter
from .params import is_adaptkit_name
from .routing import composition_from_dict
from .state import get_state
from .targets import Site

_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]


def restore_adapters(model: nn.Module, directory: str | Path, revision: str | None = None) -> list[str]:
    """Re-add the adapters and fusions saved with the model in ``directory`` (a folder or a Hub
    repo id) onto ``model``, the base loaded from it with ``from_pretrained``; returns the adapters'
    names and activates what was active (an adapter or a composition). All or nothing: on any
    error no adapter or fusion is left."""
    refuse_meta(model)
    if get_state(model) is not None:
        raise AdapterError("this model already has adapters; restore onto the plain model that "
                           "from_pretrained returns for the folder")
    folder = local_folder(directory, _PATTERNS, revision)
    config_path = folder / "config.json"
    saved_config = _read_config(config_path)
    record = _read_record(saved_config, config_path)
    _check_model_class(model, saved_config, folder)
    tensors = _read_adaptkit_tensors(folder)
    added: list[str] = []
    try:
        for name, entry in record["adapters"].items():
            # records without a placement_version predate "pfeiffer" meaning AdapterHub's SeqBn
            config = AdapterConfig.from_dict(upgrade_placement(entry["config"], record.get("placement_version", 1)))
            sites = [Site(**site) for site in entry["sites"]]
            insert_adapter(model, config, name, activate=False, sites=sites, initialise=False)
            added.append(name)
        for entry in record.get("fusions", {}).values():  # records before fusions have none
            insert_fusion(model, get_state(model), composition_from_dict(entry["fuse"]),
                          FusionConfig.from_dict(entry["config"]), [Site(**site) for site in entry["sites"]],
                          entry["train_head"], initialise=False, head=entry["head"])
        _copy_into(model, tensors, folder)
        active = record.get("active")
        if isinstance(active, dict):
            set_active_adapter(model, composition_from_dict(active))
        elif active in added:
            set_active_adapter(model, active)
    except (AdapterConfigError, TypeError, KeyError) as exc:
        _undo(model, added)
        raise CheckpointError(f"{folder / 'config.json'}: its {CONFIG_KEY} entry is damaged ({exc}); "
                              "re-save the model") from None
    except BaseException:
        _undo(model, added)
        raise
    return added


def _read_record(saved_config: dict, path: Path) -> dict:
    record = saved_config.get(CONFIG_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("adapters"), dict) or not record["adapters"]:
        raise CheckpointError(f"{path} lists no adaptkit adapters ({CONFIG_KEY}): the model was saved "
                              "without adapters. An adapter saved with adaptkit.save_adapter loads "
                              "with adaptkit.load_adapter")
    return record


def _read_config(path: Path) -> dict:
    try:
        saved_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} could not be read ({exc}): not a save_pretrained folder") from None
    if not isinstance(saved_config, dict):
        raise CheckpointError(f"{path} could not be read (it holds no JSON object): not a save_pretrained folder")
    return saved_config


def _check_model_class(model: nn.Module, saved_config: dict, folder: Path) -> None:
    """The adapters' names and heads are those of the class that saved the folder: another class
    (the bare ``AutoModel``, a token classifier) would miss them or run a head of another kind.
    A class of the user's own (a subclass for a custom loss) is not known here: its sites are
    still checked one by one."""
    saved = saved_config.get("architectures") or []
    saved_class = getattr(transformers, saved[0], None) if saved else None
    this = type(model).__name__
    if isinstance(saved_class, type) and not isinstance(model, saved_class):
        raise CheckpointError(
            f"{folder} was saved from {saved[0]}, with its adapters' names and heads; this model is "
            f"{this}. Load the folder with {saved[0]}.from_pretrained (or the matching AutoModelFor... "
            "class), then restore_adapters. To put one adapter on another class, save it with "
            "adaptkit.save_adapter and load it with load_adapter(..., load_head=False)")


def _read_adaptkit_tensors(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} holds no .safetensors weights: save the model with "
                              "save_pretrained (safetensors is its default)")
    tensors = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            tensors.update((k, handle.get_tensor(k)) for k in handle.keys() if is_adaptkit_name(k))
    return tensors


@torch.no_grad()
def _copy_into(model: nn.Module, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    params = {n: p for n, p in model.named_parameters() if is_adaptkit_name(n)}
    missing = sorted(set(params) - set(tensors))
    misshapen = [n for n in params if n in tensors and tensors[n].shape != params[n].shape]
    if missing or misshapen:
        raise CheckpointError(
            f"{folder}'s weights do not hold the adapters its config.json lists: "
            + (f"missing {missing[:3]}{' …' if len(missing) > 3 else ''} " if missing else "")
            + (f"other shapes {misshapen[:3]}" if misshapen else "") + "; re-save the model")
    for name, param in params.items():
        param.copy_(tensors[name])


def _undo(model: nn.Module, added: list[str]) -> None:
    state = get_state(model)
    for name in list(state.fusions) if state is not None else []:
        remove_fusion(model, state, name)
    for name in reversed(added):
        delete_adapter(model, name)
