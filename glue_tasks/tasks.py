"""Task definitions: the nine GLUE tasks, and the user's own classification or regression data.

A task says what the model reads (text fields), what it predicts (label names, or a score)
and how it is scored (a metric kind). Where the rows come from is the data source's job
(``data.GlueData``, ``own_data.OwnData``), so GLUE tasks and a user's files go through the same
loaders and trainer.

GLUE label ids follow the Hugging Face ``nyu-mll/glue`` dataset, so models trained on local
TSV files and on the Hub data agree on what each id means.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Metric kinds and the metrics each reports; a task's score is the mean of its metrics.
METRICS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "f1_accuracy": ("f1", "accuracy"),  # binary F1 of class 1, as GLUE's MRPC and QQP
    "macro_f1": ("macro_f1",),
    "matthews": ("matthews_correlation",),
    "correlation": ("pearson", "spearmanr"),
}


@dataclass(frozen=True)
class Task:
    """One task as seen by the loaders, the trainer and the metrics."""

    name: str  # GLUE: the Hub config name ("rte"); own data: a name the user gives or the file's stem
    text_fields: tuple[str, ...]  # one or two text columns
    label_names: tuple[str, ...] | None  # names in id order; None for regression
    metric: str  # a key of METRICS
    dev_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    dir_name: str | None = None  # folder in the official GLUE download ("RTE"); None: not a GLUE task
    score_range: tuple[float, float] | None = None  # regression: the valid scores (STS-B: 0 to 5)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def is_glue(self) -> bool:
        return self.dir_name is not None

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: 1 for a regression score."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.metric]

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.dev_splits, *self.test_splits)


_NLI = ("entailment", "not_entailment")
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cola", ("sentence",), ("unacceptable", "acceptable"), "matthews", dir_name="CoLA"),
        Task("sst2", ("sentence",), ("negative", "positive"), "accuracy", dir_name="SST-2"),
        Task("mrpc", _PAIR, ("not_equivalent", "equivalent"), "f1_accuracy", dir_name="MRPC"),
        Task("stsb", _PAIR, None, "correlation", dir_name="STS-B", score_range=(0.0, 5.0)),
        Task("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1_accuracy", dir_name="QQP"),
        Task(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "accuracy",
            dev_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
            dir_name="MNLI",
        ),
        Task("qnli", ("question", "sentence"), _NLI, "accuracy", dir_name="QNLI"),
        Task("rte", _PAIR, _NLI, "accuracy", dir_name="RTE"),
        # WNLI's ids are the reverse of RTE/QNLI's: 1 means entailment.
        Task("wnli", _PAIR, ("not_entailment", "entailment"), "accuracy", dir_name="WNLI"),
    )
}

# Accept the folder spellings too ("SST-2", "sts-b"), since users copy them from the GLUE download.
_ALIASES: dict[str, Task] = {
    **{task.dir_name.lower(): task for task in TASKS.values()},
    **TASKS,
}


def get_task(name: str | Task) -> Task:
    """Look up a GLUE task by name, case-insensitively; a Task is returned as is."""
    if isinstance(name, Task):
        return name
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}; for your own "
                         "data pass --train-file instead of --task") from None


def own_task(name: str, text_fields: tuple[str, ...], label_names: tuple[str, ...] | None,
             metric: str | None = None) -> Task:
    """A task over the user's files: classification with ``label_names``, regression without."""
    if label_names is None:
        if metric not in (None, "correlation"):
            raise ValueError(f"--metric {metric} needs class labels; a regression task is scored by Pearson "
                             "and Spearman correlation: drop --metric")
        return Task(name, text_fields, None, "correlation")
    metric = metric or "accuracy"
    if metric not in METRICS or metric == "correlation":
        choices = ", ".join(k for k in METRICS if k != "correlation")
        raise ValueError(f"unknown --metric {metric!r} for classification; choose one of {choices}")
    if metric == "f1_accuracy" and len(label_names) != 2:
        raise ValueError(f"--metric f1_accuracy is the F1 of class {label_names[-1]!r} against the other and needs "
                         f"two classes; this data has {len(label_names)}: use macro_f1")
    return Task(name, text_fields, label_names, metric)
