"""``eval`` and ``predict``: rebuild a trained model from its run directory and score or label a split
(GLUE or the user's own data)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

import adaptkit
from adaptkit.adapterhub import is_adapterhub_folder
from adaptkit.atomic import write_text_atomic

from .data import GlueData, task_features
from .learned import majority_score, one_class
from .methods import FROM_SCRATCH
from .metrics import task_score
from .own_data import OwnData
from .records import DataError
from .runs import RESULTS, RUN_CONFIG, RunError, read_json, restore_trained
from .tasks import Task, own_task
from .train import (
    TrainConfig, check_model_reference, evaluate_splits, load_base_model, make_accelerator, make_loader,
    predict_logits, predictions_from, quiet_transformers, tokenize,
)

#: File names the GLUE server expects in a submission zip.
SUBMISSION_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
                    "test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}
#: Tasks whose submissions spell labels as words; the rest use class ids.
WORD_LABELS = {"mnli", "qnli", "rte"}


@dataclass
class LoadedRun:
    """A trained model ready to score or label rows: its task, the model, the tokenizer and how a
    text becomes input ids (the run's length and, for seed claim 3, its permuted vocabulary)."""

    task: Task
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    accelerator: Accelerator
    max_length: int = 128
    permute_vocabulary: int | None = None
    batch_size: int = 64

    def loader(self, data) -> DataLoader:
        encoded = tokenize(data, self.tokenizer, self.task, self.max_length, self.permute_vocabulary)
        return self.accelerator.prepare(make_loader(encoded, self.tokenizer, self.batch_size, shuffle=False))

    def logits(self, data, desc: str) -> numpy.ndarray:
        return predict_logits(self.model, self.loader(data), self.accelerator, desc)[0]

    def predict(self, texts: list[str] | list[tuple[str, str]]) -> list[dict]:
        """Per text (or pair of texts): ``{"label": ..., "probabilities": {class: p}}``, or ``{"value": x}``
        for regression."""
        pairs = [(text,) if isinstance(text, str) else tuple(text) for text in texts]
        if any(len(pair) != len(self.task.text_fields) for pair in pairs):
            raise ValueError(f"this model reads {len(self.task.text_fields)} text(s) per row "
                             f"({', '.join(self.task.text_fields)}): pass strings, or pairs of strings")
        columns = {field: [pair[i] for pair in pairs] for i, field in enumerate(self.task.text_fields)}
        rows = datasets.Dataset.from_dict({**columns, "label": [-1] * len(pairs), "idx": list(range(len(pairs)))},
                                          features=task_features(self.task))
        logits = self.logits(rows, "predict")
        if self.task.is_regression:
            return [{"value": float(row[0])} for row in logits]
        probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=-1).tolist()
        return [{"label": self.task.label_names[int(numpy.argmax(row))],
                 "probabilities": dict(zip(self.task.label_names, row))} for row in probabilities]


def load_trained(run_dir: str | Path | None = None, adapter: str | Path | None = None,
                 model: str | None = None) -> LoadedRun:
    """A trained model to predict with in Python: from a train run's ``--output-dir``, or from an adapter
    folder on its base (``model``). ``.predict(["text", ...])``; ``.model`` and ``.tokenizer`` go into
    transformers' ``pipeline("text-classification", ...)``."""
    if adapter is not None:
        return load_adapter_folder(adapter, model)
    return load_run(Path(run_dir), read_run_config(Path(run_dir), model=model))


def read_run_config(run_dir: Path, data_dir: str | None = None, model: str | None = None) -> TrainConfig:
    """The saved run's configuration; ``data_dir`` replaces a GLUE run's data folder, ``model`` the base
    model (the same weights elsewhere: the adapter's fingerprint check still applies)."""
    saved = read_json(run_dir / RUN_CONFIG)
    if model is not None:
        saved["model"] = model
    if data_dir is not None:
        if saved.get("train_file"):
            raise RunError(f"{run_dir} was trained on your own data ({saved['train_file']}); --data-dir is for GLUE "
                           "runs: to score other files use --input")
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
    return LoadedRun(task, accelerator.prepare(trained), tokenizer, accelerator, cfg.max_length,
                     cfg.permute_vocabulary, cfg.eval_batch_size)


