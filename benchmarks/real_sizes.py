"""Adapters on models of real size: the published configs of real checkpoints, random weights.

The tests use tiny models; real shapes (grouped KV heads, head_dim 256, 250k vocabularies, shared
ALBERT layers, cross-attention, untied LM heads, bf16 bases, billions of parameters) only show at
real configs. The configs come from benchmarks/real_size_configs.py, so nothing is downloaded.

Each model runs in its own subprocess (``--worker NAME``): peak memory (VmHWM) is per model, and a
crash, an out-of-memory kill or a timeout ends that model only. Per model, with a fixed seed and
``model.eval()`` (dropout off): build (timed); base logits; ``add_adapter`` (Houlsby, m=64, timed)
with checks of blocks, sites and parameter counts; ``adapters_disabled`` equals the base exactly;
one AdamW step (gradients only where trainable, every adapter tensor moved); a second adapter
beside it and 4 threads sharing the model, each with its own routing (either adapter, the base, a
mixed batch): every output equals the serial one exactly and every base Parameter is the same
object with the same values; save (timed, size); ``delete_adapter`` gives the base back exactly;
``load_adapter`` (timed) gives the trained logits back exactly. A stage that raises is recorded and skips only the stages that need it.

  python benchmarks/real_sizes.py                          # all, writes benchmarks/results/real_sizes.json
  python benchmarks/real_sizes.py --models bert-base t5-base --output /tmp/rs.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's adaptkit, installed or not

from real_size_configs import MODELS  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "real_sizes.json"
SEED, BATCH, SEQ_LEN, SIZE, LR = 0, 2, 32, 64, 1e-3
THREAD_ROUNDS = 5  # forwards per thread in the threads stage
ADAPTER_NAME = "task"
AUTO_CLASSES = {"sequence-classification": "AutoModelForSequenceClassification",
                "image-classification": "AutoModelForImageClassification",
                "seq2seq-lm": "AutoModelForSeq2SeqLM", "causal-lm": "AutoModelForCausalLM"}
CLASSIFIERS = ("sequence-classification", "image-classification")
RESULT_MARK = "REAL_SIZES_RESULT "  # prefixes the worker's JSON line, so stray prints do not confuse the parent
MESSAGE_CHARS = 4000  # an adaptkit error can list every candidate module: keep the record readable
STDERR_LINES = 30
BY_NAME = {spec["name"]: spec for spec in MODELS}
SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


# --------------------------------------------------------------------------- worker side
# torch, transformers and adaptkit are imported here only, so the parent stays small.

class Worker:
    """One model's run. Stages run in order; one that raises is recorded with its error, and the
    stages that need it are skipped, so one failure still leaves the independent checks."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        self.spec, self.torch = spec, torch
        self.kind = spec["kind"]
        self.record: dict[str, Any] = {
            "name": spec["name"], "hub_id": spec["hub_id"], "model_type": spec["model_type"],
            "auto_class": AUTO_CLASSES[self.kind], "dtype": spec["dtype"],
            "published_dtype": spec["published_dtype"], "published_config": spec["config"],
            "stages": {}, "checks": {}, "errors": []}
        self.done: set[str] = set()

    def stage(self, name: str, fn: Callable[[], None], needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if n not in self.done]
        if missing:
            self.record["stages"][name] = {"status": f"skipped: {', '.join(missing)} did not complete"}
            return
        start = time.perf_counter()
        try:
            fn()
            status = "ok"
            self.done.add(name)
        except Exception as exc:  # noqa: BLE001 - any failure is a result to record
            status = "error"
            self.record["errors"].append(describe_error(name, exc))
        self.record["stages"][name] = {"status": status, "seconds": round(time.perf_counter() - start, 3)}

    def check(self, name: str, passed: bool, **measured: Any) -> None:
        self.record["checks"][name] = {"passed": bool(passed), **measured}

    def compare(self, name: str, got: Any, want: Any) -> None:
        """Exact equality (torch.equal), with the largest difference when it fails."""
        same_shape = got.shape == want.shape
        diff = (got.float() - want.float()).abs().max().item() if same_shape else None
        self.check(name, self.torch.equal(got, want), max_abs_diff=diff,
                   shapes=None if same_shape else [list(got.shape), list(want.shape)])

    def logits(self) -> Any:
        with self.torch.no_grad():
            return self.model(**self.inputs).logits.detach().clone()

    def run(self) -> dict[str, Any]:
        from measure import vm_hwm_bytes

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="real_sizes-") as tmp:
            self.checkpoint = Path(tmp)
            self.stage("build", self.build)
            self.record["peak_rss_after_build_bytes"] = vm_hwm_bytes()
            self.stage("base_forward", self.base_forward, ("build",))
            self.stage("add_adapter", self.add_adapter, ("base_forward",))
            self.stage("disabled_forward", self.disabled_forward, ("add_adapter",))
            self.stage("train_step", self.train_step, ("add_adapter",))
            self.stage("after_forward", self.after_forward, ("train_step",))
            self.stage("threads", self.threads, ("after_forward",))
            self.stage("save", self.save, ("after_forward",))
            self.stage("delete", self.delete, ("after_forward",))
            self.stage("load", self.load, ("save", "delete"))
        self.record["peak_rss_bytes"] = vm_hwm_bytes()
        self.record["worker_seconds"] = round(time.perf_counter() - start, 3)
        return self.record

    def build(self) -> None:
        import transformers

        transformers.logging.set_verbosity_error()
        extra = {"num_labels": 2} if self.kind in CLASSIFIERS else {}
        config = transformers.AutoConfig.for_model(self.spec["model_type"], **self.spec["config"], **extra)
        self.torch.manual_seed(SEED)
        auto_class = getattr(transformers, AUTO_CLASSES[self.kind])
        self.model = auto_class.from_config(config, dtype=getattr(self.torch, self.spec["dtype"])).eval()
        self.base_names = {n for n, _ in self.model.named_parameters()}
        output = self.model.get_output_embeddings()
        self.record.update(
            model_class=type(self.model).__name__,
            parameters=sum(p.numel() for p in self.model.parameters()),
            lm_head_tied=(output.weight is self.model.get_input_embeddings().weight
                          if self.kind in ("causal-lm", "seq2seq-lm") and output is not None else None))

    def base_forward(self) -> None:
        self.inputs, self.labels = make_inputs(self.torch, self.kind, self.model)
        self.base = self.logits()

    def add_adapter(self) -> None:
        import adaptkit
        from adaptkit.params import adapter_parameter_names
        from adaptkit.targets import find_blocks

        base_report = adaptkit.count_parameters(self.model)
        self.torch.manual_seed(SEED)
        start = time.perf_counter()
        sites = adaptkit.add_adapter(self.model, adaptkit.AdapterConfig.houlsby(SIZE), name=ADAPTER_NAME)
        self.record["add_adapter_seconds"] = round(time.perf_counter() - start, 3)
        params = dict(self.model.named_parameters())
        self.adapter_names = adapter_parameter_names(self.model)
        blocks = find_blocks(self.model)
        per_block = {b: sum(s.name.startswith(b + ".") for s in sites) for b in blocks}
        expected = {b: expected_sites(self.kind, b) for b in blocks}
        report = adaptkit.count_parameters(self.model)
        self.record.update(
            blocks=len(blocks), sites=len(sites), sites_by_kind=dict(Counter(s.kind for s in sites)),
            sites_per_block=round(len(sites) / max(1, len(blocks)), 3),
            site_widths=sorted({s.width for s in sites}),
            adapter_dtypes=sorted({str(params[n].dtype).removeprefix("torch.") for n in self.adapter_names}),
            added_parameters=sum(p.numel() for n, p in params.items() if n not in self.base_names),
            base_parameter_report=base_report.to_dict(), parameter_report=report.to_dict())
        self.check("sites_per_block", per_block == expected and sum(per_block.values()) == len(sites),
                   measured=dict(Counter(per_block.values())), expected=dict(Counter(expected.values())),
                   blocks_off=[b for b in blocks if per_block[b] != expected[b]][:5],
                   sites_outside_blocks=len(sites) - sum(per_block.values()))
        want = sum(2 * SIZE * s.width + SIZE + s.width for s in sites)
        self.check("adapter_parameters", report.trainable["adapters"] == want == report.total["adapters"],
                   expected=want, trainable=report.trainable["adapters"], total=report.total["adapters"])
        # Against the base's count: where an adapter trains its own copy of the LayerNorms, the
        # total after adding counts the frozen originals and the copies.
        self.check("layernorms_all_trainable",
                   report.trainable["layernorms"] == base_report.total["layernorms"],
                   trainable=report.trainable["layernorms"], base_total=base_report.total["layernorms"],
                   total=report.total["layernorms"])
        self.check("other_frozen", report.trainable["other"] == 0, trainable=report.trainable["other"])

    def disabled_forward(self) -> None:
        import adaptkit

        with adaptkit.adapters_disabled(self.model):
            self.compare("disabled_equals_base", self.logits(), self.base)

    def train_step(self) -> None:
        torch = self.torch
        params = dict(self.model.named_parameters())
        trainable = [p for p in params.values() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=LR)
        before = {n: params[n].detach().clone() for n in self.adapter_names}
        start = time.perf_counter()
        output = self.model(**self.inputs, **self.labels)
        output.loss.backward()
        with_grad = {n for n, p in params.items() if p.grad is not None}
        self.check("no_grad_on_frozen", all(params[n].requires_grad for n in with_grad),
                   frozen_with_grad=sorted(n for n in with_grad if not params[n].requires_grad)[:5])
        self.check("every_adapter_tensor_has_grad", with_grad >= set(self.adapter_names),
                   missing=sorted(set(self.adapter_names) - with_grad)[:5],
                   adapter_tensors=len(self.adapter_names))
        optimizer.step()
        self.record.update(train_step_seconds=round(time.perf_counter() - start, 3),
                           loss=output.loss.item(),
                           trainable_without_grad=sorted(n for n, p in params.items()
                                                         if p.requires_grad and n not in with_grad))
        unchanged = [n for n in self.adapter_names if torch.equal(params[n], before[n])]
        self.check("adapter_tensors_changed", not unchanged, unchanged=unchanged[:5])
        active = output.logits.detach()
        self.check("active_adapter_changes_output", not torch.equal(active, self.base),
                   max_abs_diff=(active.float() - self.base.float()).abs().max().item())

    def after_forward(self) -> None:
        self.after = self.logits()

    def threads(self) -> None:
        """Two adapters, four threads, four routings, THREAD_ROUNDS forwards each: exactly the serial
        outputs. A mixed batch adaptkit refuses on this model (a trained norm of a tensor the batch
        shares) is recorded and left out."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        import adaptkit

        torch = self.torch
        base = {n: (p, p.detach().clone()) for n, p in self.model.named_parameters() if n in self.base_names}
        torch.manual_seed(SEED + 1)
        adaptkit.add_adapter(self.model, adaptkit.AdapterConfig.houlsby(SIZE, init_std=0.05), name="other",
                             activate=False)
        batch = next(iter(self.inputs.values())).shape[0]
        routings = [ADAPTER_NAME, "other", None, [ADAPTER_NAME, "other"][:batch] + [None] * (batch - 2)]

        def run(routing):
            context = (adaptkit.per_example_adapters(self.model, routing) if isinstance(routing, list)
                       else adaptkit.using(self.model, routing))
            with context:
                return self.logits()

        try:
            serial = [run(routing) for routing in routings[:3]]
            try:
                serial.append(run(routings[3]))
            except adaptkit.AdapterError as exc:
                self.record["threads_mixed_batch_refused"] = str(exc)[:MESSAGE_CHARS]
                routings = routings[:3]
            start, barrier = time.perf_counter(), threading.Barrier(len(routings))

            def thread(index):
                barrier.wait()
                return [torch.equal(run(routings[index]), serial[index]) for _ in range(THREAD_ROUNDS)]

            with ThreadPoolExecutor(len(routings)) as pool:
                equal = list(pool.map(thread, range(len(routings))))
            self.record["threads_seconds"] = round(time.perf_counter() - start, 3)
        finally:
            adaptkit.delete_adapter(self.model, "other")
        self.check("threads_equal_serial", all(all(t) for t in equal),
                   unequal_by_thread=[r.count(False) for r in equal], forwards=len(routings) * THREAD_ROUNDS)
        self.check("routings_differ", not torch.equal(serial[0], serial[1]) and not torch.equal(serial[0], serial[2]))
        touched = [n for n, (param, values) in base.items()
                   if self.model.get_parameter(n) is not param or not torch.equal(param.detach(), values)]
        self.check("base_parameters_untouched", not touched, touched=touched[:5])

    def save(self) -> None:
        import adaptkit

        start = time.perf_counter()
        adaptkit.save_adapter(self.model, self.checkpoint)
        self.record["save_seconds"] = round(time.perf_counter() - start, 3)
        files = {p.name: p.stat().st_size for p in self.checkpoint.rglob("*") if p.is_file()}
        self.record.update(checkpoint_files=files, checkpoint_bytes=sum(files.values()))

    def delete(self) -> None:
        import adaptkit

        adaptkit.delete_adapter(self.model, ADAPTER_NAME)
        leftover = sorted({n for n, _ in self.model.named_parameters()} - self.base_names)
        self.check("delete_removes_adapter_parameters", not leftover, leftover=leftover[:5])
        self.compare("deleted_equals_base", self.logits(), self.base)

    def load(self) -> None:
        import adaptkit

        start = time.perf_counter()
        adaptkit.load_adapter(self.model, self.checkpoint)
        self.record["load_seconds"] = round(time.perf_counter() - start, 3)
        self.compare("reloaded_equals_after", self.logits(), self.after)


def make_inputs(torch: Any, kind: str, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(forward inputs, labels). Token ids come from measure.random_batch (1000-29999: inside
    every vocabulary here; ALBERT's is the smallest at 30000)."""
    from measure import random_batch

    batch = random_batch(BATCH, SEQ_LEN, SEED)
    if kind == "image-classification":
        side, channels = model.config.image_size, model.config.num_channels
        pixels = torch.randn(BATCH, channels, side, side, generator=torch.Generator().manual_seed(SEED))
        return {"pixel_values": pixels.to(model.dtype)}, {"labels": batch["labels"]}
    text = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if kind == "sequence-classification":
        return text, {"labels": batch["labels"]}
    if kind == "causal-lm":
        return text, {"labels": batch["input_ids"]}
    decoder = random_batch(BATCH, SEQ_LEN, SEED + 1)["input_ids"]
    return {**text, "decoder_input_ids": decoder}, {"labels": decoder}


