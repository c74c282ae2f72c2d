"""GLUE metrics: the evaluate module against sklearn/scipy, offline loading, and score averaging."""

from __future__ import annotations

import socket
from pathlib import Path

import evaluate
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import glue_tasks
from glue_tasks import TASKS
from glue_tasks.metrics import compute_metrics, glue_average, task_score
from glue_tasks.tasks import METRICS, own_task

METRIC_SCRIPT = Path(glue_tasks.__file__).with_name("glue_metric.py")
REFERENCE = {
    "matthews_correlation": matthews_corrcoef,
    "f1": f1_score,
    "accuracy": accuracy_score,
    "pearson": lambda y, p: pearsonr(p, y)[0],
    "spearmanr": lambda y, p: spearmanr(p, y)[0],
}


def _random_labels(task, rng, n=300):
    """References and predictions that agree about 70% of the time, so scores are not trivial."""
    if task.is_regression:
        references = rng.uniform(0, 5, n)
        return references, np.clip(references + rng.normal(0, 1.5, n), 0, 5)
    references = rng.integers(0, task.num_labels, n)
    noise = rng.integers(0, task.num_labels, n)
    return references, np.where(rng.random(n) < 0.6, references, noise)


@pytest.mark.parametrize("name", list(TASKS))
def test_metrics_match_sklearn_and_scipy(name):
    task = TASKS[name]
    references, predictions = _random_labels(task, np.random.default_rng(0))
    scores = compute_metrics(task, predictions.tolist(), references.tolist())
    assert list(scores) == list(task.metric_names)
    expected = {metric: REFERENCE[metric](references, predictions) for metric in task.metric_names}
    assert scores == pytest.approx(expected, abs=1e-9)
    assert all(isinstance(value, float) for value in scores.values())


def test_metric_module_kinds_match_the_task_table():
    import importlib.util
    spec = importlib.util.spec_from_file_location("glue_metric_copy", METRIC_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module._KINDS) == set(METRICS)
    for kind, names in METRICS.items():
        assert tuple(module._score(kind, [0, 1, 1, 0], [0, 1, 0, 0])) == names


def test_macro_f1_for_own_data_with_unbalanced_classes():
    task = own_task("reviews", ("text",), ("bad", "good", "ok"), "macro_f1")
    references, predictions = [0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 2]
    assert compute_metrics(task, predictions, references) == pytest.approx(
        {"macro_f1": f1_score(references, predictions, average="macro")})


def test_numpy_input_and_perfect_predictions():
    labels = np.array([0, 1, 1, 0, 1])
    assert compute_metrics("mrpc", labels, labels) == {"f1": 1.0, "accuracy": 1.0}
    assert compute_metrics("CoLA", labels, labels) == {"matthews_correlation": 1.0}


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        (np.zeros((3, 2)), [0, 1, 0], "pass class ids, not logits"),
        ([0, 1], [0, 1, 0], "same length"),
        ([0, 1], [0, -1], "this split has no labels"),
    ],
)
def test_bad_metric_input(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics("rte", predictions, references)


def test_metric_module_loads_by_path_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    metric = evaluate.load(str(METRIC_SCRIPT), config_name="correlation", keep_in_memory=True)
    scores = metric.compute(predictions=[1.0, 2.0, 3.5], references=[1.5, 2.0, 3.0])
    assert set(scores) == {"pearson", "spearmanr"}
    with pytest.raises(KeyError, match="unknown metric kind 'squad'"):
        evaluate.load(str(METRIC_SCRIPT), config_name="squad", keep_in_memory=True)


def test_task_score_means_metrics_and_mnli_splits():
    assert task_score("mrpc", {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert task_score("rte", {"accuracy": 0.7}) == pytest.approx(0.7)
    per_split = {"validation_matched": {"accuracy": 0.84}, "validation_mismatched": {"accuracy": 0.83}}
    assert task_score("mnli", per_split) == pytest.approx(0.835)
    with pytest.raises(ValueError, match="needs pearson, spearmanr; missing spearmanr"):
        task_score("stsb", {"pearson": 0.9})
    with pytest.raises(ValueError, match="mnli has no split validation"):
        task_score("mnli", {"validation": {"accuracy": 0.8}})


def test_glue_average_reproduces_bert_large_leaderboard_score():
    """BERT-large on the GLUE test server: 80.5, with MNLI m/mm and two-metric tasks averaged first."""
    per_task = {
        "cola": task_score("cola", {"matthews_correlation": 0.605}),
        "sst2": 0.949,
        "mrpc": task_score("mrpc", {"f1": 0.893, "accuracy": 0.854}),
        "stsb": task_score("stsb", {"pearson": 0.876, "spearmanr": 0.865}),
        "qqp": task_score("qqp", {"f1": 0.721, "accuracy": 0.893}),
        "mnli": task_score(
            "mnli", {"validation_matched": {"accuracy": 0.867}, "validation_mismatched": {"accuracy": 0.859}}
        ),
        "qnli": 0.927,
        "rte": 0.701,
        "wnli": 0.651,
    }
    # (60.5 + 94.9 + 87.35 + 87.05 + 80.7 + 86.3 + 92.7 + 70.1 + 65.1) / 9 = 724.7 / 9
    assert glue_average(per_task) == pytest.approx(7.247 / 9)
    assert round(100 * glue_average(per_task), 1) == 80.5


def test_glue_average_rejects_duplicates_and_empty():
    with pytest.raises(ValueError, match="given twice"):
        glue_average({"sst2": 0.9, "SST-2": 0.9})
    with pytest.raises(ValueError, match="at least one"):
        glue_average({})
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_average({"squad": 0.9})
