"""What a CPU dropout mask costs: torch's ``bernoulli_`` kernel against ``adaptkit.cpu_speed.fast_cpu_dropout()``.

Times ``F.dropout(x, 0.1)`` in training mode on the two tensor shapes a MiniLM training step
(batch 32 x 128 tokens) drops out: the attention probabilities (32 x 12 x 128 x 128, six per
step) and the hidden states (32 x 128 x 384, thirteen per step). The two kernels alternate round by
round in one process, as in overhead.py, whose quiet-round rule and paired ratios this reuses.

Run: ``python benchmarks/investigations/dropout_masks.py`` (writes benchmarks/investigations/results/dropout_masks.json).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: overhead, measure

import adaptkit.cpu_speed
from adaptkit.atomic import write_json_atomic
from glue_tasks.machine import machine_info
from overhead import SEED, THREADS, interleave, ratio_entry, round_stats

SHAPES = {"attention_probs": (32, 12, 128, 128), "hidden_states": (32, 128, 384)}
P = 0.1
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "dropout_masks.json"


def timed_dropout(x: torch.Tensor, fast: bool) -> Callable[[], float]:
    """One training-mode dropout of ``x``, with torch's kernel or inside fast_cpu_dropout; seconds.

    The block is entered outside the timed region, as adaptkit-glue train enters it once per run."""
    def run() -> float:
        start = time.perf_counter()
        F.dropout(x, P, training=True)
        return time.perf_counter() - start

    def run_fast() -> float:
        with adaptkit.cpu_speed.fast_cpu_dropout():
            return run()
    return run_fast if fast else run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Variants alternate round "
                                     "by round in one process; rounds with other CPU load are set aside.")
    parser.add_argument("--rounds", type=int, default=40, help="quiet rounds wanted per shape (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 10:
        parser.error("use at least 10 rounds: medians of fewer are too noisy here")
    adaptkit.cpu_speed.reuse_freed_memory()  # as adaptkit-glue train: no page faults in either variant's timing
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    shapes = {}
    for name, shape in SHAPES.items():
        x = torch.randn(shape)
        run = interleave({"torch_kernel": timed_dropout(x, False), "fast_cpu_dropout": timed_dropout(x, True)},
                         args.rounds, name)
        stats = round_stats(run)
        for variant in ("torch_kernel", "fast_cpu_dropout"):
            quiet = stats[variant].get("quiet", stats[variant])  # the rounds the ratio uses, as overhead.py
            stats[variant]["ns_per_element"] = round(quiet["median_s"] * 1e9 / x.numel(), 2)
        stats["ratio"] = ratio_entry(f"{name}_dropout", run, "fast_cpu_dropout", "torch_kernel",
                                     "dropout time, fast_cpu_dropout / torch's kernel", interval=True)
        shapes[name] = {"shape": list(shape), "elements": x.numel(), **stats}
        print(f"{name} {list(shape)}: torch {stats['torch_kernel']['ns_per_element']} ns/element, "
              f"fast {stats['fast_cpu_dropout']['ns_per_element']} ns/element, "
              f"ratio {stats['ratio']['value']:.3f} {stats['ratio']['interval_95']}")
    write_json_atomic(args.output, {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"p": P, "torch_threads": THREADS, "quiet_rounds_wanted": args.rounds,
                     "allocator": "adaptkit.cpu_speed.reuse_freed_memory()", "what": "F.dropout(x, 0.1, training=True), "
                     "whole op: mask, scaling and multiply"},
        "shapes": shapes,
    })
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
