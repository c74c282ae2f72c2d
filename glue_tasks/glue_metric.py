"""GLUE metrics as an ``evaluate`` module; the config name is the metric kind ("accuracy",
"f1_accuracy", "macro_f1", "matthews", "correlation"), as in ``tasks.METRICS``.

Loaded by path (``evaluate.load(".../glue_metric.py", config_name=...)``) so that scoring
needs no network. ``evaluate`` copies this file into its module cache and imports it there,
so it cannot import the rest of ``glue_tasks``: the metric lists below must stay in step
with ``tasks.METRICS`` (a test checks that). One import per line, as ``evaluate``'s
dependency scan expects.
"""

import math
import warnings
from collections.abc import Sequence

import datasets
import evaluate
from scipy.stats import pearsonr
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef

_KINDS = ("accuracy", "f1_accuracy", "macro_f1", "matthews", "correlation")


def _defined(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def _score(kind: str, predictions: Sequence, references: Sequence) -> dict:
    if kind == "matthews":
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    if kind == "correlation":
        # A constant prediction (an untrained regressor) has no correlation; count it as 0, not NaN,
        # so that scores stay comparable and JSON stays valid.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pearson, spearman = pearsonr(predictions, references)[0], spearmanr(predictions, references)[0]
        return {"pearson": _defined(pearson), "spearmanr": _defined(spearman)}
    if kind == "macro_f1":
        return {"macro_f1": float(f1_score(references, predictions, average="macro"))}
    accuracy = {"accuracy": float(accuracy_score(references, predictions))}
    if kind == "f1_accuracy":
        return {"f1": float(f1_score(references, predictions)), **accuracy}
    return accuracy


class GlueMetric(evaluate.Metric):
    """Matthews correlation (CoLA), F1 and accuracy (MRPC, QQP), Pearson and Spearman (STS-B), accuracy
    (the other GLUE tasks), macro-averaged F1 (own data with unbalanced classes)."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _KINDS:
            raise KeyError(f"unknown metric kind {self.config_name!r}; valid config names: {', '.join(_KINDS)}")
        value = datasets.Value("float64" if self.config_name == "correlation" else "int64")
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Wang et al. 2019, GLUE: A Multi-Task Benchmark and Analysis Platform for NLU (ICLR)",
            inputs_description="predictions and references: class ids, or scores for correlation",
            # No format="numpy": it would hand scores over as float32 and cost precision.
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions: Sequence, references: Sequence) -> dict:
        return _score(self.config_name, predictions, references)
