"""Training losses: cross-entropy, the cosine loss and cosine + λ·cross-entropy (Barz & Denzler 2020).

The cosine loss treats the model's output f(x) (one value per class) as an embedding and
pulls its direction onto the one-hot class vector: ``1 - <onehot(y), f(x)/||f(x)||>``. The
prediction is still the argmax. The combined loss adds ``λ`` times the cross-entropy of an
extra linear layer on the normalised embedding; that layer only shapes training and is not
part of the saved model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .choices import LOSSES


class TaskLoss(nn.Module):
    """Maps model outputs and labels to a scalar loss; MSE for regression tasks."""

    def __init__(self, kind: str, num_labels: int, regression: bool, ce_weight: float = 0.1,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if regression and kind != "ce":
            raise ValueError(f"the {kind} loss needs class labels; STS-B is a regression task "
                             "and trains with mean squared error: drop --loss or use --loss ce")
        self.kind, self.regression, self.ce_weight = kind, regression, ce_weight
        self.ce_layer = nn.Linear(num_labels, num_labels) if kind == "cosine+ce" else None
        # A buffer, not a parameter: recomputed from the training rows, never trained or saved.
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.tensor(list(class_weights), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        if self.kind == "ce":
            return F.cross_entropy(logits, labels, weight=self.class_weights)
        embedding = F.normalize(logits, dim=-1)
        loss = 1.0 - embedding.gather(1, labels.unsqueeze(1)).squeeze(1).mean()
        if self.ce_layer is not None:
            loss = loss + self.ce_weight * F.cross_entropy(self.ce_layer(embedding), labels)
        return loss


def check_class_weights(kind: str, loss: str, regression: bool) -> None:
    """--class-weights: only "balanced", and only where a cross-entropy weighs classes."""
    if kind != "balanced":
        raise ValueError(f"--class-weights {kind}: the only choice is balanced")
    if regression or loss != "ce":
        raise ValueError("--class-weights balanced weighs the classes of a cross-entropy: it needs a classification "
                         "task and --loss ce")


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """rows / (classes × rows of the class), as scikit-learn's "balanced"; a class without rows weighs 0."""
    total, classes = sum(counts), len(counts)
    return [total / (classes * count) if count else 0.0 for count in counts]
