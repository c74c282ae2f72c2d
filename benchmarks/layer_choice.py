"""The cost/quality curve of adapters in the top blocks only (AdapterDrop's layer choice, issue 18),
and of the one LayerNorm whose training costs time (the embeddings').

  python benchmarks/layer_choice.py   # → benchmarks/results/layer-choice/cost_quality.{md,png}

Joins three committed result files, so a user can pick a point on the curve: the dev scores of
houlsby m=64 in the top 4, 3 and 2 of MiniLM's 6 blocks, and in all 6 with the embeddings'
LayerNorm frozen (``sweep.py --preset layer-choice``),
those of all 6 blocks and of full fine-tuning (``--preset glue-headline``, same seeds, lr, epochs),
and the training cost of each (``overhead.py``: train step / full fine-tuning's, the median per-round
ratio over its quiet rounds, and process peak memory / full's). Scores are mean ± std over seeds; "vs all 6" is the
per-seed difference (same seed, same data order), its mean and range: glue-headline's reference
runs predate per-example predictions, so no paired bootstrap over dev examples is possible.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
from overhead import rounds_used  # noqa: E402

from adaptkit.atomic import write_text_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("rte", "mrpc")
#: (row name, plot label, sweep label, overhead.json variant).
POINTS = [("full fine-tuning", "full", "full", "full"),
          ("all 6 blocks (the paper)", "top 6", "adapter-houlsby-64", "houlsby64"),
          ("all 6, the embeddings' LayerNorm frozen", "6, emb. LN frozen", "adapter-houlsby-frozen-emb-ln-64",
           "houlsby64-frozen-emb-ln"),
          *[(f"top {k} of 6 blocks", f"top {k}", f"adapter-houlsby-top{k}-64", f"houlsby64-top{k}") for k in (4, 3, 2)]]
ALL_BLOCKS = "adapter-houlsby-64"


def scores_by_seed(rows: list[dict]) -> dict[tuple[str, str], dict[int, float]]:
    """(task, label) -> {seed: dev score in points}; a run twice (reruns under other settings) is refused."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        seeds = out.setdefault((row["task"], row["label"]), {})
        if row["seed"] in seeds:
            raise ValueError(f"{row['task']} {row['label']} seed {row['seed']} appears twice (a rerun with "
                             "--model or --mixed-precision into the same folder?); keep one set per folder")
        seeds[row["seed"]] = 100 * row["result"]["score"]
    return out


def costs(overhead: dict) -> dict[str, tuple[float, float]]:
    """label -> (train step / full fine-tuning's: the median per-round ratio over overhead's quiet
    rounds, as overhead.py reports its ratios; peak memory / full's)."""
    steps = overhead["train_step_time"]
    memory = overhead["ratios"]["train_peak_memory"]["vs_full"]
    rounds = rounds_used(steps["other_cores_per_round"], overhead["settings"]["quiet_cores_below"])

    def step_ratio(variant: str) -> float:
        return statistics.median(steps[variant]["samples_s"][i] / steps["full"]["samples_s"][i] for i in rounds)
    return {label: (step_ratio(variant), memory[variant]) for _, _, label, variant in POINTS}


def _versus_all(own: dict[int, float], reference: dict[int, float]) -> str:
    diffs = [own[s] - reference[s] for s in sorted(own) if s in reference]
    if not diffs:
        return "–"
    return f"{statistics.mean(diffs):+.1f} [{min(diffs):+.1f}, {max(diffs):+.1f}]"


