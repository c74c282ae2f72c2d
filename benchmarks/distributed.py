"""Adapters under the distributed engines, 2 real processes on gloo (torchrun), on the CPU.

For each engine (DDP, FSDP2 ``fully_shard``, FSDP1 with ``use_orig_params`` both ways, DeepSpeed
ZeRO-2 and ZeRO-3) and each tiny model (BERT, Llama), 2 ranks train a Houlsby adapter with its
LayerNorms and head, beside a second adapter that stays frozen, on halves of one global batch.
Checked per case:

- the first step's gradients equal those of one process on the whole global batch (max |Δ|);
- after the last step both ranks hold the same adapter (max |Δ| between ranks);
- ``save_adapter`` on the engine's model, then a fresh single process that loads the folder onto
  the same base gives the worker's logits (max |Δ|);
- time per step (after the first).

The fusion cases (every engine) train an AdapterFusion over the two adapters instead (its layers
and head copy, with its value regularization collected in the forward, where sharded engines hold
the value matrices whole) and make the same three checks, saving with ``save_fusion``.

The mixed case (DDP) trains both adapters at once on mixed batches (``per_example_adapters``),
where rank 0's half of the batch has no row for the second adapter: DDP with
``find_unused_parameters=True``, as docs/distributed.md advises, and the same three checks.

An engine that cannot run here (DeepSpeed not installed) is recorded as skipped with the reason.
The misuse cases (DDP, FSDP2, ZeRO-3) check that each wrong order is refused by name, the model
left as it was, or works on every rank.

  python benchmarks/distributed.py --real-size   # every case, and bert-base's published config under FSDP2
                                                 # (one step) -> benchmarks/results/distributed.json
  python benchmarks/distributed.py --engines ddp,fsdp2 --models bert --output /tmp/d.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import adaptkit  # noqa: E402
from benchmarks.real_size_configs import MODELS as REAL_SIZE_MODELS  # noqa: E402
from glue_tasks.machine import machine_info  # noqa: E402

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "distributed.json"
ENGINES = ("ddp", "fsdp2", "fsdp1", "fsdp1-orig-params", "zero2", "zero3")
FUSE = adaptkit.Fuse("task", "other")
#: each row's adapter in the mixed case: rank 0's half all "task", rank 1's half alternating
MIXED_ROWS = ["task"] * 4 + ["task", "other"] * 2
MODELS = ("bert", "llama")
RANKS, GLOBAL_BATCH, LENGTH, STEPS, LR = 2, 8, 12, 4, 1e-2
#: a gradient or value this close to the single-process one counts as equal (float32 sums in
#: another order)
TOLERANCE = 1e-6
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128,
            max_position_embeddings=64, num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# -- what every process builds alike ----------------------------------------------------------
def build_model(model: str, seed: int = 0) -> torch.nn.Module:
    """The base, bit for bit the same in every process (seeded random weights, no dropout)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if model == "bert-base":
        spec = next(m for m in REAL_SIZE_MODELS if m["name"] == "bert-base")
        config = AutoConfig.for_model("bert", **{**spec["config"], "num_labels": 3, "hidden_dropout_prob": 0.0,
                                                 "attention_probs_dropout_prob": 0.0})
    else:
        extra = {"num_key_value_heads": 4} if model == "llama" else {}
        config = AutoConfig.for_model(model, **TINY, **extra)
    config._attn_implementation = "eager"
    return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32).eval()


def add_adapters(model: torch.nn.Module) -> None:
    """The adapter that trains (with its LayerNorms and head) and a second one that stays frozen."""
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), "task")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=4), "other", activate=False)
    adaptkit.set_active_adapter(model, "task")


def add_trained(model: torch.nn.Module, scenario: str) -> None:
    """What trains in a scenario: the "task" adapter ("train"), a fusion over both ("fusion"), or
    both adapters, each on its own rows of a mixed batch ("mixed")."""
    add_adapters(model)
    if scenario == "fusion":
        adaptkit.add_fusion(model, FUSE)
    if scenario == "mixed":
        adaptkit.set_trainable_adapters(model, ["task", "other"])


