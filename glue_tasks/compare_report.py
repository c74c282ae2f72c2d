"""``compare``'s report: per method and loss the mean ± std over seeds, trainable parameters and run
time; the gain over the small from-scratch model (negative transfer flagged where it is better);
the leader against the runner-up and against always predicting the majority class, by a paired
bootstrap over the dev examples. A winner is named only when the leader beats both beyond the
interval; cells whose predictions are (nearly) one class are marked."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime, timezone

import numpy

from adaptkit.atomic import write_json_atomic, write_text_atomic

from .compare_plan import BASELINE, TUNE_FRACTION, ComparePlan, run_key
from .learned import ONE_CLASS_SHARE, majority_class
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
    grid = [line for line in lines if line.get("phase") == "grid" and "score" in line]
    verdict = leader_verdict(ranked, metric)  # before the cells are written: it adds their versus_majority
    summary = {
        "task": cells[0]["task"], "metric": metric,
        "settings": {k: v for k, v in plan.base.items() if v is not None} | {
            "methods": plan.methods, "losses": plan.losses, "seeds": plan.seeds},
        "trained_on": trained_on(grid), "transforms": transforms(plan.base),
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
    _plot(ranked, plan.output_dir / "score_vs_params.png", title(summary))
    return summary


def grid_cell(method: str, loss: str, lr: float, runs: list[dict]) -> dict:
    """One method and loss over its seeds; the dev splits' predictions pooled (MNLI has two)."""
    scores = numpy.array([run["score"] for run in runs])
    splits = sorted(runs[0]["dev_predictions"])
    predictions = [sum((run["dev_predictions"][s]["prediction"] for s in splits), []) for run in runs]
    regression = not runs[0].get("train_label_counts")
    return {
        "name": method if loss == "ce" else f"{method} + {loss}", "method": method, "loss": loss, "lr": lr,
        "task": runs[0]["task"], "seeds": [run["seed"] for run in runs], "scores": scores.tolist(),
        "train_label_counts": runs[0].get("train_label_counts"),
        "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(runs) > 1 else 0.0,
        "trainable": runs[0]["parameters"]["trainable"], "total": runs[0]["parameters"]["total"],
        "seconds": float(numpy.mean([run["seconds"] for run in runs])),
        "one_class_seeds": None if regression else int(sum(
            max(numpy.unique(p, return_counts=True)[1]) >= ONE_CLASS_SHARE * len(p) for p in predictions)),
        "predictions": numpy.array(predictions),
        "labels_per_example": numpy.array(sum((runs[0]["dev_predictions"][s]["label"] for s in splits), [])),
    }


def paired_cells(a: dict, b: dict, metric: str) -> dict:
    """``a`` minus ``b`` (cells of ``grid_cell``) by the paired bootstrap over the same dev examples."""
    if not numpy.array_equal(a["labels_per_example"], b["labels_per_example"]):
        raise ValueError(f"{a['name']} and {b['name']} were scored on different dev examples; a paired test "
                         "needs the same ones (was the dev file changed between runs?)")
    return paired_bootstrap(a["predictions"], b["predictions"], a["labels_per_example"], metric).to_dict()


def leader_verdict(ranked: list[dict], metric: str) -> dict | None:
    """The leader against the runner-up and against always predicting the training set's majority class
    (classification; every cell gets its ``versus_majority``); ``verdict`` names a winner only when the
    leader is ahead of both beyond the interval, and says "nothing learned" when no cell beats that class."""
    if not ranked:
        return None
    leader = ranked[0]
    verdict = {"winner": leader["name"], "runner_up": ranked[1]["name"] if len(ranked) > 1 else None}
    if len(ranked) > 1:
        verdict |= paired_cells(leader, ranked[1], metric)
    majority = majority_class(leader.get("train_label_counts"))
    if majority is not None:
        for cell in ranked:
            constant = {**cell, "name": "the majority class",
                        "predictions": numpy.full_like(cell["predictions"], majority)}
            cell["versus_majority"] = paired_cells(cell, constant, metric)
        verdict["versus_majority"] = leader["versus_majority"]
    beats = [c.get("versus_majority", {"low": 1})["low"] > 0 for c in ranked]
    verdict["verdict"] = ("nothing learned" if not any(beats)
                          else "winner" if beats[0] and verdict.get("beyond_spread") else "not distinguishable")
    return verdict


