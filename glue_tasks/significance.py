"""Is one method better than another on the same dev examples, beyond chance? A paired bootstrap.

Both methods' predictions on the same examples are averaged over their seeds, the examples are
resampled with replacement (10,000 times by default) and the score difference is recomputed
each time: the 2.5th and 97.5th percentiles are the 95% interval. Classification compares
per-example correctness (an accuracy difference, whatever the task's official metric);
regression compares the task score (mean of Pearson and Spearman) of the seed-averaged
predictions. One difference is "beyond the spread" when its interval excludes 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy
from scipy.stats import rankdata

RESAMPLES = 10_000
ALPHA = 0.05
_CHUNK = 500  # resamples scored at a time, so memory stays small on large dev sets


@dataclass(frozen=True)
class PairedDifference:
    """``a`` minus ``b`` on the same examples, with its bootstrap interval."""

    difference: float
    low: float
    high: float
    p_value: float  # two-sided: how often the resampled difference falls on the other side of 0
    statistic: str
    examples: int
    resamples: int

    @property
    def beyond_spread(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "beyond_spread": self.beyond_spread}


def paired_bootstrap(predictions_a: numpy.ndarray, predictions_b: numpy.ndarray, labels: numpy.ndarray,
                     regression: bool, resamples: int = RESAMPLES, alpha: float = ALPHA,
                     seed: int = 0) -> PairedDifference:
    """``predictions_*``: one row per seed, one column per dev example (class ids, or scores)."""
    predictions_a, predictions_b = numpy.atleast_2d(predictions_a), numpy.atleast_2d(predictions_b)
    labels = numpy.asarray(labels)
    if predictions_a.shape[1] != labels.shape[0] or predictions_b.shape[1] != labels.shape[0]:
        raise ValueError(f"predictions cover {predictions_a.shape[1]} and {predictions_b.shape[1]} examples, the "
                         f"labels {labels.shape[0]}: a paired test needs both methods on the same examples")
    if regression:
        a, b = predictions_a.mean(axis=0), predictions_b.mean(axis=0)
        statistic = "score difference (mean of Pearson and Spearman of the seed-averaged predictions)"

        def score(rows: numpy.ndarray) -> numpy.ndarray:
            return _correlation_score(a[rows], labels[rows]) - _correlation_score(b[rows], labels[rows])
    else:
        per_example = (predictions_a == labels).mean(axis=0) - (predictions_b == labels).mean(axis=0)
        statistic = "accuracy difference (per-example correctness averaged over seeds)"

        def score(rows: numpy.ndarray) -> numpy.ndarray:
            return per_example[rows].mean(axis=-1)

    n = labels.shape[0]
    observed = float(score(numpy.arange(n)[None, :])[0])
    rng = numpy.random.default_rng(seed)
    samples = numpy.concatenate([score(rng.integers(0, n, size=(min(_CHUNK, resamples - start), n)))
                                 for start in range(0, resamples, _CHUNK)])
    low, high = numpy.quantile(samples, [alpha / 2, 1 - alpha / 2])
    other_side = (samples <= 0).mean() if observed > 0 else (samples >= 0).mean()
    return PairedDifference(observed, float(low), float(high), float(min(1.0, 2 * other_side)), statistic, n,
                            resamples)


def _correlation_score(predictions: numpy.ndarray, labels: numpy.ndarray) -> numpy.ndarray:
    """Row-wise mean of Pearson and Spearman correlation (0 where a row is constant)."""
    return (_pearson(predictions, labels) + _pearson(rankdata(predictions, axis=-1), rankdata(labels, axis=-1))) / 2


def _pearson(x: numpy.ndarray, y: numpy.ndarray) -> numpy.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = numpy.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(denominator > 0, (x * y).sum(axis=-1) / denominator, 0.0)