def objective(model: torch.nn.Module, data: dict) -> torch.Tensor:
    """The model's loss (each row on its own adapter where ``data["adapters"]`` names them), plus a
    fusion's value regularization, collected inside the value layers' own calls (0 when no fusion trains)."""
    data = dict(data)
    rows = data.pop("adapters", None)
    routing = (adaptkit.per_example_adapters(adaptkit.engines.unwrap(model), rows) if rows
               else contextlib.nullcontext())
    with adaptkit.fusion_regularization() as regularization, routing:
        loss = model(**data).loss
    return loss + regularization.total()


def batch(rows: int, seed: int, vocab: int = TINY["vocab_size"]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, vocab, (rows, LENGTH), generator=generator),
            "labels": torch.randint(0, 3, (rows,), generator=generator)}


def trained_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# -- the worker: one rank ---------------------------------------------------------------------
def worker(engine: str, model_name: str, out: Path, steps: int, scenario: str = "train") -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = build_model(model_name)
    add_trained(model, scenario)
    vocab = model.config.vocab_size
    rows = {"adapters": MIXED_ROWS} if scenario == "mixed" else {}
    batches = [batch(GLOBAL_BATCH, seed=100 + step, vocab=vocab) | rows for step in range(steps)]
    reference = reference_gradients(model, batches[0]) if rank == 0 else None
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    wrapped, optimizer, step_fn = wrap(engine, model, find_unused=scenario == "mixed")
    local = GLOBAL_BATCH // world
    times, gradient_delta = [], None
    for step, data in enumerate(batches):
        mine = {k: v[rank * local:(rank + 1) * local] for k, v in data.items()}
        for group in optimizer.param_groups:  # the first step at lr 1: its update is the gradient
            group["lr"] = 1.0 if step == 0 else LR
        started = time.perf_counter()
        loss = objective(wrapped, mine)
        step_fn(loss)
        grads = full_gradients(engine, wrapped, model) if step == 0 and engine != "fsdp1" else None
        optimizer_step(engine, wrapped, optimizer)
        if step == 0 and engine == "fsdp1":  # flat parameters' gradients cannot be gathered: the update
            grads = {n: initial[n] - v for n, v in full_values(engine, wrapped, model).items()}
        if step == 0 and rank == 0:
            gradient_delta = max_delta(grads, reference)
        if step > 0:
            times.append(time.perf_counter() - started)
    values = full_values(engine, wrapped, model)
    flat = torch.cat([values[n].reshape(-1) for n in sorted(values)])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    rank_delta = max((g - gathered[0]).abs().max().item() for g in gathered)
    if rank == 0 or adaptkit.engines.sharded_by(model):  # whole parameters: the usual main-process-only save;
        if scenario == "fusion":                           # sharded: every rank gathers, rank 0 writes
            adaptkit.save_fusion(wrapped, out / "fusion", FUSE)
        else:
            adaptkit.save_adapter(wrapped, out / "adapter", "task")
    wrapped.eval()
    with torch.no_grad():
        logits = wrapped(input_ids=batch(4, seed=7, vocab=vocab)["input_ids"]).logits
    if rank == 0:
        torch.save(logits.detach().cpu(), out / "logits.pt")
        (out / "metrics.json").write_text(json.dumps({
            "gradient_max_delta": gradient_delta, "rank_max_delta": rank_delta,
            "trained_tensors": len(values), "seconds_per_step": sum(times) / len(times) if times else None}))
    dist.barrier()
    dist.destroy_process_group()


# -- misuse, per engine: refused by name, or working on every rank -------------------------------
MISUSE_ENGINES = ("ddp", "fsdp2", "zero3")


