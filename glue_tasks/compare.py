"""``compare``: which method, which loss, with what confidence, on one task (GLUE or your own data).

Two phases, both resumable through the ledger (``results.jsonl`` in the output directory):

1. Learning rates: each method trains at its family's two candidate rates with the first seed,
   on 90% of the training rows, and is scored on the held-out 10% (``train --tune-fraction``).
   The better rate is kept (cross-entropy picks it for every loss).
2. The grid: methods × losses × seeds at the chosen rates, each run keeping its last epoch (no
   epoch is chosen on the dev set either), scored on the dev set, with its per-example
   predictions kept for the paired test (``significance.py``).

The report (``compare_report.py``) is printed and written as ``summary.md``, ``summary.json``
and ``score_vs_params.png``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from adaptkit.atomic import write_json_atomic

from .compare_plan import ComparePlan, run_key
from .compare_report import tuning_table, write_report
from .ledger import append_line, done_keys, read_lines
from .train import DivergenceError, TrainConfig, train

LEARNING_RATES = "learning_rates.json"


def lrs_from(summary_file: Path) -> dict[str, float]:
    """The learning rates an earlier compare chose (its learning_rates.json, written as soon as they are
    chosen, or its summary.json), to reuse on another task."""
    if not Path(summary_file).exists():
        raise ValueError(f"--lrs-from {summary_file}: no such file; the earlier compare writes {LEARNING_RATES} "
                         "into its output folder once its learning-rate runs are done: run or resume it first")
    try:
        table = json.loads(Path(summary_file).read_text(encoding="utf-8"))["learning_rates"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--lrs-from {summary_file}: not the {LEARNING_RATES} or summary.json of a compare run "
                         f"({error})") from None
    return {method: entry["chosen"] for method, entry in table.items() if entry.get("chosen") is not None}


def run_compare(plan: ComparePlan) -> dict:
    """Both phases, skipping runs already in the ledger; returns the report (also written)."""

    lines = _run_phase(plan, "tune", [(m, "ce", plan.seeds[0], lr, True) for m in plan.methods
                                      if m not in plan.fixed_lrs for lr in plan.lr_candidates[m]])
    chosen = choose_lrs(plan, lines)
    # Written before the grid, so another compare can reuse the rates (--lrs-from) while this one scores.
    write_json_atomic(plan.output_dir / LEARNING_RATES,
                      {"learning_rates": tuning_table(plan, {line["key"]: line for line in lines}, chosen)})
    _run_phase(plan, "grid", [(m, loss, seed, chosen[m], False) for m in plan.methods if chosen[m] is not None
                              for loss in plan.losses for seed in plan.seeds])
    return write_report(plan, read_lines(plan.ledger), chosen)


def choose_lrs(plan: ComparePlan, lines: list[dict]) -> dict[str, float | None]:
    """Per method, the candidate rate with the best held-out score (the first on a tie); None when
    every candidate diverged, and the method is left out of the grid."""
    scores = {line["key"]: line.get("score") for line in lines}
    chosen = {}
    for method in plan.methods:
        if method in plan.fixed_lrs:
            chosen[method] = plan.fixed_lrs[method]
            continue
        candidates = plan.lr_candidates[method]
        chosen[method] = best_rate(candidates, {
            lr: scores.get(run_key(plan.config(method, "ce", plan.seeds[0], lr, True))) for lr in candidates})
    return chosen


def best_rate(candidates: Sequence[float], scores: dict[float, float | None]) -> float | None:
    """The candidate with the best held-out score, the first listed on a tie; None when none has a
    score (every one diverged or has not run). The one rule, for compare and for reports of its ledgers."""
    scored = [(scores[lr], -i, lr) for i, lr in enumerate(candidates) if scores.get(lr) is not None]
    return max(scored)[2] if scored else None


def _run_phase(plan: ComparePlan, phase: str, runs: list[tuple]) -> list[dict]:
    done = done_keys(plan.ledger)
    todo = [(run, plan.config(*run)) for run in runs]
    pending = [(run, cfg) for run, cfg in todo if run_key(cfg) not in done]
    title = {"tune": "learning-rate choice (held-out 10% of train)", "grid": "methods × losses × seeds (dev)"}[phase]
    print(f"{phase}: {title}: {len(todo)} runs, {len(todo) - len(pending)} already done", file=sys.stderr)
    for (method, loss, seed, lr, _), cfg in tqdm(pending, desc=phase, unit="run"):
        line = {"key": run_key(cfg), "phase": phase, "method": method, "loss": loss, "seed": seed, "lr": lr,
                **_train_quietly(cfg)}
        append_line(plan.ledger, line)
        tqdm.write(f"  {method} {loss} lr {lr:g} seed {seed}: "
                   + (f"{100 * line['score']:.1f}" if "score" in line else f"failed ({line['failed']})")
                   + f" ({line['seconds']:.0f} s)", file=sys.stderr)
    return read_lines(plan.ledger)


def _train_quietly(cfg: TrainConfig) -> dict:
    """One run with its output in ``train.log`` in its folder. A diverging run is recorded as failed
    (and not retried: delete its line from the ledger to try again). The torch thread count is kept
    with it: on a CPU another count sums in another order, and the same run ends elsewhere."""
    started = time.perf_counter()

    def how_it_ran() -> dict:
        return {"threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1)}

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cfg.output_dir) / "train.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            results = train(cfg)
        except DivergenceError as error:
            return {"failed": str(error), **how_it_ran()}
    keep = ("score", "dev", "dev_predictions", "parameters", "best_epoch", "train_examples", "train_label_counts",
            "labels", "task")
    return {**{k: results[k] for k in keep}, **how_it_ran()}
