"""Which parameters are adapters, LayerNorms, the task head or the rest, and how many train."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

SLOT_ATTR = "adaptkit"
ADAPTER_MARK = f".{SLOT_ATTR}.adapters."
TASK_ATTR = "adaptkit_task"
TASK_MARK = f".{TASK_ATTR}.values."
CATEGORIES = ("adapters", "layernorms", "head", "vocab_head", "other")


def is_norm(module: nn.Module) -> bool:
    """LayerNorm and RMSNorm, including model-specific classes such as T5LayerNorm."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm"))


def adapter_parameter_names(model: nn.Module, adapter: str | None = None) -> list[str]:
    """Parameters of all adapters, or of the one named ``adapter``."""
    mark = ADAPTER_MARK + (f"{adapter}." if adapter else "")
    return [n for n, _ in model.named_parameters() if has_mark(n, mark)]


def task_copy_parameter_names(model: nn.Module, adapter: str | None = None) -> list[str]:
    """Adapters' own copies of LayerNorm/head parameters, of all adapters or of one."""
    mark = TASK_MARK + (f"{adapter}." if adapter else "")
    return [n for n, _ in model.named_parameters() if mark in n]


def base_name(name: str) -> str:
    """The base parameter an adapter's copy stands for (the name itself for any other)."""
    if TASK_MARK not in name:
        return name
    module, _, rest = name.partition(TASK_MARK)
    return f"{module}.{rest.split('.', 1)[1]}"


def has_mark(name: str, mark: str) -> bool:
    """Whether a parameter name holds ``mark``; a slot on the model itself (an adapter's own
    head) has its names start with the mark less its leading dot."""
    return mark in "." + name


def is_adaptkit_name(name: str) -> bool:
    return has_mark(name, ADAPTER_MARK) or TASK_MARK in name


def layernorm_parameter_names(model: nn.Module) -> list[str]:
    """Parameters of every norm layer outside the task head."""
    head = set(head_parameter_names(model))
    return [f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, module in model.named_modules() if is_norm(module)
            for p_name, _ in module.named_parameters(recurse=False)
            if (f"{mod_name}.{p_name}" if mod_name else p_name) not in head]


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameters outside ``model.base_model`` (a classifier, a score layer), without the
    vocabulary projection: a language model's output layer is not a task head.

    Weights tied to the backbone (a language-model head tied to the embeddings) are reported
    once under their backbone name, so they never count as head.
    """
    vocab = set(vocab_head_parameter_names(model))
    return [n for n, _ in _outside_base_model(model) if n not in vocab]


def vocab_head_parameter_names(model: nn.Module) -> list[str]:
    """The untied vocabulary projection (``lm_head`` of ``*ForCausalLM``, ``*ForMaskedLM``,
    ``*ForConditionalGeneration``): tens of millions of parameters that adapters leave frozen
    unless ``train_vocab_head`` asks for them. A tied one is backbone (the embeddings)."""
    try:
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    except (NotImplementedError, AttributeError):
        output = None
    if not isinstance(output, nn.Module):
        return []
    own = {id(p) for p in output.parameters(recurse=False)}
    return [n for n, p in _outside_base_model(model) if id(p) in own]


def _outside_base_model(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    prefix = next((n for n, m in model.named_modules() if m is base), "")
    return [(n, p) for n, p in model.named_parameters()
            if not n.startswith(prefix + ".") and not is_adaptkit_name(n)]


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
    categories = {n: "adapters" for n in adapter_parameter_names(model)}
    categories.update((n, "vocab_head") for n in vocab_head_parameter_names(model))
    categories.update((n, "head") for n in head_parameter_names(model) if n not in categories)
    categories.update((n, "layernorms") for n in layernorm_parameter_names(model))
    report = ParameterReport()
    for name, param in model.named_parameters():
        category = categories.get(name) or categories.get(base_name(name), "other")
        report.total[category] += param.numel()
        if param.requires_grad:
            report.trainable[category] += param.numel()
    return report