def expected_sites(kind: str, block: str) -> int:
    """Attention + feed-forward per block; a seq2seq decoder block adds cross-attention."""
    return 3 if kind == "seq2seq-lm" and "decoder" in block.split(".") else 2


def describe_error(stage: str, exc: BaseException) -> dict[str, str]:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = Path(frame.filename)
    where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
    message = str(exc)
    return {"stage": stage, "type": type(exc).__name__,
            "message": message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS] + " [...]",
            "where": f"{where}:{frame.lineno} in {frame.name}: {frame.line}"}


def worker(name: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    print(RESULT_MARK + json.dumps(Worker(BY_NAME[name]).run()), flush=True)


# --------------------------------------------------------------------------- parent side

def run_model(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The worker's record, or what is known when it returned none (crash, kill, timeout)."""
    command = [sys.executable, __file__, "--worker", spec["name"], "--threads", str(args.threads)]
    all_before, children_before = cpu_seconds()
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:  # its output is bytes whatever text= says
        returncode, stdout = None, (exc.stdout or b"").decode(errors="replace")
        stderr = (exc.stderr or b"").decode(errors="replace")
    wall = time.perf_counter() - start
    all_after, children_after = cpu_seconds()
    worker_cpu = children_after - children_before
    results = [line[len(RESULT_MARK):] for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if results:
        record = json.loads(results[-1])
    else:
        why = (f"timed out after {args.timeout} s" if returncode is None else
               f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}")
        record = {"name": spec["name"], "hub_id": spec["hub_id"], "model_type": spec["model_type"],
                  "dtype": spec["dtype"], "stages": {}, "checks": {},
                  "errors": [{"stage": "process", "type": "NoResult", "message": f"worker {why}",
                              "where": ""}]}
    if returncode != 0 or not results:
        record["stderr_tail"] = stderr.splitlines()[-STDERR_LINES:]
    record["process"] = {"returncode": returncode, "wall_seconds": round(wall, 3),
                         "cpu_seconds": round(worker_cpu, 3),
                         "other_cores": round(max(0.0, all_after - all_before - worker_cpu) / wall, 3)}
    return record


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have used since boot, CPU seconds of this process's finished
    children): their difference over a worker's run is what other jobs took meanwhile. On a
    shared machine that explains slow timings; the checks do not depend on it."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # user..steal less idle and iowait; guest is inside user
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def _fmt(value: Any, spec: str, scale: float = 1) -> str:
    return "-" if value is None else format(value / scale if scale != 1 else value, spec)


def _checks(r: dict[str, Any]) -> str:
    checks = r.get("checks", {}).values()
    return f"{sum(c['passed'] for c in checks)}/{len(checks)}"


COLUMNS: list[tuple[str, int, Callable[[dict[str, Any]], str]]] = [  # header, width (<0: left), cell
    ("model", -17, lambda r: r["name"]),
    ("params M", 9, lambda r: _fmt(r.get("parameters"), ".1f", 1e6)),
    ("dtype", 6, lambda r: SHORT_DTYPES[r["dtype"]]),
    ("build s", 8, lambda r: _fmt(r["stages"].get("build", {}).get("seconds"), ".1f")),
    ("total s", 8, lambda r: _fmt(r["process"]["wall_seconds"], ".1f")),
    ("others", 7, lambda r: _fmt(r["process"].get("other_cores"), ".2f")),
    ("peak GiB", 9, lambda r: _fmt(r.get("peak_rss_bytes"), ".2f", 2**30)),
    ("blocks", 7, lambda r: _fmt(r.get("blocks"), "d")),
    ("s/blk", 6, lambda r: _fmt(r.get("sites_per_block"), "g")),
    ("train %", 8, lambda r: _fmt(r.get("parameter_report", {}).get("trainable_percent"), ".3f")),
    ("head train", 11, lambda r: _fmt(r.get("parameter_report", {}).get("by_category", {})
                                      .get("head", {}).get("trainable"), ",d")),
    ("adapter", 8, lambda r: "/".join(SHORT_DTYPES[d] for d in r.get("adapter_dtypes", [])) or "-"),
    ("ckpt MiB", 9, lambda r: _fmt(r.get("checkpoint_bytes"), ".2f", 2**20)),
    ("checks", 7, _checks),
    ("errors", 7, lambda r: str(len(r["errors"]))),
]


def summary_row(r: dict[str, Any]) -> str:
    return "".join(f"{cell(r):<{-w}}" if w < 0 else f"{cell(r):>{w}}" for _, w, cell in COLUMNS)


def print_table(records: list[dict[str, Any]]) -> None:
    print("\n" + "".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w, _ in COLUMNS))
    for r in records:
        print(summary_row(r))
    for r in records:
        for name, c in r.get("checks", {}).items():
            if not c["passed"]:
                details = {k: v for k, v in c.items() if k != "passed"}
                print(f"  {r['name']}: check {name} FAILED {json.dumps(details)[:300]}")
        for e in r.get("errors", []):
            print(f"  {r['name']}: {e['stage']} raised {e['type']}: {e['message'][:300]}"
                  + (f"\n      at {e['where']}" if e["where"] else ""))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build models from the published configs of real checkpoints (random weights, "
                    "offline), each in its own subprocess, and check adaptkit on each: sites per "
                    "block, parameter counts, adapters_disabled == base, one AdamW step with "
                    "gradients only where trainable, save / delete / load round trip (exact "
                    f"logits). Houlsby adapters m={SIZE}, batch {BATCH}x{SEQ_LEN}, seed {SEED}, "
                    "model.eval().",
        epilog="models: " + ", ".join(f"{s['name']} ({s['hub_id']}, {s['dtype']})" for s in MODELS)
               + ". On 2 cores the whole list takes tens of minutes; gemma-2b alone needs ~6 GB.")
    parser.add_argument("--models", nargs="+", metavar="NAME", type=str.lower,
                        help="short names to run, in this order (default: all; see the list below)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results, rewritten atomically after every model "
                             "(default: benchmarks/results/real_sizes.json)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per model before its worker is killed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default: %(default)s)")
    parser.add_argument("--worker", metavar="NAME", choices=list(BY_NAME),
                        help="internal: run one model in this process and print its JSON record")
    args = parser.parse_args()
    unknown = [n for n in args.models or [] if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(BY_NAME)}")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    from adaptkit.atomic import write_json_atomic  # the parent needs torch only from here on
    from glue_tasks.machine import machine_info, source_info
    specs = [BY_NAME[n] for n in args.models] if args.models else MODELS
    started = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "adaptkit": source_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"adapter": f"AdapterConfig.houlsby({SIZE}), name={ADAPTER_NAME!r}", "seed": SEED,
                     "batch": BATCH, "seq_len": SEQ_LEN, "image": "2x3x224x224 randn",
                     "optimizer": f"AdamW(lr={LR}) over trainable parameters, one step",
                     "mode": "model.eval() throughout (dropout off)", "torch_threads": args.threads,
                     "timeout_s": args.timeout, "num_labels": 2},
        "complete": False, "models": []}
    for spec in specs:
        print(f"{spec['name']} ({spec['hub_id']}) ...", file=sys.stderr, flush=True)
        record = run_model(spec, args)
        result["models"].append(record)
        result["total_seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = len(result["models"]) == len(specs)
        write_json_atomic(args.output, result)
        print("  " + summary_row(record), file=sys.stderr, flush=True)
    print_table(result["models"])
    print(f"\nwrote {args.output} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
