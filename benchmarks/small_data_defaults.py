"""Do the default settings learn from a few hundred rows? SST-2 at 300 and 1,000 training rows.

    python benchmarks/small_data_defaults.py --data-dir ../shared/data/glue
      → benchmarks/results/small_data_defaults.jsonl (one line per run: rerun to resume)
      → benchmarks/results/small_data_defaults.json (the table, once every run is done)

Each size is one fixed subset (the first rows of SST-2's training file shuffled with seed 0, the same
for every seed and setting), trained with the real model (all-MiniLM-L6-v2) by ``adaptkit-glue train``
as a user would: the old defaults (batch 32, 3 epochs) against today's (no schedule flags), 3 seeds,
one torch thread per run (faster than two on a shared 2-core machine). Scored on the whole SST-2 dev
set beside its majority share: the new defaults should beat it by 10 points at 300 rows on every seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from glue_tasks.data import GlueData  # noqa: E402
from glue_tasks.ledger import append_line, done_keys, read_lines  # noqa: E402
from glue_tasks.machine import machine_info, source_info  # noqa: E402
from glue_tasks.tasks import get_task  # noqa: E402

SIZES = (300, 1000)
SEEDS = (1, 2, 3)
SETTINGS = {"old defaults (batch 32, 3 epochs)": ["--batch-size", "32", "--epochs", "3"], "new defaults": []}
MARGIN = 0.10  # the new defaults must beat the dev majority share by this much at the smallest size
RESULTS = ROOT / "benchmarks" / "results"
LEDGER, OUT = RESULTS / "small_data_defaults.jsonl", RESULTS / "small_data_defaults.json"


def write_subset(data_dir: str, size: int, into: Path) -> Path:
    """A GLUE folder whose SST-2 train split is the fixed subset (parquet takes precedence) and whose dev is SST-2's."""
    folder = into / f"sst2-{size}" / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    rows = GlueData(get_task("sst2"), data_dir).load("train").dataset.shuffle(seed=0).select(range(size))
    rows.to_parquet(str(folder / "train.parquet"))
    dev = folder / "dev.tsv"
    if not dev.exists():
        dev.symlink_to(Path(data_dir).resolve() / "SST-2" / "dev.tsv")
    return folder.parent


def run(data_dir: Path, size: int, seed: int, flags: list[str], scratch: Path) -> dict:
    output = scratch / f"run-{size}-{seed}-{len(flags)}"
    args = ["train", "--task", "sst2", "--data-dir", str(data_dir), "--seed", str(seed), "--threads", "1",
            "--output-dir", str(output), "--overwrite", *flags]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "glue_tasks", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"adaptkit-glue {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    results = json.loads((output / "results.json").read_text())
    labels = [label for split in results["dev_predictions"].values() for label in split["label"]]
    return {"score": results["score"], "majority_score": results["majority_score"],
            "dev_majority_share": max(labels.count(c) for c in set(labels)) / len(labels),
            "one_class": results["one_class"], "epochs": results["epochs"], "batch_size": results["batch_size"],
            "steps": results["schedule"]["steps"], "best_epoch": results["best_epoch"],
            "train_label_counts": results["train_label_counts"], "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average_before": round(load, 2), "threads": 1}


def summarise(lines: list[dict]) -> dict:
    table = {}
    for line in lines:
        table.setdefault(str(line["size"]), {}).setdefault(line["setting"], {})[str(line["seed"])] = {
            k: line[k] for k in ("score", "majority_score", "dev_majority_share", "one_class", "epochs",
                                 "batch_size", "steps", "best_epoch", "wall_seconds", "load_average_before")}
    smallest = table[str(SIZES[0])]["new defaults"]
    margins = {seed: run["score"] - run["dev_majority_share"] for seed, run in smallest.items()}
    return {"command": "python benchmarks/small_data_defaults.py --data-dir ../shared/data/glue",
            "what": __doc__.strip().split("\n\n")[-1], "table": table,
            "new_defaults_margin_over_majority_at_smallest": margins,
            "target_met": all(m >= MARGIN for m in margins.values()), "target": f">= {100 * MARGIN:.0f} points",
            "machine": machine_info(), "source": source_info(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the GLUE folder (holding SST-2/)")
    args = parser.parse_args()
    done = done_keys(LEDGER)
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            data_dir = write_subset(args.data_dir, size, Path(scratch))
            for seed in SEEDS:
                for setting, flags in SETTINGS.items():
                    key = json.dumps({"size": size, "seed": seed, "setting": setting}, sort_keys=True)
                    if key in done:
                        continue
                    line = {"key": key, "size": size, "seed": seed, "setting": setting,
                            **run(data_dir, size, seed, flags, Path(scratch))}
                    append_line(LEDGER, line)
                    print(f"{size} rows, seed {seed}, {setting}: {100 * line['score']:.1f} (dev majority "
                          f"{100 * line['dev_majority_share']:.1f}) in {line['wall_seconds']:.0f} s", file=sys.stderr)
    OUT.write_text(json.dumps(summarise(read_lines(LEDGER)), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
