"""Which transformers model types adaptkit adapts: every type with a sequence classifier, a causal
LM or a seq2seq LM, each built tiny from its default config (random weights, offline).

The README claims adaptkit works on architectures it has never seen; this measures the claim on
all of them instead of the handful the tests use. Per type the class is the sequence classifier if
there is one, else the causal LM, else the seq2seq LM. Each type runs in a forked child process
with a timeout, so a hang, a crash or an out-of-memory kill ends that type only, and is one of:

- not tried: the class reads something other than token ids (main_input_name is not input_ids,
  or its forward takes images, audio, layout boxes, markup paths or another model's states);
- not built: the harness could not make it run WITHOUT adaptkit (tiny config, build, a forward
  and backward, or two builds with one seed that differ); adaptkit never touched it;
- adapted: add_adapter (Houlsby, m=8) succeeded, every layer (a block of find_blocks, or the
  blocks at one depth of sibling lists) got an attention and a feed-forward site, one backward gave gradients to every adapter tensor and to nothing frozen, adapters_disabled
  equals the base output exactly (before and after the trainable tensors moved), and save_adapter
  + load_adapter onto a fresh build of the same model gives the same logits exactly;
- refused: add_adapter raised an adaptkit AdapterError (its message should name what is missing);
- crashed: anything else raised once adaptkit was involved, or one of the checks failed.

Inputs: 2 × 16 seeded token ids clear of every special id, use_cache=False, decoder ids for a
seq2seq LM, random encoder states for a stand-alone decoder that takes them (so its
cross-attention runs); the loss is cross-entropy of the logits against seeded random targets;
model.eval() throughout (Reformer's backward needs train mode). Tiny configs: tiny_configs.py.

  python benchmarks/coverage.py                     # all types, writes benchmarks/results/coverage.{json,md}
  python benchmarks/coverage.py --types bert gpt2 --output /tmp/coverage.json
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's adaptkit, installed or not

# Imported before forking, so each child starts with them loaded (seconds saved per type).
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402

import adaptkit  # noqa: E402
from adaptkit.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from adaptkit.targets import find_blocks  # noqa: E402
from glue_tasks.machine import machine_info, source_info  # noqa: E402
from tiny_configs import tiny_config  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

transformers.logging.set_verbosity_error()

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "coverage.json"
SEED, BATCH, SEQ_LEN, DECODER_LEN, ENCODER_LEN, SIZE, PERTURB = 0, 2, 16, 8, 8, 8, 0.01
TASKS = [  # (task, type -> class name, Auto class), in order of preference
    ("sequence-classification", modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
     transformers.AutoModelForSequenceClassification),
    ("causal-lm", modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, transformers.AutoModelForCausalLM),
    ("seq2seq-lm", modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, transformers.AutoModelForSeq2SeqLM),
]
AUTO = {task: auto for task, _, auto in TASKS}
#: forward arguments that carry something other than text; a class that takes one is not tried.
OTHER_INPUTS = {"pixel_values": "image", "pixel_values_videos": "video", "image": "image",
                "image_patches": "image", "image_pixel_values": "image", "input_features": "audio",
                "input_values": "audio", "audio_input_features": "audio", "bbox": "layout boxes",
                "xpath_tags_seq": "markup paths", "shared_kv_states": "another model's states"}
#: model fix-ups the harness applies after each build (the model cannot run without them).
BUILD_FIXES = {"xmod": lambda model: model.set_default_language(model.config.languages[0])}
#: types whose backward needs train mode (Reformer's reversible layers refuse it in eval mode).
TRAIN_MODE_TYPES = {"reformer"}
#: types whose causal LM is built from one part of the type's config (MusicgenForCausalLM takes
#: the decoder's config; the Auto class hands it the whole one).
CONFIG_PART = {"musicgen": "decoder", "musicgen_melody": "decoder"}
#: types whose decoder reads one row of ids per codebook: batch × num_codebooks rows.
CODEBOOK_TYPES = {"musicgen", "musicgen_melody"}
STATUSES = ("adapted", "refused", "crashed", "not built", "not tried")
ADAPTKIT_STAGES = ("add_adapter", "sites", "disabled", "train_step", "perturb", "save_load")
MESSAGE_CHARS = 3000  # a refusal lists every candidate module: keep records readable
FRAMES = 4
LOG_LINES = 20


def model_types() -> list[str]:
    return list(dict.fromkeys(t for _, names, _ in TASKS for t in names))


def task_of(model_type: str) -> tuple[str, str]:
    """(task, class name) per the preference order."""
    return next((task, names[model_type]) for task, names, _ in TASKS if model_type in names)


# --------------------------------------------------------------------------- child side

class HarnessError(Exception):
    """The model could not be run without adaptkit: a limit of this harness, not of adaptkit."""


class CheckFailed(Exception):
    """A check of adaptkit's result failed."""