def trained_on(grid: list[dict]) -> dict | None:
    """The rows the grid runs trained on, per class (classification): one entry when every seed saw the
    same counts, else the range over seeds."""
    counts = [line["train_label_counts"] for line in grid if line.get("train_label_counts")]
    examples = sorted({line["train_examples"] for line in grid if "train_examples" in line})
    if not examples:
        return None
    per_class = {name: sorted({c[name] for c in counts}) for name in counts[0]} if counts else {}
    return {"examples": [examples[0], examples[-1]],
            "per_class": {name: [values[0], values[-1]] for name, values in per_class.items()}}


def transforms(base: dict) -> list[str]:
    """The run's non-default changes to the data, for the title."""
    return [f"vocabulary permuted (seed {base['permute_vocabulary']})"] \
        if base.get("permute_vocabulary") is not None else []


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


def _span(values: list[int]) -> str:
    return f"{values[0]:,}" if values[0] == values[-1] else f"{values[0]:,}–{values[-1]:,}"


def _trained_on(summary: dict) -> str:
    """The rows the grid runs actually trained on (not the --max-train-samples asked for), per class:
    the regime a small-data claim is about. Ledgers older than that record fall back to the setting."""
    seen = summary.get("trained_on")
    if not seen:
        return f"{summary['settings'].get('max_train_samples') or 'all'} training examples"
    per_class = ", ".join(f"{name} {_span(values)}" for name, values in seen["per_class"].items())
    return f"trained on {_span(seen['examples'])} rows" + (f" ({per_class})" if per_class else "")


def title(summary: dict) -> str:
    return f"compare: {summary['task']}" + "".join(f", {t}" for t in summary.get("transforms", []))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def summary_markdown(summary: dict) -> str:
    cells, verdict = summary["cells"], summary["winner_vs_runner_up"]
    settings = summary["settings"]
    lines = [f"# {title(summary)}", "",
             f"{_trained_on(summary)}, max length {settings['max_length']}, "
             f"{settings.get('epochs', 'automatic')} epochs at batch {settings.get('batch_size', 'automatic')}, seeds {settings['seeds']}; "
             f"model {settings.get('model', 'default')}. Learning rates chosen per method on a held-out {TUNE_FRACTION:.0%} of "
             "the training rows (on a tie, the first candidate listed), and each run keeps its last epoch: nothing "
             f"is chosen on the dev set. Task score ({summary['metric']}) ×100 on the dev set, mean ± std over "
             f"seeds; *one class* marks seeds whose model predicts one class for {ONE_CLASS_SHARE:.0%} or more of "
             "the dev rows.", "",
             "| method | lr | trainable params | dev score | vs scratch-small (95% interval) | run time |",
             "|---|---:|---:|---:|---:|---:|"]
    for cell in cells:
        versus = cell["versus_scratch"]
        gain = "–" if versus is None else (
            f"{100 * versus['difference']:+.1f} [{100 * versus['low']:+.1f}, {100 * versus['high']:+.1f}]"
            + (" **negative transfer**" if cell["transfer"] == "negative" else ""))
        lines.append(f"| {cell['name']} | {cell['lr']:g} | {cell['trainable']:,} ({100 * cell['trainable'] / cell['total']:.2f}%) "
                     f"| {_pct(cell['mean'])} ± {_pct(cell['std'])}{_one_class_mark(cell)} | {gain} "
                     f"| {cell['seconds']:.0f} s |")
    lines.append("")
    if verdict:
        lines.append(verdict_text(verdict))
    by_transfer = {kind: [c["name"] for c in cells if c["transfer"] == kind]
                   for kind in ("negative", "within the spread", "positive", "unknown")}
    lines += ["", "Transfer against scratch-small trained with the same loss (paired bootstrap, 95%): "
              + "; ".join(f"{kind}: {', '.join(names)}" for kind, names in by_transfer.items() if names) + "."]
    lines += ["", "Learning rates (held-out score ×100 per candidate; chosen in bold):", ""]
    for method, entry in summary["learning_rates"].items():
        tried = ", ".join(("**" if float(lr) == entry["chosen"] else "") + f"{lr}: "
                          + ("diverged" if score is None else _pct(score))
                          + ("**" if float(lr) == entry["chosen"] else "") for lr, score in entry["tried"].items())
        scores = [score for score in entry["tried"].values() if score is not None]
        tie = " (a tie: the first candidate listed is kept)" if len(scores) > 1 and scores.count(max(scores)) > 1 else ""
        lines.append(f"- {method}: {tried or entry.get('from')}{tie}")
    if summary["missing"] or summary["failed"]:
        lines += ["", f"Missing runs ({len(summary['missing'])}): " + "; ".join(summary["missing"]),
                  f"Failed runs ({len(summary['failed'])}): " + "; ".join(summary["failed"])]
    lines += ["", f"Total run time {summary['run_seconds'] / 60:.1f} min on {summary['machine']['cpu']} "
              f"({summary['machine']['cores']} cores{', ' + summary['machine']['gpu'] if summary['machine']['gpu'] else ''}), "
              f"{summary['date']}; torch threads per run: "
              + ", ".join(f"{t} ({n} runs)" for t, n in summary["runs_by_threads"].items()) + "."]
    return "\n".join(lines) + "\n"


