"""What a ``compare`` runs: the plan (methods, losses, seeds, learning-rate candidates) and each
run's identity in the ledger. Shared by the runner (``compare.py``) and the report
(``compare_report.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .choices import CANDIDATES, EXTRA_CANDIDATES
from .methods import SMALL_SCRATCH, MethodSpec
from .train import TrainConfig

BASELINE = "scratch-small"
TUNE_FRACTION = 0.1


@dataclass
class ComparePlan:
    """What to compare and how each run trains; ``base`` holds the TrainConfig fields all runs share."""

    output_dir: Path
    base: dict
    methods: list[str]
    losses: list[str]
    seeds: list[int]
    work_dir: Path | None = None
    lr_candidates: dict[str, tuple[float, ...]] = field(default_factory=dict)
    fixed_lrs: dict[str, float] = field(default_factory=dict)  # chosen by an earlier compare (--lrs-from)

    def __post_init__(self) -> None:
        known = {**CANDIDATES, **EXTRA_CANDIDATES}
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"unknown method {', '.join(unknown)} for compare; choose from {', '.join(known)}")
        if BASELINE not in self.methods:
            raise ValueError(f"compare measures transfer against {BASELINE}: keep it in --methods")
        if not self.seeds:
            raise ValueError("--seeds must be >= 1")
        for method in self.methods:
            self.lr_candidates.setdefault(method, known[method][1])
        self.work_dir = Path(self.work_dir or self.output_dir / "runs")

    @property
    def ledger(self) -> Path:
        return self.output_dir / "results.jsonl"

    def config(self, method: str, loss: str, seed: int, lr: float, tune: bool = False) -> TrainConfig:
        spec = MethodSpec.from_dict({**CANDIDATES, **EXTRA_CANDIDATES}[method][0])
        slug = f"{'tune-' if tune else ''}{method}-{loss}-lr{lr:g}-s{seed}".replace("+", "_")
        return TrainConfig(**self.base, output_dir=str(self.work_dir / slug), method=spec, loss=loss, seed=seed,
                           lr=lr, tune_fraction=TUNE_FRACTION if tune else None, keep_last_epoch=not tune,
                           overwrite=True)


# A run key leaves out the settings at these values. Epochs and batch size were 3 and 32 before the
# small-data schedule (None) became the default, so older ledgers keep their keys and an automatic
# schedule is keyed as such.
_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(TrainConfig) if f.name != "output_dir"} | {"epochs": 3, "batch_size": 32}
_RUN_ONLY = ("output_dir", "overwrite", "resume", "save_every", "save_full")


def run_key(cfg: TrainConfig) -> str:
    """A run's identity in the ledger: the settings that differ from TrainConfig's defaults (a setting
    added later leaves old keys valid), the method's own fields, and the data and model by content
    (a ledger committed on one machine resumes on another; an edited file does not reuse old runs)."""
    identity = {k: v for k, v in cfg.identity().items() if k not in _RUN_ONLY and v != _DEFAULTS.get(k)}
    identity["method"] = cfg.method.relevant() | ({"shape": SMALL_SCRATCH} if cfg.method.name == BASELINE else {})
    task = cfg.task_definition()
    for name, path in (("model", cfg.model), ("train_file", cfg.train_file), ("dev_file", cfg.dev_file),
                       ("data_dir", cfg.data_dir and str(Path(cfg.data_dir) / task.dir_name))):
        if path:
            identity[name] = content_id(path)
    return json.dumps(identity, sort_keys=True)


@lru_cache(maxsize=None)
def content_id(path: str) -> str:
    """What a path holds, as 16 hex digits of sha256 over its files' names, sizes and bytes (only the
    first 16 MiB of a larger file, such as a model's weights); a Hub id stays as it is."""
    target = Path(path)
    if not target.exists():
        return path
    digest = hashlib.sha256()
    for file in sorted(target.rglob("*")) if target.is_dir() else [target]:
        if file.is_file():
            digest.update(f"{file.relative_to(target) if target.is_dir() else ''}:{file.stat().st_size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(16 << 20))
    return digest.hexdigest()[:16]
