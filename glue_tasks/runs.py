"""What a training run leaves in its output directory, and how to get the trained model back.

    run_config.json      the exact configuration (read back by ``eval`` and ``predict``)
    results.json         dev scores per epoch, the best epoch, trainable parameters, timings
    adapter/             adaptkit checkpoint (method ``adapter``)
    fusion/              adapters/<name>/ (the fused adapters) and fusion/ (method ``fusion``)
    lora/                PEFT checkpoint (method ``lora``)
    trained.safetensors  the tensors that trained (``top-k``, ``layernorm``)
    model/               a full ``save_pretrained`` copy (``full``, ``scratch``, ``scratch-small`` with --save-full)

While it trains (and after Ctrl-C) it also holds ``train_state.safetensors`` (for ``--resume``) and,
from the first finished epoch on, ``best/`` and ``last/``: the best and the last epoch's checkpoint,
in the layout above (``best/adapter``...), each loadable on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import adaptkit
from adaptkit.atomic import atomic_path, replaced_folder
from adaptkit.engines import local_tensor, unwrap
from adaptkit.state import get_state

from .resume import STATE_FILE

RUN_CONFIG = "run_config.json"
RESULTS = "results.json"
PARTIAL_WEIGHTS = "trained.safetensors"
#: Per-epoch checkpoints while a run trains; a finished run keeps only its kept epoch's.
EPOCH_CHECKPOINTS = ("best", "last")


class RunError(ValueError):
    """A run directory is missing, incomplete, or would be overwritten."""


def check_output_dir(path: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse to write into a non-empty directory unless told to; one holding an interrupted run's
    state points to --resume first (--overwrite would throw its progress away)."""
    if path.exists() and not path.is_dir():
        raise RunError(f"--output-dir {path} exists and is not a directory")
    if overwrite or resume or not path.is_dir() or not any(path.iterdir()):
        return
    if (path / STATE_FILE).is_file():
        raise RunError(f"--output-dir {path} holds an interrupted run ({STATE_FILE}): add --resume to continue it "
                       "with the same arguments, or pass --overwrite to start again and lose its progress")
    raise RunError(f"--output-dir {path} is not empty; choose another directory or pass --overwrite")


def save_epoch_checkpoint(model: nn.Module, method: str, output_dir: Path, save_full: bool, best: bool,
                          writes: bool = True) -> None:
    """The epoch just finished, as ``last/`` (and ``best/`` when it is the best so far); each folder is
    written beside its old copy and then swapped in, so a kill leaves one whole checkpoint.
    ``writes=False``: a rank that only helps gather a sharded model's adapter (rank 0 writes)."""
    for which in ("last", "best") if best else ("last",):
        with replaced_folder(output_dir / which, writes) as staging:
            if save_trained(model, method, staging, save_full) is None:
                return  # full/scratch without --save-full keep no checkpoint


def save_trained(model: nn.Module, method: str, output_dir: Path, save_full: bool) -> str | None:
    """Save what the method trained; returns the relative path written (None: results only)."""
    if method == "adapter":
        adaptkit.save_adapter(model, output_dir / "adapter")
        return "adapter"
    if method == "lora":
        model.save_pretrained(output_dir / "lora")
        return "lora"
    if method == "fusion":  # the fused adapters too: the folder loads on its own
        (entry,) = get_state(unwrap(model)).fusions.values()
        for name in entry.block.flatten():
            adaptkit.save_adapter(model, output_dir / "fusion" / "adapters" / name, name)
        adaptkit.save_fusion(model, output_dir / "fusion" / "fusion", entry.block)
        return "fusion"
    if method in ("top-k", "layernorm"):
        tensors = {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
        with atomic_path(output_dir / PARTIAL_WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        return PARTIAL_WEIGHTS
    if save_full:
        model.save_pretrained(output_dir / "model")
        return "model"
    return None


def restore_trained(model: nn.Module, method: str, run_dir: Path) -> nn.Module:
    """Put a saved run's trained state onto a freshly loaded base model."""
    if method == "adapter":
        adaptkit.load_adapter(model, _need(run_dir / "adapter"))
        return model
    if method == "fusion":
        folder = _need(run_dir / "fusion")
        for adapter_dir in sorted(_need(folder / "adapters").iterdir()):
            adaptkit.load_adapter(model, adapter_dir, activate=False)
        adaptkit.load_fusion(model, folder / "fusion")
        return model
    if method == "lora":
        from peft import PeftModel
        return PeftModel.from_pretrained(model, str(_need(run_dir / "lora")))
    if method in ("top-k", "layernorm"):
        tensors = load_file(_need(run_dir / PARTIAL_WEIGHTS))
        unknown = sorted(set(tensors) - {n for n, _ in model.named_parameters()})
        if unknown:
            raise RunError(f"{run_dir / PARTIAL_WEIGHTS} holds tensors this model lacks: {unknown[:3]}")
        copy_into(model, tensors)
        return model
    raise RunError(f"method {method} keeps no small checkpoint; it is evaluated from {run_dir / 'model'}")


@torch.no_grad()
def copy_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy named tensors into the model's parameters of the same names, in place."""
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        local_tensor(params[name]).copy_(value)


def _need(path: Path) -> Path:
    if not path.exists():
        raise RunError(f"{path} not found: the run did not finish, or was trained with another method")
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} not found: is {path.parent} the --output-dir of a finished `train`?") from None
