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
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the glue_tasks the runs use (their PYTHONPATH), installed or not
from adaptkit.atomic import replaced_folder  # noqa: E402
from adaptkit.config import PLACEMENT_VERSION, RENAMED_PLACEMENTS  # noqa: E402
from glue_tasks.ledger import append_line, done_keys  # noqa: E402
from glue_tasks.methods import MethodSpec  # noqa: E402
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
    batch_size: int = 32

    @property
    def key(self) -> str:
        """The run's settings as JSON. batch_size came later: at its default of 32 it stays out of
        the key, so that results recorded before it existed still count as done. A "pfeiffer"
        adapter's key carries the placement semantics version: before version 2 that name meant
        today's "houlsby-ffn", and such results must not count for the new placement."""
        fields = asdict(self)
        if fields["batch_size"] == 32:
            del fields["batch_size"]
        if self.method.get("placement") in RENAMED_PLACEMENTS:
            fields["placement_version"] = PLACEMENT_VERSION
        return json.dumps(fields, sort_keys=True)

    @property
    def label(self) -> str:
        name = MethodSpec.from_dict(self.method).label()
        return name if self.loss == "ce" else f"{name}+{self.loss}"

    @property
    def slug(self) -> str:
        return f"{self.task}-{self.label}-lr{self.lr:g}-s{self.seed}-e{self.epochs}".replace("+", "_")

    def cli_args(self) -> list[str]:
        args = ["--task", self.task, *MethodSpec.from_dict(self.method).cli_args(), "--lr", str(self.lr),
                "--seed", str(self.seed), "--epochs", str(self.epochs), "--loss", self.loss,
                "--mixed-precision", self.mixed_precision, "--batch-size", str(self.batch_size)]
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


#: cpu-small's run size: 1000 examples (a subsample drawn by the seed), 2 epochs at batch 8.
SMALL_DATA = {"epochs": 2, "max_train_samples": 1000, "batch_size": 8}
SMALL_DATA_TEXT = (f"{SMALL_DATA['max_train_samples']} examples of the task's train set (a subsample drawn by the "
                   f"seed) for {SMALL_DATA['epochs']} epochs at batch {SMALL_DATA['batch_size']} "
                   f"({SMALL_DATA['max_train_samples'] // SMALL_DATA['batch_size'] * SMALL_DATA['epochs']} updates)")


def cpu_small() -> Preset:
    """all-MiniLM-L6-v2 with little data, sized for about 6 hours on 2 CPU cores.

    The budget (2 cores, 6 h, 172 runs) allows about 2000 examples × epochs per run at RTE's
    measured 0.087 s per example-epoch of full fine-tuning. Spent as 500 examples × 3 epochs at
    batch 32 (48 updates) nearly every method stayed at the majority class on RTE, MRPC and CoLA
    (measured on a GPU, 2026-11-28), so each run sees 1000 examples for 2 epochs at batch 8: the
    same compute, 250 updates.
    """
    # Head-only and LayerNorm-only get 1e-2: at 1e-3 a fresh head barely moves in a small-data run
    # (SST-2, 1000 examples, head-only: dev accuracy 50.9 at 1e-3, 58.6 at 1e-2).
    lrs = {"full": 5e-5, "top-0": 1e-2, "top-k": 2e-4, "layernorm": 1e-2, "adapter": 1e-3, "lora": 1e-3,
           "scratch": 1e-4}
    methods = [({"name": "full"}, lrs["full"]), ({"name": "top-k", "top_k": 0}, lrs["top-0"])]
    methods += [({"name": "top-k", "top_k": k}, lrs["top-k"]) for k in (1, 2, 3)]
    methods += [({"name": "layernorm"}, lrs["layernorm"])]
    methods += [(adapter(m), lrs["adapter"]) for m in (8, 64, 256)] + [(adapter(64, "houlsby-ffn"), lrs["adapter"])]
    methods += [({"name": "lora", "lora_rank": 8}, lrs["lora"]), ({"name": "scratch"}, lrs["scratch"])]
    seeds = {"rte": 3, "mrpc": 3, "cola": 3, "stsb": 1, "sst2": 1}  # 3 where the spread matters
    runs = []
    for task, n_seeds in seeds.items():
        for seed in range(1, n_seeds + 1):
            runs += [Run(task, method, lr, seed, **SMALL_DATA) for method, lr in methods]
            if task in CLASSIFICATION:
                for method, lr in ((adapter(64), lrs["adapter"]), ({"name": "scratch"}, lrs["scratch"])):
                    runs += [Run(task, method, lr, seed, loss=loss, **SMALL_DATA) for loss in ("cosine", "cosine+ce")]
    return Preset(f"all-MiniLM-L6-v2 with little data: each run trains on {SMALL_DATA_TEXT}, whole dev sets; "
                  "3 seeds for RTE, MRPC and CoLA, 1 for STS-B and SST-2; max length 128; "
                  "lr: " + ", ".join(f"{k} {v:g}" for k, v in lrs.items()) + "; sized for about 6 h on 2 CPU "
                  "cores (estimated from the measured cost of full fine-tuning)", runs)


