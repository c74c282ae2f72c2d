"""How many parameters a model has and trains, per category."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .params import base_name, base_parameters
from .state import get_state

CATEGORIES = ("adapters", "layernorms", "head", "vocab_head", "other")


@dataclass
class ParameterReport:
    """Total and trainable parameter counts per category."""

    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    trainable: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    @property
    def total_count(self) -> int:
        return sum(self.total.values())

    @property
    def trainable_count(self) -> int:
        return sum(self.trainable.values())

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_count / max(1, self.total_count)

    def to_dict(self) -> dict:
        return {"total": self.total_count, "trainable": self.trainable_count,
                "trainable_percent": round(self.trainable_percent, 4),
                "by_category": {c: {"total": self.total[c], "trainable": self.trainable[c]}
                                for c in CATEGORIES}}

    def __str__(self) -> str:
        rows = [f"{'category':<12}{'trainable':>14}{'total':>14}{'% of model':>12}"]
        for cat in CATEGORIES:
            rows.append(f"{cat:<12}{self.trainable[cat]:>14,}{self.total[cat]:>14,}"
                        f"{100.0 * self.trainable[cat] / max(1, self.total_count):>11.3f}%")
        rows.append(f"{'all':<12}{self.trainable_count:>14,}{self.total_count:>14,}"
                    f"{self.trainable_percent:>11.3f}%")
        return "\n".join(rows)


def count_parameters(model: nn.Module) -> ParameterReport:
    """Counts per category, each tensor once (tied weights are not counted twice); an adapter's
    own LayerNorms and head count under LayerNorms and head, beside the base's frozen ones."""
    state = get_state(model)
    by_id: dict[int, str] = {}
    if state is not None:  # the adapters' own map, and the base's categories found at the first add
        base = state.base
        for entry in [*state.adapters.values(), *state.fusions.values()]:  # fusion layers count as adapters
            by_id.update((id(p), "adapters") for m in entry.site_modules.values() for p in m.parameters())
            by_id.update((id(p), base.category(n)) for n, p in entry.task_values().items())
    else:
        base = base_parameters(model)
    report = ParameterReport()
    for name, param in model.named_parameters():
        category = by_id.get(id(param)) or base.category(base_name(name))
        report.total[category] += param.numel()
        if param.requires_grad:
            report.trainable[category] += param.numel()
    return report
