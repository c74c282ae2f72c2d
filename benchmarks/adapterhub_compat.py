"""Proof against the real library: AdapterHub adapters loaded by adaptkit give AdapterHub's outputs.

A worker in AdapterHub's virtualenv (``adapters==1.3.0``, ``transformers==4.57.6``; created by
``efficiency.ensure_venv``) builds random-weight BERT, RoBERTa and GPT-2 models, adds SeqBn and
DoubleSeqBn adapters (defaults and variants) with classification heads, trains them a few steps,
saves them with ``save_adapter`` and records the bare base's and the adapted model's outputs.
Then this environment (transformers 5) rebuilds the same bases, loads each folder with
``adaptkit.load_adapter`` and compares. Both sides run attention "eager"; the bases' weights come
from ``seeded_weights`` (a seed per parameter name), so no base checkpoint needs to cross versions.

Composition cases (BERT and RoBERTa) do the same for several adapters under one of AdapterHub's
blocks: Stack (two SeqBn adapters trained as a stack, the upper one's head), Fuse (three SeqBn
adapters, then a dynamic AdapterFusion and its head trained a few steps; ``save_adapter_fusion``),
Parallel (two SeqBn adapters with their heads, the batch copied per adapter) and Average (two
DoubleSeqBn adapters, weights 0.3/0.7: AdapterHub's Average of SeqBn adapters needs the residual
apart, which adaptkit refuses). Each folder holds one subfolder per adapter, and the fusion's.

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
#: composition case -> (AdapterHub config class of its adapters, adapters, the block (evaluated with either
#: library's classes), heads and their labels, whether a fusion is trained)
COMPOSITIONS = {
    "stack": ("SeqBnConfig", ["lang", "task"], "Stack('lang', 'task')", {"task": 3}, False),
    "fuse": ("SeqBnConfig", ["a", "b", "c"], "Fuse('a', 'b', 'c')", {"a,b,c": 2}, True),
    "parallel": ("SeqBnConfig", ["a", "b"], "Parallel('a', 'b')", {"a": 2, "b": 2}, False),
    "average": ("DoubleSeqBnConfig", ["a", "b"], "Average('a', 'b', weights=[0.3, 0.7])", {"b": 2}, False),
}
COMPOSITION_ARCHITECTURES = ("bert", "roberta")
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
    from safetensors.torch import save_file

    for model_type in COMPOSITION_ARCHITECTURES:
        for case in (c for c in cases if c in COMPOSITIONS):
            composition_worker(output_dir / f"composition_{model_type}_{case}", model_type, size, case)
    for model_type in ARCHITECTURES:
        for case in (c for c in cases if c in CASES):
            class_name, kwargs, head, safe = CASES[case]
            model, batch, bare = adapterhub_base(model_type, size)
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


def adapterhub_base(model_type: str, size: str):
    """In the virtualenv: AdapterHub's model with the seeded base (eager, eval), the batch, and the
    bare base's last hidden state."""
    from adapters import AutoAdapterModel
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **model_config_fields(model_type, size))
    torch.manual_seed(SEED)
    model = AutoAdapterModel.from_config(config, attn_implementation="eager")
    seeded_weights(model.base_model)
    model.eval()
    batch = inputs(model_type, config.vocab_size)
    with torch.no_grad():
        bare = model.base_model(**batch).last_hidden_state
    return model, batch, bare


