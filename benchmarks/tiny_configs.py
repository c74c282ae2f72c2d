"""Tiny configs for any model type, for benchmarks/coverage.py: the type's defaults, shrunk.

``AutoConfig.for_model(type)`` gives a full-size default config; building hundreds of those on a
CPU takes hours, so every size field is shrunk by name (width 64, 2 layers, 4 heads, head_dim 16,
intermediate 128, 4 experts with 2 per token, expert widths in their ratio to the width) while
everything else keeps the type's defaults:
vocabulary sizes (special token ids stay valid), position scheme, activation, norms, layer kinds.
Per-layer lists (``layer_types`` ...) are cut to 2 entries that keep two different kinds where the
default mixes kinds. Nested configs (``text_config``, an encoder's ``vision_config`` ...) get the
same shrink. ``OVERRIDES`` holds what a name-based shrink cannot know about one type.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

WIDTH, LAYERS, HEADS, KV_HEADS_GROUPED, HEAD_DIM, INTERMEDIATE = 64, 2, 4, 2, 16, 128
EXPERTS, EXPERTS_PER_TOKEN, EXPERT_WIDTH = 4, 2, 32

WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "n_embed", "embed_dim", "model_dim", "emb_dim",
              "embedding_dim", "word_embed_proj_dim", "embedding_size", "pooler_hidden_size",
              "true_hidden_size", "intra_bottleneck_size", "d_latents", "hidden_size_global",
              "adapter_in_dim", "adapter_input_size", "adapter_out_dim")
#: widths that are a multiple of the hidden width (Zamba's attention reads [hidden, embeddings]).
SCALED_WIDTH_KEYS = ("attention_hidden_size",)
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers",
              "decoder_layers", "num_decoder_layers", "num_encoder_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
             "decoder_attention_heads", "num_decoder_attention_heads", "swa_num_attention_heads",
             "linear_num_value_heads", "linear_num_heads", "index_n_heads",
             "num_self_attention_heads", "num_cross_attention_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "swa_num_key_value_heads",
                "linear_num_key_heads", "multi_query_group_num", "n_kv_heads")
#: per-head widths, scaled together so that their ratios (MLA's rope/nope/value split) survive;
#: head_dim becomes HEAD_DIM, or twice or half that where the full-size heads are wider or
#: narrower than the hidden state (see as_wide); otherwise the first one present becomes HEAD_DIM.
HEAD_DIM_KEYS = ("head_dim", "d_kv", "d_head", "attention_head_size", "kv_channels",
                 "attention_head_dim", "swa_head_dim", "qk_head_dim", "qk_nope_head_dim",
                 "qk_rope_head_dim", "v_head_dim", "linear_key_head_dim", "linear_value_head_dim",
                 "linear_head_dim", "index_head_dim")
INTERMEDIATE_KEYS = ("intermediate_size", "d_ff", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim",
                     "n_inner", "d_inner", "feed_forward_size", "ffn_hidden_size", "dff")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_k",
                          "num_selected_experts")
#: expert widths keep their ratio to the hidden width (a shared expert wider than the hidden width
#: is a feed-forward output to adaptkit's structural search, a narrower one is not).
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "shared_expert_intermediate_size",
                     "shared_intermediate_size", "expert_intermediate_size")
FIXED = {"kv_lora_rank": 32, "q_lora_rank": 32, "rotary_dim": HEAD_DIM // 2, "n_group": 1,
         "topk_group": 1, "num_expert_group": 1}

#: model_type -> fields set over the generic shrink (nested dicts merge into nested configs):
#: defaults that do not build or run as they are, and hybrids whose 2 layers need both kinds.
OVERRIDES: dict[str, dict[str, Any]] = {
    "t5": {"decoder_start_token_id": 0},  # T5's classifier shifts labels right with it
    # Moshi's and RecurrentGemma's MLPs gate half of the intermediate width: 128 would bring the
    # output projection's input down to the hidden width (64), which no full-size checkpoint does.
    "moshi": {"ffn_dim": 4 * WIDTH},
    "esm": {"vocab_size": 33, "pad_token_id": 1, "mask_token_id": 32},  # no default vocabulary
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    "dots1": {"n_routed_experts": EXPERTS, "num_experts_per_tok": EXPERTS_PER_TOKEN, "n_shared_experts": 1},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "mamba2": {"num_heads": 8, "head_dim": 16},  # hidden × expand = heads × head_dim
    "qwen4_exp_text": {"indexer_n_heads": HEADS, "indexer_kv_heads": 1, "indexer_head_dim": 2 * HEAD_DIM,
                       "indexer_budget": 8, "indexer_compress_ratio": 4},
    # Reformer trains only on sequences as long as its axial position grid (coverage.py: 16 tokens).
    "reformer": {"axial_pos_embds_dim": [WIDTH // 2, WIDTH // 2], "axial_pos_shape": [4, 4],
                 "local_attn_chunk_length": 8, "lsh_attn_chunk_length": 8, "hash_seed": 0},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"], "intermediate_size": 4 * WIDTH},
    # Zamba ties its shared transformer across hybrid layers: it needs two of them.
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["linear_attention", "hybrid", "hybrid"]},
}
OVERRIDES["qwen4_exp"] = {"text_config": OVERRIDES["qwen4_exp_text"]}


def tiny_config(model_type: str, **extra: Any) -> PretrainedConfig:
    """The type's default config shrunk (``extra`` applies last, e.g. ``num_labels=2``)."""
    override = OVERRIDES.get(model_type, {})
    base = AutoConfig.for_model(model_type)
    return AutoConfig.for_model(model_type, **merge(merge(shrink(base), override), extra))


def merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``into`` updated by ``update``, nested dicts merged rather than replaced."""
    merged = dict(into)
    for key, value in update.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def shrink(config: PretrainedConfig) -> dict[str, Any]:
    """The changed fields of ``config``; a nested config becomes a dict of its own shrunk fields
    on top of what the parent set differently from that config's class defaults."""
    values = vars(config)
    changes = shrink_sizes(values)
    vocab = values.get("vocab_size")
    special = [v for k, v in values.items() if k.endswith("token_id") and is_int(v)]
    if is_int(vocab) and special and max(special) >= vocab:
        changes["vocab_size"] = max(special) + 1  # some defaults name special ids past the vocabulary
    if is_int(values.get("first_k_dense_replace")) and values["first_k_dense_replace"] > 0:
        changes["first_k_dense_replace"] = 1  # one dense layer, one MoE layer
    old_depths = {values[k] for k in LAYER_KEYS if is_int(values.get(k))}
    if is_int(values.get("num_kv_shared_layers")):  # all layers read another model's cache, or none
        changes["num_kv_shared_layers"] = LAYERS if values["num_kv_shared_layers"] in old_depths else 0
    per_layer = {k: v for k, v in values.items()
                 if isinstance(v, list) and len(v) in old_depths and len(v) > LAYERS
                 and not k.endswith(("token_id", "token_ids"))
                 and all(isinstance(x, (str, int, float, bool, type(None))) for x in v)}
    overrides = {int(k): v for k, v in (config.to_dict().get("per_layer_config") or {}).items()}
    if per_layer or overrides:
        depth = max(len(v) for v in per_layer.values()) if per_layer else max(old_depths)
        keep = kept_layers([tuple(str(v[i]) for v in per_layer.values()) + (str(overrides.get(i)),)
                            for i in range(depth)])
        for key, value in per_layer.items():
            changes[key] = [INTERMEDIATE] * LAYERS if key in INTERMEDIATE_KEYS else [value[i] for i in keep]
        if overrides:
            changes["per_layer_config"] = {new: {**overrides[old], **shrink_sizes(overrides[old], values)}
                                           for new, old in enumerate(keep) if old in overrides}
    for key, value in values.items():
        if isinstance(value, PretrainedConfig):
            changes[key] = {**value.to_diff_dict(), **shrink(value)}
    return changes