class Child:
    """One type's run, reporting each stage to the parent before it starts (so a timeout or a
    killed child still says whether adaptkit was involved)."""

    def __init__(self, model_type: str, conn: Any) -> None:
        self.type, self.conn = model_type, conn
        self.task, class_name = task_of(model_type)
        self.record: dict[str, Any] = {"type": model_type, "task": self.task, "class": class_name,
                                       "checks": {}}

    def stage(self, name: str) -> None:
        self.record["stage"] = name
        self.conn.send(("stage", name))

    def check(self, name: str, passed: bool, **details: Any) -> None:
        self.record["checks"][name] = {"passed": bool(passed), **details}

    def run(self) -> dict[str, Any]:
        try:
            self.stage("input_kind")
            kind = self.input_kind()
            if kind is not None:
                return {**self.record, "status": "not tried", "input_kind": kind,
                        "reason": f"input kind: {kind}"}
            self.harness()
            self.adaptkit()
        except HarnessError as exc:
            return {**self.record, "status": "not built", "reason": error_line(exc.__cause__ or exc),
                    "error": describe_error(exc.__cause__ or exc)}
        except adaptkit.AdapterError as exc:
            status = "refused" if self.record["stage"] == "add_adapter" else "crashed"
            return {**self.record, "status": status, "reason": error_line(exc), "error": describe_error(exc)}
        except CheckFailed as exc:
            return {**self.record, "status": "crashed", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - any failure is a result to record
            return {**self.record, "status": "crashed", "reason": error_line(exc), "error": describe_error(exc)}
        return {**self.record, "status": "adapted", "reason": ""}

    def input_kind(self) -> str | None:
        model_class = AUTO[self.task]._model_mapping[CONFIG_MAPPING[self.type]]
        if model_class.main_input_name != "input_ids":
            return f"{model_class.main_input_name} (main_input_name)"
        taken = [name for name in inspect.signature(model_class.forward).parameters if name in OTHER_INPUTS]
        return ", ".join(f"{OTHER_INPUTS[n]} ({n})" for n in taken) or None

    # ------------------------------------------------------------------ without adaptkit

    def harness(self) -> None:
        try:
            self.stage("config")
            extra = {"num_labels": 2} if self.task == "sequence-classification" else {}
            self.config = tiny_config(self.type, **extra)
            if self.type in CONFIG_PART:
                self.config = getattr(self.config, CONFIG_PART[self.type])
            text = text_config(self.config)
            if self.task == "sequence-classification" and getattr(text, "pad_token_id", None) is None:
                text.pad_token_id = self.config.pad_token_id = 0
            self.stage("build")
            self.model = self.build()
            self.record["model_class"] = type(self.model).__name__
            self.record["parameters"] = sum(p.numel() for p in self.model.parameters())
            self.stage("base_forward")
            self.inputs, self.targets = make_inputs(self.model, self.config, self.task, self.type)
            try:
                self.base = self.logits(self.model)
            except Exception:  # a decoder without cross-attention may refuse encoder states
                if not {"encoder_hidden_states", "encoder_outputs"} & set(self.inputs):
                    raise
                self.inputs.pop("encoder_hidden_states", None)
                self.inputs.pop("encoder_outputs", None)
                self.base = self.logits(self.model)
            self.record["inputs"] = sorted(self.inputs)
            self.backward(self.model)  # the plain model trains: any later failure is adaptkit's
            self.model.zero_grad(set_to_none=True)
            self.fresh = self.build()
        except Exception as exc:
            raise HarnessError(str(exc)) from exc
        if not torch.equal(self.logits(self.model), self.base):
            raise HarnessError("the plain forward is not deterministic in eval mode")
        if not torch.equal(self.logits(self.fresh), self.base):
            raise HarnessError(f"two builds with seed {SEED} differ: the reload check cannot be made")

    def build(self) -> Any:
        torch.manual_seed(SEED)
        if self.type in CONFIG_PART:
            model_class = AUTO[self.task]._model_mapping[CONFIG_MAPPING[self.type]]
            model = model_class._from_config(self.config, dtype=torch.float32).eval()
        else:
            model = AUTO[self.task].from_config(self.config, dtype=torch.float32).eval()
        if self.type in BUILD_FIXES:
            BUILD_FIXES[self.type](model)
        return model

    def logits(self, model: Any, grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            output = model(**self.inputs)
        logits = output.logits if getattr(output, "logits", None) is not None else output[0]
        return logits if grad else logits.detach().clone()

    def backward(self, model: Any) -> None:
        """Cross-entropy of the logits against seeded targets, and its backward."""
        model.train(self.type in TRAIN_MODE_TYPES)
        try:
            logits = self.logits(model, grad=True).float()
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              self.targets(logits).reshape(-1)).backward()
        finally:
            model.eval()

    # ------------------------------------------------------------------ with adaptkit

    def adaptkit(self) -> None:
        model = self.model
        self.record["route"] = "registry" if model.config.model_type in adaptkit.REGISTRY else "fallback"
        self.stage("add_adapter")
        base_names = {n for n, _ in model.named_parameters()}
        blocks = find_blocks(model)
        # The reference is the base with its weights frozen, as add_adapter leaves it: a few models
        # (Longformer, LED, FSMT) compute a last bit differently once no weight requires grad.
        for param in model.parameters():
            param.requires_grad_(False)
        frozen = self.logits(model)
        self.record["frozen_base_max_abs_diff"] = (frozen - self.base).abs().max().item()
        self.base = frozen
        torch.manual_seed(SEED)
        sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(SIZE))

        self.stage("sites")
        per_block = {b: Counter(s.kind for s in sites if s.name.startswith(b + ".")) for b in blocks}
        per_layer: dict[tuple[str, str], Counter] = {}
        for block, kinds in per_block.items():
            per_layer.setdefault(layer_of(block), Counter()).update(kinds)
        self.record.update(
            blocks=len(blocks), layers=len(per_layer), sites=len(sites),
            sites_per_block=dict(Counter(", ".join(f"{k}={c[k]}" for k in sorted(c)) or "none"
                                         for c in per_block.values())),
            sites_outside_blocks=sum(not any(s.name.startswith(b + ".") for b in blocks) for s in sites),
            first_block_sites=[f"{s.kind}: {s.name}" for s in sites if blocks and s.name.startswith(blocks[0] + ".")])
        lacking = [".".join(k) for k, c in per_layer.items() if not (c["attention"] and c["ffn"])]
        self.check("every_layer_attention_and_ffn", bool(blocks) and not lacking, lacking=lacking[:5],
                   blocks_lacking_one=sum(not (c["attention"] and c["ffn"]) for c in per_block.values()))
        if not blocks or lacking:
            first = f" (first: {lacking[0]})" if lacking else ""
            raise CheckFailed(f"{len(lacking)} of {len(per_layer)} layers lack an attention or ffn site{first}")

        self.stage("disabled")
        with adaptkit.adapters_disabled(model):
            self.compare("disabled_equals_base", self.logits(model), self.base)

        self.stage("train_step")
        params = dict(model.named_parameters())
        added = sorted(set(params) - base_names)  # adapters, and adaptkit's copies of LayerNorms/head
        adapter_names = [n for n in added if any(n.startswith(s.name + ".") for s in sites)]
        ran, reached = self.train_step(model, sites)
        with_grad = {n for n, p in params.items() if p.grad is not None}
        frozen = sorted(n for n in with_grad if not params[n].requires_grad)
        no_grad = [n for n in adapter_names if n not in with_grad
                   and any(n.startswith(site + ".") for site in reached)]
        not_run = [s.name for s in sites if s.name not in ran]
        self.record["sites_off_the_loss_path"] = sorted(s.name for s in sites if s.name in ran and s.name not in reached)[:5]
        self.record.update(adapter_tensors=len(adapter_names),
                           trainable=sum(p.numel() for p in params.values() if p.requires_grad),
                           trainable_without_grad=sorted(n for n, p in params.items()
                                                         if p.requires_grad and n not in with_grad)[:10])
        self.check("no_grad_on_frozen", not frozen, frozen_with_grad=frozen[:5])
        self.check("every_adapter_tensor_has_grad", bool(adapter_names) and not no_grad,
                   without_grad=len(no_grad), of=len(adapter_names), first=no_grad[:3],
                   sites_not_run_by_forward=len(not_run), first_site_not_run=not_run[:3])
        model.zero_grad(set_to_none=True)

        self.stage("perturb")
        with torch.no_grad():
            for p in params.values():
                if p.requires_grad:
                    p.add_(PERTURB)
        adapted = self.logits(model)
        self.record["adapted_differs_from_base"] = not torch.equal(adapted, self.base)
        with adaptkit.adapters_disabled(model):
            self.compare("disabled_after_update_equals_base", self.logits(model), self.base)

        self.stage("save_load")
        with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
            adaptkit.save_adapter(model, tmp)
            adaptkit.load_adapter(self.fresh, tmp)
            self.compare("reload_equals_adapted", self.logits(self.fresh), adapted)

        failed = [n for n, c in self.record["checks"].items() if not c["passed"]]
        if failed:
            raise CheckFailed("; ".join(f"{n} failed ({check_details(self.record['checks'][n])})" for n in failed))

    def train_step(self, model: Any, sites: list[Any]) -> tuple[set[str], set[str]]:
        """Backward of one loss; returns the sites whose module ran in the forward, and those whose
        output the loss depends on (a gradient reached it). Only the latter's adapters can get a
        gradient: a module can run without reaching the loss (CANINE's final character encoder
        under a sequence classifier, a sparse-attention indexer that only picks positions)."""
        ran: set[str] = set()
        reached: set[str] = set()

        def watch(module: Any, args: Any, output: Any, name: str) -> None:
            ran.add(name)
            tensor = output[0] if isinstance(output, tuple) else output
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                tensor.register_hook(lambda grad: reached.add(name))

        hooks = [model.get_submodule(s.name).register_forward_hook(
            lambda module, args, output, name=s.name: watch(module, args, output, name)) for s in sites]
        try:
            self.backward(model)
        finally:
            for hook in hooks:
                hook.remove()
        return ran, reached

    def compare(self, name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        same_shape = got.shape == want.shape
        diff = (got.float() - want.float()).abs().max().item() if same_shape else None
        self.check(name, torch.equal(got, want), max_abs_diff=diff,
                   shapes=None if same_shape else [list(got.shape), list(want.shape)])


def layer_of(block: str) -> tuple[str, str]:
    """A layer is a block, or the blocks at one depth of sibling lists (XLM keeps ``attentions``
    and ``ffns`` in two lists; BLT a cross-attention list beside its layers): (parent, depth)."""
    parts = block.split(".")
    return ".".join(parts[:-2]), parts[-1]


def make_inputs(model: Any, config: Any, task: str, model_type: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Seeded token ids that avoid every special token id (image/audio placeholders included),
    and a function giving seeded class targets for logits of any shape. Where the forward takes
    them: ``use_cache=False`` (a training forward; some hybrid caches need an attention layer),
    and encoder states for a stand-alone decoder, so that its cross-attention runs too (the
    harness drops them again if the plain model refuses them)."""
    gen = torch.Generator().manual_seed(SEED)
    text = text_config(config)
    vocab = getattr(text, "vocab_size", None) or 1000  # CANINE has none: it hashes code points
    special: set[int] = set()
    for key, value in [*vars(config).items(), *vars(text).items()]:
        if key.endswith(("_id", "_ids", "_index")):
            special.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    allowed = torch.tensor([i for i in range(min(vocab, 1000)) if i not in special and i >= 5])
    rows = BATCH * getattr(text, "num_codebooks", 1) if model_type in CODEBOOK_TYPES else BATCH

    def ids(length: int) -> torch.Tensor:
        return allowed[torch.randint(len(allowed), (rows, length), generator=gen)]

    inputs = {"input_ids": ids(SEQ_LEN), "attention_mask": torch.ones(rows, SEQ_LEN, dtype=torch.long)}
    eos = getattr(text, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, list) else eos
    if task == "sequence-classification" and isinstance(eos, int):
        inputs["input_ids"][:, -1] = eos  # encoder-decoder classifiers pool at the (one) EOS
    if task == "seq2seq-lm":
        inputs["decoder_input_ids"] = ids(DECODER_LEN)
    accepted = inspect.signature(model.forward).parameters
    if "use_cache" in accepted:
        inputs["use_cache"] = False
    if task == "causal-lm" and ({"encoder_hidden_states", "encoder_outputs"} & set(accepted)):
        width = next(getattr(text, k) for k in ("hidden_size", "d_model") if isinstance(getattr(text, k, None), int))
        states = torch.randn(BATCH, ENCODER_LEN, width, generator=gen)
        if "encoder_hidden_states" in accepted:
            inputs["encoder_hidden_states"] = states
        else:  # WhisperForCausalLM reads them as encoder_outputs
            inputs["encoder_outputs"] = (states,)

    def targets(logits: torch.Tensor) -> torch.Tensor:
        return torch.randint(logits.shape[-1], logits.shape[:-1], generator=torch.Generator().manual_seed(SEED))
    return inputs, targets


def text_config(config: Any) -> Any:
    """The config of the text decoder (MusicGen has a text encoder and a decoder)."""
    try:
        return config.get_text_config(decoder=True)
    except ValueError:
        return config.decoder


def error_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def describe_error(exc: BaseException) -> dict[str, Any]:
    message = str(exc)
    return {"type": type(exc).__name__,
            "message": message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS] + " [...]",
            "frames": [f"{short_path(f.filename)}:{f.lineno} in {f.name}: {f.line}"
                       for f in traceback.extract_tb(exc.__traceback__)[-FRAMES:]]}


def check_details(check: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in check.items() if k != "passed" and v not in (None, [], 0))


def short_path(filename: str) -> str:
    path = Path(filename)
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    parts = path.parts
    return str(Path(*parts[parts.index("transformers"):])) if "transformers" in parts else filename


def child_main(model_type: str, conn: Any, threads: int, log: str) -> None:
    """Entry of the forked child: output goes to ``log`` (read back when the child dies)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    record = Child(model_type, conn).run()
    record["seconds"] = round(time.perf_counter() - start, 2)
    conn.send(("result", record))


# --------------------------------------------------------------------------- parent side

def run_type(model_type: str, args: argparse.Namespace) -> dict[str, Any]:
    """The child's record, or, if it died or timed out, the status its last stage implies."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="coverage-", suffix=".log") as log:
        process = context.Process(target=child_main, args=(model_type, send, args.threads, log.name))
        start = time.perf_counter()
        process.start()
        send.close()
        stage, record = "start", None
        deadline = start + args.timeout
        while record is None and time.perf_counter() < deadline:
            if receive.poll(min(1.0, max(0.0, deadline - time.perf_counter()))):
                try:
                    what, value = receive.recv()
                except EOFError:  # the child died
                    break
                if what == "stage":
                    stage = value
                else:
                    record = value
            elif not process.is_alive() and not receive.poll():
                break
        if process.is_alive() and record is None:
            process.kill()
        process.join(10)
        wall = round(time.perf_counter() - start, 2)
        if record is None:
            task, class_name = task_of(model_type)
            why = (f"timed out after {args.timeout:g} s" if process.exitcode in (None, -9) and wall >= args.timeout
                   else f"child died with exit code {process.exitcode}")
            status = "crashed" if stage in ADAPTKIT_STAGES else "not built"
            record = {"type": model_type, "task": task, "class": class_name, "stage": stage,
                      "status": status, "reason": f"{why} in stage {stage}",
                      "log_tail": Path(log.name).read_text(errors="replace").splitlines()[-LOG_LINES:]}
    record["wall_seconds"] = wall
    return record


def sites_cell(r: dict[str, Any]) -> str:
    return "; ".join(f"{n}×[{k}]" for k, n in r.get("sites_per_block", {}).items()) or "-"


def print_table(records: list[dict[str, Any]]) -> None:
    print(f"\n{'type':<26}{'task':<10}{'status':<10}{'route':<9}{'blocks':>7}  {'seconds':>7}  reason / sites per block")
    short = {"sequence-classification": "seq-cls", "causal-lm": "causal", "seq2seq-lm": "seq2seq"}
    for r in records:
        detail = r["reason"] or sites_cell(r)
        print(f"{r['type']:<26}{short[r['task']]:<10}{r['status']:<10}{r.get('route', '-'):<9}"
              f"{r.get('blocks', '-'):>7}  {r['wall_seconds']:>7.1f}  {detail[:150]}")


def markdown(result: dict[str, Any]) -> str:
    records = result["records"]
    machine = result["machine"]
    lines = [f"# adaptkit coverage of transformers {machine['transformers']} model types", "",
             f"`{result['command']}`, {result['date']}, {machine['cpu']}, torch {machine['torch']}, "
             f"adaptkit {result['adaptkit']['git_commit'][:10]}"
             f"{' (with uncommitted changes)' if result['adaptkit']['uncommitted_changes'] else ''}, "
             f"{result['total_seconds']:.0f} s. Houlsby adapters m={SIZE} on tiny random models "
             "(see benchmarks/coverage.py for what each status means).", "",
             "| status | types |", "|---|---:|"]
    lines += [f"| {s} | {result['counts'].get(s, 0)} |" for s in STATUSES]
    lines += [f"| total | {len(records)} |", ""]
    for status in STATUSES:
        chosen = [r for r in records if r["status"] == status]
        if not chosen:
            continue
        lines += [f"## {status} ({len(chosen)})", ""]
        if status == "adapted":
            lines += ["| type | class | route | blocks | sites per block |", "|---|---|---|---:|---|"]
            lines += [f"| {r['type']} | {r['class']} | {r['route']} | {r['blocks']} | {sites_cell(r)} |"
                      for r in chosen]
        else:
            lines += ["| type | class | stage | reason |", "|---|---|---|---|"]
            lines += [f"| {r['type']} | {r['class']} | {r.get('stage', '-')} | "
                      f"{r['reason'].replace('|', '/')[:400]} |" for r in chosen]
        lines.append("")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{len(model_types())} types with this transformers ({transformers.__version__}); on 2 "
               "cores all of them take about 10 minutes.")
    parser.add_argument("--types", nargs="+", metavar="T",
                        help="model types to run, in this order (default: all)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results, rewritten atomically after every type; the markdown summary "
                             "goes beside it with .md (default: benchmarks/results/coverage.json)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds per type before its child is killed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per child (default: %(default)s)")
    args = parser.parse_args()
    unknown = [t for t in args.types or [] if t not in model_types()]
    if unknown:
        parser.error(f"unknown model type(s) {', '.join(unknown)}; choose from: {', '.join(model_types())}")
    return args


def main() -> None:
    args = parse_args()
    types = args.types or model_types()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "adaptkit": source_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"adapter": f"AdapterConfig.houlsby({SIZE})", "seed": SEED, "batch": BATCH,
                     "seq_len": SEQ_LEN, "decoder_len": DECODER_LEN, "perturb": PERTURB,
                     "timeout_s": args.timeout, "torch_threads": args.threads,
                     "loss": "cross-entropy of the logits against seeded random targets",
                     "mode": "model.eval() throughout (dropout off)"},
        "complete": False, "counts": {}, "records": []}
    for i, model_type in enumerate(types, 1):
        record = run_type(model_type, args)
        result["records"].append(record)
        result["counts"] = dict(Counter(r["status"] for r in result["records"]))
        result["total_seconds"] = round(time.perf_counter() - started, 1)
        result["complete"] = len(result["records"]) == len(types)
        write_json_atomic(args.output, result)
        print(f"[{i}/{len(types)}] {model_type}: {record['status']} ({record['wall_seconds']:.1f} s) "
              f"{record['reason'][:160]}", file=sys.stderr, flush=True)
    write_text_atomic(args.output.with_suffix(".md"), markdown(result))
    print_table(result["records"])
    print("\n" + ", ".join(f"{s}: {result['counts'].get(s, 0)}" for s in STATUSES))
    print(f"wrote {args.output} and {args.output.with_suffix('.md')} in {result['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
