"""The CLI's choices and defaults, in a module that imports nothing heavy (``--help`` stays fast)."""

METHODS = ("adapter", "full", "top-k", "layernorm", "lora", "scratch", "scratch-small", "fusion")

#: Learning rates in the range of the papers' sweeps (adapters ~1e-4..1e-3, full ~2e-5..5e-5); the
#: adapter rate is the one of the README's whole-data table (glue-headline).
DEFAULT_LR = {"adapter": 1e-3, "full": 3e-5, "top-k": 1e-4, "layernorm": 1e-3, "lora": 5e-4,
              "scratch": 1e-4, "scratch-small": 1e-3, "fusion": 5e-5}

LOSSES = ("ce", "cosine", "cosine+ce")

#: compare's default methods, each with the two learning rates its family tries (the papers' ranges;
#: a fresh head or LayerNorms need larger steps, full fine-tuning smaller ones).
CANDIDATES: dict[str, tuple[dict, tuple[float, float]]] = {
    "scratch-small": ({"name": "scratch-small"}, (1e-3, 3e-4)),
    "top-0": ({"name": "top-k", "top_k": 0}, (1e-2, 3e-3)),
    "top-2": ({"name": "top-k", "top_k": 2}, (1e-4, 3e-4)),
    "layernorm": ({"name": "layernorm"}, (1e-2, 3e-3)),
    "adapter-houlsby-8": ({"name": "adapter", "size": 8}, (1e-3, 3e-4)),
    "adapter-houlsby-64": ({"name": "adapter", "size": 64}, (1e-3, 3e-4)),
    "lora-r8": ({"name": "lora", "lora_rank": 8}, (1e-3, 3e-4)),
    "full": ({"name": "full"}, (5e-5, 2e-5)),
}
#: Methods compare runs when asked (--methods), besides the defaults.
EXTRA_CANDIDATES: dict[str, tuple[dict, tuple[float, float]]] = {
    "scratch": ({"name": "scratch"}, (1e-4, 3e-5)),
    "top-1": ({"name": "top-k", "top_k": 1}, (1e-4, 3e-4)),
    "top-3": ({"name": "top-k", "top_k": 3}, (1e-4, 3e-4)),
    "adapter-houlsby-256": ({"name": "adapter", "size": 256}, (1e-3, 3e-4)),
    "adapter-houlsby-ffn-64": ({"name": "adapter", "placement": "houlsby-ffn", "size": 64}, (1e-3, 3e-4)),
}

#: ``compare --preset quick``: 1,000 examples, max length 64, cross-entropy only, 2 seeds.
QUICK = {"max_train_samples": 1000, "max_length": 64, "losses": ["ce"], "seeds": 2}