def shrink_sizes(values: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """New values for the size fields among ``values``, by name; ``reference`` (the whole
    config, for one layer's overrides) sets the old sizes that head widths scale from."""
    changes: dict[str, Any] = {}
    reference = reference or values

    def set_ints(keys: tuple[str, ...], value: Any, none: int | None = None) -> None:
        """Set the int fields among ``keys`` (``value`` may map the old value); with ``none``,
        also those the defaults leave at None (the model code would divide by it)."""
        for key in keys:
            if is_int(values.get(key)):
                changes[key] = value(values[key]) if callable(value) else value
            elif none is not None and key in values and values[key] is None:
                changes[key] = none

    old_width = next((reference[k] for k in WIDTH_KEYS if is_int(reference.get(k))), None)
    set_ints(WIDTH_KEYS, WIDTH)
    set_ints(SCALED_WIDTH_KEYS, lambda n: n * WIDTH // old_width if old_width else WIDTH)
    set_ints(LAYER_KEYS, LAYERS)
    old_heads = next((d[k] for d in (values, reference) for k in HEAD_KEYS if is_int(d.get(k))), None)
    set_ints(HEAD_KEYS, HEADS)
    set_ints(KV_HEAD_KEYS, lambda kv: HEADS if old_heads is None or kv >= old_heads else KV_HEADS_GROUPED,
             none=HEADS)
    heads_key = next((k for k in HEAD_KEYS if is_int(reference.get(k))), None)
    if heads_key and is_int(reference.get("head_dim")) and old_width:
        scale = as_wide(reference[heads_key] * reference["head_dim"], old_width, HEADS) / reference["head_dim"]
    else:
        scale = next((HEAD_DIM / reference[k] for k in HEAD_DIM_KEYS if is_int(reference.get(k))), None)
    set_ints(HEAD_DIM_KEYS, lambda n: max(2, 2 * round(n * scale / 2)), none=HEAD_DIM)
    for heads, dim in (("linear_num_value_heads", "linear_value_head_dim"),
                       ("linear_num_key_heads", "linear_key_head_dim")):
        if is_int(values.get(heads)) and is_int(values.get(dim)) and old_width:
            changes[dim] = as_wide(values[heads] * values[dim], old_width, changes[heads])
    if is_int(values.get("index_n_heads")) and is_int(values.get("index_head_dim")) and old_width:
        # A sparse-attention indexer's query is as wide as the hidden state, or not, as in the
        # full-size model (adaptkit's structural search compares widths with the hidden width).
        # Its heads hold the rotary part of the attention's heads.
        query = values["index_n_heads"] * values["index_head_dim"]
        dim = max(HEAD_DIM, changes.get("qk_rope_head_dim", 0))
        heads = WIDTH // dim
        changes["index_head_dim"] = dim
        changes["index_n_heads"] = 2 * heads if query > old_width else max(1, heads // 2) if query < old_width else heads
    set_ints(INTERMEDIATE_KEYS, INTERMEDIATE)
    experts = any(is_int(values.get(k)) and values[k] > 0 for k in EXPERT_KEYS)
    set_ints(EXPERT_KEYS, lambda n: EXPERTS if n > 0 else n)
    set_ints(EXPERTS_PER_TOKEN_KEYS, lambda n: min(n, EXPERTS_PER_TOKEN),
             none=EXPERTS_PER_TOKEN if experts else None)
    set_ints(EXPERT_WIDTH_KEYS,  # multiples of 8: grouped matmuls want 16-byte strides
             lambda n: max(8, 8 * round(n * WIDTH / old_width / 8)) if old_width else EXPERT_WIDTH)
    for key, value in FIXED.items():
        set_ints((key,), value)
    return changes


def as_wide(width: int, hidden: int, heads: int) -> int:
    """The tiny head width that makes ``heads`` heads as wide as WIDTH when the full-size heads
    are as wide as the hidden state, twice as wide when wider, half when narrower: adaptkit's
    structural search tells projections apart by comparing their width with the hidden width."""
    return WIDTH // heads * (2 if width > hidden else 1) // (2 if width < hidden else 1)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kept_layers(kinds: list[tuple[str, ...]]) -> list[int]:
    """The layers to keep: the first, then the first that differs from it in the most ways
    (attention kind, MLP kind, per-layer override...), so that a mix of kinds survives."""
    differences = [sum(a != b for a, b in zip(kind, kinds[0])) for kind in kinds]
    return [0, max(range(1, len(kinds)), key=lambda i: (differences[i], -i))][:LAYERS]
