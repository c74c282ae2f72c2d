"""Turn a sweep's results.jsonl into summary.md and score_vs_params.png (Houlsby et al. Figs 3–4).

  python benchmarks/report.py benchmarks/results/cpu-small

Per task: mean ± std over seeds of the task score (the mean of its GLUE metrics, in points);
per method: trainable parameters (count and % of the model) and the GLUE average over the
tasks it ran; the best adapter size per task; the cosine-loss rows; and every grid cell that
has no result yet. A ``notes.md`` beside results.jsonl is copied under the header.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import PRESETS, done_keys  # noqa: E402

SETTINGS = ("lr", "epochs")  # run settings a preset may sweep for one method
FAMILY_ORDER = ["full", "top-k", "layernorm", "adapter-houlsby", "adapter-houlsby-frozen-ln", "adapter-houlsby-ffn",
                "adapter-houlsby-ffn-frozen-ln", "lora", "scratch"]


def settings_apart(rows: list[dict]) -> None:
    """Where one method ran at several learning rates or epoch counts (an lr sweep, the paper
    preset), label each setting apart, so that seeds are averaged but settings are not."""
    seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        for name in SETTINGS:
            seen[row["label"]][name].add(row[name])
    for row in rows:
        row["label"] += "".join(f" {name}={row[name]:g}" for name in SETTINGS if len(seen[row["label"]][name]) > 1)


def family(label: str) -> str:
    """The plot's line for a label: its method family, and its settings if they were told apart."""
    base, *settings = label.split(" ")
    return " ".join([_family(base), *settings])


def _family(label: str) -> str:
    if label.startswith("top-"):
        return "top-k"
    if label.startswith("adapter-"):
        return label.rsplit("-", 1)[0]
    if label.startswith("lora"):
        return "lora"
    return label


def _setting_values(settings: list[str]) -> list[float]:
    return [float(s.split("=")[1]) for s in settings]


def _family_index(fam: str) -> int:
    return FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER)


def family_rank(fam: str) -> tuple:
    """Families in FAMILY_ORDER, then any settings told apart, in increasing order."""
    base, *settings = fam.split(" ")
    return (_family_index(base), _setting_values(settings))


def sort_key(label: str) -> tuple:
    label, *settings = label.split(" ")
    base, _, loss = label.partition("+")
    number = int(base.rsplit("-", 1)[1]) if base.rsplit("-", 1)[-1].isdigit() else 0
    return (loss, _family_index(_family(base)), number, _setting_values(settings))


