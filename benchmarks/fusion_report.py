"""AdapterFusion on GLUE (issue 38): a fusion of five source adapters against the target's own adapter.

  python benchmarks/fusion_report.py   # → benchmarks/results/fusion/summary.{md,json}

Reads what ``sweep.py --preset fusion`` has run so far (``benchmarks/results/fusion/results.jsonl``).
Per target (RTE, MRPC): the target's single adapter (its source run, same seed) and the dynamic
fusion of all five source adapters trained on it, mean ± std over the seeds run, and fusion −
adapter by ``compare``'s paired bootstrap over the dev examples, on the seeds both have. The
verdict is a gain or a loss only when the 95% interval excludes 0. Then the source adapters'
own dev scores. Runs not done yet are listed, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_claims_report import cell_text, diff_text, difference, verdict  # noqa: E402
from sweep import FUSION_SOURCES, FUSION_TARGETS, fusion_glue  # noqa: E402

from adaptkit.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from glue_tasks.compare_report import grid_cell  # noqa: E402
from glue_tasks.ledger import read_lines  # noqa: E402
from glue_tasks.tasks import get_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fusion"


def cells(lines: list[dict]) -> dict[tuple[str, str], dict]:
    """(task, "adapter" | "fusion") -> its cell (``compare_report.grid_cell``) over the seeds run."""
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for line in lines:
        kind = "fusion" if line["method"]["name"] == "fusion" else "adapter"
        runs[(line["task"], kind)][line["seed"]] = {**line["result"], "seconds": line["result"]["wall_seconds"]}
    return {key: grid_cell(key[1], "ce", next(iter(by_seed.values()))["lr"], [by_seed[s] for s in sorted(by_seed)])
            for key, by_seed in runs.items()}


def report(lines: list[dict]) -> dict:
    found = cells(lines)
    done = {line["key"] for line in lines}
    targets = []
    for task in FUSION_TARGETS:
        adapter, fusion = found.get((task, "adapter")), found.get((task, "fusion"))
        diff = difference(fusion, adapter, get_task(task).metric) if adapter and fusion else None
        targets.append({"task": task, "adapter": adapter, "fusion": fusion, "fusion_minus_adapter": diff,
                        "verdict": verdict(diff, "gain", "loss")})
    return {"targets": targets, "sources": {t: found.get((t, "adapter")) for t in FUSION_SOURCES},
            "missing": [run.slug for run in fusion_glue().runs if run.key not in done]}


def markdown(summary: dict) -> str:
    out = ["# AdapterFusion on GLUE: a fusion of five adapters against the target's own adapter", "",
           "all-MiniLM-L6-v2, `python benchmarks/sweep.py --preset fusion --data-dir ../shared/data/glue`, then "
           "`python benchmarks/fusion_report.py`. Source adapters: houlsby m=64, LayerNorms frozen, lr 1e-3, "
           "3 epochs, whole train sets. Fusion: AdapterHub's dynamic preset (value matrix from the identity, "
           "its regularization in the loss) over all five, the target's own among them, trained at lr 5e-5 "
           "for 3 epochs (the paper: 10) with a fresh head; the adapters stay frozen. Dev scores in points "
           "(the task's metric; MRPC: mean of F1 and accuracy), mean ± std (seeds). fusion − adapter: "
           "paired bootstrap over the dev examples, 95% interval.", "",
           "| target | adapter alone | fusion of 5 | trainable (adapter / fusion) | fusion − adapter [95%] | p | "
           "verdict |", "|---|---:|---:|---:|---:|---:|---|"]
    for t in summary["targets"]:
        d, a, f = t["fusion_minus_adapter"], t["adapter"], t["fusion"]
        params = f"{a['trainable']:,} / {f['trainable']:,}" if a and f else "–"
        p_value = f"{d['p_value']:.3f}" if d else "–"
        out.append(f"| {get_task(t['task']).dir_name} | {cell_text(a)} | {cell_text(f)} | {params} | "
                   f"{diff_text(d)} | {p_value} | {t['verdict']} |")
    out += ["", "Source adapters (dev score, mean ± std (seeds); seconds per run, mean):", "",
            "| source | dev score | seconds |", "|---|---:|---:|"]
    for task, cell in summary["sources"].items():
        seconds = f"{cell['seconds']:.0f}" if cell else "–"
        out.append(f"| {get_task(task).dir_name} | {cell_text(cell)} | {seconds} |")
    if summary["missing"]:
        out += ["", f"Not run yet ({len(summary['missing'])}): " + ", ".join(f"`{s}`" for s in summary["missing"])]
    out += ["", "The paper's RTE gain from AdapterFusion came mostly from MNLI's adapter, which is not among "
            "these sources (MNLI's 393k rows are out of reach on this CPU)."]
    return "\n".join(out) + "\n"


def plain(cell: dict | None) -> dict | None:
    """A cell without its per-example arrays (they stay in results.jsonl)."""
    return None if cell is None else {k: v for k, v in cell.items() if k not in ("predictions", "labels_per_example")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the preset's folder (default %(default)s)")
    args = parser.parse_args(argv)
    lines = read_lines(args.results / "results.jsonl")
    if not lines:
        parser.error(f"no finished runs in {args.results / 'results.jsonl'}: run sweep.py --preset fusion first")
    summary = report(lines)
    text = markdown(summary)
    print(text)
    write_text_atomic(args.results / "summary.md", text)
    write_json_atomic(args.results / "summary.json", {
        "targets": [{**t, "adapter": plain(t["adapter"]), "fusion": plain(t["fusion"])} for t in summary["targets"]],
        "sources": {task: plain(cell) for task, cell in summary["sources"].items()}, "missing": summary["missing"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
