"""``eval`` and ``predict``: rebuild a trained model from its run directory and score or label a split."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from adaptkit.atomic import write_text_atomic

from .data import GlueDataError, available_splits, load_split
from .metrics import task_score
from .runs import RESULTS, RUN_CONFIG, RunError, read_json, restore_trained
from .tasks import GlueTask, get_task
from .train import (
    TrainConfig, eval_loader, evaluate_splits, load_base_model, make_accelerator, predict_logits, predictions_from,
)

#: File names the GLUE server expects in a submission zip.
SUBMISSION_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
                    "test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}
#: Tasks whose submissions spell labels as words; the rest use class ids.
WORD_LABELS = {"mnli", "qnli", "rte"}


@dataclass
class LoadedRun:
    """A saved run ready to score or label splits: its config, its trained model and the tokenizer."""

    cfg: TrainConfig
    task: GlueTask
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator

    def loader(self, data) -> DataLoader:
        return self.accelerator.prepare(eval_loader(data, self.tokenizer, self.task, self.cfg))


def load_run(run_dir: Path, model: str | None = None) -> LoadedRun:
    """Rebuild the run's trained model (base + saved checkpoint, or the whole saved model) on its device."""
    cfg = TrainConfig(**{**read_json(run_dir / RUN_CONFIG), "overwrite": True})
    task = get_task(cfg.task)
    method = cfg.method.name
    if method in ("full", "scratch"):
        path = run_dir / "model"
        if not path.is_dir():
            raise RunError(f"{run_dir} keeps no model: method {method} saves one only with --save-full")
        trained = load_base_model(str(path), task, trust_remote_code=cfg.trust_remote_code,
                                  announce_new_head=False)
    else:
        base = load_base_model(model or cfg.model, task, trust_remote_code=cfg.trust_remote_code,
                               announce_new_head=False)
        trained = restore_trained(base, method, run_dir)
    accelerator = make_accelerator(cfg.cpu)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    return LoadedRun(cfg, task, accelerator.prepare(trained), tokenizer, accelerator)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, model: str | None = None) -> dict:
    """Dev scores of a saved run, beside those recorded at training time."""
    run_dir = Path(run_dir)
    run = load_run(run_dir, model)
    loaders = {split: run.loader(load_split(run.task, split, data_dir or run.cfg.data_dir))
               for split in run.task.dev_splits}
    dev = evaluate_splits(run.model, loaders, run.task, run.accelerator)
    recorded = read_json(run_dir / RESULTS)
    return {"task": run.task.name, "dev": dev, "score": task_score(run.task, dev),
            "recorded_dev": recorded["dev"], "recorded_score": recorded["score"]}


def predict_run(run_dir: str | Path, output: str | Path, data_dir: str | None = None,
                model: str | None = None) -> list[Path]:
    """Write the GLUE-server submission file(s) for the task's test split(s); without a test
    split, predictions for the dev split(s) (``<TASK>-<split>.tsv``), saying so. The splits are
    checked before any model loads."""
    run_dir, output = Path(run_dir), Path(output)
    cfg = TrainConfig(**{**read_json(run_dir / RUN_CONFIG), "overwrite": True})
    task, data_dir = get_task(cfg.task), data_dir or cfg.data_dir
    available = available_splits(task, data_dir)
    splits = [s for s in task.test_splits if s in available]
    if not splits:
        splits = [s for s in task.dev_splits if s in available]
        if not splits:
            raise GlueDataError(f"no test or dev split of {task.name} under {data_dir}: put "
                                f"{task.dir_name}/test.tsv (GLUE layout) there, or pass --data-dir")
        print(f"no test split of {task.name} under {data_dir}: predicting the dev split "
              f"({', '.join(splits)}) instead", file=sys.stderr)
    run = load_run(run_dir, model)
    written = []
    for split in splits:
        data = load_split(task, split, data_dir)
        logits, _ = predict_logits(run.model, run.loader(data), run.accelerator, f"predict {split}")
        name = (SUBMISSION_NAMES[split if task.name == 'mnli' else task.name] if split in task.test_splits
                else f"{task.dir_name}-{split}")
        path = output / f"{name}.tsv"
        if run.accelerator.is_main_process:
            write_text_atomic(path, _submission(task, data["idx"], predictions_from(logits, task)))
        written.append(path)
    return written


def _submission(task: GlueTask, indices, predictions) -> str:
    if task.is_regression:
        labels = [f"{min(5.0, max(0.0, float(p))):.3f}" for p in predictions]
    elif task.name in WORD_LABELS:
        labels = [task.label_names[int(p)] for p in predictions]
    else:
        labels = [str(int(p)) for p in predictions]
    return "index\tprediction\n" + "".join(f"{i}\t{label}\n" for i, label in zip(indices, labels))