def cpu_small_lr() -> Preset:
    """Is it the method or its learning rate? cpu-small's light methods on STS-B at the paper's
    neighbours of 1e-3 (its grid is {3e-5, 3e-4, 3e-3}), where they fell furthest behind."""
    methods = [adapter(64), adapter(256), adapter(64, "houlsby-ffn"), {"name": "lora", "lora_rank": 8}]
    lrs = (3e-4, 1e-3, 3e-3)
    runs = [Run("stsb", method, lr, 1, **SMALL_DATA) for method in methods for lr in lrs]
    return Preset(f"STS-B, seed 1, each run on {SMALL_DATA_TEXT} as in cpu-small: houlsby m=64 and 256, "
                  "houlsby-ffn m=64 and LoRA r=8 at lr " + ", ".join(f"{lr:g}" for lr in lrs), runs)


def glue_headline() -> Preset:
    """The README's result: adapters vs full fine-tuning on RTE and MRPC, whole train sets, 3 seeds."""
    runs = [Run(task, method, lr, seed, 3)
            for task in ("rte", "mrpc") for seed in (1, 2, 3)
            for method, lr in (({"name": "full"}, 5e-5), (adapter(64), 1e-3))]
    return Preset("all-MiniLM-L6-v2; RTE and MRPC, whole train sets, 3 epochs, 3 seeds; batch 32, max length 128; "
                  "full fine-tuning lr 5e-5, houlsby adapters m=64 lr 1e-3", runs)


def layer_choice() -> Preset:
    """AdapterDrop-style layer choice (issue 18): glue-headline's houlsby m=64 runs with adapters in the
    top 4, 3 and 2 of MiniLM's 6 blocks only; the top 6 are glue-headline's own runs. RTE first, so
    that a partial run already answers for one task. Then all 6 blocks with the embeddings' LayerNorm
    frozen: what the option that saves its price costs in score."""
    runs = [Run(task, {**adapter(64), "adapter_top": top}, 1e-3, seed, 3)
            for task in ("rte", "mrpc") for seed in (1, 2, 3) for top in (4, 3, 2)]
    runs += [Run(task, {**adapter(64), "train_embedding_norm": False}, 1e-3, seed, 3)
             for task in ("rte", "mrpc") for seed in (1, 2, 3)]
    return Preset("all-MiniLM-L6-v2; RTE and MRPC, whole train sets, 3 epochs, 3 seeds; batch 32, max length 128; "
                  "houlsby adapters m=64 at lr 1e-3 (glue-headline's) in the top 4, 3 and 2 of 6 blocks "
                  "(the top 6: glue-headline), and in all 6 with the embeddings' LayerNorm frozen", runs)


#: fusion: the source tasks (the issue's five), the targets, and the source adapters' method
#: (houlsby m=64 at glue-headline's lr 1e-3 and 3 epochs, LayerNorms frozen as AdapterFusion's adapters
#: are, so the fused adapters share the base's LayerNorms).
FUSION_SOURCES = ("sst2", "mrpc", "stsb", "cola", "rte")
FUSION_TARGETS = ("rte", "mrpc")
FUSION_SOURCE_METHOD = {**adapter(64), "train_layernorms": False}


def fusion_glue() -> Preset:
    """AdapterFusion on GLUE (issue 38): per seed, an adapter on each source task's whole train set,
    then a dynamic fusion of all five trained on each target (its own adapter among them, as in the
    paper), against the target's single adapter (the source run on the target, same seed). The
    fusion runs name their sources by slug; ``execute`` finds them where the sweep keeps them
    (``kept_adapters``), so the source runs come first."""
    sources = {seed: [Run(task, FUSION_SOURCE_METHOD, 1e-3, seed, 3) for task in FUSION_SOURCES] for seed in (1, 2, 3)}
    fusions = [Run(target, {"name": "fusion", "fusion_sources": [r.slug for r in sources[seed]],
                            "fusion_config": "dynamic"}, 5e-5, seed, 3)
               for seed in (1, 2, 3) for target in FUSION_TARGETS]
    return Preset("all-MiniLM-L6-v2; source adapters (houlsby m=64, LayerNorms frozen, lr 1e-3, 3 epochs) on the "
                  f"whole train sets of {', '.join(FUSION_SOURCES)}; then a dynamic AdapterFusion of all five on "
                  f"{' and '.join(FUSION_TARGETS)} (lr 5e-5, 3 epochs; fusion layers and a fresh head copy train), "
                  "3 seeds; batch 32, max length 128. The paper's RTE gain came mostly from MNLI, which is not "
                  "among the sources here", [r for seed in (1, 2, 3) for r in sources[seed]] + fusions)


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


PRESETS = {"cpu-small": cpu_small, "cpu-small-lr": cpu_small_lr, "glue-headline": glue_headline,
           "layer-choice": layer_choice, "paper": paper, "fusion": fusion_glue}


def append_result(results_file: Path, run: Run, result: dict) -> None:
    append_line(results_file, {"key": run.key, "label": run.label, **asdict(run), "result": result})


