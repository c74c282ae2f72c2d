"""Training losses: cross-entropy, the cosine loss and cosine + λ·cross-entropy (Barz & Denzler 2020).

The cosine loss treats the model's output f(x) (one value per class) as an embedding and
pulls its direction onto the one-hot class vector: ``1 - <onehot(y), f(x)/||f(x)||>``. The
prediction is still the argmax. The combined loss adds ``λ`` times the cross-entropy of an
extra linear layer on the normalised embedding; that layer only shapes training and is not
part of the saved model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .choices import LOSSES


class TaskLoss(nn.Module):
    """Maps model outputs and labels to a scalar loss; MSE for regression tasks."""

    def __init__(self, kind: str, num_labels: int, regression: bool, ce_weight: float = 0.1) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if regression and kind != "ce":
            raise ValueError(f"the {kind} loss needs class labels; STS-B is a regression task "
                             "and trains with mean squared error: drop --loss or use --loss ce")
        self.kind, self.regression, self.ce_weight = kind, regression, ce_weight
        self.ce_layer = nn.Linear(num_labels, num_labels) if kind == "cosine+ce" else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        if self.kind == "ce":
            return F.cross_entropy(logits, labels)
        embedding = F.normalize(logits, dim=-1)
        loss = 1.0 - embedding.gather(1, labels.unsqueeze(1)).squeeze(1).mean()
        if self.ce_layer is not None:
            loss = loss + self.ce_weight * F.cross_entropy(self.ce_layer(embedding), labels)
        return loss