def load(results_dir: Path) -> list[dict]:
    lines = []
    for line in (results_dir / "results.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def aggregate(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(task, label) -> scores over seeds, trainable parameters, wall time."""
    cells: dict[tuple[str, str], dict] = defaultdict(lambda: {"scores": [], "seconds": []})
    for row in rows:
        cell = cells[(row["task"], row["label"])]
        cell["scores"].append(100 * row["result"]["score"])
        cell["seconds"].append(row["result"]["wall_seconds"])
        cell["params"] = row["result"]["parameters"]["trainable"]
        cell["percent"] = row["result"]["parameters"]["trainable_percent"]
    for cell in cells.values():
        cell["mean"] = statistics.mean(cell["scores"])
        cell["std"] = statistics.stdev(cell["scores"]) if len(cell["scores"]) > 1 else 0.0
    return cells


def fmt(cell: dict | None) -> str:
    if cell is None:
        return "–"
    if len(cell["scores"]) == 1:
        return f"{cell['mean']:.1f} (1)"
    return f"{cell['mean']:.1f} ± {cell['std']:.1f} ({len(cell['scores'])})"


def summary_markdown(rows: list[dict], cells: dict, missing: list[str], header: str) -> str:
    tasks = sorted({t for t, _ in cells}, key=lambda t: ["rte", "mrpc", "stsb", "cola", "sst2"].index(t)
                   if t in ("rte", "mrpc", "stsb", "cola", "sst2") else 9)
    labels = sorted({l for _, l in cells if "+" not in l}, key=sort_key)
    out = [header, "", "Task score = mean of the task's GLUE dev metrics, in points (CoLA: Matthews corr.; MRPC: "
           "F1/acc.; STS-B: Pearson/Spearman; else accuracy), mean ± std over seeds (number of seeds). "
           "GLUE avg. = mean over the tasks listed of the method's mean task score.", ""]
    out.append("| method | trainable params | % of model | " + " | ".join(tasks) + " | GLUE avg. | mean run time |")
    out.append("|---|---:|---:|" + "---:|" * len(tasks) + "---:|---:|")
    for label in labels:
        own = [cells.get((t, label)) for t in tasks]
        present = [c for c in own if c]
        avg = f"{statistics.mean(c['mean'] for c in present):.1f}" if len(present) == len(tasks) else "–"
        secs = statistics.mean(s for c in present for s in c["seconds"])
        out.append(f"| {label} | {present[0]['params']:,} | {present[0]['percent']:.2f} | "
                   + " | ".join(fmt(c) for c in own) + f" | {avg} | {secs / 60:.1f} min |")
    out += ["", "## Best adapter size per task (houlsby; the paper chooses per task from {8, 64, 256})", ""]
    for task in tasks:
        sizes = {l: cells[(task, l)] for l in labels if _family(l) == "adapter-houlsby" and (task, l) in cells}
        if sizes:
            best = max(sizes, key=lambda l: sizes[l]["mean"])
            out.append(f"- {task}: {best} ({sizes[best]['mean']:.1f})")
    cosine = sorted({l for _, l in cells if "+" in l}, key=sort_key)
    if cosine:
        out += ["", "## Cosine loss (Barz & Denzler 2020) vs cross-entropy", "",
                "| method | loss | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
        for base in sorted({l.split("+")[0] for l in cosine}, key=sort_key):
            for loss, label in (("ce", base), ("cosine", f"{base}+cosine"), ("cosine+ce", f"{base}+cosine+ce")):
                out.append(f"| {base} | {loss} | " + " | ".join(fmt(cells.get((t, label))) for t in tasks) + " |")
    out += ["", "## Every run", "", "| task | method | seed | lr | score | best epoch | wall time |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (r["task"], sort_key(r["label"]), r["seed"])):
        result = row["result"]
        out.append(f"| {row['task']} | {row['label']} | {row['seed']} | {row['lr']:g} | {100 * result['score']:.2f} | "
                   f"{result['best_epoch']} | {result['wall_seconds'] / 60:.1f} min |")
    out += ["", f"## Missing runs ({len(missing)})", ""]
    out += [f"- {m}" for m in missing[:200]] or ["None: every cell of the grid has its results."]
    return "\n".join(out) + "\n"


def plot(cells: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for t, _ in cells})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        by_family: dict[str, list] = defaultdict(list)
        for (t, label), cell in cells.items():
            if t == task and "+" not in label:
                by_family[family(label)].append((cell["params"], cell["mean"], cell["std"]))
        for fam in sorted(by_family, key=family_rank):
            points = sorted(by_family[fam])
            xs, ys, es = zip(*points)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=fam, linestyle="-" if len(xs) > 1 else "none")
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.2)
        ax.set_title(task.upper())
        ax.set_xlabel("trainable parameters")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("dev score (points)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # outside: it hides no point
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def overridden_key(run, overrides: dict) -> str:
    """The key a preset run has in results.jsonl once the sweep's --model / --mixed-precision apply."""
    fields = json.loads(run.key)
    fields["mixed_precision"] = overrides["mixed_precision"]
    fields["model"] = overrides.get("model") or fields["model"]
    return json.dumps(fields, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path, help="folder holding results.jsonl (and preset.json)")
    args = parser.parse_args(argv)
    rows = load(args.results_dir)
    if not rows:
        print(f"no results in {args.results_dir / 'results.jsonl'}", file=sys.stderr)
        return 2
    meta = json.loads((args.results_dir / "preset.json").read_text())
    overrides = meta.get("overrides") or {"mixed_precision": rows[0]["mixed_precision"]}
    done = done_keys(args.results_dir / "results.jsonl")
    grid = PRESETS[meta["preset"]]().runs
    missing = [r.slug for r in grid if overridden_key(r, overrides) not in done]
    machine = rows[0]["result"]["machine"]
    hours = sum(r["result"]["wall_seconds"] for r in rows) / 3600
    header = (f"# {meta['preset']}: score vs trainable parameters\n\n{meta['description']}.\n\n"
              f"Machine: {machine['cpu']} ({machine['cores']} cores), GPU: {machine['gpu'] or 'none'}, "
              f"torch {machine['torch']}, transformers {machine['transformers']}; mixed precision: "
              f"{overrides['mixed_precision']}. Runs dated {min(r['result']['date'] for r in rows)} to "
              f"{max(r['result']['date'] for r in rows)}; {len(rows)} finished runs of {len(grid)}, "
              f"{hours:.2f} h of run time in all ({meta.get('jobs', 1)} run(s) at a time).")
    notes = args.results_dir / "notes.md"  # what the numbers alone do not say (how a set was run, gaps)
    if notes.exists():
        header += "\n\n" + notes.read_text(encoding="utf-8").strip()
    settings_apart(rows)
    cells = aggregate(rows)
    (args.results_dir / "summary.md").write_text(summary_markdown(rows, cells, missing, header), encoding="utf-8")
    plot(cells, args.results_dir / "score_vs_params.png")
    print(f"wrote {args.results_dir / 'summary.md'} and {args.results_dir / 'score_vs_params.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
