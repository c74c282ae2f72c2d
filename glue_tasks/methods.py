"""The fine-tuning methods compared by trainable-parameter count, all behind one interface.

Each method takes a freshly loaded classifier and decides what trains:
``adapter`` (adaptkit bottleneck adapters: houlsby, pfeiffer or houlsby-ffn), ``full``,
``top-k`` (the top k transformer blocks and the head; k=0 is head-only), ``layernorm`` (LayerNorms and head, the
paper's ablation), ``lora`` (PEFT LoRA), ``scratch`` (same architecture, random init,
everything trained) and ``scratch-small`` (the same model type shrunk to ``SMALL_SCRATCH``,
random init: a from-scratch model small enough to learn from a few thousand examples, so that
negative transfer can show) and ``fusion`` (AdapterFusion over the adapters of finished ``adapter``
runs, loaded without their heads: only the fusion layers and a fresh copy of the head train).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

import adaptkit
from adaptkit.params import head_parameter_names, layernorm_parameter_names
from adaptkit.targets import find_blocks

from .choices import METHODS


#: scratch-small's shape: 2 blocks of width 128 (2 heads, feed-forward 512) over the base model's
#: vocabulary; with MiniLM's tokenizer 4.4M parameters, 3.9M of them the token embeddings.
SMALL_SCRATCH = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512}

#: Methods that start from random weights rather than the pretrained ones.
FROM_SCRATCH = ("scratch", "scratch-small")


#: The boolean fields a train flag turns off, and that flag.
FREEZE_FLAGS = {"train_layernorms": "--freeze-layernorms", "train_embedding_norm": "--freeze-embedding-norm"}


@dataclass
class MethodSpec:
    """What trains. Only the fields of the chosen method matter; the rest keep defaults."""

    name: str = "adapter"
    placement: str = "houlsby"  # adapter
    size: int = 64  # adapter bottleneck m
    train_layernorms: bool = True  # adapter: train the LayerNorms as Houlsby et al. (False: AdapterHub's default)
    train_embedding_norm: bool = True  # adapter: False freezes only the embeddings' LayerNorm (not the paper's)
    adapter_top: int | None = None  # adapter: adapters in the top N blocks only (AdapterDrop); None: every block
    top_k: int = 0  # top-k
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] | None = None
    fusion_sources: list[str] | None = None  # fusion: the output dirs of finished adapter runs
    fusion_config: str = "dynamic"  # fusion: AdapterHub's preset, dynamic or static

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; choose one of {', '.join(METHODS)}")
        if self.size < 1:
            raise ValueError(f"--size must be >= 1, got {self.size}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if not self.train_layernorms and self.name != "adapter":
            raise ValueError(f"--freeze-layernorms applies to --method adapter only, not {self.name}")
        if not self.train_embedding_norm and (self.name != "adapter" or not self.train_layernorms):
            raise ValueError("--freeze-embedding-norm applies to --method adapter with trained LayerNorms "
                             "(without --freeze-layernorms, which freezes it already)")
        if self.adapter_top is not None and self.adapter_top < 1:
            raise ValueError(f"--adapter-top must be >= 1, got {self.adapter_top}")
        if self.lora_rank <= 0:
            raise ValueError(f"--lora-rank must be > 0, got {self.lora_rank}")
        if self.name == "fusion" and not self.fusion_sources:
            raise ValueError("--method fusion needs --fusion-sources: the output dirs of finished adapter runs")
        if self.fusion_config not in ("dynamic", "static"):
            raise ValueError(f"--fusion-config must be dynamic or static, got {self.fusion_config!r}")

    def relevant(self) -> dict:
        """The fields that describe this method, for result files and labels."""
        fields = {"adapter": ("placement", "size", "train_layernorms"), "top-k": ("top_k",),
                  "lora": ("lora_rank", "lora_alpha", "lora_targets"),
                  "fusion": ("fusion_sources", "fusion_config")}.get(self.name, ())
        if self.name == "adapter":  # only when set, so that earlier runs' keys stay as they were
            fields += ("adapter_top",) * (self.adapter_top is not None)
            fields += ("train_embedding_norm",) * (not self.train_embedding_norm)
        return {"name": self.name, **{f: getattr(self, f) for f in fields}}

    def cli_args(self) -> list[str]:
        """This method as ``adaptkit-glue train`` flags, which the CLI parses back into the same spec."""
        args = ["--method", self.name]
        for field, value in self.relevant().items():
            if field in FREEZE_FLAGS:
                args += [] if value else [FREEZE_FLAGS[field]]
            elif field != "name" and value is not None:
                args += [f"--{field.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
        return args

    def label(self) -> str:
        """A short name for tables: ``adapter-houlsby-64``, ``adapter-houlsby-frozen-ln-64``,
        ``adapter-houlsby-top3-64``, ``top-2``, ``lora-r8``. The size comes last, so that the label
        less its size names the method family."""
        if self.name == "adapter":
            frozen = "-frozen-ln" if not self.train_layernorms else "-frozen-emb-ln" * (not self.train_embedding_norm)
            top = f"-top{self.adapter_top}" if self.adapter_top is not None else ""
            return f"adapter-{self.placement}{frozen}{top}-{self.size}"
        if self.name == "top-k":
            return f"top-{self.top_k}"
        if self.name == "lora":
            return f"lora-r{self.lora_rank}"
        if self.name == "fusion":
            return f"fusion-{self.fusion_config}-{len(self.fusion_sources or [])}"
        return self.name

    @classmethod
    def from_dict(cls, data: dict) -> "MethodSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def apply_method(model: nn.Module, spec: MethodSpec, adapter_name: str = "task") -> nn.Module:
    """Set what trains; returns the model to train (a PEFT wrapper for LoRA)."""
    if spec.name in ("full", *FROM_SCRATCH):
        model.requires_grad_(True)
        return model
    if spec.name == "adapter":
        top = spec.adapter_top
        if top is not None:
            _at_most_blocks(model, top, "--adapter-top")
        config = adaptkit.AdapterConfig(size=spec.size, placement=spec.placement,
                                        train_layernorms=spec.train_layernorms,
                                        train_embedding_norm=spec.train_embedding_norm,
                                        layers=list(range(-top, 0)) if top else None)
        adaptkit.add_adapter(model, config, name=adapter_name)
        return model
    if spec.name == "lora":
        return _apply_lora(model, spec)
    if spec.name == "fusion":
        return _apply_fusion(model, spec)
    trainable = set(head_parameter_names(model))
    if spec.name == "layernorm":
        trainable |= set(layernorm_parameter_names(model))
    else:
        trainable |= _top_block_parameters(model, spec.top_k)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return model


def fusion_source_names(sources: list[str]) -> list[str]:
    """Each source run's adapter name: its task (``sst2``, ``mrpc``...), numbered when two agree."""
    names: list[str] = []
    for source in sources:
        config = Path(source) / "run_config.json"
        if not (Path(source) / "adapter").is_dir() or not config.is_file():
            raise ValueError(f"--fusion-sources {source} is not the output dir of a finished adapter run "
                             "(it needs run_config.json and adapter/)")
        task = json.loads(config.read_text(encoding="utf-8")).get("task") or "source"
        names.append(task if task not in names else f"{task}{names.count(task) + 1}")
    return names


