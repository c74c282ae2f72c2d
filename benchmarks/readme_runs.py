"""Run the README's "first result" and main-job commands exactly as written and keep what they report.

    python benchmarks/readme_runs.py            # → benchmarks/results/readme_runs.json

The commands are the README's (a test checks they are the same text); their output directories go to a
temporary folder. Wall time is the whole command, model loading and evaluation included, and the
load average before each run is recorded, since another job on the same cores slows it.
"""

from __future__ import annotations

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
            "score": results["score"], "dev": results["dev"], "best_epoch": results["best_epoch"],
            "trainable_parameters": results["parameters"]["trainable"], "train_examples": results["train_examples"],
            "lr": results["lr"], "seed": results["seed"], "train_seconds": results["wall_seconds"]}


def main() -> None:
    report = {"machine": machine_info(), "source": source_info(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in COMMANDS.items():
            print(f"{name}: {command}", file=sys.stderr)
            report["runs"][name] = run(command, Path(scratch))
            print(json.dumps(report["runs"][name]), file=sys.stderr)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
