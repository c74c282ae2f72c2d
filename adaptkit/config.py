"""The adapter configuration: a dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .errors import AdapterConfigError

PLACEMENTS = ("houlsby", "pfeiffer", "houlsby-ffn")
#: What the placement names compute: version 1 called "pfeiffer" what is now "houlsby-ffn";
#: in version 2 "pfeiffer" is AdapterHub's SeqBn. Saved configs and sweep keys record it.
PLACEMENT_VERSION = 2
RENAMED_PLACEMENTS = {"pfeiffer": "houlsby-ffn"}
ACTIVATIONS = ("relu", "gelu", "silu", "swish", "tanh")
INITS = ("houlsby", "zero", "bert")
#: An adapter's own classification head (``AdapterConfig.head``): its fields, and where it reads
#: the sequence: the first token (BERT, RoBERTa), the pooler's output, or the last token that is
#: not padding (GPT-2).
HEAD_FIELDS = {"type", "num_labels", "layers", "activation", "token", "dropout", "bias"}
TOKENS = ("first", "pooler", "last")
#: Checkpoint formats before 4 wrote only the fields adaptkit had then: per format, the fields it
#: lacks and the values that compute what it computed. Format 1 trained an untied vocabulary
#: head as part of the head.
_PREDATED = {"layers": None, "leave_out": None, "train_embedding_norm": True, "head": None}
FIELDS_PREDATED_BY_FORMAT = {
    1: {**_PREDATED, "train_vocab_head": True, "keep_fp32": True},
    2: _PREDATED,
    3: _PREDATED,
}

@dataclass
class AdapterConfig:
    """How to build and place bottleneck adapters.

    size: bottleneck width m; or give ``reduction_factor`` r instead and m = d // r.
    placement: "houlsby" (after the attention output projection and after the feed-forward
        output, before each residual add: AdapterHub's DoubleSeqBn), "pfeiffer" (AdapterHub's
        SeqBn: one adapter per block, fed the block's feed-forward output plus its residual, after
        the model's own LayerNorm at a post-LN block; defined per architecture, see
        ``targets.PFEIFFER_REGISTRY``) or "houlsby-ffn" (a Houlsby adapter on the feed-forward
        output only; what adaptkit called "pfeiffer" before checkpoint format 3).
    target_modules: explicit module names instead of a preset; an entry matches a module whose
        dotted name equals it or ends with "." + entry; an entry starting with "re:" is a regular
        expression matched against the whole name.
    init: "houlsby" (truncated normal, std ``init_std``, cut at 2 std, zero biases: near identity),
        "zero" (zero up-projection: the exact identity at the start) or "bert" (normal, std 0.02,
        zero biases: AdapterHub's default).
    AdapterHub's defaults by name: ``AdapterConfig.seq_bn()`` and ``AdapterConfig.double_seq_bn()``
        (reduction factor 16, init "bert", activation relu and swish).
    layers / leave_out: the blocks that get adapters (AdapterDrop, Rücklé et al. 2021), by
        index within each stack of blocks, 0 the lowest: ``layers`` lists the adapted blocks
        (negative counts from the top: ``[-3, -2, -1]`` is the top three), ``leave_out`` the
        others, with AdapterHub's meaning; give at most one. LayerNorms below the lowest adapted
        block (the embeddings' included) then stay frozen, so those blocks run without autograd.
    train_layernorms / train_head: train every LayerNorm and the task head, as in Houlsby et al.
    train_embedding_norm: with ``train_layernorms``, also train the embeddings' LayerNorm (the
        paper's setting). False is a departure from the paper that saves autograd through the
        first block's attention, the only trained tensor below block 0's first adapter.
    train_vocab_head: also train an untied vocabulary projection (a causal LM's ``lm_head``);
        off by default: it is no task head and can hold more parameters than all adapters.
    head: the adapter's own classification head on a bare base model (AdapterHub's, as
        ``adaptkit.adapterhub`` loads it): {"type": "classification", "num_labels", "layers",
        "activation", "token": "first"|"pooler"|"last", "dropout", "bias"}; None: no own head.
    keep_fp32: on a bf16/fp16 base, keep the adapter weights in float32 and cast in the
        forward (as PEFT does), so updates smaller than the 16-bit spacing are not lost.
    """

    size: int | None = 64
    reduction_factor: float | None = None
    placement: str = "houlsby"
    target_modules: list[str] | None = None
    activation: str = "gelu"
    init: str = "houlsby"
    init_std: float = 1e-2
    dropout: float = 0.0
    layers: list[int] | None = None
    leave_out: list[int] | None = None
    train_layernorms: bool = True
    train_embedding_norm: bool = True
    train_head: bool = True
    train_vocab_head: bool = False
    keep_fp32: bool = True
    head: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for number in ("reduction_factor", "init_std", "dropout"):
            value = getattr(self, number)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AdapterConfigError(f"{number} must be a number, got {value!r}")
        if self.reduction_factor is not None:
            if self.reduction_factor <= 0:
                raise AdapterConfigError(
                    f"reduction_factor must be > 0, got {self.reduction_factor}")
            self.size = None
        elif not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise AdapterConfigError(
                f"adapter size must be a positive integer, got {self.size!r}; "
                "pass size=64 (for example) or reduction_factor=16")
        _check_choice("placement", self.placement, PLACEMENTS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("init", self.init, INITS)
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise AdapterConfigError(
                    "target_modules must be a non-empty list of module names, "
                    f"got {self.target_modules!r}")
            self.target_modules = list(self.target_modules)
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        self.layers = _check_block_list("layers", self.layers)
        self.leave_out = _check_block_list("leave_out", self.leave_out)
        if self.layers is not None and self.leave_out is not None:
            raise AdapterConfigError("give layers (the blocks to adapt) or leave_out (the blocks to skip), not both")
        if (self.layers is not None or self.leave_out is not None) and self.target_modules is not None:
            raise AdapterConfigError("layers/leave_out choose blocks of the preset placement; with "
                                     "target_modules, name only the projections to adapt instead")
        for flag in ("train_layernorms", "train_embedding_norm", "train_head", "train_vocab_head", "keep_fp32"):
            if not isinstance(getattr(self, flag), bool):
                raise AdapterConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.head is not None:
            _check_head(self.head)
        if self.init_std <= 0:
            raise AdapterConfigError(f"init_std must be > 0, got {self.init_std}")

    @classmethod
    def houlsby(cls, size: int = 64, **kwargs: Any) -> "AdapterConfig":
        """Two adapters per layer (Houlsby et al. 2019)."""
        return cls(size=size, placement="houlsby", **kwargs)

    @classmethod
    def pfeiffer(cls, size: int = 64, **kwargs: Any) -> "AdapterConfig":
        """One adapter per layer, where AdapterHub's SeqBn puts it (Pfeiffer et al. 2021)."""
        return cls(size=size, placement="pfeiffer", **kwargs)

    @classmethod
    def seq_bn(cls, **kwargs: Any) -> "AdapterConfig":
        """AdapterHub's ``SeqBnConfig`` defaults: Pfeiffer placement, d/16, relu, BERT init."""
        return cls._adapterhub("pfeiffer", "relu", kwargs)

    @classmethod
    def double_seq_bn(cls, **kwargs: Any) -> "AdapterConfig":
        """AdapterHub's ``DoubleSeqBnConfig`` defaults: Houlsby placement, d/16, swish, BERT init."""
        return cls._adapterhub("houlsby", "swish", kwargs)

    @classmethod
    def _adapterhub(cls, placement: str, activation: str, kwargs: dict[str, Any]) -> "AdapterConfig":
        defaults = {"placement": placement, "activation": activation, "init": "bert"}
        if "size" not in kwargs:
            defaults["reduction_factor"] = 16
        return cls(**{**defaults, **kwargs})

    def bottleneck_size(self, hidden_size: int) -> int:
        """The bottleneck width m for a projection of width ``hidden_size``."""
        if self.size is not None:
            return self.size
        return max(1, int(hidden_size // self.reduction_factor))

    def adapts_block(self, index: int, stack_size: int) -> bool:
        """Whether block ``index`` (0 the lowest) of a stack of ``stack_size`` blocks gets adapters."""
        if self.layers is not None:
            return index in {i % stack_size for i in self.layers}
        return self.leave_out is None or index not in self.leave_out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdapterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "AdapterConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdapterConfigError(f"adapter config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AdapterConfigError("adapter config JSON must be an object")
        return cls.from_dict(data)

def fields_of_format(fields: dict[str, Any], format_version: int) -> dict[str, Any]:
    """A checkpoint's config fields in today's terms: every field is required from format 4 on;
    an older format gets the fields it predates (``FIELDS_PREDATED_BY_FORMAT``)."""
    predated = FIELDS_PREDATED_BY_FORMAT.get(format_version, {})
    fields = {**predated, **upgrade_placement(fields, 1 if format_version < 3 else 2)}
    required = {f.name for f in dataclasses.fields(AdapterConfig)}
    unknown = sorted(set(fields) - required)
    if unknown:
        raise AdapterConfigError(f"unknown adapter config field(s) {unknown}; valid fields: {sorted(required)}")
    missing = sorted(required - set(fields))
    if missing:
        raise AdapterConfigError(f"field(s) {missing} missing: a format-{format_version} config names every "
                                 "AdapterConfig field")
    return fields


def upgrade_placement(fields: dict[str, Any], version: int) -> dict[str, Any]:
    """Config fields saved under placement semantics ``version``, in today's names."""
    if version < PLACEMENT_VERSION and fields.get("placement") in RENAMED_PLACEMENTS:
        return {**fields, "placement": RENAMED_PLACEMENTS[fields["placement"]]}
    return fields


def _check_head(head: Any) -> None:
    if not isinstance(head, dict) or set(head) != HEAD_FIELDS:
        raise AdapterConfigError(f"head must be an object with fields {sorted(HEAD_FIELDS)}, got {head!r}")
    if head["type"] != "classification":
        raise AdapterConfigError(f"head type {head['type']!r} is not supported; only 'classification'")
    _check_choice("head token", head["token"], TOKENS)
    for key in ("num_labels", "layers"):
        if not isinstance(head[key], int) or head[key] < 1:
            raise AdapterConfigError(f"head {key} must be a positive integer, got {head[key]!r}")


def _check_block_list(name: str, value: Any) -> list[int] | None:
    """A list of distinct block indices (``range`` and tuples accepted), or None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise AdapterConfigError(f"{name} must be a list of block indices, e.g. [4, 5], got {value!r}")
    indices = list(value)
    if any(isinstance(i, bool) or not isinstance(i, int) for i in indices) or len(set(indices)) != len(indices):
        raise AdapterConfigError(f"{name} must list distinct integer block indices, got {value!r}")
    if name == "layers" and not indices:
        raise AdapterConfigError("layers=[] adapts no block; give at least one index, or None for every block")
    if name == "leave_out" and any(i < 0 for i in indices):
        raise AdapterConfigError(f"leave_out counts blocks from 0 (AdapterHub's meaning), got {indices}; "
                                 "to count from the top use layers=[-k, ..., -1]")
    return indices


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdapterConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class FusionConfig:
    """An AdapterFusion layer (Pfeiffer et al. 2021), with AdapterHub 1.3.0's fields and meaning.

    query / key / value: learned projections (value without bias); the attention is
    ``softmax(query(q) · key(up_i))`` over the fused adapters' up-projection outputs ``up_i``.
    value_before_softmax: the value projection applies to each ``up_i`` (True) or to the mix.
    value_initialized: the value matrix starts at the identity (off-diagonal 1e-6).
    residual_before: the residual is added to each ``up_i`` before the attention (also to the
        keys, as AdapterHub's in-place add does) instead of to the mix after it.
    query_before_ln: the query is read before the model's LayerNorm (SeqBn) instead of after.
    regularization: ``fusion_regularization_loss`` pulls the value matrix towards the identity
        (0.01·Σ(I − V)²; AdapterHub's trainer adds it at each step).
    dropout_prob: dropout on the attention scores; None (or 0, AdapterHub's ``or``): the model's
        ``attention_probs_dropout_prob``.
    temperature: AdapterHub anneals the softmax temperature from 50 down to 1 by writing it on every
        forward call, so its output depends on how many forwards ran; adaptkit's forward writes
        nothing, and refuses True.
    Presets by name: ``FusionConfig.dynamic()`` (AdapterHub's default) and ``FusionConfig.static()``.
    """

    key: bool = True
    query: bool = True
    value: bool = True
    query_before_ln: bool = False
    regularization: bool = True
    residual_before: bool = False
    temperature: bool = False
    value_before_softmax: bool = True
    value_initialized: bool = True
    dropout_prob: float | None = None

    def __post_init__(self) -> None:
        for flag in ("key", "query", "value", "query_before_ln", "regularization", "residual_before", "temperature",
                     "value_before_softmax", "value_initialized"):
            if not isinstance(getattr(self, flag), bool):
                raise AdapterConfigError(f"fusion {flag} must be true or false, got {getattr(self, flag)!r}")
        if self.temperature:
            raise AdapterConfigError(
                "fusion temperature=True is not supported: AdapterHub anneals the softmax temperature by writing it "
                "on every forward (T = max(T - 0.05, 1) from 50), so outputs depend on how many forwards ran, and "
                "adaptkit's forward writes nothing to the model; use temperature=False (both presets do)")
        if not (self.key or self.query or self.value):
            raise AdapterConfigError("fusion with key, query and value all false is not supported (AdapterHub builds an "
                                     "unused layer for it); enable at least one")
        if self.dropout_prob is not None and (isinstance(self.dropout_prob, bool) or
                                              not isinstance(self.dropout_prob, (int, float))
                                              or not 0.0 <= self.dropout_prob < 1.0):
            raise AdapterConfigError(f"fusion dropout_prob must be None or in [0, 1), got {self.dropout_prob!r}")

    @classmethod
    def dynamic(cls, **kwargs: Any) -> "FusionConfig":
        """AdapterHub's ``DynamicAdapterFusionConfig`` ("dynamic", its default)."""
        return cls(**kwargs)

    @classmethod
    def static(cls, **kwargs: Any) -> "FusionConfig":
        """AdapterHub's ``StaticAdapterFusionConfig``: no value matrix, no regularization."""
        return cls(**{"value": False, "regularization": False, "value_initialized": False, **kwargs})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusionConfig":
        """A fusion config from its fields; AdapterHub's ``value_initialized`` may be a string."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdapterConfigError(f"unknown fusion config field(s) {unknown}; valid fields: {sorted(known)}")
        fields = dict(data)
        if isinstance(fields.get("value_initialized"), str):
            fields["value_initialized"] = fields["value_initialized"].lower() not in ("", "false")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
