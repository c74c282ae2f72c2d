"""GLUE tasks: task definitions, split loading and metrics.

The names below load their modules on first use, so ``adaptkit-glue --help`` does not import
datasets or torch.
"""

import importlib

_EXPORTS = {
    "TASKS": "tasks", "Task": "tasks", "get_task": "tasks", "own_task": "tasks",
    "DataError": "records", "LoadReport": "data", "available_splits": "data", "task_features": "data",
    "load_split": "data", "load_split_with_report": "data",
    "compute_metrics": "metrics", "glue_average": "metrics", "task_score": "metrics",
    "load_trained": "inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
