"""``compare``'s report: per method and loss the mean ± std over seeds, trainable parameters and run
time; the gain over the small from-scratch model (negative transfer flagged where it is better);
and the winner against the runner-up by a paired bootstrap over the dev examples."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime, timezone

import numpy

from adaptkit.atomic import write_json_atomic, write_text_atomic

from .compare import BASELINE, TUNE_FRACTION, ComparePlan, run_key
from .machine import machine_info
from .significance import ALPHA, RESAMPLES, paired_bootstrap


def write_report(plan: ComparePlan, lines: list[dict], chosen: dict[str, float | None]) -> dict:
    """Summarise the ledger's grid runs; print the table, write summary.md/json and the plot."""
    by_key = {line["key"]: line for line in lines}
    cells, missing, failed = [], [], []
    for method in plan.methods:
        if chosen[method] is None:
            failed.append(f"{method}: every candidate learning rate diverged, so it was left out")
            continue
        for loss in plan.losses:
            runs = []
            for seed in plan.seeds:
                line = by_key.get(run_key(plan.config(method, loss, seed, chosen[method])))
                if line is None:
                    missing.append(f"{method} {loss} seed {seed}")
                elif "failed" in line:
                    failed.append(f"{method} {loss} seed {seed}: {line['failed']}")
                else:
                    runs.append(line)
            if runs:
                cells.append(grid_cell(method, loss, chosen[method], runs))
    if not cells:
        raise ValueError(f"no finished runs in {plan.ledger}")
    metric = plan.config(plan.methods[0], "ce", plan.seeds[0], 1.0).task_definition().metric
    for cell in cells:
        # Like with like: a method trained with a loss against scratch-small trained with the same loss.
        baseline = next((c for c in cells if c["method"] == BASELINE and c["loss"] == cell["loss"]), None)
        cell["versus_scratch"] = None if baseline is None or baseline is cell else paired_cells(cell, baseline, metric)
        versus = cell["versus_scratch"]
        cell["transfer"] = ("baseline" if cell["method"] == BASELINE else "unknown" if versus is None
                            else "negative" if versus["high"] < 0 else "positive" if versus["low"] > 0
                            else "within the spread")
    ranked = sorted(cells, key=lambda c: -c["mean"])
    verdict = None
    if len(ranked) > 1:
        verdict = {"winner": ranked[0]["name"], "runner_up": ranked[1]["name"],
                   **paired_cells(ranked[0], ranked[1], metric)}
    summary = {
        "task": cells[0]["task"], "metric": metric,
        "settings": {k: v for k, v in plan.base.items() if v is not None} | {
            "methods": plan.methods, "losses": plan.losses, "seeds": plan.seeds},
        "cells": [{k: v for k, v in c.items() if k not in ("predictions", "labels_per_example")} for c in ranked],
        "winner_vs_runner_up": verdict, "learning_rates": tuning_table(plan, by_key, chosen), "missing": missing,
        "failed": failed, "run_seconds": round(sum(line.get("seconds", 0) for line in lines), 1),
        "runs_by_threads": _runs_by_threads(lines),
        "test": {"resamples": RESAMPLES, "alpha": ALPHA}, "machine": machine_info(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = summary_markdown(summary)
    print(text)
    write_text_atomic(plan.output_dir / "summary.md", text)
    write_json_atomic(plan.output_dir / "summary.json", summary)
    _plot(ranked, plan.output_dir / "score_vs_params.png", summary["task"])
    return summary


def grid_cell(method: str, loss: str, lr: float, runs: list[dict]) -> dict:
    """One method and loss over its seeds; the dev splits' predictions pooled (MNLI has two)."""
    scores = numpy.array([run["score"] for run in runs])
    splits = sorted(runs[0]["dev_predictions"])
    return {
        "name": method if loss == "ce" else f"{method} + {loss}", "method": method, "loss": loss, "lr": lr,
        "task": runs[0]["task"], "seeds": [run["seed"] for run in runs], "scores": scores.tolist(),
        "train_label_counts": runs[0].get("train_label_counts"),
        "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(runs) > 1 else 0.0,
        "trainable": runs[0]["parameters"]["trainable"], "total": runs[0]["parameters"]["total"],
        "seconds": float(numpy.mean([run["seconds"] for run in runs])),
        "predictions": numpy.array([sum((run["dev_predictions"][s]["prediction"] for s in splits), [])
                                    for run in runs]),
        "labels_per_example": numpy.array(sum((runs[0]["dev_predictions"][s]["label"] for s in splits), [])),
    }


def paired_cells(a: dict, b: dict, metric: str) -> dict:
    """``a`` minus ``b`` (cells of ``grid_cell``) by the paired bootstrap over the same dev examples."""
    if not numpy.array_equal(a["labels_per_example"], b["labels_per_example"]):
        raise ValueError(f"{a['name']} and {b['name']} were scored on different dev examples; a paired test "
                         "needs the same ones (was the dev file changed between runs?)")
    return paired_bootstrap(a["predictions"], b["predictions"], a["labels_per_example"], metric).to_dict()


def tuning_table(plan: ComparePlan, by_key: dict, chosen: dict[str, float | None]) -> dict:
    """Per method, the held-out score of each candidate rate and the one chosen (or where it came from)."""
    table = {}
    for method in plan.methods:
        if method in plan.fixed_lrs:
            table[method] = {"tried": {}, "chosen": chosen[method], "from": "an earlier compare (--lrs-from)"}
            continue
        tried = {}
        for lr in plan.lr_candidates[method]:
            line = by_key.get(run_key(plan.config(method, "ce", plan.seeds[0], lr, True)), {})
            tried[f"{lr:g}"] = line.get("score")
        table[method] = {"tried": tried, "chosen": chosen[method]}
    return table


def _per_class(cells: list[dict]) -> str:
    """Training examples per class (of the first seed's subsample): the regime a small-data claim is about."""
    counts = cells[0].get("train_label_counts")
    if not counts:
        return ""
    return " Training examples per class: " + ", ".join(f"{name} {count}" for name, count in counts.items()) + "."


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def summary_markdown(summary: dict) -> str:
    cells, verdict = summary["cells"], summary["winner_vs_runner_up"]
    settings = summary["settings"]
    lines = [f"# compare: {summary['task']}", "",
             f"{settings.get('max_train_samples') or 'all'} training examples, max length {settings['max_length']}, "
             f"{settings['epochs']} epochs at batch {settings['batch_size']}, seeds {settings['seeds']}; "
             f"model {settings.get('model', 'default')}. Learning rates chosen per method on a held-out {TUNE_FRACTION:.0%} of "
             "the training rows, and each run keeps its last epoch: nothing is chosen on the dev set. Task score "
             f"({summary['metric']}) ×100 on the dev set, mean ± std over seeds." + _per_class(cells), "",
             "| method | lr | trainable params | dev score | vs scratch-small (95% interval) | run time |",
             "|---|---:|---:|---:|---:|---:|"]
    for cell in cells:
        versus = cell["versus_scratch"]
        gain = "–" if versus is None else (
            f"{100 * versus['difference']:+.1f} [{100 * versus['low']:+.1f}, {100 * versus['high']:+.1f}]"
            + (" **negative transfer**" if cell["transfer"] == "negative" else ""))
        lines.append(f"| {cell['name']} | {cell['lr']:g} | {cell['trainable']:,} ({100 * cell['trainable'] / cell['total']:.2f}%) "
                     f"| {_pct(cell['mean'])} ± {_pct(cell['std'])} | {gain} | {cell['seconds']:.0f} s |")
    lines.append("")
    if verdict:
        beyond = "beyond the spread" if verdict["beyond_spread"] else "not distinguishable from chance"
        lines.append(f"**Winner: {verdict['winner']}**, ahead of {verdict['runner_up']} by "
                     f"{100 * verdict['difference']:.1f} points, 95% interval [{100 * verdict['low']:+.1f}, "
                     f"{100 * verdict['high']:+.1f}] (paired bootstrap of the task score over the "
                     f"{verdict['examples']} dev examples, {verdict['resamples']:,} resamples; p = "
                     f"{verdict['p_value']:.2g}): {beyond}. The interval covers the choice of examples, not "
                     "of seeds: read it beside the seeds' spread.")
    by_transfer = {kind: [c["name"] for c in cells if c["transfer"] == kind]
                   for kind in ("negative", "within the spread", "positive", "unknown")}
    lines += ["", "Transfer against scratch-small trained with the same loss (paired bootstrap, 95%): "
              + "; ".join(f"{kind}: {', '.join(names)}" for kind, names in by_transfer.items() if names) + "."]
    lines += ["", "Learning rates (held-out score ×100 per candidate; chosen in bold):", ""]
    for method, entry in summary["learning_rates"].items():
        tried = ", ".join(("**" if float(lr) == entry["chosen"] else "") + f"{lr}: "
                          + ("diverged" if score is None else _pct(score))
                          + ("**" if float(lr) == entry["chosen"] else "") for lr, score in entry["tried"].items())
        lines.append(f"- {method}: {tried or entry.get('from')}")
    if summary["missing"] or summary["failed"]:
        lines += ["", f"Missing runs ({len(summary['missing'])}): " + "; ".join(summary["missing"]),
                  f"Failed runs ({len(summary['failed'])}): " + "; ".join(summary["failed"])]
    lines += ["", f"Total run time {summary['run_seconds'] / 60:.1f} min on {summary['machine']['cpu']} "
              f"({summary['machine']['cores']} cores{', ' + summary['machine']['gpu'] if summary['machine']['gpu'] else ''}), "
              f"{summary['date']}; torch threads per run: "
              + ", ".join(f"{t} ({n} runs)" for t, n in summary["runs_by_threads"].items()) + "."]
    return "\n".join(lines) + "\n"


def _runs_by_threads(lines: list[dict]) -> dict[str, int]:
    """How many runs used each torch thread count: on a CPU the count changes the order of sums, so
    the same run with another count gives other (not worse) numbers. Older ledgers did not record it."""
    counts = Counter(str(line.get("threads", "not recorded")) for line in lines)
    return dict(sorted(counts.items()))


def _plot(cells: list[dict], path, task: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for cell in cells:
        marker = "o" if cell["loss"] == "ce" else ("s" if cell["loss"] == "cosine" else "^")
        axes.errorbar(cell["trainable"], 100 * cell["mean"], yerr=100 * cell["std"], fmt=marker, capsize=3,
                      color="tab:red" if cell["method"].startswith("scratch") else None)
        axes.annotate(cell["name"], (cell["trainable"], 100 * cell["mean"]), fontsize=7, xytext=(4, 3),
                      textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters")
    axes.set_ylabel("dev score ×100 (mean ± std over seeds)")
    axes.set_title(f"compare: {task} (○ ce, □ cosine, △ cosine+ce)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
