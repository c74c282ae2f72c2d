"""Is a training run repeatable? The same run, repeated, at each of several torch thread counts.

  python benchmarks/investigations/determinism.py --data-dir ../shared/data/glue   # → benchmarks/investigations/results/determinism.json

One ``adaptkit-glue train`` run (SST-2, 1,000 examples, houlsby m=64, 2 epochs at batch 8, max length
64, seed 1: a cell of the compare and seed-claims grids) in a fresh process per repeat, with
OMP_NUM_THREADS / MKL_NUM_THREADS set. The trained adapter is compared by the sha256 of its tensor
file (recorded in its adapter_config.json), the dev score beside it. Why it matters: on a CPU the
thread count changes the order in which sums are taken, so runs with other thread counts part ways
after the first step; a committed ledger resumed with another thread count mixes the two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from adaptkit.atomic import write_json_atomic  # noqa: E402
from glue_tasks.machine import machine_info, source_info  # noqa: E402

RUN = ["--task", "sst2", "--max-train-samples", "1000", "--max-length", "64", "--method", "adapter",
       "--placement", "houlsby", "--size", "64", "--lr", "1e-3", "--epochs", "2", "--batch-size", "8",
       "--seed", "1", "--keep-last-epoch"]


def train_once(data_dir: str, threads: int, output_dir: Path) -> dict:
    """One run in its own process with ``threads`` torch threads: its dev score and adapter hash."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "glue_tasks", "train", *RUN, "--data-dir", data_dir,
               "--output-dir", str(output_dir), "--overwrite"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    results = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    config = json.loads((output_dir / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    return {"threads": results["machine"]["torch_threads"], "score": results["score"],
            "adapter_sha256": config["files"]["adapter_model.safetensors"]["sha256"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "glue"),
                        help="GLUE folder in the TSV layout")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try")
    parser.add_argument("--repeats", type=int, default=2, help="runs per thread count (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "investigations" / "results" / "determinism.json")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2: repeatability needs a repeat")
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):  # interleaved, so a drift over time would show within a thread count
            for threads in args.threads:
                run = train_once(args.data_dir, threads, Path(work) / f"t{threads}-r{repeat}")
                print(f"threads {run['threads']} repeat {repeat + 1}: score {100 * run['score']:.2f}, "
                      f"adapter {run['adapter_sha256'][:12]}", flush=True)
                runs.append(run)
    by_threads = {t: {r["adapter_sha256"] for r in runs if r["threads"] == t} for t in args.threads}
    write_json_atomic(args.output, {
        "command": "python benchmarks/investigations/determinism.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "run": "adaptkit-glue train " + " ".join(RUN),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "source": source_info(), "runs": runs,
        "repeatable_at_same_threads": {str(t): len(hashes) == 1 for t, hashes in by_threads.items()},
        "same_across_thread_counts": len(set().union(*by_threads.values())) == 1})
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