def misuse_worker(engine: str, model_name: str, out: Path) -> None:
    """What users do in the wrong order. Each check records whether adaptkit did what it promises:
    an ``AdapterError`` naming the order (the model left as it was), or the right numbers."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = build_model(model_name)
    add_adapters(model)
    model.train()
    wrapped, optimizer, step_fn = wrap(engine, model)
    local = GLOBAL_BATCH // world
    checks: dict[str, Any] = {}

    def train_step(seed: int) -> None:
        data = batch(GLOBAL_BATCH, seed, model.config.vocab_size)
        step_fn(wrapped(**{k: v[rank * local:(rank + 1) * local] for k, v in data.items()}).loss)
        optimizer_step(engine, wrapped, optimizer)

    def refused(check: str, action, words: str = "The order that works") -> None:
        before = (adaptkit.active_adapter(model), list(adaptkit.list_adapters(model)), trained_names(model))
        try:
            action()
            checks[check] = "not refused"
        except adaptkit.AdapterError as exc:
            after = (adaptkit.active_adapter(model), list(adaptkit.list_adapters(model)), trained_names(model))
            checks[check] = True if words in str(exc) and after == before else f"refused but: {exc}"

    if engine == "ddp":
        adaptkit.set_active_adapter(model, "other")  # after wrapping, before any forward
        try:
            train_step(1)
            checks["switch_before_first_forward_refused_at_forward"] = "not refused"
        except adaptkit.AdapterError as exc:
            checks["switch_before_first_forward_refused_at_forward"] = "The order that works" in str(exc)
        adaptkit.set_active_adapter(model, "task")
        train_step(2)
        refused("switch_after_a_forward_refused", lambda: adaptkit.set_active_adapter(model, "other"))
        refused("train_two_refused", lambda: adaptkit.set_trainable_adapters(model, ["task", "other"]))
        refused("add_trained_refused", lambda: adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=2), "new"))
        wrapped.eval()
        with torch.no_grad(), adaptkit.using(model, "other"):  # evaluating another adapter needs no switch
            routed = wrapped(input_ids=batch(2, 9, model.config.vocab_size)["input_ids"]).logits
        with torch.no_grad():
            active = wrapped(input_ids=batch(2, 9, model.config.vocab_size)["input_ids"]).logits
        checks["using_another_adapter_for_evaluation_works"] = not torch.equal(routed, active)
    elif engine == "fsdp2":
        refused("add_after_sharding_refused", lambda: adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=2), "new"),
                "already sharded by FSDP2")
        refused("delete_after_sharding_refused", lambda: adaptkit.delete_adapter(model, "other"), "already sharded by FSDP2")
        wrapped.eval()
        with torch.no_grad():  # FSDP2 may leave the root unsharded after this
            wrapped(input_ids=batch(2, 9, model.config.vocab_size)["input_ids"])
        wrapped.train()
        adaptkit.set_active_adapter(model, "other")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
        names = trained_names(model)
        before = {n: _full(p).detach().clone() for n, p in model.named_parameters()}
        train_step(3)
        train_step(4)
        after = {n: _full(p).detach().clone() for n, p in model.named_parameters()}
        moved = sorted(n for n in after if not torch.equal(after[n], before[n]))
        checks["switch_after_no_grad_forward_trains_the_new_adapter"] = (
            bool(names) and all(".other." in n for n in names) and moved == sorted(names))
        flat = torch.cat([after[n].reshape(-1) for n in names])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        checks["switched_ranks_identical"] = all(torch.equal(g, gathered[0]) for g in gathered)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        adaptkit.save_adapter(model, out / "gathered", "other")  # collective: every rank
        if rank == 0:
            adaptkit.save_adapter(model, out / "from_state_dict", "other", state_dict=full)
            from safetensors.torch import load_file

            one, two = (load_file(out / folder / adaptkit.WEIGHTS_NAME) for folder in ("gathered", "from_state_dict"))
            checks["state_dict_save_equals_gathered_save"] = (
                sorted(one) == sorted(two) and all(torch.equal(one[k], two[k]) for k in one)
                or f"{sorted(set(one) ^ set(two))[:3]} {max((one[k] - two[k]).abs().max().item() for k in one if k in two)}")
    else:
        refused("add_after_zero3_refused", lambda: adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=2), "new"),
                "already sharded by DeepSpeed ZeRO-3")
        refused("switch_after_zero3_refused", lambda: adaptkit.set_active_adapter(model, "other"), "DeepSpeed wraps")
    if rank == 0:
        (out / "misuse.json").write_text(json.dumps(checks))
    dist.barrier()
    dist.destroy_process_group()


def reference_gradients(model: torch.nn.Module, data: dict) -> dict[str, torch.Tensor]:
    """One process, the whole global batch, before any engine touches the model."""
    import copy

    twin = copy.deepcopy(model).train()
    objective(twin, data).backward()
    return {n: p.grad.detach().clone() for n, p in twin.named_parameters() if p.requires_grad}


def wrap(engine: str, model: torch.nn.Module, find_unused: bool = False):
    """The engine's model, an optimizer over what trains, and how to run backward (DDP: with
    ``find_unused_parameters`` when a rank's batch may leave an adapter out)."""
    import torch.distributed as dist

    def backward(loss):
        loss.backward()

    if engine == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused)
        return wrapped, torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=LR), backward
    if engine == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for block in adaptkit.targets.find_blocks(model):
            fully_shard(model.get_submodule(block), mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR), backward
    if engine.startswith("fsdp1"):
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(model, auto_wrap_policy=adaptkit.fsdp_auto_wrap_policy(model),
                                           use_orig_params=engine == "fsdp1-orig-params", device_id=torch.device("cpu"))
        return wrapped, torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=LR), backward
    import deepspeed

    config = {"train_micro_batch_size_per_gpu": GLOBAL_BATCH // dist.get_world_size(), "gradient_clipping": 0.0,
              "zero_optimization": {"stage": int(engine[-1]), "stage3_param_persistence_threshold": 0},
              "zero_allow_untested_optimizer": True}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    engine_model, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine_model, optimizer, engine_model.backward