def execute(run: Run, work_dir: Path, data_dir: str | None, threads: int | None = None,
            kept: Path | None = None) -> dict:
    """Train one run in its own process; its log stays in the work directory.

    ``threads`` caps each process's CPU threads, so that parallel runs do not oversubscribe the cores.
    ``kept``: where an adapter run's adapter is kept (committed beside the results), for the fusion
    runs that read it, on this machine or the next.
    """
    out = work_dir / run.slug
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "glue_tasks", "train", *with_kept_sources(run, kept).cli_args(),
           "--output-dir", str(out / "run"),
           "--overwrite"] + (["--data-dir", data_dir] if data_dir else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(out / "train.log", "w", encoding="utf-8") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (out / "train.log").read_text(encoding="utf-8", errors="replace")[-1500:]
        raise RuntimeError(f"{run.slug} failed (exit {done.returncode}); log {out / 'train.log'}:\n{tail}")
    if kept is not None and run.method["name"] == "adapter":
        with replaced_folder(kept / run.slug) as staging:
            shutil.copytree(out / "run" / "adapter", staging / "adapter")  # and what the fusion method reads
            shutil.copy2(out / "run" / "run_config.json", staging / "run_config.json")
    return json.loads((out / "run" / "results.json").read_text(encoding="utf-8"))


def with_kept_sources(run: Run, kept: Path | None) -> Run:
    """The run with its fusion sources (source runs' slugs) as the folders their adapters are kept in."""
    sources = run.method.get("fusion_sources")
    if not sources:
        return run
    if kept is None:
        raise RuntimeError(f"{run.slug} fuses other runs' adapters, but this sweep keeps none")
    return replace(run, method={**run.method, "fusion_sources": [str(kept / slug) for slug in sources]})


def kept_adapters(preset: Preset, results_dir: Path) -> Path | None:
    """Where a preset whose runs fuse other runs' adapters keeps them: beside its results, so a
    sweep continued on another machine finds them."""
    return results_dir / "adapters" if any(r.method.get("fusion_sources") for r in preset.runs) else None


def select(runs: list[Run], tasks: list[str] | None, methods: list[str] | None,
           seeds: list[int] | None = None) -> list[Run]:
    return [r for r in runs if (not tasks or r.task in tasks) and (not methods or r.label in methods)
            and (not seeds or r.seed in seeds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--data-dir", help="GLUE folder in the TSV layout (default: the Hub)")
    parser.add_argument("--results-dir", help="where results.jsonl goes (default: benchmarks/results/<preset>)")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / ".work"),
                        help="run directories and logs (checkpoints; not committed)")
    parser.add_argument("--tasks", nargs="+", help="only these tasks")
    parser.add_argument("--methods", nargs="+", help="only these labels, e.g. full adapter-houlsby-64 top-0")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds, e.g. 1 to cover every cell once first")
    parser.add_argument("--model", help="override the preset's model")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--max-runs", type=int, help="stop after this many new runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (default 1). More helps on a GPU, where a small model's run is "
                             "mostly start-up; their wall times then overlap, so compare run times only "
                             "within one sweep")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    preset = PRESETS[args.preset]()
    results_dir = Path(args.results_dir or ROOT / "benchmarks" / "results" / args.preset)
    results_file = results_dir / "results.jsonl"
    runs = [Run(**{**asdict(r), "model": args.model or r.model, "mixed_precision": args.mixed_precision})
            for r in select(preset.runs, args.tasks, args.methods, args.seeds)]
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
    meta = {"preset": args.preset, "description": preset.description, "runs": len(preset.runs), "jobs": args.jobs,
            "overrides": {"model": args.model, "mixed_precision": args.mixed_precision}}
    (results_dir / "preset.json").write_text(json.dumps(meta, indent=2) + "\n")
    failures = run_all(todo, args.jobs, Path(args.work_dir), args.data_dir, results_file, args.preset,
                       kept_adapters(preset, results_dir))
    print(f"{len(todo) - failures} runs finished, {failures} failed")
    return 1 if failures else 0


def run_all(todo: list[Run], jobs: int, work_dir: Path, data_dir: str | None, results_file: Path,
            desc: str, kept: Path | None = None) -> int:
    """Run ``jobs`` trainings at a time; only this process appends to results.jsonl. Returns the failures."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def timed(run: Run) -> tuple[dict, float]:
        started = time.perf_counter()
        return execute(run, work_dir, data_dir, threads, kept=kept), time.perf_counter() - started

    failures = 0
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(todo), desc=desc, unit="run") as bar:
        futures = {pool.submit(timed, run): run for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            bar.update()
            try:
                result, seconds = future.result()
            except RuntimeError as exc:
                failures += 1
                tqdm.write(str(exc))
                continue
            append_result(results_file, run, result)
            dev = " ".join(f"{k} {100 * v:.1f}" for split in result["dev"].values() for k, v in split.items())
            tqdm.write(f"{run.slug}: {dev} ({seconds:.0f}s)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