def table(scores: dict, cells: dict, cost: dict[str, tuple[float, float]], header: str) -> str:
    out = [header, "", "| adapters in | trainable params | train step / full | peak memory / full | "
           + " | ".join(f"{t.upper()} | {t.upper()} vs all 6" for t in TASKS) + " |",
           "|---|---:|---:|---:|" + "---:|---:|" * len(TASKS)]
    for name, _, label, _ in POINTS:
        step, memory = cost[label]
        texts = []
        for task in TASKS:
            versus = "" if label in ("full", ALL_BLOCKS) else _versus_all(scores.get((task, label), {}),
                                                                          scores.get((task, ALL_BLOCKS), {}))
            texts += [report.fmt(cells.get((task, label))), versus]
        count = next((f"{c['params']:,}" for (_, l), c in cells.items() if l == label), "–")
        out.append(f"| {name} | {count} | {step:.2f} | {memory:.2f} | " + " | ".join(texts) + " |")
    return "\n".join(out) + "\n"


def plot(cells: dict, cost: dict[str, tuple[float, float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.6 * len(TASKS), 4), squeeze=False)
    for ax, task in zip(axes[0], TASKS):
        curve = []
        for _, short, label, _ in POINTS:
            cell = cells.get((task, label))
            if cell is None:
                continue
            x, y, err = cost[label][0], cell["mean"], cell["std"]
            on_curve = label.startswith("adapter-houlsby-top") or label == ALL_BLOCKS
            style = dict(marker="o", color="tab:blue") if on_curve else dict(marker="s", color="tab:gray")
            ax.errorbar([x], [y], yerr=[err], capsize=3, linestyle="none", **style)
            ax.annotate(short, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
            if on_curve:
                curve.append((x, y))
        if len(curve) > 1:
            ax.plot(*zip(*sorted(curve)), color="tab:blue", alpha=0.5)
        ax.set_title(task.upper())
        ax.set_xlabel("train step time / full fine-tuning")
        ax.margins(x=0.15, y=0.2)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("dev score (points), mean ± std over seeds")
    fig.suptitle("houlsby m=64 in the top k of 6 blocks (all-MiniLM-L6-v2); grey: off the curve", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder holding layer-choice/, glue-headline/ and overhead.json (default: %(default)s)")
    args = parser.parse_args(argv)
    sources = [args.results / "layer-choice", args.results / "glue-headline", args.results / "overhead.json"]
    absent = [str(p) for p in sources[:2] if not (p / "results.jsonl").exists()] + \
             [str(p) for p in sources[2:] if not p.exists()]
    if absent:
        print(f"missing: {', '.join(absent)}; run the sweeps (sweep.py --preset layer-choice / glue-headline) "
              "and overhead.py first", file=sys.stderr)
        return 2
    rows = [r for folder in sources[:2] for r in report.load(folder) if r["task"] in TASKS]
    overhead = json.loads(sources[2].read_text(encoding="utf-8"))
    try:
        scores = scores_by_seed(rows)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    cells = report.aggregate(rows)
    cost = costs(overhead)
    dates = sorted(r["result"]["date"] for r in rows)
    machines = sorted({f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}, transformers {m['transformers']}"
                       for m in (r["result"]["machine"] for r in rows)})
    described = "; ".join(f"{folder.name}: {json.loads((folder / 'preset.json').read_text())['description']}"
                          for folder in sources[:2])
    header = ("# Adapters in the top blocks only: cost and quality\n\n"
              f"{described}. Score = the task's GLUE dev metrics averaged (MRPC: F1/acc.), in points, at each "
              "run's best epoch on dev (the sweeps' protocol, the same for every row), "
              "mean ± std (seeds); \"vs all 6\" = per-seed difference to the same seed with adapters in all 6 "
              "blocks, mean [min, max]. Cost: train step (median per-round ratio) and peak memory / full fine-tuning from "
              f"overhead.json ({overhead['date']}; memory = process peak). Runs dated {dates[0]} to {dates[-1]} on "
              f"{'; '.join(machines)}. "
              "Made by `python benchmarks/layer_choice.py`.")
    out_dir = sources[0]
    write_text_atomic(out_dir / "cost_quality.md", table(scores, cells, cost, header))
    plot(cells, cost, out_dir / "cost_quality.png")
    print(f"wrote {out_dir / 'cost_quality.md'} and {out_dir / 'cost_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
