"""Where adapters go: a registry per model type, a structural fallback, or explicit names.

Every resolution returns a list of ``Site`` (module name, kind, width). Nothing is adapted
silently by halves: each block must get every requested kind of adapter, and every explicit
name must match, or a ``TargetModuleError`` lists the candidate module names.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import AdapterConfig
from .errors import TargetModuleError
from .params import is_adaptkit_module

ATTENTION, FFN, CUSTOM = "attention", "ffn", "custom"
#: AdapterHub's SeqBn sites: inside a post-LN block's feed-forward LayerNorm (the adapter sees
#: LN(h + x) and the LayerNorm runs again on h + x + adapter), or on a pre-LN block's output
#: (the adapter sees and adds to h + r).
SEQ_POST_LN, SEQ_PRE_LN = "seq-post-ln", "seq-pre-ln"
#: An adapter's own classification head, run on the model's output (``AdapterConfig.head``).
HEAD = "head"

_BERT_LIKE = {ATTENTION: r"\.attention\.output\.dense$", FFN: r"\.layer\.\d+\.output\.dense$"}
_LLAMA_LIKE = {ATTENTION: r"\.self_attn\.o_proj$", FFN: r"\.mlp\.down_proj$"}

#: model_type -> regular expression per adapter kind, searched in full module names.
REGISTRY: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "deberta-v2": _BERT_LIKE,
    "distilbert": {ATTENTION: r"\.attention\.out_lin$", FFN: r"\.ffn\.lin2$"},
    # ALBERT shares one layer across depth: one adapter per shared layer, applied at every depth.
    "albert": {ATTENTION: r"\.attention\.dense$", FFN: r"\.ffn_output$"},
    "gpt2": {ATTENTION: r"\.attn\.c_proj$", FFN: r"\.mlp\.c_proj$"},
    "gpt_neox": {ATTENTION: r"\.attention\.dense$", FFN: r"\.mlp\.dense_4h_to_h$"},
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "phi": {ATTENTION: r"\.self_attn\.dense$", FFN: r"\.mlp\.fc2$"},
    "opt": {ATTENTION: r"\.self_attn\.out_proj$", FFN: r"\.layers\.\d+\.fc2$"},
    "t5": {ATTENTION: r"\.(SelfAttention|EncDecAttention)\.o$", FFN: r"\.DenseReluDense\.wo$"},
    "bart": {ATTENTION: r"\.(self_attn|encoder_attn)\.out_proj$", FFN: r"\.layers\.\d+\.fc2$"},
    "vit": {ATTENTION: r"\.attention\.o_proj$", FFN: r"\.mlp\.fc2$"},
}

#: model_type -> (regular expression of the module, site kind) for placement="pfeiffer": it
#: needs the block's residual input and LayerNorm, so it is defined per architecture only where
#: checked against AdapterHub 1.3.0 (benchmarks/adapterhub_compat.py).
PFEIFFER_REGISTRY: dict[str, tuple[str, str]] = {
    "bert": (r"\.layer\.\d+\.output\.LayerNorm$", SEQ_POST_LN),
    "roberta": (r"\.layer\.\d+\.output\.LayerNorm$", SEQ_POST_LN),
    "gpt2": (r"(^|\.)h\.\d+$", SEQ_PRE_LN),
}

#: names of attention output projections across architectures (o_proj, out_proj, dense, output, c_proj, wo, o)
_OUTPUT_NAME = re.compile(r"^(o|wo|out|output|dense|c_proj|o_proj|out_proj|out_lin|output_proj)$", re.IGNORECASE)

PLACEMENT_KINDS = {"houlsby": (ATTENTION, FFN), "houlsby-ffn": (FFN,)}


@dataclass(frozen=True)
class Site:
    """One projection that gets an adapter on its output."""

    name: str
    kind: str
    width: int


def output_width(module: nn.Module) -> int | None:
    """The output width of a Linear-like projection, or None for any other module."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return module.nf
    return None