def _one_class_mark(cell: dict) -> str:
    count = cell.get("one_class_seeds")
    return f" *one class* ({count} of {len(cell['scores'])} seeds)" if count else ""


def _interval(result: dict) -> str:
    return (f"{100 * result['difference']:+.1f} points, 95% interval [{100 * result['low']:+.1f}, "
            f"{100 * result['high']:+.1f}]")


def verdict_text(verdict: dict) -> str:
    """The leader's standing in plain words: a winner only when it beats the runner-up and the majority
    class beyond the interval."""
    kind = verdict.get("verdict", "winner" if verdict.get("beyond_spread") else "not distinguishable")
    versus = verdict.get("versus_majority")
    against_majority = f"; against always predicting the majority class: {_interval(versus)}" if versus else ""
    against_runner_up = f"{verdict['winner']} against {verdict['runner_up']}: {_interval(verdict)}" \
        if verdict.get("runner_up") else verdict["winner"]
    test = versus or (verdict if "examples" in verdict else None)
    how = "." if test is None else (
        f" (paired bootstrap of the task score over the {test['examples']} dev examples, {test['resamples']:,} "
        "resamples). The interval covers the choice of examples, not of seeds: read it beside the seeds' spread.")
    if kind == "nothing learned":
        head = ("**Nothing learned**: no method beats always predicting the majority class beyond the interval, "
                "so no winner is named")
    elif kind == "not distinguishable":
        apart = [name for name, result in (("the runner-up", verdict), ("the majority class", versus))
                 if result and result.get("low", 1) <= 0]
        head = f"**No winner**: the leader is not told apart from {' or from '.join(apart)}"
    else:
        head = f"**Winner: {verdict['winner']}**, ahead of the runner-up and of the majority class beyond the interval"
    return f"{head}. {against_runner_up}{against_majority}{how}"


def _runs_by_threads(lines: list[dict]) -> dict[str, int]:
    """How many runs used each torch thread count: on a CPU the count changes the order of sums, so
    the same run with another count gives other (not worse) numbers. Older ledgers did not record it."""
    counts = Counter(str(line.get("threads", "not recorded")) for line in lines)
    return dict(sorted(counts.items()))


def _plot(cells: list[dict], path, name: str) -> None:
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
    axes.set_title(f"{name} (○ ce, □ cosine, △ cosine+ce)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
