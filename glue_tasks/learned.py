"""Did the run learn anything? The majority class's score beside the model's, and a model whose
predictions are (nearly) all one class named as such, with what to try."""

from __future__ import annotations

from collections import Counter

import numpy

from .metrics import compute_metrics, task_score
from .tasks import Task

#: A model that gives one class to at least this share of the rows is called a one-class model.
ONE_CLASS_SHARE = 0.95

TRY = ("more optimizer steps (--epochs, or a smaller --batch-size), another --lr, or --class-weights balanced "
       "when the classes are unbalanced")


def majority_class(counts: dict[str, int] | None) -> int | None:
    """The id of the most frequent training class (the first on a tie); None for regression."""
    if not counts:
        return None
    values = list(counts.values())
    return values.index(max(values))


def majority_score(task: Task, majority: int | None, labels_per_split: dict[str, numpy.ndarray]) -> float | None:
    """The task score of predicting the training set's majority class for every dev row."""
    if majority is None:
        return None
    return float(numpy.mean([task_score(task, compute_metrics(task, numpy.full(len(labels), majority), labels))
                             for labels in labels_per_split.values()]))


def one_class(task: Task, predictions: dict[str, dict[str, list]]) -> dict | None:
    """The class and its share when one class takes ONE_CLASS_SHARE of the predictions, else None."""
    if task.is_regression:
        return None
    pooled = [p for split in predictions.values() for p in split["prediction"]]
    if not pooled:
        return None
    label, count = Counter(pooled).most_common(1)[0]
    share = count / len(pooled)
    return {"class": task.label_names[int(label)], "share": share} if share >= ONE_CLASS_SHARE else None


def one_class_warning(found: dict, score: float, majority: float | None) -> str:
    """One line for the end of a run whose model predicts one class."""
    versus = f"; its score {100 * score:.2f} against the majority class's {100 * majority:.2f}" \
        if majority is not None else ""
    return (f"warning: the kept model predicts {found['class']!r} for {100 * found['share']:.0f}% of the dev "
            f"rows{versus}: it has learned little or nothing. Try {TRY}")
