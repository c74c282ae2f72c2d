"""Write the committed compare summaries again from their ledgers with today's report code, no training.

    python benchmarks/compare_rereport.py --data-dir ../shared/data/glue   # run from the repository root

For every folder under benchmarks/results/ holding a compare's ``summary.json`` and ``results.jsonl``,
the plan is rebuilt from the summary's settings and learning rates, the runs are found in the ledger
by their keys (the data and the model must be the ones they ran on: keys hold their content), and
``summary.md``, ``summary.json`` and ``score_vs_params.png`` are written again. Run-time figures stay
the ledger's; the machine and date lines are the report's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_claims import write_stsb6  # noqa: E402

from glue_tasks.compare_plan import ComparePlan  # noqa: E402
from glue_tasks.compare_report import write_report  # noqa: E402
from glue_tasks.ledger import read_lines  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK_DIR = "benchmarks/.work/"


def rereport(folder: Path) -> None:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    base = dict(summary["settings"])
    methods, losses, seeds = base.pop("methods"), base.pop("losses"), base.pop("seeds")
    for name in ("train_file", "dev_file"):  # files seed_claims.py wrote under another checkout's .work/
        path = base.get(name)
        if path and not Path(path).exists() and WORK_DIR in path:
            base[name] = str(ROOT / path[path.index(WORK_DIR):])
    table = summary["learning_rates"]
    chosen = {method: entry["chosen"] for method, entry in table.items()}
    fixed = {method: entry["chosen"] for method, entry in table.items() if "from" in entry}
    plan = ComparePlan(folder, base, methods, losses, seeds, fixed_lrs=fixed)
    write_report(plan, read_lines(folder / "results.jsonl"), chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the GLUE folder the compares ran on")
    args = parser.parse_args()
    write_stsb6(args.data_dir)  # the seed claims' STS-B in 6 classes, as they ran on it
    for summary in sorted(RESULTS.rglob("summary.json")):
        if (summary.parent / "results.jsonl").is_file():
            print(f"== {summary.parent.relative_to(ROOT)}", file=sys.stderr)
            rereport(summary.parent)


if __name__ == "__main__":
    main()
