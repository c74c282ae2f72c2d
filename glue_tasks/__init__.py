"""GLUE tasks: task definitions, split loading and metrics."""

from .data import GlueDataError, LoadReport, available_splits, glue_features, load_split, load_split_with_report
from .metrics import compute_metrics, glue_average, task_score
from .tasks import TASKS, GlueTask, get_task

__all__ = [
    "TASKS",
    "GlueDataError",
    "GlueTask",
    "LoadReport",
    "available_splits",
    "compute_metrics",
    "get_task",
    "glue_average",
    "glue_features",
    "load_split",
    "load_split_with_report",
    "task_score",
]