def input_width(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.weight.shape[0]


def resolve_sites(model: nn.Module, config: AdapterConfig) -> list[Site]:
    """The projections to adapt, by explicit names, the registry, or the structural fallback."""
    head = [Site("", HEAD, _hidden_size(model))] if config.head is not None else []
    return _body_sites(model, config) + head


def _body_sites(model: nn.Module, config: AdapterConfig) -> list[Site]:
    if config.target_modules is not None:
        return _explicit_sites(model, config.target_modules)
    blocks = find_blocks(model)
    if not blocks:
        raise TargetModuleError(
            f"no transformer blocks found in {type(model).__name__}: adaptkit looks for a "
            "ModuleList of identical layers. Name the projections to adapt with "
            "AdapterConfig(target_modules=[...]); candidates: " + _candidates(model))
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if config.placement == "pfeiffer":
        return _pfeiffer_sites(model, blocks, model_type, config)
    kinds = PLACEMENT_KINDS[config.placement]
    if model_type in REGISTRY:
        sites = _registry_sites(model, REGISTRY[model_type], kinds)
    else:
        sites = _structural_sites(model, blocks, _hidden_size(model), kinds)
    _check_every_block_adapted(model, blocks, sites, kinds, model_type)
    return _in_chosen_blocks(blocks, sites, config)


def _in_chosen_blocks(blocks: list[str], sites: list[Site], config: AdapterConfig) -> list[Site]:
    """The sites in the blocks ``config.layers`` / ``leave_out`` choose (all without a choice)."""
    if config.layers is None and config.leave_out is None:
        return sites
    sizes = _stack_sizes(blocks)
    for stack, size in sizes.items():
        low = -size if config.layers is not None else 0
        bad = [i for i in config.layers or config.leave_out or [] if not low <= i < size]
        if bad:
            field = "layers" if config.layers is not None else "leave_out"
            raise TargetModuleError(f"{field}={bad} is outside this model's {size} blocks ({stack}.0 to "
                                    f"{stack}.{size - 1}); use indices 0..{size - 1}"
                                    + (f" or -{size}..-1" if config.layers is not None else ""))
        if not any(config.adapts_block(i, size) for i in range(size)):
            raise TargetModuleError(f"leave_out={config.leave_out} leaves out every block of {stack}: no adapter "
                                    "would remain; leave out fewer")
    chosen = []
    for site in sites:
        block = block_of(site.name, blocks)
        stack, _, index = block.rpartition(".")
        if config.adapts_block(int(index), sizes[stack]):
            chosen.append(site)
    return chosen


def _stack_sizes(blocks: list[str]) -> dict[str, int]:
    """Each ModuleList of blocks with its length."""
    return Counter(block.rpartition(".")[0] for block in blocks)


def block_of(name: str, blocks: list[str]) -> str | None:
    """The block that holds the module or parameter ``name`` (None: outside every block)."""
    return next((b for b in blocks if (name + ".").startswith(b + ".")), None)


def norms_below_adapters(model: nn.Module, config: AdapterConfig, names: list[str]) -> set[str]:
    """Of these norm parameters, those that stay frozen: under the lowest adapted block of their
    stack, and the embeddings' norm (a module named ``*emb*`` outside the blocks) when that stack's
    block 0 has no adapter or ``train_embedding_norm`` is off. Nothing below them trains, so the
    blocks there run without autograd."""
    if not names or (config.layers is None and config.leave_out is None and config.train_embedding_norm):
        return set()  # every block adapted, every norm trains: no need to look for the blocks
    blocks = find_blocks(model) if config.target_modules is None else []
    lowest = {stack: next((i for i in range(size) if config.adapts_block(i, size)), size)
              for stack, size in _stack_sizes(blocks).items()}
    below = set()
    for name in names:
        module = name.rpartition(".")[0]
        block = block_of(module, blocks)
        if block is not None:
            stack, _, index = block.rpartition(".")
            if int(index) < lowest[stack]:
                below.add(name)
        elif "emb" in module.lower():  # embeddings.LayerNorm, word_embeddings_layernorm, XLM's layer_norm_emb
            stack = max(lowest, key=lambda s: len(_common_prefix(s, module)), default=None)
            if not config.train_embedding_norm or (stack is not None and lowest[stack] > 0):
                below.add(name)
    return below


def _common_prefix(a: str, b: str) -> str:
    parts = []
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        parts.append(x)
    return ".".join(parts)


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the transformer blocks: children of the outermost ModuleLists of same-class
    layers that hold projections (encoder and decoder stacks both count)."""
    lists = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if sum(output_width(m) is not None for n, m in module[0].named_modules() if not is_adaptkit_module(n)) < 2:
            continue
        if any(name.startswith(outer + ".") for outer in lists):
            continue
        lists.append(name)
    return [f"{name}.{i}" for name in lists for i in range(len(model.get_submodule(name)))]


def _projections(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's own Linear-like projections (adapters' modules and copies are not targets)."""
    root = model.get_submodule(prefix) if prefix else model
    base = prefix + "." if prefix else ""
    return [(base + n, m) for n, m in root.named_modules()
            if output_width(m) is not None and not is_adaptkit_module(base + n)]


def _registry_sites(model: nn.Module, patterns: dict[str, str], kinds: tuple[str, ...]) -> list[Site]:
    sites = []
    for name, module in _projections(model):
        for kind in kinds:
            if re.search(patterns[kind], name):
                sites.append(Site(name, kind, output_width(module)))
    return sites


def _pfeiffer_sites(model: nn.Module, blocks: list[str], model_type: str | None,
                    config: AdapterConfig) -> list[Site]:
    """One SeqBn site per block, from ``PFEIFFER_REGISTRY``; refused on any other model."""
    if model_type not in PFEIFFER_REGISTRY:
        raise TargetModuleError(
            f"placement='pfeiffer' (AdapterHub's SeqBn) needs each block's residual input and "
            f"LayerNorm, so it is defined per architecture, and {model_type or type(model).__name__} "
            f"is not one of {', '.join(sorted(PFEIFFER_REGISTRY))}. Use placement='houlsby-ffn' "
            "(one adapter on the feed-forward output) or placement='houlsby'")
    pattern, kind = PFEIFFER_REGISTRY[model_type]
    hidden = _hidden_size(model)
    sites = [Site(name, kind, hidden) for name, _ in model.named_modules() if re.search(pattern, name)]
    _check_every_block_adapted(model, blocks, sites, (kind,), model_type)
    return _in_chosen_blocks(blocks, sites, config)


def _structural_sites(model: nn.Module, blocks: list[str], hidden: int,
                      kinds: tuple[str, ...]) -> list[Site]:
    """Per block: the last hidden-width projection under each attention module, and the
    projections that bring the feed-forward's wider activations back to the hidden width. A
    mixture-of-experts feed-forward (a module holding ``experts``) is adapted at its output,
    which sums the experts before the residual add."""
    sites = []
    for block in blocks:
        moe = _experts_parent(model, block)
        list_parent = block.rsplit(".", 2)[0] if block.count(".") >= 2 else ""
        # per attention module: its output projection, not a helper's (a sparse-attention
        # indexer's, deeper) nor a gate's (registered after it)
        output_of: dict[str, tuple[tuple[int, bool], str]] = {}
        for name, module in _projections(model, block):
            if output_width(module) != hidden or (moe and name.startswith(moe + ".")):
                continue
            attention = _attention_ancestor(name[len(list_parent) + 1 if list_parent else 0:])
            if attention is not None:
                # rank: shallowest first, then a name that says output, then the last registered
                rank = (-(name.count(".") - (list_parent + "." + attention).count(".")),
                        bool(_OUTPUT_NAME.search(name.rsplit(".", 1)[-1])))
                if attention not in output_of or rank >= output_of[attention][0]:
                    output_of[attention] = (rank, name)
            elif FFN in kinds and input_width(module) > hidden:
                sites.append(Site(name, FFN, hidden))
        if ATTENTION in kinds:
            sites.extend(Site(name, ATTENTION, hidden) for _, name in output_of.values())
        if FFN in kinds and moe:
            sites.append(Site(moe, FFN, hidden))
    return sites


def _experts_parent(model: nn.Module, block: str) -> str | None:
    """The mixture-of-experts module of a block: the parent of a child named ``experts``."""
    for name, _ in model.get_submodule(block).named_modules():
        parts = name.split(".")
        if parts[-1] == "experts" and len(parts) > 1 and _attention_ancestor(name) is None:
            return f"{block}.{'.'.join(parts[:-1])}"
    return None


def _attention_ancestor(relative_name: str) -> str | None:
    """The outermost enclosing module whose name says attention: one per attention sub-layer,
    also where it nests another (Reformer's ``attention.self_attention``, MPNet's ``attention.attn``)."""
    parts = relative_name.split(".")[:-1]
    for depth in range(1, len(parts) + 1):
        if re.search(r"att", parts[depth - 1], re.IGNORECASE):
            return ".".join(parts[:depth])
    return None


def site_width(model: nn.Module, module: nn.Module) -> int:
    """The width an adapter on this module sees: a projection's output, or the hidden size for a
    whole sub-layer (a mixture of experts)."""
    width = output_width(module)
    return width if width is not None else _hidden_size(model)


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is not None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = getattr(text_config, "hidden_size", None)
        if isinstance(hidden, int):
            return hidden
    widths = Counter(output_width(m) for _, m in _projections(model))
    return widths.most_common(1)[0][0]


def _check_every_block_adapted(model: nn.Module, blocks: list[str], sites: list[Site],
                               kinds: tuple[str, ...], model_type: str | None) -> None:
    """Every layer gets every kind. A layer is a block, or the blocks at one depth of sibling
    lists (XLM keeps ``attentions`` and ``ffns`` in two lists)."""
    for kind in kinds:
        covered = {_layer(b) for b in blocks for s in sites
                   if s.kind == kind and (s.name + ".").startswith(b + ".")}
        missing = [b for b in blocks if _layer(b) not in covered]
        if missing and kind == ATTENTION and not any(
                re.search("att", n, re.IGNORECASE) for b in blocks for n, _ in model.get_submodule(b).named_modules()):
            raise TargetModuleError(
                f"the blocks of this {model_type or type(model).__name__} model have no attention (they "
                "mix tokens otherwise: state-space, recurrent or Fourier blocks such as Mamba's, RWKV's "
                "or FNet's): Houlsby's placement "
                "needs an attention and a feed-forward sub-layer in each block. Adapt chosen "
                "projections with AdapterConfig(target_modules=[...]); candidates: " + _candidates(model))
        if missing:
            raise TargetModuleError(
                f"could not find the {kind} output projection in {len(missing)} of {len(blocks)} "
                f"blocks of this {model_type or type(model).__name__} model (first: {missing[0]}). "
                "Name the projections with AdapterConfig(target_modules=[...]); candidates: "
                + _candidates(model))


def _layer(block: str) -> tuple[str, str]:
    """``transformer.attentions.3`` and ``transformer.ffns.3`` are one layer: (parent, depth)."""
    parts = block.split(".")
    return ".".join(parts[:-2]), parts[-1]


def _explicit_sites(model: nn.Module, targets: list[str]) -> list[Site]:
    modules = {n: m for n, m in model.named_modules() if not is_adaptkit_module(n)}
    sites: dict[str, Site] = {}
    for target in targets:
        if target.startswith("re:"):
            pattern = re.compile(target[3:])
            matched = [n for n in modules if n and pattern.fullmatch(n)]
        else:
            matched = [n for n in modules if n == target or n.endswith("." + target)]
        usable = [n for n in matched if output_width(modules[n]) is not None]
        if not usable:
            why = ("matches no module" if not matched
                   else "matches only modules that are not Linear/Conv1D projections")
            raise TargetModuleError(
                f"target module {target!r} {why}; candidates: " + _candidates(model))
        for name in usable:
            sites.setdefault(name, Site(name, CUSTOM, output_width(modules[name])))
    return list(sites.values())


def _candidates(model: nn.Module) -> str:
    """Projection names with layer indices folded to N, so the list stays readable."""
    seen: dict[str, None] = {}
    for name, _ in _projections(model):
        seen.setdefault(re.sub(r"\.\d+\.", ".N.", name), None)
    return ", ".join(seen) if seen else "(the model has no Linear/Conv1D projections)"
