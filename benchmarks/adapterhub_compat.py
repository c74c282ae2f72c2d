"""Proof against the real library: AdapterHub adapters loaded by adaptkit give AdapterHub's outputs.

A worker in AdapterHub's virtualenv (``adapters==1.3.0``, ``transformers==4.57.6``; created by
``efficiency.ensure_venv``) builds random-weight BERT, RoBERTa and GPT-2 models, adds SeqBn and
DoubleSeqBn adapters (defaults and variants) with classification heads, trains them a few steps,
saves them with ``save_adapter`` and records the bare base's and the adapted model's outputs.
Then this environment (transformers 5) rebuilds the same bases, loads each folder with
``adaptkit.load_adapter`` and compares. Both sides run attention "eager"; the bases' weights come
from ``seeded_weights`` (a seed per parameter name), so no base checkpoint needs to cross versions.

A case passes when adaptkit's max |Δ| (logits and last hidden state) is at most
max(1e-5, 2 × the bare bases' max |Δ| across the two transformers versions).

  python benchmarks/adapterhub_compat.py                      # benchmarks/results/adapterhub_compat.json
  python benchmarks/adapterhub_compat.py --size tiny --output-dir tests/fixtures   # the test fixtures
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "adapterhub_compat.json"
SIZES = {  # per architecture: transformers config fields
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
             "vocab_size": 64},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
              "vocab_size": 1000},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "vocab_size": 30522},
}
ARCHITECTURES = ("bert", "roberta", "gpt2")
#: case -> (AdapterHub config class, its keyword arguments, head arguments or None, save as safetensors)
CASES = {
    "seq_bn": ("SeqBnConfig", {}, {"num_labels": 2}, False),
    "double_seq_bn": ("DoubleSeqBnConfig", {}, {"num_labels": 3}, False),
    "seq_bn_variant": ("SeqBnConfig", {"reduction_factor": {"default": 8}, "leave_out": [0], "scaling": "learned",
                                       "non_linearity": "gelu"}, {"num_labels": 4, "layers": 1}, True),
    "double_seq_bn_variant": ("DoubleSeqBnConfig", {"scaling": "channel", "output_adapter": False,
                                                    "non_linearity": "relu"}, None, False),
}
BATCH, LENGTH, STEPS, SEED = 3, 10, 5, 0


def model_config_fields(model_type: str, size: str) -> dict:
    fields = dict(SIZES[size], max_position_embeddings=LENGTH + 4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if model_type == "gpt2":  # GPT-2's own names
        fields = {"n_embd": fields["hidden_size"], "n_layer": fields["num_hidden_layers"],
                  "n_head": fields["num_attention_heads"], "n_inner": fields["intermediate_size"],
                  "vocab_size": fields["vocab_size"], "n_positions": fields["max_position_embeddings"],
                  "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    return fields


@torch.no_grad()
def seeded_weights(model: torch.nn.Module) -> None:
    """Every parameter from a generator seeded by its name: the same base on any transformers
    version that names its parameters alike (norm weights near 1, everything else near 0)."""
    for name, param in model.named_parameters():
        generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        values = torch.randn(param.shape, generator=generator) * 0.05
        param.copy_(values + 1.0 if "ln" in name.lower().split(".")[-2] and name.endswith("weight") else values)


def inputs(model_type: str, vocab: int) -> dict[str, torch.Tensor]:
    """Right-padded ids (the last example two tokens short), the first token a CLS-like 1."""
    generator = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(3, vocab, (BATCH, LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    ids[-1, -2:], mask[-1, -2:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------- AdapterHub side

def worker(output_dir: Path, size: str, cases: list[str]) -> None:
    """Runs in the virtualenv: writes ``<arch>_<case>/`` (AdapterHub's files + expected.pt)."""
    import adapters
    from adapters import AutoAdapterModel
    from safetensors.torch import save_file
    from transformers import AutoConfig

    for model_type in ARCHITECTURES:
        for case in cases:
            class_name, kwargs, head, safe = CASES[case]
            config = AutoConfig.for_model(model_type, **model_config_fields(model_type, size))
            torch.manual_seed(SEED)
            model = AutoAdapterModel.from_config(config, attn_implementation="eager")
            seeded_weights(model.base_model)
            model.eval()
            batch = inputs(model_type, config.vocab_size)
            with torch.no_grad():
                bare = model.base_model(**batch).last_hidden_state
            model.add_adapter("task", config=getattr(adapters, class_name)(**kwargs))
            if head is not None:
                model.add_classification_head("task", **head)
            model.train_adapter("task")
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=2e-2)
            labels = torch.arange(BATCH) % (head or {"num_labels": 2})["num_labels"]
            for _ in range(STEPS):  # a few steps with dropout on: weights far from their init
                out = model(**batch)
                if head is not None:
                    loss = torch.nn.functional.cross_entropy(out.logits, labels)
                else:
                    loss = out[0].pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                out = model(**batch, output_hidden_states=True)
            folder = output_dir / f"adapterhub_{model_type}_{case}"
            model.save_adapter(str(folder), "task", with_head=head is not None, use_safetensors=safe)
            expected = {"bare_hidden": bare, "hidden": out.hidden_states[-1], **batch}
            if head is not None:
                expected["logits"] = out.logits
            save_file({k: v.contiguous() for k, v in expected.items()}, str(folder / "expected.safetensors"))
            (folder / "base_config.json").write_text(json.dumps(
                {"model_type": model_type, "fields": model_config_fields(model_type, size),
                 "adapters": adapters.__version__, "case": case}, indent=1) + "\n")