def optimizer_step(engine: str, wrapped, optimizer) -> None:
    if engine.startswith("zero"):
        wrapped.step()
    else:
        optimizer.step()
        optimizer.zero_grad()


def full_gradients(engine: str, wrapped, model) -> dict[str, torch.Tensor]:
    """Each trained parameter's whole gradient, gathered where the engine shards it."""
    if engine.startswith("zero"):
        from deepspeed.utils import safe_get_full_grad

        return {n: safe_get_full_grad(p).detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if engine.startswith("fsdp1"):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(wrapped, with_grads=True):
            return {clean(n): p.grad.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    return {n: _full(p.grad).detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def full_values(engine: str, wrapped, model) -> dict[str, torch.Tensor]:
    if engine == "zero3":
        import deepspeed

        params = [p for p in model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params):
            return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if engine.startswith("fsdp1"):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(wrapped):
            return {clean(n): p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    return {n: _full(p).detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def clean(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_flat_param", "")


def max_delta(values: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    if set(values) != set(reference):
        missing, extra = sorted(set(reference) - set(values)), sorted(set(values) - set(reference))
        raise SystemExit(f"gradients of other tensors than one process's: missing {missing[:3]}, extra {extra[:3]}")
    return max((values[n].float() - reference[n].float()).abs().max().item() for n in reference)


# -- the orchestrator -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def skip_reason(engine: str) -> str | None:
    if engine.startswith("zero"):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return "deepspeed is not installed (pip install -e '.[distributed]')"
    return None


def launch(engine: str, model_name: str, scenario: str, steps: int, out: Path) -> tuple[bool, str | None]:
    """Run the worker on 2 ranks with torchrun; (finished, the workers' own error if any)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
               "--master_port", str(free_port()), __file__, "--worker", engine, "--scenario", scenario,
               "--model", model_name, "--steps", str(steps), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode == 0:
        return True, None
    errors = sorted(out.glob("error-rank*.txt"))
    text = errors[0].read_text() if errors else done.stderr + done.stdout
    return False, "\n".join([line for line in text.splitlines() if line.strip()][-8:])


def run_case(engine: str, model_name: str, steps: int, work: Path, scenario: str = "train") -> dict[str, Any]:
    out = work / f"{engine}-{model_name}-{scenario}"
    started = time.perf_counter()
    finished, error = launch(engine, model_name, scenario, steps, out)
    case: dict[str, Any] = {"engine": engine, "model": model_name, "scenario": scenario, "steps": steps,
                            "wall_seconds": round(time.perf_counter() - started, 1)}
    if not finished:
        return {**case, "passed": False, "error": error}
    metrics = json.loads((out / "metrics.json").read_text())
    model = build_model(model_name)
    try:
        if scenario == "fusion":  # the frozen adapters as the worker built them, then the saved fusion
            add_adapters(model)
            adaptkit.load_fusion(model, out / "fusion")
        else:
            adaptkit.load_adapter(model, out / "adapter")
    except Exception as exc:  # noqa: BLE001 - recorded as this case's failure
        return {**case, **metrics, "passed": False, "error": f"loading what the worker saved: {exc}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same summation order, whatever the machine's load
    try:
        with torch.no_grad():
            logits = model(input_ids=batch(4, seed=7, vocab=model.config.vocab_size)["input_ids"]).logits
    finally:
        torch.set_num_threads(threads)
    metrics["load_logits_max_delta"] = (logits - torch.load(out / "logits.pt")).abs().max().item()
    passed = (metrics["gradient_max_delta"] <= TOLERANCE and metrics["rank_max_delta"] == 0.0
              and metrics["load_logits_max_delta"] <= TOLERANCE)
    return {**case, **metrics, "passed": passed}


def run_misuse(engine: str, work: Path) -> dict[str, Any]:
    out = work / f"misuse-{engine}"
    finished, error = launch(engine, "bert", "misuse", 0, out)
    if not finished:
        return {"engine": engine, "passed": False, "error": error}
    checks = json.loads((out / "misuse.json").read_text())
    return {"engine": engine, "checks": checks, "passed": all(v is True for v in checks.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {', '.join(ENGINES)}")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per case (default %(default)s)")
    parser.add_argument("--real-size", action="store_true",
                        help="also bert-base's published config (random weights) under FSDP2, one step")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON (default %(default)s)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", default="train", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            if args.scenario == "misuse":
                misuse_worker(args.worker, args.model, args.out)
            else:
                worker(args.worker, args.model, args.out, args.steps, args.scenario)
        except BaseException:  # the orchestrator reports the worker's own error, not torchrun's summary
            import traceback

            (args.out / f"error-rank{os.environ.get('RANK', 0)}.txt").write_text(traceback.format_exc())
            raise
        return 0
    engines, models = args.engines.split(","), args.models.split(",")
    unknown = [e for e in engines if e not in ENGINES] + [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown engine or model: {', '.join(unknown)}")
    cases, misuse = [], []
    load_before = os.getloadavg()[0]
    grid = [(engine, model_name, args.steps, "train") for engine in engines for model_name in models]
    grid += [("fsdp2", "bert-base", 1, "train")] if args.real_size else []
    grid += [(engine, "bert", args.steps, "fusion") for engine in engines]
    grid += [("ddp", "bert", args.steps, "mixed")] if "ddp" in engines else []
    with tempfile.TemporaryDirectory() as work:
        for engine, model_name, steps, scenario in grid:
            reason = skip_reason(engine)
            case = ({"engine": engine, "model": model_name, "scenario": scenario, "skipped": reason} if reason
                    else run_case(engine, model_name, steps, Path(work), scenario))
            cases.append(case)
            verdict = "skipped" if reason else ("pass" if case["passed"] else "FAIL")
            print(f"{engine:18s} {model_name:10s} {scenario:7s} {verdict}  " + (reason or ", ".join(
                f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in case.items()
                if k not in ("engine", "model", "scenario", "passed", "error"))), flush=True)
            if not reason and not case["passed"] and "error" in case:
                print("    " + case["error"].replace("\n", "\n    "), flush=True)
        for engine in [e for e in engines if e in MISUSE_ENGINES]:
            reason = skip_reason(engine)
            case = {"engine": engine, "skipped": reason} if reason else run_misuse(engine, Path(work))
            misuse.append(case)
            print(f"misuse {engine:11s} " + (f"skipped  {reason}" if reason else
                  f"{'pass' if case['passed'] else 'FAIL'}  {case.get('checks') or case.get('error')}"), flush=True)
    result = {
        "command": "python benchmarks/distributed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info() | {"backend": "gloo"},
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "versions": _versions(), "ranks": RANKS, "global_batch": GLOBAL_BATCH, "steps": args.steps,
        "tolerance": TOLERANCE, "cases": cases, "misuse": misuse,
        "passed": sum(bool(c.get("passed")) for c in cases + misuse),
        "skipped": sum("skipped" in c for c in cases + misuse),
        "failed": sum(not c.get("passed") and "skipped" not in c for c in cases + misuse),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped -> {args.output}")
    return 1 if result["failed"] else 0


def _versions() -> dict[str, str]:
    import accelerate
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "accelerate": accelerate.__version__, "adaptkit": adaptkit.__version__}
    try:
        import deepspeed

        versions["deepspeed"] = deepspeed.__version__
    except ImportError:
        pass
    return versions


if __name__ == "__main__":
    sys.exit(main())
