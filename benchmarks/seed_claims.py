"""The seed essay's three claims, run as ``compare`` grids in resumable pieces.

  python benchmarks/seed_claims.py --dry-run                      # the pieces, in the planned order
  python benchmarks/seed_claims.py --piece claim2-sst2-1000       # one piece; rerun to resume it
  python benchmarks/seed_claims.py --data-dir ../shared/data/glue # every piece, in order

Each piece is one ``adaptkit-glue compare`` with its ledger, summary and plot under
``benchmarks/results/seed-claims/<piece>/`` (run folders under ``benchmarks/.work/``). A killed piece
loses at most the run in progress; rerunning skips every finished run.

1. Adapters vs top-layer retraining (Houlsby et al. 2019, Fig. 4): whole RTE and MRPC train sets,
   3 epochs at batch 32, 3 seeds; learning rates chosen on RTE's held-out 10% and reused for MRPC
   (claim1-mrpc can start, on the other core, as soon as claim1-rte has written learning_rates.json).
2. Cosine loss from scratch on small data (Barz & Denzler 2020): scratch-small and MiniLM + a Houlsby
   adapter with ce, cosine and cosine + 0.1·CE on 500, 1,000 and 5,000 examples of SST-2 (2 classes)
   and of STS-B with its scores rounded into 6 classes (a real-data stand-in for a task with more
   classes, through the own-data path).
3. Negative transfer under domain shift: SST-2 with every token id through a fixed random
   permutation (``--permute-vocabulary 1``): scratch-small against pretrained MiniLM with an adapter
   and with full fine-tuning, at the same sizes.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "seed-claims"
WORK = ROOT / "benchmarks" / ".work" / "seed-claims"
SIZES = (500, 1000, 5000)
# The grid runs in this order: the cells claim 1's domination test rests on (top-k and the Houlsby adapters
# that fit their budgets) before the others, so a piece stopped part-way already answers part of it.
CLAIM1_METHODS = ["scratch-small", "full", "top-0", "top-1", "top-2", "adapter-houlsby-64", "adapter-houlsby-256",
                  "adapter-houlsby-8", "top-3", "adapter-houlsby-ffn-64", "lora-r8", "layernorm"]


def pieces(data_dir: str) -> dict[str, list[str]]:
    """Piece name -> compare arguments, in the order to run them (claim 1 RTE, 2, 3, claim 1 MRPC)."""
    glue = ["--data-dir", data_dir]
    stsb6 = ["--train-file", str(WORK / "stsb6" / "train.csv"), "--dev-file", str(WORK / "stsb6" / "dev.csv"),
             "--text-columns", "sentence1", "sentence2", "--label-column", "label"]
    claim1 = ["--epochs", "3", "--batch-size", "32", "--losses", "ce", "--seeds", "3", "--methods", *CLAIM1_METHODS]
    out = {"claim1-rte": ["--task", "rte", *glue, *claim1]}
    for n in SIZES:
        small = ["--max-train-samples", str(n), "--seeds", "3"]
        out[f"claim2-sst2-{n}"] = ["--task", "sst2", *glue, "--max-length", "64", *small,
                                   "--methods", "scratch-small", "adapter-houlsby-64"]
        out[f"claim2-stsb6-{n}"] = [*stsb6, *small, "--methods", "scratch-small", "adapter-houlsby-64"]
    for n in SIZES:
        out[f"claim3-sst2-{n}"] = ["--task", "sst2", *glue, "--max-length", "64", "--max-train-samples", str(n),
                                   "--seeds", "3", "--losses", "ce", "--permute-vocabulary", "1",
                                   "--methods", "scratch-small", "adapter-houlsby-64", "full"]
    out["claim1-mrpc"] = ["--task", "mrpc", *glue, *claim1,
                          "--lrs-from", str(RESULTS / "claim1-rte" / "learning_rates.json")]
    return out


def write_stsb6(data_dir: str) -> None:
    """STS-B with each score rounded to the nearest integer: 6 classes, 0 to 5."""
    from glue_tasks.data import load_split

    folder = WORK / "stsb6"
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.csv"), ("validation", "dev.csv")):
        if (folder / name).exists():
            continue
        rows = load_split("stsb", split, data_dir)
        with open(folder / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence1", "sentence2", "label"])
            writer.writerows((r["sentence1"], r["sentence2"], int(round(r["label"]))) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "glue"),
                        help="GLUE folder in the TSV layout")
    parser.add_argument("--piece", nargs="+", help="only these pieces (default: all, in order)")
    parser.add_argument("--dry-run", action="store_true", help="list the pieces and their commands, run nothing")
    args = parser.parse_args(argv)
    plan = pieces(args.data_dir)
    unknown = sorted(set(args.piece or ()) - set(plan))
    if unknown:
        parser.error(f"unknown piece {', '.join(unknown)}; pieces: {', '.join(plan)}")
    chosen = [name for name in plan if not args.piece or name in args.piece]
    for name in chosen:
        command = [sys.executable, "-m", "glue_tasks", "compare", *plan[name], "--output-dir", str(RESULTS / name),
                   "--work-dir", str(WORK / name)]
        print(f"{name}: {' '.join(command[2:])}", flush=True)
        if args.dry_run:
            continue
        if "stsb6" in name:
            write_stsb6(args.data_dir)
        if subprocess.run(command, cwd=ROOT).returncode:
            print(f"{name} failed; rerun the same command to resume it", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