# --------------------------------------------------------------------------- adaptkit side

def compare(folder: Path) -> dict:
    """Load the folder onto the same base in transformers 5 and compare with AdapterHub's outputs."""
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    import adaptkit

    described = json.loads((folder / "base_config.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))
    config = AutoConfig.for_model(described["model_type"], **described["fields"])
    model = AutoModel.from_config(config, attn_implementation="eager")
    seeded_weights(model)
    model.eval()
    batch = {k: expected[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        bare = model(**batch).last_hidden_state
        adaptkit.load_adapter(model, folder)
        out = model(**batch)
    hidden = out.last_hidden_state  # AdapterHub's hidden_states[-1]: after GPT-2's ln_f too
    result = {"transformers": transformers.__version__,
              "bare_max_abs_diff": (bare - expected["bare_hidden"]).abs().max().item(),
              "hidden_max_abs_diff": (hidden - expected["hidden"]).abs().max().item(),
              # how far the trained adapter moved AdapterHub's own output: the comparison is not of no-ops
              "adapter_effect_max_abs": (expected["hidden"] - expected["bare_hidden"]).abs().max().item()}
    if "logits" in expected:
        result["logits_max_abs_diff"] = (out.logits - expected["logits"]).abs().max().item()
        result["logits_scale"] = expected["logits"].abs().max().item()
    result["tolerance"] = max(1e-5, 2 * result["bare_max_abs_diff"])
    result["passed"] = max(result["hidden_max_abs_diff"], result.get("logits_max_abs_diff", 0.0)) <= result["tolerance"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base", help="base: bert-base-sized (default)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), help="default: all")
    parser.add_argument("--output-dir", type=Path, help="keep the AdapterHub folders here (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-adapterhub", help="AdapterHub's virtualenv")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = args.cases or list(CASES)
    if args.worker:
        worker(args.worker, args.size, cases)
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from efficiency import ADAPTERHUB_REQUIREMENTS, ensure_venv

    from adaptkit.atomic import write_json_atomic

    python = ensure_venv(args.venv)
    work = args.output_dir or Path(tempfile.mkdtemp(prefix="adapterhub-compat-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": "", "TQDM_DISABLE": "1"}
    subprocess.run([str(python), __file__, "--worker", str(work), "--size", args.size, "--cases", *cases],
                   check=True, env=env)
    results = {f"{t}/{c}": compare(work / f"adapterhub_{t}_{c}") for t in ARCHITECTURES for c in cases}
    for key, result in results.items():
        print(f"{key:32} bare {result['bare_max_abs_diff']:.2e}  hidden {result['hidden_max_abs_diff']:.2e}  "
              f"logits {result.get('logits_max_abs_diff', float('nan')):.2e}  {'ok' if result['passed'] else 'FAIL'}")
    if args.output_dir is None:
        shutil.rmtree(work)
    write_json_atomic(args.output, {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/adapterhub_compat.py", *(argv or sys.argv[1:])]),
        "adapterhub": ADAPTERHUB_REQUIREMENTS, "size": {"name": args.size, **SIZES[args.size]},
        "settings": {"batch": BATCH, "length": LENGTH, "train_steps": STEPS, "attn_implementation": "eager",
                     "cases": {c: {"config": CASES[c][0], "kwargs": CASES[c][1], "head": CASES[c][2],
                                   "safetensors": CASES[c][3]} for c in cases}},
        "criterion": "max(|Δ hidden|, |Δ logits|) <= max(1e-5, 2 × bare |Δ hidden|)",
        "results": results, "all_passed": all(r["passed"] for r in results.values())})
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
