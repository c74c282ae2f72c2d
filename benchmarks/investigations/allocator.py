"""What ``adaptkit.cpu_speed.reuse_freed_memory()`` changes for a training process on the CPU: step time and
page faults per step, glibc's default settings against reuse, side by side.

The setting is process-wide, so the two cannot share one process as overhead.py's variants do:
each measurement is a fresh process that trains one variant of overhead.py (all-MiniLM-L6-v2,
batch 32 x 128, 2 threads), as ``adaptkit-glue train`` would but with torch's own dropout kernel
(no ``fast_cpu_dropout``: only the allocator differs), and the two settings alternate process by
process (default, reuse, reuse, default, ...) so that drift hits both alike.

Run: ``python benchmarks/investigations/allocator.py`` (writes benchmarks/investigations/results/allocator.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: overhead, measure

import adaptkit.cpu_speed
from adaptkit.atomic import write_json_atomic
from glue_tasks.machine import machine_info
from measure import random_batch
from overhead import BATCH, SEED, SEQ_LEN, THREADS, timed_with_faults, train_model, train_step_fn

VARIANTS = ["full", "houlsby64", "houlsby64-top3"]
SETTINGS = ["default", "reuse"]
WARMUP_STEPS = 2
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "allocator.json"


def child(variant: str, setting: str, steps: int) -> None:
    """In a fresh process: ``steps`` timed training steps after the warm-up; prints JSON."""
    reused = setting == "reuse" and adaptkit.cpu_speed.reuse_freed_memory()
    torch.set_num_threads(THREADS)
    step = train_step_fn(train_model(variant), random_batch(BATCH, SEQ_LEN, SEED))
    for _ in range(WARMUP_STEPS):
        step()
    seconds, faults = zip(*(timed_with_faults(step) for _ in range(steps)))
    json.dump({"reused": reused, "seconds": list(seconds), "faults": list(faults)}, sys.stdout)


def run_child(variant: str, setting: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, setting, "--steps", str(steps)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure(processes: int, steps: int) -> dict:
    """Per variant: each setting's step times and faults, pooled over its processes."""
    results = {v: {s: {"seconds": [], "faults": [], "process_medians_s": []} for s in SETTINGS} for v in VARIANTS}
    plan = [(v, (SETTINGS if i % 2 == 0 else SETTINGS[::-1])[j])
            for i in range(processes) for v in VARIANTS for j in range(2)]
    for variant, setting in tqdm(plan, desc="processes", file=sys.stderr):
        out = run_child(variant, setting, steps)
        if setting == "reuse" and not out["reused"]:
            raise SystemExit("adaptkit.cpu_speed.reuse_freed_memory() did nothing here (not glibc): nothing to compare")
        slot = results[variant][setting]
        slot["seconds"] += out["seconds"]
        slot["faults"] += out["faults"]
        slot["process_medians_s"].append(statistics.median(out["seconds"]))
    for variant in VARIANTS:
        for slot in results[variant].values():
            slot.update(median_s=statistics.median(slot["seconds"]),
                        median_faults_per_step=statistics.median(slot["faults"]))
        results[variant]["reuse_over_default"] = round(
            results[variant]["reuse"]["median_s"] / results[variant]["default"]["median_s"], 4)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4,
                        help="processes per variant and setting (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8,
                        help=f"timed steps per process, after {WARMUP_STEPS} warm-up steps (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results, written atomically (default: benchmarks/investigations/results/allocator.json)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SETTING"), help="internal: one measuring process")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.steps)
        return 0
    started = time.perf_counter()
    results = measure(args.processes, args.steps)
    write_json_atomic(args.output, {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"model": "all-MiniLM-L6-v2", "batch_size": BATCH, "seq_len": SEQ_LEN, "threads": THREADS,
                     "variants": "overhead.py's TRAIN_VARIANTS of these names", "processes": args.processes,
                     "steps_per_process": args.steps, "warmup_steps": WARMUP_STEPS,
                     "order": "per variant, default/reuse processes alternate, the order flipped each pair"},
        "results": results,
        "elapsed_s": round(time.perf_counter() - started, 1),
    })
    print(f"\n{'variant':<18}{'default s':>10}{'faults':>9}{'reuse s':>10}{'faults':>9}{'reuse/default':>15}")
    for variant in VARIANTS:
        d, r = results[variant]["default"], results[variant]["reuse"]
        print(f"{variant:<18}{d['median_s']:>10.3f}{d['median_faults_per_step']:>9.0f}{r['median_s']:>10.3f}"
              f"{r['median_faults_per_step']:>9.0f}{results[variant]['reuse_over_default']:>15.3f}")
    print(f"\nwrote {args.output} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
