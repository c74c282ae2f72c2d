"""The seed essay's three claims, answered from the pieces ``seed_claims.py`` ran.

  python benchmarks/seed_claims_report.py   # → benchmarks/results/seed-claims/summary.md, claim*.png

Reads each piece's ledger (``<piece>/results.jsonl``: the grid runs at the chosen learning rates,
with their per-example dev predictions) and tests across cells with the paired bootstrap of
``compare`` (``glue_tasks.significance``). A piece not run yet, or run in part, is reported as such:
every cell shows its number of seeds, and every verdict names the cells it rests on.

1. Adapters vs top-layer retraining: for each top-k, the best bottleneck adapter with at most its
   trainable parameters, minus top-k; and the best adapter minus full fine-tuning.
2. Cosine loss from scratch: scratch-small with cosine and cosine + 0.1·CE, minus cross-entropy, per
   data size, beside the examples per class; the pretrained model with an adapter beside it.
3. Negative transfer: on permuted-vocabulary SST-2, the pretrained model (adapter, full) minus
   scratch-small, per data size.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_claims import RESULTS, SIZES  # noqa: E402

from adaptkit.atomic import write_text_atomic  # noqa: E402
from glue_tasks.choices import CANDIDATES, EXTRA_CANDIDATES  # noqa: E402
from glue_tasks.compare import best_rate, lrs_from  # noqa: E402
from glue_tasks.compare_report import grid_cell, paired_cells  # noqa: E402
from glue_tasks.ledger import read_lines  # noqa: E402
from glue_tasks.tasks import get_task  # noqa: E402

SCRATCH = "scratch-small"
CLAIM2_DATA = {"sst2": "SST-2 (2 classes)", "stsb6": "STS-B rounded into 6 classes (a real-data stand-in)"}


def chosen_lrs(folder: Path, lines: list[dict]) -> dict[str, float]:
    """Per method, the learning rate its grid runs used: from the piece's summary.json when compare
    finished it, else the best held-out score among its tuning runs (the first candidate on a tie,
    as compare chooses); a method tuned elsewhere (--lrs-from) is left out and takes its one rate."""
    summary = folder / "summary.json"
    if summary.exists():
        return lrs_from(summary)
    tuned: dict[str, dict[float, float]] = defaultdict(dict)
    for line in lines:
        if line.get("phase") == "tune" and "score" in line:
            tuned[line["method"]][line["lr"]] = line["score"]
    chosen = {method: best_rate({**CANDIDATES, **EXTRA_CANDIDATES}[method][1], scores)
              for method, scores in tuned.items()}
    return {method: lr for method, lr in chosen.items() if lr is not None}


def load_piece(folder: Path) -> tuple[dict[tuple[str, str], dict], int]:
    """(method, loss) -> its cell (``compare_report.grid_cell``) from the grid runs at the chosen
    learning rates of one piece's ledger, and how many grid runs failed."""
    lines = read_lines(folder / "results.jsonl")
    chosen = chosen_lrs(folder, lines)
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    failed = 0
    for line in lines:
        if line.get("phase") != "grid" or chosen.get(line["method"], line["lr"]) != line["lr"]:
            continue
        if "failed" in line:
            failed += 1
            continue
        seeds = runs[(line["method"], line["loss"])]
        if line["seed"] in seeds:
            raise ValueError(f"{folder / 'results.jsonl'}: {line['method']} {line['loss']} lr {line['lr']:g} seed "
                             f"{line['seed']} is there twice (a rerun with changed data or model?); keep one line")
        seeds[line["seed"]] = line
    cells = {key: grid_cell(*key, next(iter(by_seed.values()))["lr"], [by_seed[s] for s in sorted(by_seed)])
             for key, by_seed in runs.items()}
    return cells, failed


def _on_seeds(cell: dict, seeds: list[int]) -> dict:
    keep = [cell["seeds"].index(s) for s in seeds]
    return {**cell, "seeds": seeds, "predictions": cell["predictions"][keep]}


def difference(a: dict, b: dict, metric: str) -> dict | None:
    """a − b in points over the seeds both have, paired over the dev examples; None when they share none."""
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    if not seeds:
        return None
    result = paired_cells(_on_seeds(a, seeds), _on_seeds(b, seeds), metric)
    partial = len(seeds) < max(len(a["seeds"]), len(b["seeds"]))
    return {k: (100 * v if k in ("difference", "low", "high") else v) for k, v in result.items()} | {
        "seeds": seeds, "partial": partial}


def diff_text(d: dict | None) -> str:
    if d is None:
        return "–"
    on = f" (seeds {', '.join(map(str, d['seeds']))} only)" if d["partial"] else ""
    return f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]{on}"


