"""Run a grid of GLUE fine-tuning runs (tasks × methods × sizes × seeds) through ``glue_tasks``.

Resumable: every finished run is one JSON line in ``<results-dir>/results.jsonl``; running the
same command again skips what is done, so a long grid can be run in pieces (``--max-runs``,
``--tasks``, ``--methods``). Each run is a separate ``adaptkit-glue train`` process, so one
failure (or a kill) loses only that run.

  python benchmarks/sweep.py --preset cpu-small --data-dir ../shared/data/glue --dry-run
  python benchmarks/sweep.py --preset cpu-small --data-dir ../shared/data/glue --tasks rte mrpc
  python benchmarks/report.py benchmarks/results/cpu-small
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = ("cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli")


@dataclass(frozen=True)
class Run:
    """One training run; its JSON form is its identity in results.jsonl."""

    task: str
    method: dict
    lr: float
    seed: int
    epochs: int
    loss: str = "ce"
    max_train_samples: int | None = None
    model: str | None = None
    mixed_precision: str = "no"

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def label(self) -> str:
        m = self.method
        name = {"adapter": lambda: f"adapter-{m['placement']}-{m['size']}", "top-k": lambda: f"top-{m['top_k']}",
                "lora": lambda: f"lora-r{m['lora_rank']}"}.get(m["name"], lambda: m["name"])()
        return name if self.loss == "ce" else f"{name}+{self.loss}"

    @property
    def slug(self) -> str:
        return f"{self.task}-{self.label}-lr{self.lr:g}-s{self.seed}-e{self.epochs}".replace("+", "_")

    def cli_args(self) -> list[str]:
        args = ["--task", self.task, "--method", self.method["name"], "--lr", str(self.lr), "--seed", str(self.seed),
                "--epochs", str(self.epochs), "--loss", self.loss, "--mixed-precision", self.mixed_precision]
        flags = {"placement": "--placement", "size": "--size", "top_k": "--top-k", "lora_rank": "--lora-rank"}
        for name, flag in flags.items():
            if name in self.method:
                args += [flag, str(self.method[name])]
        if self.max_train_samples:
            args += ["--max-train-samples", str(self.max_train_samples)]
        if self.model:
            args += ["--model", self.model]
        return args


def adapter(size: int, placement: str = "houlsby") -> dict:
    return {"name": "adapter", "placement": placement, "size": size}


@dataclass
class Preset:
    description: str
    runs: list[Run] = field(default_factory=list)


def cpu_small() -> Preset:
    """all-MiniLM-L6-v2 on five GLUE dev sets, sized for about 6 hours on 2 CPU cores."""
    lrs = {"full": 5e-5, "top-0": 1e-3, "top-k": 2e-4, "layernorm": 1e-3, "adapter": 1e-3, "lora": 1e-3,
           "scratch": 1e-4}
    methods = [({"name": "full"}, lrs["full"]), ({"name": "top-k", "top_k": 0}, lrs["top-0"])]
    methods += [({"name": "top-k", "top_k": k}, lrs["top-k"]) for k in (1, 2, 3)]
    methods += [({"name": "layernorm"}, lrs["layernorm"])]
    methods += [(adapter(m), lrs["adapter"]) for m in (8, 64, 256)] + [(adapter(64, "pfeiffer"), lrs["adapter"])]
    methods += [({"name": "lora", "lora_rank": 8}, lrs["lora"]), ({"name": "scratch"}, lrs["scratch"])]
    # task -> (seeds, train subsample): 3 seeds where the spread matters (small dev sets).
    tasks = {"rte": (3, None), "mrpc": (3, None), "cola": (3, 4000), "stsb": (1, 4000), "sst2": (1, 4000)}
    runs = []
    for task, (seeds, subsample) in tasks.items():
        for seed in range(1, seeds + 1):
            runs += [Run(task, method, lr, seed, 3, max_train_samples=subsample) for method, lr in methods]
            if task in CLASSIFICATION:
                for method, lr in ((adapter(64), lrs["adapter"]), ({"name": "scratch"}, lrs["scratch"])):
                    runs += [Run(task, method, lr, seed, 3, loss=loss, max_train_samples=subsample)
                             for loss in ("cosine", "cosine+ce")]
    return Preset("all-MiniLM-L6-v2; RTE, MRPC, CoLA (3 seeds), STS-B, SST-2 (1 seed); 3 epochs; CoLA, STS-B "
                  "and SST-2 train on a seeded 4000-example subsample; batch 32, max length 128; "
                  "lr: " + ", ".join(f"{k} {v:g}" for k, v in lrs.items()), runs)


def glue_headline() -> Preset:
    """The README's result: adapters vs full fine-tuning on RTE and MRPC, whole train sets, 3 seeds."""
    runs = [Run(task, method, lr, seed, 3)
            for task in ("rte", "mrpc") for seed in (1, 2, 3)
            for method, lr in (({"name": "full"}, 5e-5), (adapter(64), 1e-3))]
    return Preset("all-MiniLM-L6-v2; RTE and MRPC, whole train sets, 3 epochs, 3 seeds; batch 32, max length 128; "
                  "full fine-tuning lr 5e-5, houlsby adapters m=64 lr 1e-3", runs)