def load_adapter_folder(adapter_dir: str | Path, model: str | None = None, text_columns: tuple[str, ...] = ("text",),
                        labels: tuple[str, ...] | None = None) -> LoadedRun:
    """Any adapter folder (adaptkit's, or AdapterHub's with its head) on its base, without a train run.

    The classes are ``labels`` when given, else AdapterHub's head names, else "0", "1", ... for as many
    as the head has; ``model`` defaults to the base the folder records."""
    folder = Path(adapter_dir)
    hub = is_adapterhub_folder(folder)
    meta = read_json(folder / ("adapter_config.json"))
    model = model or (meta.get("model_name") if hub else meta.get("base_model", {}).get("name_or_path"))
    if not model:
        raise RunError(f"{folder} does not name its base model: pass --model BASE")
    check_model_reference(model)
    head = read_json(folder / "head_config.json")["config"] if hub and (folder / "head_config.json").is_file() else None
    if hub and head is None:
        raise RunError(f"{folder} holds no head (head_config.json): it cannot score or label rows")
    names = tuple(sorted(head["label2id"], key=head["label2id"].get)) if head and head.get("label2id") else None
    count = head["num_labels"] if head else meta.get("base_model", {}).get("num_labels", 2)
    labels = tuple(labels or names or (str(i) for i in range(count)))
    if len(labels) != count:
        raise RunError(f"{folder}'s head predicts {count} classes, --labels names {len(labels)}")
    task = own_task(folder.name, tuple(text_columns), labels)
    if hub:  # AdapterHub's head becomes the adapter's own head on the bare encoder
        with quiet_transformers():
            trained = AutoModel.from_pretrained(model, dtype=torch.float32)
    else:
        trained = load_base_model(model, task, announce_new_head=False)
    adaptkit.load_adapter(trained, folder)
    accelerator = make_accelerator(False)
    tokenizer = AutoTokenizer.from_pretrained(model)
    return LoadedRun(task, accelerator.prepare(trained.eval()), tokenizer, accelerator)


def _input_rows(run: LoadedRun, input_file: str, label_column: str | None, skip_bad_rows: bool) -> datasets.Dataset:
    """The rows of a file in the run's text columns; with ``label_column`` their labels too (class
    names; for a GLUE task also its class ids, as the GLUE files write them)."""
    task = run.task
    spellings = task.label_names
    if task.is_glue and spellings:
        spellings = (*spellings, *(str(i) for i in range(len(spellings))))
    reading = own_task(task.name, task.text_fields, spellings)
    rows = OwnData(reading, input_file, label_column or "label", skip_bad_rows=skip_bad_rows) \
        .load_file(input_file, labelled=label_column is not None).dataset
    if spellings == task.label_names:
        return rows
    classes = len(task.label_names)  # spelling k is class k, or class k - classes when written as an id
    return rows.cast_column("label", datasets.Value("int64")).map(
        lambda row: {"label": row["label"] % classes if row["label"] >= 0 else -1})


def evaluate_run(run_dir: str | Path | None = None, data_dir: str | None = None, model: str | None = None,
                 input_file: str | None = None, adapter: str | None = None, label_column: str = "label",
                 text_columns: tuple[str, ...] = ("text",), labels: tuple[str, ...] | None = None,
                 skip_bad_rows: bool = False) -> dict:
    """Scores of a saved run on its dev set(s) beside those recorded at training time, or of a run or
    adapter folder on a labelled ``input_file``, beside the majority class's. The data is read before
    the model loads where it can be, so a missing file costs no model load."""
    if adapter is not None:
        run = load_adapter_folder(adapter, model, tuple(text_columns), labels)
        return _score_file(run, _need_input(input_file, "eval --adapter"), label_column, skip_bad_rows)
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, data_dir, model)
    if input_file is not None:
        return _score_file(load_run(run_dir, cfg), input_file, cfg.label_column if cfg.train_file else "label",
                           skip_bad_rows)
    source = cfg.data_source()
    splits = {split: source.load(split).dataset for split in source.task.dev_splits}
    run = load_run(run_dir, cfg)
    dev, _ = evaluate_splits(run.model, {s: run.loader(d) for s, d in splits.items()}, run.task, run.accelerator)
    recorded = read_json(run_dir / RESULTS)
    return {"task": run.task.name, "dev": dev, "score": task_score(run.task, dev),
            "recorded_dev": recorded["dev"], "recorded_score": recorded["score"]}