def verdict(d: dict | None, better: str, worse: str) -> str:
    if d is None:
        return "not measured"
    return better if d["low"] > 0 else worse if d["high"] < 0 else "not distinguishable (interval includes 0)"


def cell_text(cell: dict | None) -> str:
    if cell is None:
        return "–"
    spread = f" ± {100 * cell['std']:.1f}" if len(cell["scores"]) > 1 else ""
    return f"{100 * cell['mean']:.1f}{spread} ({len(cell['scores'])})"


def per_class_text(cell: dict) -> str:
    counts = sorted((cell.get("train_label_counts") or {}).values())
    return "–" if not counts else f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"


def _failed(count: int) -> list[str]:
    return [f"{count} grid run(s) failed (diverged) and are left out.", ""] if count else []


def claim1(results: Path, task: str) -> tuple[list[str], dict | None]:
    folder = results / f"claim1-{task}"
    piece, failed = load_piece(folder)
    cells = {method: cell for (method, loss), cell in piece.items() if loss == "ce"}
    out = [f"### Claim 1 on {task.upper()} (`{folder.name}`)", ""] + _failed(failed)
    if not cells:
        tuned = sum(line.get("phase") == "tune" for line in read_lines(folder / "results.jsonl"))
        return out + [f"No grid run yet ({tuned} learning-rate runs done)." if tuned else "Not run yet.", ""], None
    metric = _metric_for(task)
    out += ["| method | lr | trainable params | dev score, mean ± std (seeds) |", "|---|---:|---:|---:|"]
    out += [f"| {m} | {c['lr']:g} | {c['trainable']:,} | {cell_text(c)} |"
            for m, c in sorted(cells.items(), key=lambda i: i[1]["trainable"])]
    adapters = _complete({m: c for m, c in cells.items() if m.startswith("adapter-")}, cells)
    out += ["", "| top-k | its params | best adapter with at most as many | adapter − top-k (95%) | verdict |",
            "|---|---:|---|---:|---|"]
    for name, top in sorted(((m, c) for m, c in cells.items() if m.startswith("top-") and m != "top-0"),
                            key=lambda i: i[1]["trainable"]):
        fitting = {m: c for m, c in adapters.items() if c["trainable"] <= top["trainable"]}
        if not fitting:
            why = f"no adapter with ≤ {top['trainable']:,}" if adapters else "no adapter run yet"
            out.append(f"| {name} | {top['trainable']:,} | {why} | – | not measured |")
            continue
        best = max(fitting, key=lambda m: fitting[m]["mean"])
        d = difference(fitting[best], top, metric)
        out.append(f"| {name} | {top['trainable']:,} | {best} ({fitting[best]['trainable']:,}) | {diff_text(d)} | "
                   f"{verdict(d, 'adapter better', 'adapter worse')} |")
    if adapters and "full" in cells:
        best = max(adapters, key=lambda m: adapters[m]["mean"])
        out += ["", f"Best adapter ({best}) − full fine-tuning: "
                    f"{diff_text(difference(adapters[best], cells['full'], metric))} points."]
    return out + [""], cells


def _complete(adapters: dict[str, dict], cells: dict[str, dict]) -> dict[str, dict]:
    """The adapters whose seeds have all finished, when any have: a one-seed mean would be picked
    as "best" for its luck."""
    seeds = max(len(c["seeds"]) for c in cells.values())
    complete = {m: c for m, c in adapters.items() if len(c["seeds"]) == seeds}
    return complete or adapters


def _metric_for(task: str) -> str:
    """A GLUE task's own metric; own data (STS-B in 6 classes) is scored by accuracy, compare's default."""
    try:
        return get_task(task).metric
    except ValueError:
        return "accuracy"


def claim2(results: Path) -> list[str]:
    losses = ("ce", "cosine", "cosine+ce")
    out = ["### Claim 2: cosine loss from scratch on small data", "",
           "Differences are the loss minus cross-entropy for the same model and seeds (paired bootstrap, 95%); "
           "per class = training examples per class (fewest–most).", "",
           "| data | examples | per class | scratch ce | scratch cosine | cosine − ce | scratch cosine+ce | "
           "cosine+ce − ce | adapter ce | adapter cosine | adapter cosine+ce |", "|---|---|---:|---:|" + "---:|" * 7]
    notes = []
    for data, name in CLAIM2_DATA.items():
        for size in SIZES:
            cells, failed = load_piece(results / f"claim2-{data}-{size}")
            if failed:
                notes.append(f"claim2-{data}-{size}: {failed} grid run(s) failed (diverged) and are left out.")
            if not cells:
                out.append(f"| {name} | {size:,} | | not run yet |" + " |" * 7)
                continue
            ce = cells.get((SCRATCH, "ce"))
            gains = [diff_text(difference(cells[(SCRATCH, loss)], ce, _metric_for(data)))
                     if (SCRATCH, loss) in cells and ce else "–" for loss in losses[1:]]
            scratch = [cell_text(cells.get((SCRATCH, loss))) for loss in losses]
            adapter = [cell_text(cells.get(("adapter-houlsby-64", loss))) for loss in losses]
            out.append(f"| {name} | {size:,} | {per_class_text(next(iter(cells.values())))} | {scratch[0]} | "
                       f"{scratch[1]} | {gains[0]} | {scratch[2]} | {gains[1]} | {' | '.join(adapter)} |")
    return out + [""] + [f"- {note}" for note in notes] + ([""] if notes else [])