def _apply_fusion(model: nn.Module, spec: MethodSpec) -> nn.Module:
    """The source runs' adapters (without their heads; frozen), a fusion over them, and a copy
    of this task's head, which trains with the fusion layers."""
    names = fusion_source_names(spec.fusion_sources)
    for name, source in zip(names, spec.fusion_sources):
        adaptkit.load_adapter(model, Path(source) / "adapter", name=name, activate=False, load_head=False)
    adaptkit.add_fusion(model, adaptkit.Fuse(*names), config=spec.fusion_config)
    return model


def _at_most_blocks(model: nn.Module, k: int, flag: str) -> list[str]:
    """The model's blocks, if it has at least the ``k`` a flag asks for."""
    blocks = find_blocks(model)
    if k > len(blocks):
        raise ValueError(f"{flag} {k} is more than the model's {len(blocks)} transformer blocks")
    return blocks


def _top_block_parameters(model: nn.Module, k: int) -> set[str]:
    blocks = _at_most_blocks(model, k, "--top-k")
    top = blocks[len(blocks) - k:] if k else []
    return {n for n, _ in model.named_parameters() if any(n.startswith(b + ".") for b in top)}


def lora_targets(model: nn.Module, spec: MethodSpec) -> list[str]:
    """The user's targets, else PEFT's default for the model type; each must match a projection
    (PEFT silently ignores a target that matches nothing while others match)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = model.config.model_type
    targets = spec.lora_targets or {"distilbert": ["q_lin", "v_lin"]}.get(model_type) or DEFAULTS.get(model_type)
    if not targets:
        raise ValueError(f"PEFT has no default LoRA targets for {model_type}; pass --lora-targets")
    adaptkit.resolve_sites(model, adaptkit.AdapterConfig(target_modules=list(targets)))
    return list(targets)


def _apply_lora(model: nn.Module, spec: MethodSpec) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=spec.lora_rank, lora_alpha=spec.lora_alpha,
                        lora_dropout=0.1, target_modules=lora_targets(model, spec))
    return get_peft_model(model, config)
