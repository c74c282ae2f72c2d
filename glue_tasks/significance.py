"""Is one method better than another on the same dev examples, beyond chance? A paired bootstrap.

The dev examples are resampled with replacement (10,000 times by default); on each resample both
methods' task score (the task's own metric: accuracy, F1 and accuracy, Matthews correlation,
macro-F1, or Pearson and Spearman) is computed for every seed and averaged over the seeds, as
in the report's table, and the difference is kept. Its 2.5th and 97.5th percentiles are the 95%
interval, and a difference is "beyond the spread" when that interval excludes 0. The interval
covers the choice of dev examples, not the choice of seeds: with few seeds, read it beside the
seeds' standard deviation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy
from scipy.stats import rankdata

RESAMPLES = 10_000
ALPHA = 0.05
_CHUNK = 250  # resamples scored at a time, so memory stays small on large dev sets


@dataclass(frozen=True)
class PairedDifference:
    """``a`` minus ``b`` on the same examples, with its bootstrap interval."""

    difference: float
    low: float
    high: float
    p_value: float  # two-sided, (k + 1) / (resamples + 1): never 0
    metric: str
    examples: int
    resamples: int

    @property
    def beyond_spread(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "beyond_spread": self.beyond_spread}


def paired_bootstrap(predictions_a: numpy.ndarray, predictions_b: numpy.ndarray, labels: numpy.ndarray,
                     metric: str, resamples: int = RESAMPLES, alpha: float = ALPHA, seed: int = 0) -> PairedDifference:
    """``predictions_*``: one row per seed, one column per dev example (class ids, or scores);
    ``metric``: a kind of ``tasks.METRICS``."""
    predictions_a, predictions_b = numpy.atleast_2d(predictions_a), numpy.atleast_2d(predictions_b)
    labels = numpy.asarray(labels)
    if predictions_a.shape[1] != labels.shape[0] or predictions_b.shape[1] != labels.shape[0]:
        raise ValueError(f"predictions cover {predictions_a.shape[1]} and {predictions_b.shape[1]} examples, the "
                         f"labels {labels.shape[0]}: a paired test needs both methods on the same examples")
    score = _SCORES[metric]

    def difference(rows: numpy.ndarray) -> numpy.ndarray:
        return _over_seeds(score, predictions_a, labels, rows) - _over_seeds(score, predictions_b, labels, rows)

    n = labels.shape[0]
    observed = float(difference(numpy.arange(n)[None, :])[0])
    rng = numpy.random.default_rng(seed)
    samples = numpy.concatenate([difference(rng.integers(0, n, size=(min(_CHUNK, resamples - start), n)))
                                 for start in range(0, resamples, _CHUNK)])
    low, high = numpy.quantile(samples, [alpha / 2, 1 - alpha / 2])
    other_side = (samples <= 0).sum() if observed > 0 else (samples >= 0).sum()
    p_value = min(1.0, 2 * (other_side + 1) / (resamples + 1))
    return PairedDifference(observed, float(low), float(high), p_value, metric, n, resamples)


def _over_seeds(score, predictions: numpy.ndarray, labels: numpy.ndarray, rows: numpy.ndarray) -> numpy.ndarray:
    """The score of each resample (a row of example indices), averaged over the seeds."""
    return numpy.mean([score(seed_predictions[rows], labels[rows]) for seed_predictions in predictions], axis=0)


def _counts(predicted: numpy.ndarray, labels: numpy.ndarray):
    """Per resample and class: true positives, predicted count, true count (resamples × classes)."""
    classes = numpy.union1d(numpy.unique(predicted), numpy.unique(labels))
    hits = numpy.stack([((predicted == k) & (labels == k)).sum(-1) for k in classes], axis=-1)
    said = numpy.stack([(predicted == k).sum(-1) for k in classes], axis=-1)
    true = numpy.stack([(labels == k).sum(-1) for k in classes], axis=-1)
    return classes, hits, said, true


def _accuracy(predicted, labels):
    return (predicted == labels).mean(-1)


def _f1_of_class_1(predicted, labels):
    hits, said, true = ((predicted == 1) & (labels == 1)).sum(-1), (predicted == 1).sum(-1), (labels == 1).sum(-1)
    return numpy.where(said + true > 0, 2 * hits / numpy.maximum(said + true, 1), 0.0)


def _macro_f1(predicted, labels):
    """sklearn's macro-F1: the mean over the classes that occur in the labels or the predictions."""
    _, hits, said, true = _counts(predicted, labels)
    present = said + true > 0
    f1 = numpy.where(present, 2 * hits / numpy.maximum(said + true, 1), 0.0)
    return f1.sum(-1) / present.sum(-1)


def _matthews(predicted, labels):
    """Multi-class Matthews correlation from the confusion counts (Gorodkin 2004), 0 when undefined."""
    _, hits, said, true = _counts(predicted, labels)
    n = predicted.shape[-1]
    numerator = hits.sum(-1) * n - (said * true).sum(-1)
    denominator = numpy.sqrt((n * n - (said * said).sum(-1)).astype(float) * (n * n - (true * true).sum(-1)))
    return numpy.where(denominator > 0, numerator / numpy.maximum(denominator, 1e-300), 0.0)


def _correlation(predicted, labels):
    """Mean of Pearson and Spearman correlation per resample (0 where one side is constant)."""
    return (_pearson(predicted, labels) + _pearson(rankdata(predicted, axis=-1), rankdata(labels, axis=-1))) / 2


def _pearson(x: numpy.ndarray, y: numpy.ndarray) -> numpy.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = numpy.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    return numpy.where(denominator > 0, (x * y).sum(axis=-1) / numpy.maximum(denominator, 1e-300), 0.0)


_SCORES = {
    "accuracy": _accuracy,
    "f1_accuracy": lambda p, y: (_f1_of_class_1(p, y) + _accuracy(p, y)) / 2,
    "macro_f1": _macro_f1,
    "matthews": _matthews,
    "correlation": _correlation,
}
