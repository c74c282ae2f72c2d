"""The nine GLUE tasks: names, columns, label conventions and metrics.

Label ids follow the Hugging Face ``nyu-mll/glue`` dataset, so models trained on
local TSV files and on the Hub data agree on what each id means.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task as seen by the loaders, the trainer and the metrics."""

    name: str  # config name on the Hub, e.g. "rte"
    dir_name: str  # folder in the official GLUE download, e.g. "RTE"
    text_fields: tuple[str, ...]  # one or two Hub text columns
    label_names: tuple[str, ...] | None  # names in id order; None for regression (STS-B)
    metric_names: tuple[str, ...]
    dev_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: 1 for a regression score."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.dev_splits, *self.test_splits)


_NLI = ("entailment", "not_entailment")
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
        GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        GlueTask("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        GlueTask("stsb", "STS-B", _PAIR, None, ("pearson", "spearmanr")),
        GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy")),
        GlueTask(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            dev_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
        ),
        GlueTask("qnli", "QNLI", ("question", "sentence"), _NLI, ("accuracy",)),
        GlueTask("rte", "RTE", _PAIR, _NLI, ("accuracy",)),
        # WNLI's ids are the reverse of RTE/QNLI's: 1 means entailment.
        GlueTask("wnli", "WNLI", _PAIR, ("not_entailment", "entailment"), ("accuracy",)),
    )
}

# Accept the folder spellings too ("SST-2", "sts-b"), since users copy them from the GLUE download.
_ALIASES: dict[str, GlueTask] = {
    **{task.dir_name.lower(): task for task in TASKS.values()},
    **TASKS,
}


def get_task(name: str | GlueTask) -> GlueTask:
    """Look up a task by name, case-insensitively; a GlueTask is returned as is."""
    if isinstance(name, GlueTask):
        return name
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}") from None
