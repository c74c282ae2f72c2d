"""What a training run leaves in its output directory, and how to get the trained model back.

    run_config.json      the exact configuration (read back by ``eval`` and ``predict``)
    results.json         dev scores per epoch, the best epoch, trainable parameters, timings
    adapter/             adaptkit checkpoint (method ``adapter``)
    lora/                PEFT checkpoint (method ``lora``)
    trained.safetensors  the tensors that trained (``top-k``, ``layernorm``)
    model/               a full ``save_pretrained`` copy (``full``, ``scratch``, ``scratch-small`` with --save-full)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import adaptkit
from adaptkit.atomic import atomic_path

RUN_CONFIG = "run_config.json"
RESULTS = "results.json"
PARTIAL_WEIGHTS = "trained.safetensors"


class RunError(ValueError):
    """A run directory is missing, incomplete, or would be overwritten."""


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty directory unless told to."""
    if path.exists() and not path.is_dir():
        raise RunError(f"--output-dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunError(f"--output-dir {path} is not empty; choose another directory or pass --overwrite")


def save_trained(model: nn.Module, method: str, output_dir: Path, save_full: bool) -> str | None:
    """Save what the method trained; returns the relative path written (None: results only)."""
    if method == "adapter":
        adaptkit.save_adapter(model, output_dir / "adapter")
        return "adapter"
    if method == "lora":
        model.save_pretrained(output_dir / "lora")
        return "lora"
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
        params[name].copy_(value)


def _need(path: Path) -> Path:
    if not path.exists():
        raise RunError(f"{path} not found: the run did not finish, or was trained with another method")
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} not found: is {path.parent} the --output-dir of a finished `train`?") from None
