"""Tiny random models built from configs: offline, seeded, a few hundred thousand parameters."""

from __future__ import annotations

import torch
from transformers import (
    AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification,
)

REGISTRY_TYPES = ["bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta-v2",
                  "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "phi", "opt", "t5", "bart", "vit"]
FALLBACK_TYPES = ["mpnet", "gptj", "bloom", "falcon", "gemma", "roformer"]

_OVERRIDES = {
    "t5": dict(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16,
               decoder_start_token_id=0),
    "albert": dict(embedding_size=32),
    "vit": dict(image_size=16, patch_size=8, num_channels=3),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64),
    "bart": dict(encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                 encoder_attention_heads=4, decoder_attention_heads=4, d_model=64),
    "gptj": dict(rotary_dim=8),
    "llama": dict(num_key_value_heads=4), "mistral": dict(num_key_value_heads=4),
    "qwen2": dict(num_key_value_heads=4), "gemma": dict(num_key_value_heads=4, head_dim=16),
    "mixtral": dict(num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(num_key_value_heads=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64),
    "xlm": dict(emb_dim=64, n_layers=2, n_heads=4),
    "rembert": dict(input_embedding_size=32, output_embedding_size=32),
}


def tiny_config(model_type: str, num_labels: int = 2):
    kwargs = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  vocab_size=128, max_position_embeddings=64, num_labels=num_labels, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    kwargs.update(_OVERRIDES.get(model_type, {}))
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(model_type: str, num_labels: int = 2, seed: int = 0, head: bool = True):
    """A classifier (image classifier for ViT) with random weights, in eval mode, float32."""
    torch.manual_seed(seed)
    config = tiny_config(model_type, num_labels)
    if not head:
        auto = AutoModel
    elif model_type == "vit":
        auto = AutoModelForImageClassification
    else:
        auto = AutoModelForSequenceClassification
    return auto.from_config(config, dtype=torch.float32).eval()


def without_dropout(model):
    """The model with every dropout off (its own and any adapter's added so far): train mode then
    computes one function, so two forward passes can be compared exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def tiny_inputs(model, batch: int = 2, length: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if model.config.model_type == "vit":
        size = model.config.image_size
        return {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
    ids = torch.randint(3, 100, (batch, length), generator=generator)
    ids[:, -1] = model.config.eos_token_id  # sequence classifiers of encoder-decoders pool at EOS
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits
