"""The CLI's choices and defaults, in a module that imports nothing heavy (``--help`` stays fast)."""

METHODS = ("adapter", "full", "top-k", "layernorm", "lora", "scratch")

#: Learning rates in the range of the papers' sweeps (adapters ~1e-4..1e-3, full ~2e-5..5e-5); the
#: adapter rate is the one of the README's whole-data table (glue-headline).
DEFAULT_LR = {"adapter": 1e-3, "full": 3e-5, "top-k": 1e-4, "layernorm": 1e-3, "lora": 5e-4,
              "scratch": 1e-4}

LOSSES = ("ce", "cosine", "cosine+ce")
