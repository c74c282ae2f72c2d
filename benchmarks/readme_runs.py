"""Run the README's "first result" and main-job commands exactly as written and keep what they report.

    python benchmarks/readme_runs.py                      # → benchmarks/results/readme_runs.json
    python benchmarks/readme_runs.py --only first_result  # one run again; the others' records stay

The commands are the README's (a test checks they are the same text); their output directories go to a
temporary folder. Wall time is the whole command, model loading and evaluation included, and the
load average before each run is recorded, since another job on the same cores slows it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from glue_tasks.machine import machine_info, source_info  # noqa: E402

COMMANDS = {
    "first_result": "adaptkit-glue train --task sst2 --data-dir ../shared/data/glue --max-train-samples 1000 "
                    "--max-length 64 --epochs 1 --batch-size 8 --output-dir runs/first",
    "main_job": "adaptkit-glue train --task rte --data-dir ../shared/data/glue --method adapter --size 64 "
                "--output-dir runs/rte",
}
OUT = ROOT / "benchmarks" / "results" / "readme_runs.json"


def run(command: str, scratch: Path) -> dict:
    args = shlex.split(command.replace("runs/", f"{scratch}/"))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "glue_tasks", *args[1:]], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command} failed:\n{done.stderr[-3000:]}")
    results = json.loads((Path(args[args.index("--output-dir") + 1]) / "results.json").read_text())
    return {"command": command, "wall_seconds": round(wall, 1), "load_average_before": round(load, 2),
            "load_average_after": round(os.getloadavg()[0], 2), "majority_score": results.get("majority_score"),
            "torch_threads": results["machine"]["torch_threads"], "machine": results["machine"],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "score": results["score"], "dev": results["dev"], "best_epoch": results["best_epoch"],
            "trainable_parameters": results["parameters"]["trainable"], "train_examples": results["train_examples"],
            "lr": results["lr"], "seed": results["seed"], "train_seconds": results["wall_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=COMMANDS, help="run this command alone, keeping the file's other records")
    args = parser.parse_args()
    old = json.loads(OUT.read_text()) if args.only and OUT.exists() else {"runs": {}}
    # Records from before runs carried their own date and machine take the file's.
    kept = {name: {"date": old.get("date"), "machine": old.get("machine"), **run} for name, run in old["runs"].items()}
    report = {"machine": machine_info(), "source": source_info(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": kept}
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in COMMANDS.items():
            if args.only and name != args.only:
                continue
            print(f"{name}: {command}", file=sys.stderr)
            report["runs"][name] = run(command, Path(scratch))
            print(json.dumps(report["runs"][name]), file=sys.stderr)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