def claim3(results: Path) -> list[str]:
    out = ["### Claim 3: negative transfer (SST-2, every token id through one fixed random permutation)", "",
           "Pretrained minus scratch-small on the same permuted data and seeds (paired bootstrap, 95%); "
           "\"negative transfer\" where the whole interval is below 0.", "",
           "| examples | scratch-small | adapter-houlsby-64 | adapter − scratch | full | full − scratch | verdict |",
           "|---:|---:|---:|---:|---:|---:|---|"]
    for size in SIZES:
        piece, failed = load_piece(results / f"claim3-sst2-{size}")
        cells = {m: c for (m, loss), c in piece.items() if loss == "ce"}
        scratch = cells.get(SCRATCH)
        if scratch is None:
            why = "not run yet" if not cells and not failed else f"scratch-small missing ({failed} run(s) failed)"
            out.append(f"| {size:,} | {why} |" + " |" * 5)
            continue
        diffs = {m: difference(cells[m], scratch, _metric_for("sst2")) if m in cells else None
                 for m in ("adapter-houlsby-64", "full")}
        kinds = [f"{m}: " + verdict(d, "positive transfer", "**negative transfer**") for m, d in diffs.items()]
        out.append(f"| {size:,} | {cell_text(scratch)} | "
                   + " | ".join(f"{cell_text(cells.get(m))} | {diff_text(d)}" for m, d in diffs.items())
                   + f" | {'; '.join(kinds)} |")
    return out + [""]


def _is_houlsby(method: str) -> bool:
    return method.startswith("adapter-houlsby-") and not method.startswith("adapter-houlsby-ffn")


def plot_claim1(per_task: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_task), figsize=(5 * len(per_task), 4), squeeze=False)
    for ax, (task, cells) in zip(axes[0], per_task.items()):
        curves = {"top-k (top-0 = head only; full = all 6)": [c for m, c in cells.items()
                                                              if m.startswith("top-") or m == "full"],
                  "houlsby adapters": [c for m, c in cells.items() if _is_houlsby(m)]}
        for label, members in curves.items():
            members = sorted(members, key=lambda c: c["trainable"])
            if members:
                ax.errorbar([c["trainable"] for c in members], [100 * c["mean"] for c in members],
                            yerr=[100 * c["std"] for c in members], marker="o", capsize=3, label=label)
        for m, c in cells.items():
            if not (m.startswith("top-") or m == "full" or _is_houlsby(m)):
                ax.plot([c["trainable"]], [100 * c["mean"]], marker="s", linestyle="none", label=m)
        ax.set_xscale("log")
        ax.set_title(task.upper())
        ax.set_xlabel("trainable parameters")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("dev score (points), mean ± std over seeds")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the pieces' folder (default: %(default)s)")
    args = parser.parse_args(argv)
    text = ["# The seed's claims: what we measured", "",
            "Made by `python benchmarks/seed_claims_report.py` from the pieces of `python benchmarks/seed_claims.py` "
            "(each piece's own `summary.md` has its learning rates, machine and date). Scores ×100 on the dev set, "
            "each run at its last epoch; (n) = seeds finished. A 95% interval resamples the dev examples, not the "
            "seeds: read it beside the seeds' spread. An interval that includes 0 does not show the two equal, "
            "only not told apart. Claim 1's \"best adapter\" is chosen by its dev mean, the set it is then tested "
            "on, which favours the adapter side; among the adapters with every seed finished, when a piece "
            "is part-way.", ""]
    per_task = {}
    try:
        for task in ("rte", "mrpc"):
            lines, cells = claim1(args.results, task)
            text += lines
            if cells:
                per_task[task] = cells
        text += claim2(args.results) + claim3(args.results)
    except ValueError as error:  # a ledger with one run twice, or cells scored on different dev examples
        print(error, file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.results / "summary.md", "\n".join(text) + "\n")
    if per_task:
        plot_claim1(per_task, args.results / "claim1_score_vs_params.png")
    print(f"wrote {args.results / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