def paper() -> Preset:
    """Houlsby et al.'s GLUE sweep on BERT-base/large, for GPUs (data from the Hub or --data-dir)."""
    runs = []
    for model in ("bert-base-uncased", "bert-large-uncased"):
        for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"):
            for epochs in (3, 20):
                for lr in (3e-5, 3e-4, 3e-3):
                    runs += [Run(task, adapter(m), lr, 1, epochs, model=model) for m in (8, 64, 256)]
                runs += [Run(task, {"name": "full"}, lr, 1, epochs, model=model) for lr in (2e-5, 3e-5, 5e-5)]
    return Preset("BERT-base/large, GLUE without WNLI, adapter sizes {8, 64, 256}, lr {3e-5, 3e-4, 3e-3}, "
                  "epochs {3, 20}; full fine-tuning at lr {2e-5, 3e-5, 5e-5}", runs)


PRESETS = {"cpu-small": cpu_small, "glue-headline": glue_headline, "paper": paper}


def done_keys(results_file: Path) -> set[str]:
    """Keys of finished runs; a torn last line (a kill during the write) is ignored."""
    keys = set()
    if results_file.exists():
        for line in results_file.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (json.JSONDecodeError, KeyError):
                continue
    return keys


def append_result(results_file: Path, run: Run, result: dict) -> None:
    """Append one line; a torn line left by a kill is closed first so it cannot swallow this one."""
    line = json.dumps({"key": run.key, "label": run.label, **asdict(run), "result": result}, sort_keys=True)
    with open(results_file, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(line.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def execute(run: Run, work_dir: Path, data_dir: str | None) -> dict:
    """Train one run in its own process; its log stays in the work directory."""
    out = work_dir / run.slug
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "glue_tasks", "train", *run.cli_args(), "--output-dir", str(out / "run"),
           "--overwrite"] + (["--data-dir", data_dir] if data_dir else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    with open(out / "train.log", "w", encoding="utf-8") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (out / "train.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        raise RuntimeError(f"{run.slug} failed (exit {done.returncode}); log {out / 'train.log'}:\n{tail}")
    return json.loads((out / "run" / "results.json").read_text(encoding="utf-8"))


def select(runs: list[Run], tasks: list[str] | None, methods: list[str] | None) -> list[Run]:
    return [r for r in runs if (not tasks or r.task in tasks) and (not methods or r.label in methods)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--data-dir", help="GLUE folder in the TSV layout (default: the Hub)")
    parser.add_argument("--results-dir", help="where results.jsonl goes (default: benchmarks/results/<preset>)")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / ".work"),
                        help="run directories and logs (checkpoints; not committed)")
    parser.add_argument("--tasks", nargs="+", help="only these tasks")
    parser.add_argument("--methods", nargs="+", help="only these labels, e.g. full adapter-houlsby-64 top-0")
    parser.add_argument("--model", help="override the preset's model")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--max-runs", type=int, help="stop after this many new runs")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]()
    results_dir = Path(args.results_dir or ROOT / "benchmarks" / "results" / args.preset)
    results_file = results_dir / "results.jsonl"
    runs = [Run(**{**asdict(r), "model": args.model or r.model, "mixed_precision": args.mixed_precision})
            for r in select(preset.runs, args.tasks, args.methods)]
    finished = done_keys(results_file)
    pending = [r for r in runs if r.key not in finished]
    todo = pending[: args.max_runs]
    print(f"{args.preset}: {preset.description}\n{len(runs)} runs selected, {len(runs) - len(pending)} already "
          f"done, {len(todo)} to run now → {results_file}")
    if args.dry_run:
        for run in todo:
            print("  ", run.slug)
        return 0
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "preset.json").write_text(json.dumps({"preset": args.preset, "description": preset.description,
                                                         "runs": len(preset.runs)}, indent=2) + "\n")
    failures = 0
    for run in tqdm(todo, desc=args.preset, unit="run"):
        started = time.perf_counter()
        try:
            result = execute(run, Path(args.work_dir), args.data_dir)
        except RuntimeError as exc:
            failures += 1
            tqdm.write(str(exc))
            continue
        append_result(results_file, run, result)
        dev = " ".join(f"{k} {100 * v:.1f}" for split in result["dev"].values() for k, v in split.items())
        tqdm.write(f"{run.slug}: {dev} ({time.perf_counter() - started:.0f}s)")
    print(f"{len(todo) - failures} runs finished, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
