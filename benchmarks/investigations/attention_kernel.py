"""What CPU attention with dropout costs: torch's math path against ``adaptkit.cpu_speed.fast_cpu_attention()``.

Two measurements, each with the two kernels alternating round by round in one process (overhead.py's
quiet-round rule and paired ratios), so drift between runs does not enter the ratios:
- the attention alone, forward and backward, at a MiniLM training step's shape (batch 32, 12 heads,
  128 tokens, head size 32, dropout 0.1), called as transformers' BERT calls it;
- whole training steps of overhead.py's variants (all-MiniLM-L6-v2, batch 32 x 128, masks by
  ``fast_cpu_dropout`` and freed memory reused, as ``adaptkit-glue train``), and the ratios between
  variants under each kernel (the price of trainable LayerNorms among them).
Peak memory of a training step needs a fresh process per variant and kernel: overhead.py's memory
children.

Run: ``python benchmarks/investigations/attention_kernel.py`` (writes benchmarks/investigations/results/attention_kernel.json).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: overhead, measure

import adaptkit.cpu_speed
from adaptkit.atomic import write_json_atomic
from glue_tasks.machine import machine_info
from measure import random_batch
from overhead import (
    BATCH, SEED, SEQ_LEN, THREADS, TRAIN_RATIOS, bench_memory, interleave, ratio_entry, round_stats, train_model,
    train_step_fn,
)

HEADS, HEAD_SIZE, P = 12, 32, 0.1
VARIANTS = ["full", "houlsby64", "houlsby64-frozen-ln", "houlsby64-top3"]
KERNELS = {"torch": contextlib.nullcontext, "fast": adaptkit.cpu_speed.fast_cpu_attention}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "attention_kernel.json"


class _Module(torch.nn.Module):
    """What transformers' attention functions read off the attention module."""
    is_causal = False


def timed_attention(kernel: str) -> Callable[[], float]:
    """Forward and backward of one attention with dropout, as BERT calls it (q, k and v are
    (batch, heads, tokens, head size) views of the projections' outputs); seconds."""
    generator = torch.Generator().manual_seed(SEED)
    projections = [torch.randn(BATCH, SEQ_LEN, HEADS * HEAD_SIZE, generator=generator).requires_grad_()
                   for _ in range(3)]
    grad = torch.randn(BATCH, SEQ_LEN, HEADS, HEAD_SIZE, generator=generator)
    module = _Module()

    def run() -> float:
        with KERNELS[kernel]():
            start = time.perf_counter()
            query, key, value = (x.view(BATCH, SEQ_LEN, HEADS, HEAD_SIZE).transpose(1, 2) for x in projections)
            out, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, None, dropout=P, scaling=HEAD_SIZE ** -0.5)
            out.backward(grad)
            return time.perf_counter() - start
    return run


def timed_step(step: Callable[[], float], kernel: str) -> Callable[[], float]:
    """A training step inside the kernel's block (entered outside the timed step, as train enters
    it once per run)."""
    def run() -> float:
        with KERNELS[kernel]():
            return step()
    return run


def kernel_ratio(name: str, run: dict[str, Any], variant: str) -> dict[str, Any]:
    return ratio_entry(name, run, f"{variant}@fast", f"{variant}@torch",
                       f"{variant}: fast_cpu_attention / torch's attention", interval=True)


def bench_attention(rounds: int) -> dict[str, Any]:
    run = interleave({f"attention@{k}": timed_attention(k) for k in KERNELS}, rounds, "attention")
    return {"shape": [BATCH, HEADS, SEQ_LEN, HEAD_SIZE], "dropout": P, "timing": round_stats(run),
            "ratio": kernel_ratio("attention_forward_backward", run, "attention")}


def bench_steps(rounds: int) -> dict[str, Any]:
    batch = random_batch(BATCH, SEQ_LEN, SEED)
    steps = {v: train_step_fn(train_model(v), batch) for v in VARIANTS}
    run = interleave({f"{v}@{k}": timed_step(steps[v], k) for v in VARIANTS for k in KERNELS}, rounds, "train")
    between = {}
    for name, top, bottom, what in TRAIN_RATIOS:
        if top in VARIANTS and bottom in VARIANTS:
            between[name] = {k: ratio_entry(name, run, f"{top}@{k}", f"{bottom}@{k}", f"{what} ({k} attention)",
                                            interval=True) for k in KERNELS}
    return {"timing": round_stats(run), "kernel_ratios": {v: kernel_ratio(v, run, v) for v in VARIANTS},
            "ratios_between_variants": between}


def memory_by_kernel() -> dict[str, Any]:
    """Each variant's process peak after 3 training steps (VmHWM, MiB) under each kernel, and the
    fast kernel's peak over torch's. Run before this process loads any model."""
    peaks = {}
    for kernel, flags in (("fast", []), ("torch", ["--torch-attention"])):
        results, _ = bench_memory(flags, VARIANTS)
        peaks[kernel] = {v: r["peak_after_steps"]["vm_hwm_bytes"] / 2 ** 20 for v, r in results.items()}
    return {"peak_mib": {k: {v: round(m) for v, m in by.items()} for k, by in peaks.items()},
            "fast_over_torch": {v: round(peaks["fast"][v] / peaks["torch"][v], 4) for v in VARIANTS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Kernels alternate round by "
                                     "round in one process; rounds with other CPU load are set aside.")
    parser.add_argument("--rounds", type=int, default=40,
                        help="quiet rounds wanted, for the attention alone and for the training steps "
                             f"({len(VARIANTS)} variants x 2 kernels a round, about 9 s on 2 cores) "
                             "(default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 10:
        parser.error("use at least 10 rounds: medians of fewer are too noisy here")
    adaptkit.cpu_speed.reuse_freed_memory()
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    memory = memory_by_kernel()
    with adaptkit.cpu_speed.fast_cpu_dropout():
        attention, steps = bench_attention(args.rounds), bench_steps(args.rounds)
    write_json_atomic(args.output, {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"torch_threads": THREADS, "quiet_rounds_wanted": args.rounds, "batch_size": BATCH,
                     "seq_len": SEQ_LEN, "variants": VARIANTS, "dropout_masks": "adaptkit.cpu_speed.fast_cpu_dropout()",
                     "allocator": "adaptkit.cpu_speed.reuse_freed_memory()"},
        "attention": attention, "train_step": steps, "train_peak_memory": memory,
        "elapsed_s": round(time.perf_counter() - started, 1),
    })
    print(f"attention fwd+bwd, fast / torch: {attention['ratio']['value']:.3f} {attention['ratio']['interval_95']}")
    for v, entry in steps["kernel_ratios"].items():
        print(f"train step {v}, fast / torch: {entry['value']:.3f} {entry['interval_95']}")
    for name, by_kernel in steps["ratios_between_variants"].items():
        print(name, {k: (e["value"], e["interval_95"]) for k, e in by_kernel.items()})
    print("peak memory, fast / torch:", memory["fast_over_torch"])
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