def train_steps(model, batch: dict, head_labels: int | None) -> None:
    """A few AdamW steps on what is trainable, dropout on: the head's cross-entropy, or (no head)
    the squared last hidden state."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    labels = torch.arange(BATCH) % (head_labels or 2)
    for _ in range(STEPS):
        if head_labels:
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        else:
            loss = model.base_model(**batch).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def composition_worker(folder: Path, model_type: str, size: str, case: str) -> None:
    """AdapterHub side of a composition case: each adapter trained alone (a Stack: as the stack), a
    fusion trained over them, outputs under the block, each adapter and the fusion saved."""
    import adapters
    from adapters import composition
    from safetensors.torch import save_file

    class_name, names, block_text, heads, fusion = COMPOSITIONS[case]
    block = eval(block_text, vars(composition))  # noqa: S307 - a constant of this file
    model, batch, bare = adapterhub_base(model_type, size)
    for name in names:
        model.add_adapter(name, config=getattr(adapters, class_name)())
        if name in heads:
            model.add_classification_head(name, num_labels=heads[name])
    for setup in ([block] if isinstance(block, composition.Stack) else names):
        model.train_adapter(setup)
        head = setup.last() if isinstance(setup, composition.Stack) else setup
        model.active_head = head if head in heads else None
        train_steps(model, batch, heads.get(head))
    if fusion:
        model.add_adapter_fusion(block)
        model.add_classification_head(block.name, num_labels=heads[block.name])
        model.train_adapter_fusion(block)
        train_steps(model, batch, heads[block.name])
    model.set_active_adapters(block)
    model.active_head = list(heads) if isinstance(block, composition.Parallel) else list(heads)[-1]
    with torch.no_grad():
        hidden = model.base_model(**batch).last_hidden_state
        out = model(**batch)
    logits = torch.cat([o.logits for o in out]) if isinstance(block, composition.Parallel) else out.logits
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        model.save_adapter(str(folder / name), name, with_head=name in heads)
    if fusion:
        model.save_adapter_fusion(str(folder / "fusion"), block.name, with_head=True)
    save_file({"bare_hidden": bare, "hidden": hidden, "logits": logits, **batch}, str(folder / "expected.safetensors"))
    (folder / "base_config.json").write_text(json.dumps(
        {"model_type": model_type, "fields": model_config_fields(model_type, size), "adapters": adapters.__version__,
         "case": case, "names": names, "block": block_text, "fusion": fusion}, indent=1) + "\n")


# --------------------------------------------------------------------------- adaptkit side

def rebuilt_base(folder: Path) -> tuple[torch.nn.Module, dict, dict, torch.Tensor]:
    """The case's base in transformers 5 (bare ``AutoModel``, seeded weights, eager), AdapterHub's
    expected outputs, the batch, and the bare base's last hidden state."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    described = json.loads((folder / "base_config.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))
    model = AutoModel.from_config(AutoConfig.for_model(described["model_type"], **described["fields"]),
                                  attn_implementation="eager")
    seeded_weights(model)
    model.eval()
    batch = {k: expected[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        bare = model(**batch).last_hidden_state
    return model, expected, batch, bare


def compare(folder: Path) -> dict:
    """Load the folder onto the same base in transformers 5 and compare with AdapterHub's outputs."""
    import adaptkit

    model, expected, batch, bare = rebuilt_base(folder)
    adaptkit.load_adapter(model, folder)
    with torch.no_grad():
        out = model(**batch)
    # AdapterHub's hidden_states[-1]: after GPT-2's ln_f too
    return judged(expected, bare, out.last_hidden_state, out.get("logits"))


def compare_composition(folder: Path) -> dict:
    """Load a composition case's adapters (and fusion) onto the same base and compare under the block."""
    import adaptkit

    described = json.loads((folder / "base_config.json").read_text())
    model, expected, batch, bare = rebuilt_base(folder)
    for name in described["names"]:
        adaptkit.load_adapter(model, folder / name)
    if described["fusion"]:
        adaptkit.load_fusion(model, folder / "fusion")
    adaptkit.set_active_adapter(model, composition_block(described["block"]))
    with torch.no_grad():
        out = model(**batch)
    return judged(expected, bare, out.last_hidden_state, out.get("logits"))


def composition_block(text: str):
    """A case's block built from adaptkit's classes."""
    import adaptkit

    return eval(text, {n: getattr(adaptkit, n) for n in ("Stack", "Fuse", "Parallel", "Average")})  # noqa: S307


def judged(expected: dict, bare: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor | None) -> dict:
    """The differences from AdapterHub's outputs, the tolerance and the verdict."""
    import transformers

    result = {"transformers": transformers.__version__,
              "bare_max_abs_diff": (bare - expected["bare_hidden"]).abs().max().item(),
              "hidden_max_abs_diff": (hidden - expected["hidden"]).abs().max().item(),
              # how far the adapters moved AdapterHub's own output: the comparison is not of no-ops
              "adapter_effect_max_abs": (expected["hidden"] - expected["bare_hidden"].repeat(
                  expected["hidden"].shape[0] // expected["bare_hidden"].shape[0], 1, 1)).abs().max().item()}
    if "logits" in expected:
        missing = logits is None or logits.shape != expected["logits"].shape  # no head ran, or another's
        result["logits_max_abs_diff"] = float("inf") if missing else (logits - expected["logits"]).abs().max().item()
        result["logits_scale"] = expected["logits"].abs().max().item()
    result["tolerance"] = max(1e-5, 2 * result["bare_max_abs_diff"])
    result["passed"] = max(result["hidden_max_abs_diff"], result.get("logits_max_abs_diff", 0.0)) <= result["tolerance"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base", help="base: bert-base-sized (default)")
    parser.add_argument("--cases", nargs="+", choices=sorted({**CASES, **COMPOSITIONS}), help="default: all")
    parser.add_argument("--output-dir", type=Path, help="keep the AdapterHub folders here (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-adapterhub", help="AdapterHub's virtualenv")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = args.cases or [*CASES, *COMPOSITIONS]
    if args.worker:
        worker(args.worker, args.size, cases)
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from efficiency import ADAPTERHUB_REQUIREMENTS, ensure_venv

    from adaptkit.atomic import write_json_atomic
    from glue_tasks.machine import machine_info

    python = ensure_venv(args.venv)
    work = args.output_dir or Path(tempfile.mkdtemp(prefix="adapterhub-compat-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": "", "TQDM_DISABLE": "1"}
    subprocess.run([str(python), __file__, "--worker", str(work), "--size", args.size, "--cases", *cases],
                   check=True, env=env)
    results = {f"{t}/{c}": compare(work / f"adapterhub_{t}_{c}") for t in ARCHITECTURES for c in cases if c in CASES}
    results.update((f"{t}/{c}", compare_composition(work / f"composition_{t}_{c}"))
                   for t in COMPOSITION_ARCHITECTURES for c in cases if c in COMPOSITIONS)
    for key, result in results.items():
        print(f"{key:32} bare {result['bare_max_abs_diff']:.2e}  hidden {result['hidden_max_abs_diff']:.2e}  "
              f"logits {result.get('logits_max_abs_diff', float('nan')):.2e}  {'ok' if result['passed'] else 'FAIL'}")
    if args.output_dir is None:
        shutil.rmtree(work)
    write_json_atomic(args.output, {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/adapterhub_compat.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "adapterhub": ADAPTERHUB_REQUIREMENTS, "size": {"name": args.size, **SIZES[args.size]},
        "settings": {"batch": BATCH, "length": LENGTH, "train_steps": STEPS, "attn_implementation": "eager",
                     "cases": {c: {"config": CASES[c][0], "kwargs": CASES[c][1], "head": CASES[c][2],
                                   "safetensors": CASES[c][3]} for c in cases if c in CASES},
                     "compositions": {c: dict(zip(("config", "adapters", "block", "heads", "fusion"), COMPOSITIONS[c]))
                                      for c in cases if c in COMPOSITIONS}},
        "criterion": "max(|Δ hidden|, |Δ logits|) <= max(1e-5, 2 × bare |Δ hidden|)",
        "results": results, "all_passed": all(r["passed"] for r in results.values())})
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
