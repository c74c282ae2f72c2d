"""Which parameters are adapters, LayerNorms, the task head or the rest, by name.

Used where a model is looked at as it stands (before its first adapter, or a checkpoint's names);
an adapter's own parameters are found once, when it is added (``state.AdapterEntry``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SLOT_ATTR = "adaptkit"
ADAPTER_MARK = f".{SLOT_ATTR}.adapters."
FUSION_MARK = f".{SLOT_ATTR}.fusions."
TASK_ATTR = "adaptkit_task"
TASK_MARK = f".{TASK_ATTR}.values."


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
    return has_mark(name, ADAPTER_MARK) or has_mark(name, TASK_MARK) or has_mark(name, FUSION_MARK)


def is_adaptkit_module(name: str) -> bool:
    """An adapter's module, or an adapter's copy of a norm or head (the model's own otherwise)."""
    return is_adaptkit_name(name + ".")


def layernorm_parameter_names(model: nn.Module) -> list[str]:
    """Parameters of every norm layer outside the task head."""
    return _norm_names(model, set(head_parameter_names(model)))


def _norm_names(model: nn.Module, head: set[str]) -> list[str]:
    return [f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, module in model.named_modules() if is_norm(module) and not is_adaptkit_module(mod_name)
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
class BaseParameters:
    """The base model's own parameters adaptkit treats apart, by name, found once per model."""

    norms: list[str]
    head: list[str]
    vocab_head: list[str]

    def __post_init__(self) -> None:
        # a lookup per parameter of the model when counting: a dict, not three list scans
        self._categories = {**dict.fromkeys(self.norms, "layernorms"), **dict.fromkeys(self.head, "head"),
                            **dict.fromkeys(self.vocab_head, "vocab_head")}

    def category(self, name: str) -> str:
        return self._categories.get(name, "other")


def base_parameters(model: nn.Module) -> BaseParameters:
    head, vocab = head_parameter_names(model), vocab_head_parameter_names(model)
    return BaseParameters(norms=_norm_names(model, set(head)), head=head, vocab_head=vocab)


#: What PEFT puts in a wrapped model's parameter names: its wrapper's prefix, the ``base_layer`` a
#: LoRA layer holds the original in, and ``modules_to_save``'s ``original_module``.
PEFT_PREFIX = "base_model.model."
_PEFT_SEGMENTS = (".base_layer.", ".original_module.")


def own_name(name: str) -> str:
    """A parameter's name in the base model itself, without what PEFT's wrappers add."""
    name = name.removeprefix(PEFT_PREFIX)
    for segment in _PEFT_SEGMENTS:
        name = name.replace(segment, ".")
    return name


def peft_parameter_ids(model: nn.Module) -> set[int]:
    """PEFT's own tensors (LoRA matrices, ``modules_to_save`` copies): not part of the base."""
    ids = set()
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Module) and hasattr(module, "adapter_layer_names"):
            kept = {id(p) for p in base.parameters()}
            ids.update(id(p) for p in module.parameters() if id(p) not in kept)
        copies = getattr(module, "modules_to_save", None)
        if isinstance(copies, nn.Module) and hasattr(module, "original_module"):
            ids.update(id(p) for p in copies.parameters())
    return ids

