"""``eval`` and ``predict``: rebuild a trained model from its run directory and score or label a split."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from adaptkit.atomic import write_text_atomic

from .data import GlueDataError, available_splits, load_split
from .metrics import task_score
from .runs import RESULTS, RUN_CONFIG, RunError, read_json, restore_trained
from .tasks import GlueTask, get_task
from .train import (
    TrainConfig, evaluate_splits, load_base_model, make_loader, predict_logits, predictions_from, tokenize,
    make_accelerator,
)

#: File names the GLUE server expects in a submission zip.
SUBMISSION_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
                    "test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}
#: Tasks whose submissions spell labels as words; the rest use class ids.
WORD_LABELS = {"mnli", "qnli", "rte"}


def load_run(run_dir: Path, model: str | None = None):
    """The run's config, and its trained model rebuilt from base + saved checkpoint."""
    cfg = TrainConfig(**{**read_json(run_dir / RUN_CONFIG), "overwrite": True})
    task = get_task(cfg.task)
    method = cfg.method.name
    if method in ("full", "scratch"):
        path = run_dir / "model"
        if not path.is_dir():
            raise RunError(f"{run_dir} keeps no model: method {method} saves one only with --save-full")
        return cfg, load_base_model(str(path), task, trust_remote_code=cfg.trust_remote_code)
    base = load_base_model(model or cfg.model, task, trust_remote_code=cfg.trust_remote_code)
    return cfg, restore_trained(base, method, run_dir)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, model: str | None = None) -> dict:
    """Dev scores of a saved run, beside those recorded at training time."""
    run_dir = Path(run_dir)
    cfg, trained = load_run(run_dir, model)
    task = get_task(cfg.task)
    accelerator = make_accelerator(cfg.cpu)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    loaders = {split: make_loader(tokenize(load_split(task, split, data_dir or cfg.data_dir), tokenizer, task,
                                           cfg.max_length), tokenizer, cfg.eval_batch_size, shuffle=False)
               for split in task.dev_splits}
    trained = accelerator.prepare(trained)
    loaders = {s: accelerator.prepare(loader) for s, loader in loaders.items()}
    dev = evaluate_splits(trained, loaders, task, accelerator)
    recorded = read_json(run_dir / RESULTS)
    return {"task": task.name, "dev": dev, "score": task_score(task, dev),
            "recorded_dev": recorded["dev"], "recorded_score": recorded["score"]}


def predict_run(run_dir: str | Path, output: str | Path, data_dir: str | None = None,
                model: str | None = None) -> list[Path]:
    """Write the GLUE-server submission file(s) for the task's test split(s)."""
    run_dir, output = Path(run_dir), Path(output)
    cfg, trained = load_run(run_dir, model)
    task = get_task(cfg.task)
    data_dir = data_dir or cfg.data_dir
    splits = [s for s in task.test_splits if s in available_splits(task, data_dir)]
    if not splits:
        raise GlueDataError(f"no test split of {task.name} under {data_dir}: put {task.dir_name}/test.tsv "
                            "(GLUE layout) there, or pass --data-dir")
    accelerator = make_accelerator(cfg.cpu)
    trained = accelerator.prepare(trained)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    written = []
    for split in splits:
        data = load_split(task, split, data_dir)
        loader = accelerator.prepare(make_loader(tokenize(data, tokenizer, task, cfg.max_length), tokenizer,
                                                 cfg.eval_batch_size, shuffle=False))
        logits, _ = predict_logits(trained, loader, accelerator, f"predict {split}")
        path = output / f"{SUBMISSION_NAMES[split if task.name == 'mnli' else task.name]}.tsv"
        if accelerator.is_main_process:
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
