"""GLUE metric as an ``evaluate`` module; the config name is the task name ("rte", "stsb", ...).

Loaded by path (``evaluate.load(".../glue_metric.py", config_name=...)``) so that scoring
needs no network. ``evaluate`` copies this file into its module cache and imports it there,
so it cannot import the rest of ``glue_tasks``: the metric list below must stay in step
with ``GlueTask.metric_names`` (a test checks that). One import per line, as ``evaluate``'s
dependency scan expects.
"""

from collections.abc import Sequence

import datasets
import evaluate
from scipy.stats import pearsonr
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef

_KIND = {
    "cola": "matthews",
    "sst2": "accuracy",
    "mrpc": "f1_accuracy",
    "stsb": "correlation",
    "qqp": "f1_accuracy",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}


def _score(kind: str, predictions: Sequence, references: Sequence) -> dict:
    if kind == "matthews":
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    if kind == "correlation":
        return {
            "pearson": float(pearsonr(predictions, references)[0]),
            "spearmanr": float(spearmanr(predictions, references)[0]),
        }
    accuracy = {"accuracy": float(accuracy_score(references, predictions))}
    if kind == "f1_accuracy":
        return {"f1": float(f1_score(references, predictions)), **accuracy}
    return accuracy


class GlueMetric(evaluate.Metric):
    """Matthews correlation (CoLA), F1 and accuracy (MRPC, QQP), Pearson and Spearman (STS-B), else accuracy."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _KIND:
            raise KeyError(f"unknown GLUE task {self.config_name!r}; valid config names: {', '.join(_KIND)}")
        value = datasets.Value("float64" if self.config_name == "stsb" else "int64")
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Wang et al. 2019, GLUE: A Multi-Task Benchmark and Analysis Platform for NLU (ICLR)",
            inputs_description="predictions and references: class ids, or similarity scores for stsb",
            # No format="numpy": it would hand scores over as float32 and cost precision.
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions: Sequence, references: Sequence) -> dict:
        return _score(_KIND[self.config_name], predictions, references)
