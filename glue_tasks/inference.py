"""``eval`` and ``predict``: rebuild a trained model from its run directory and score or label a split
(GLUE or the user's own data)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from adaptkit.atomic import write_text_atomic

from .data import GlueData
from .records import DataError
from .methods import FROM_SCRATCH
from .metrics import task_score
from .runs import RESULTS, RUN_CONFIG, RunError, read_json, restore_trained
from .tasks import Task
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
    task: Task
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator

    def loader(self, data) -> DataLoader:
        return self.accelerator.prepare(eval_loader(data, self.tokenizer, self.task, self.cfg))


def read_run_config(run_dir: Path, data_dir: str | None = None, model: str | None = None) -> TrainConfig:
    """The saved run's configuration; ``data_dir`` replaces a GLUE run's data folder, ``model`` the base
    model (the same weights elsewhere: the adapter's fingerprint check still applies)."""
    saved = read_json(run_dir / RUN_CONFIG)
    if model is not None:
        saved["model"] = model
    if data_dir is not None:
        if saved.get("train_file"):
            raise RunError(f"{run_dir} was trained on your own data ({saved['train_file']}); --data-dir is for GLUE "
                           "runs: to score other files use predict --input")
        saved["data_dir"] = data_dir
    return TrainConfig(**{**saved, "overwrite": True})


def load_run(run_dir: Path, cfg: TrainConfig) -> LoadedRun:
    """Rebuild the run's trained model (base + saved checkpoint, or the whole saved model) on its device."""
    task = cfg.task_definition()
    method = cfg.method.name
    if method in ("full", *FROM_SCRATCH):
        path = run_dir / "model"
        if not path.is_dir():
            raise RunError(f"{run_dir} keeps no model: method {method} saves one only with --save-full")
        trained = load_base_model(str(path), task, trust_remote_code=cfg.trust_remote_code,
                                  announce_new_head=False)
    else:
        base = load_base_model(cfg.model, task, trust_remote_code=cfg.trust_remote_code,
                               announce_new_head=False)
        trained = restore_trained(base, method, run_dir)
    accelerator = make_accelerator(cfg.cpu)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    return LoadedRun(cfg, task, accelerator.prepare(trained), tokenizer, accelerator)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, model: str | None = None) -> dict:
    """Dev scores of a saved run, beside those recorded at training time. The data is read
    before the model loads, so a missing file costs no model load."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, data_dir, model)
    source = cfg.data_source()
    splits = {split: source.load(split).dataset for split in source.task.dev_splits}
    run = load_run(run_dir, cfg)
    dev, _ = evaluate_splits(run.model, {s: run.loader(d) for s, d in splits.items()}, run.task, run.accelerator)
    recorded = read_json(run_dir / RESULTS)
    return {"task": run.task.name, "dev": dev, "score": task_score(run.task, dev),
            "recorded_dev": recorded["dev"], "recorded_score": recorded["score"]}


def predict_run(run_dir: str | Path, output: str | Path, data_dir: str | None = None,
                model: str | None = None, input_file: str | None = None) -> list[Path]:
    """Label a split and write one TSV per split; returns the paths written.

    GLUE: the GLUE-server submission file(s) for the test split(s); without a test split, the
    dev split(s) (``<TASK>-<split>.tsv``), saying so. Own data: ``input_file`` (labels not
    needed) or else the dev split. The data is checked before any model loads."""
    run_dir, output = Path(run_dir), Path(output)
    cfg = read_run_config(run_dir, data_dir, model)
    source = cfg.data_source()
    task = source.task
    if task.is_glue:
        if input_file is not None:
            raise RunError("--input is for runs on your own data; a GLUE run predicts its task's test split "
                           "(put it under --data-dir)")
        splits = _glue_prediction_splits(task, source)
        named = {SUBMISSION_NAMES[split if task.name == "mnli" else task.name] if split in task.test_splits
                 else f"{task.dir_name}-{split}": source.load(split).dataset for split in splits}
    elif input_file is not None:
        named = {f"{Path(input_file).stem}-predictions": source.load_file(input_file, labelled=False).dataset}
    else:
        print(f"no --input file: predicting the dev split of {task.name}", file=sys.stderr)
        named = {f"{task.name}-validation-predictions": source.load("validation").dataset}
    run = load_run(run_dir, cfg)
    written = []
    for name, data in named.items():
        logits, _ = predict_logits(run.model, run.loader(data), run.accelerator, f"predict {name}")
        path = output / f"{name}.tsv"
        if run.accelerator.is_main_process:
            write_text_atomic(path, _submission(task, data["idx"], predictions_from(logits, task)))
        written.append(path)
    return written


def _glue_prediction_splits(task: Task, source: GlueData) -> list[str]:
    available = source.available()
    splits = [s for s in task.test_splits if s in available]
    if splits:
        return splits
    splits = [s for s in task.dev_splits if s in available]
    if not splits:
        raise DataError(f"no test or dev split of {task.name} under {source.data_dir}: put "
                        f"{task.dir_name}/test.tsv (GLUE layout) there, or pass --data-dir")
    print(f"no test split of {task.name} under {source.data_dir}: predicting the dev split "
          f"({', '.join(splits)}) instead", file=sys.stderr)
    return splits


def _submission(task: Task, indices, predictions) -> str:
    """index and prediction per row: a score, a label word (own data, MNLI/QNLI/RTE) or a class id.
    GLUE scores are clipped to the task's range with 3 decimals (the server's format); own data's keep
    float32's precision, since its targets may live on any scale."""
    if task.is_regression:
        low, high = task.score_range or (-float("inf"), float("inf"))
        digits = ".3f" if task.is_glue else ".9g"
        labels = [format(min(high, max(low, float(p))), digits) for p in predictions]
    elif not task.is_glue or task.name in WORD_LABELS:
        labels = [task.label_names[int(p)] for p in predictions]
    else:
        labels = [str(int(p)) for p in predictions]
    return "index\tprediction\n" + "".join(f"{i}\t{label}\n" for i, label in zip(indices, labels))