def _score_file(run: LoadedRun, input_file: str, label_column: str, skip_bad_rows: bool) -> dict:
    rows = _input_rows(run, input_file, label_column, skip_bad_rows)
    metrics, predictions = evaluate_splits(run.model, {"input": run.loader(rows)}, run.task, run.accelerator)
    labels = numpy.array(predictions["input"]["label"])
    majority = None if run.task.is_regression else int(numpy.bincount(labels).argmax())
    return {"task": run.task.name, "input": str(input_file), "rows": len(rows), "metrics": metrics["input"],
            "score": task_score(run.task, metrics["input"]),
            "majority_class_score": majority_score(run.task, majority, {"input": labels}),
            "one_class": one_class(run.task, predictions)}


def _need_input(input_file: str | None, command: str) -> str:
    if input_file is None:
        raise RunError(f"{command} has no dev set of its own: pass --input FILE with the rows to use")
    return input_file


def predict_run(run_dir: str | Path | None, output: str | Path, data_dir: str | None = None,
                model: str | None = None, input_file: str | None = None, adapter: str | None = None,
                text_columns: tuple[str, ...] = ("text",), labels: tuple[str, ...] | None = None,
                skip_bad_rows: bool = False) -> list[Path]:
    """Label a split and write one TSV per split; returns the paths written.

    GLUE: the GLUE-server submission file(s) for the test split(s) (index and label only, the server's
    format); without a test split, the dev split(s) (``<TASK>-<split>.tsv``), saying so. Own data,
    ``--input`` and adapter folders: ``input_file`` (labels not needed) or else the dev split, with
    each class's probability (or the regression value) beside the label. The data is checked before
    any model loads."""
    output = Path(output)
    if adapter is not None:
        run = load_adapter_folder(adapter, model, tuple(text_columns), labels)
        named = {f"{Path(_need_input(input_file, 'predict --adapter')).stem}-predictions":
                 _input_rows(run, input_file, None, skip_bad_rows)}
        return _write_predictions(run, named, output, submission=())
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, data_dir, model)
    source = cfg.data_source()
    task = source.task
    if input_file is not None:
        run = load_run(run_dir, cfg)
        named = {f"{Path(input_file).stem}-predictions": _input_rows(run, input_file, None, skip_bad_rows)}
        return _write_predictions(run, named, output, submission=())
    if task.is_glue:
        splits = _glue_prediction_splits(task, source)
        named = {SUBMISSION_NAMES[split if task.name == "mnli" else task.name] if split in task.test_splits
                 else f"{task.dir_name}-{split}": source.load(split).dataset for split in splits}
        submission = tuple(name for name, split in zip(named, splits) if split in task.test_splits)
    else:
        print(f"no --input file: predicting the dev split of {task.name}", file=sys.stderr)
        named, submission = {f"{task.name}-validation-predictions": source.load("validation").dataset}, ()
    return _write_predictions(load_run(run_dir, cfg), named, output, submission)


def _write_predictions(run: LoadedRun, named: dict, output: Path, submission: tuple[str, ...]) -> list[Path]:
    written = []
    for name, data in named.items():
        logits = run.logits(data, f"predict {name}")
        path = output / f"{name}.tsv"
        if run.accelerator.is_main_process:
            write_text_atomic(path, _submission(run.task, data["idx"], logits, with_probabilities=name not in submission))
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


def _submission(task: Task, indices, logits: numpy.ndarray, with_probabilities: bool) -> str:
    """index and prediction per row: a score, a label word (own data, MNLI/QNLI/RTE) or a class id,
    and ``with_probabilities`` each class's probability (softmax of the logits) beside it.
    GLUE scores are clipped to the task's range with 3 decimals (the server's format); own data's keep
    float32's precision, since its targets may live on any scale."""
    predictions = predictions_from(logits, task)
    if task.is_regression:
        low, high = task.score_range or (-float("inf"), float("inf"))
        digits = ".3f" if task.is_glue else ".9g"
        labels = [format(min(high, max(low, float(p))), digits) for p in predictions]
    elif not task.is_glue or task.name in WORD_LABELS:
        labels = [task.label_names[int(p)] for p in predictions]
    else:
        labels = [str(int(p)) for p in predictions]
    if not with_probabilities or task.is_regression:
        return "index\tprediction\n" + "".join(f"{i}\t{label}\n" for i, label in zip(indices, labels))
    probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    header = "index\tprediction\t" + "\t".join(f"p_{name}" for name in task.label_names) + "\n"
    return header + "".join(f"{i}\t{label}\t" + "\t".join(f"{p:.6f}" for p in row) + "\n"
                            for i, label, row in zip(indices, labels, probabilities))
