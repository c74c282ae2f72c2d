"""Training state for ``--resume``: one safetensors file, replaced atomically.

It holds the trainable tensors, the best epoch's tensors, the optimizer's tensors and the
RNG state as tensors, and everything else (progress, optimizer settings, scheduler, Python
and NumPy RNG) as JSON in the file's metadata. No pickle. A kill at any moment leaves either
the previous state or the new one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from adaptkit.atomic import atomic_path

STATE_FILE = "train_state.safetensors"


class ResumeError(ValueError):
    """No usable training state to resume from."""


@dataclass
class Progress:
    """Where training stands: the next batch to train is ``batch`` of ``epoch``."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best: dict | None = None


def save_train_state(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler,
                     progress: Progress, best_state: dict[str, torch.Tensor] | None, config: dict) -> None:
    tensors = {f"param.{prefix}.{n}": p.detach().cpu().contiguous()
               for prefix, module in modules.items() for n, p in module.named_parameters() if p.requires_grad}
    tensors.update((f"best.{n}", t.contiguous()) for n, t in (best_state or {}).items())
    opt = optimizer.state_dict()
    plain_state = {}
    for index, values in opt["state"].items():
        plain_state[index] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"opt.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state[index][key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update((f"rng.cuda.{i}", s) for i, s in enumerate(torch.cuda.get_rng_state_all()))
    np_state = numpy.random.get_state()
    metadata = {
        "progress": json.dumps(asdict(progress)),
        "optimizer": json.dumps({"param_groups": opt["param_groups"], "state": plain_state}),
        "scheduler": json.dumps(scheduler.state_dict()),
        "rng_python": json.dumps(random.getstate()),
        "rng_numpy": json.dumps([np_state[0], np_state[1].tolist(), *np_state[2:]]),
        "config": json.dumps(config, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_train_state(path: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler, config: dict,
                     canonical: Callable[[dict], dict] = lambda saved: saved,
                     ) -> tuple[Progress, dict[str, torch.Tensor] | None]:
    """Restore everything ``save_train_state`` wrote; returns the progress and the best tensors.

    ``canonical`` brings the saved config to the current form before it is compared with ``config``,
    so that a state written before a setting existed still matches at that setting's default."""
    if not path.is_file():
        raise ResumeError(f"--resume: no training state at {path}; start the run without --resume")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own types for a damaged file
        raise ResumeError(f"--resume: {path} is unreadable ({exc}); start again without --resume") from None
    saved = canonical(json.loads(metadata["config"]))
    changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if changed:
        raise ResumeError(f"--resume: the run in {path.parent} was started with other settings ({', '.join(changed)}); "
                          "resume with the same arguments, or start a new --output-dir")
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, param in module.named_parameters():
                if param.requires_grad:
                    param.copy_(tensors[f"param.{prefix}.{name}"])
    opt = json.loads(metadata["optimizer"])
    state = {int(i): dict(values) for i, values in opt["state"].items()}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, state_py, gauss = json.loads(metadata["rng_python"])
    random.setstate((version, tuple(state_py), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(metadata["rng_numpy"])
    numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return Progress(**json.loads(metadata["progress"])), best
