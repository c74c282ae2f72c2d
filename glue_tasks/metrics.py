"""Score predictions with the GLUE metric module and combine scores as papers report them.

All scores are fractions (accuracy, F1 in [0, 1]; correlations in [-1, 1]); multiply by
100 for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy

from .data import HELD_OUT
from .tasks import Task, get_task

_METRIC_SCRIPT = Path(__file__).with_name("glue_metric.py")


@lru_cache(maxsize=None)
def _metric(kind: str):
    """Load the metric module once per metric kind; by local path, so no network is involved."""
    import evaluate  # deferred: slow to import, and only scoring needs it

    return evaluate.load(str(_METRIC_SCRIPT), config_name=kind, keep_in_memory=True)


def compute_metrics(
    task: Task | str,
    predictions: Sequence[float] | numpy.ndarray,
    references: Sequence[float] | numpy.ndarray,
) -> dict[str, float]:
    """The task's metrics, keyed as in ``task.metric_names``.

    ``predictions`` are class ids (the argmax of the logits), or scores for STS-B.
    """
    task = get_task(task)
    predictions, references = numpy.asarray(predictions), numpy.asarray(references)
    if predictions.ndim != 1 or predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must be 1-D and of the same length, got shapes "
            f"{predictions.shape} and {references.shape} (pass class ids, not logits)"
        )
    if not task.is_regression and (references < 0).any():
        raise ValueError("references contain -1: this split has no labels (a GLUE test split?)")
    scores = _metric(task.metric).compute(predictions=predictions, references=references)
    return {name: float(scores[name]) for name in task.metric_names}


def task_score(task: Task | str, metrics: Mapping[str, float] | Mapping[str, Mapping[str, float]]) -> float:
    """One number per task: the mean of its metrics (MRPC: F1 and accuracy).

    ``metrics`` is what ``compute_metrics`` returned, or, for a task with several dev splits,
    a mapping from split name to that: MNLI's score is then the mean over
    ``validation_matched`` and ``validation_mismatched``, as in the GLUE score.
    """
    task = get_task(task)
    if metrics and all(isinstance(value, Mapping) for value in metrics.values()):
        unknown = set(metrics) - set(task.dev_splits) - {HELD_OUT}
        if unknown:
            raise ValueError(
                f"{task.name} has no split {', '.join(sorted(unknown))}; its dev splits: {', '.join(task.dev_splits)}"
            )
        return float(numpy.mean([task_score(task, per_split) for per_split in metrics.values()]))
    missing = [name for name in task.metric_names if name not in metrics]
    if missing:
        raise ValueError(f"{task.name} score needs {', '.join(task.metric_names)}; missing {', '.join(missing)}")
    return float(numpy.mean([metrics[name] for name in task.metric_names]))


def glue_average(per_task: Mapping[str, float]) -> float:
    """The GLUE score: the mean of the task scores (from ``task_score``), each task counted once."""
    names = [get_task(name).name for name in per_task]
    if not names:
        raise ValueError("glue_average needs at least one task score")
    if len(set(names)) != len(names):
        raise ValueError(f"a task is given twice: {', '.join(per_task)}")
    return float(numpy.mean(list(per_task.values())))
