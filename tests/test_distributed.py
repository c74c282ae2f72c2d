"""Adapters under DDP, FSDP2 and DeepSpeed ZeRO with 2 real processes (torchrun, gloo), and the
single-process pieces of saving from a sharded model.

Each engine case trains 4 steps on 2 ranks (benchmarks/distributed.py's worker): the first step's
gradients equal one process's on the whole batch within 1e-6, the ranks end identical, and the
adapter (or, in the fusion cases, the AdapterFusion) saved there loads in this process to the
worker's logits. The misuse cases check that
every wrong order is refused by name with the model left as it was, or works on every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adaptkit
from adaptkit import engines
from benchmarks import distributed
from tiny_models import tiny_inputs, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "zero2", "zero3"])
def test_two_ranks_train_like_one_process_and_save_what_one_process_loads(engine, tmp_path):
    case = distributed.run_case(engine, "bert", steps=3, work=tmp_path)
    assert case["passed"], case
    assert case["gradient_max_delta"] <= 1e-6 and case["rank_max_delta"] == 0.0
    assert case["load_logits_max_delta"] <= 1e-6 and case["trained_tensors"] == 28


@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "fsdp1", "zero2", "zero3"])
def test_two_ranks_train_a_fusion_like_one_process_and_save_what_one_process_loads(engine, tmp_path):
    """Only the fusion's layers and head copy train (4 sites x 5 tensors + the classifier), with
    its value regularization collected in the forward (sharded engines hold the value matrices
    whole only there); save_fusion (gathered on sharded engines) loads onto the same frozen adapters."""
    case = distributed.run_case(engine, "bert", steps=3, work=tmp_path, scenario="fusion")
    assert case["passed"], case
    assert case["gradient_max_delta"] <= 1e-6 and case["rank_max_delta"] == 0.0
    assert case["load_logits_max_delta"] <= 1e-6 and case["trained_tensors"] == 22


def test_ddp_trains_two_adapters_on_mixed_batches_where_one_rank_lacks_an_adapters_rows(tmp_path):
    """per_example_adapters under DDP with find_unused_parameters=True: rank 0's rows are all "task",
    so "other" gets no gradient there; both adapters (28 tensors each) still get one process's gradients."""
    case = distributed.run_case("ddp", "bert", steps=3, work=tmp_path, scenario="mixed")
    assert case["passed"], case
    assert case["gradient_max_delta"] <= 1e-6 and case["rank_max_delta"] == 0.0
    assert case["load_logits_max_delta"] <= 1e-6 and case["trained_tensors"] == 56


@pytest.mark.parametrize("engine", distributed.MISUSE_ENGINES)
def test_wrong_orders_are_refused_by_name_or_work_on_every_rank(engine, tmp_path):
    case = distributed.run_misuse(engine, tmp_path)
    assert case.get("error") is None, case["error"]
    assert case["checks"] and all(value is True for value in case["checks"].values()), case["checks"]


@pytest.mark.slow
def test_bert_base_under_fsdp2_trains_a_step_and_saves_what_one_process_loads(tmp_path):
    case = distributed.run_case("fsdp2", "bert-base", steps=1, work=tmp_path)
    assert case["passed"], case
    assert case["trained_tensors"] == 148 and case["load_logits_max_delta"] <= 1e-6


@pytest.mark.parametrize("method", ["adapter", "fusion"])
def test_the_cli_under_deepspeed_zero3_writes_the_files_of_a_single_process_run(method, tmp_path):
    """``adaptkit-glue train`` under torchrun with the committed DeepSpeed config, through
    accelerate: every rank gathers the adapter (or the fusion over two finished adapter runs, and
    its adapters), rank 0 writes the same files as one process."""
    from glue_run_fixtures import write_rte, write_tiny_model

    model_dir, data = write_tiny_model(tmp_path / "model"), write_rte(tmp_path / "glue", test=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_DEEPSPEED": "true",
           "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ROOT / "docs" / "accelerate" / "deepspeed-zero3.json")}
    plain_env = {k: v for k, v in env.items() if not k.startswith("ACCELERATE_")}
    args = ["train", "--task", "rte", "--model", str(model_dir), "--data-dir", str(data), "--epochs", "2",
            "--batch-size", "8"]
    if method == "fusion":
        sources = [str(tmp_path / f"source-{seed}") for seed in (1, 2)]
        for seed, source in zip((1, 2), sources):
            done = subprocess.run([sys.executable, "-m", "glue_tasks", *args, "--seed", str(seed), "--output-dir", source,
                                   "--freeze-layernorms"], env=plain_env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
        args += ["--method", "fusion", "--fusion-sources", *sources]
    sharded, single = tmp_path / "zero3", tmp_path / "single"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(distributed.free_port()), "-m", "glue_tasks", *args, "--output-dir", str(sharded)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, "-m", "glue_tasks", *args, "--output-dir", str(single)],
                          env=plain_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((sharded / "results.json").read_text())["num_processes"] == 2
    files = sorted(str(p.relative_to(sharded)) for p in sharded.rglob("*"))
    assert files == sorted(str(p.relative_to(single)) for p in single.rglob("*"))
    weights = "adapter/" + adaptkit.WEIGHTS_NAME if method == "adapter" else "fusion/fusion/fusion_model.safetensors"
    ours, theirs = (load_file(d / weights) for d in (sharded, single))
    assert ours and {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    done = subprocess.run([sys.executable, "-m", "glue_tasks", "eval", "--run-dir", str(sharded)],
                          env=plain_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads(done.stdout)
    assert evaluated["dev"] == evaluated["recorded_dev"]


# -- single process ------------------------------------------------------------------------------

def test_saving_from_a_gathered_state_dict_with_wrapper_prefixes_writes_the_same_adapter(tmp_path):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    adaptkit.save_adapter(model, tmp_path / "plain")
    gathered = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}  # as from a DDP wrapper
    adaptkit.save_adapter(model, tmp_path / "gathered", state_dict=gathered)
    one, two = (load_file(tmp_path / d / adaptkit.WEIGHTS_NAME) for d in ("plain", "gathered"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    config = [json.loads((tmp_path / d / adaptkit.CONFIG_NAME).read_text()) for d in ("plain", "gathered")]
    assert config[0]["base_model"] == config[1]["base_model"]  # the fingerprint read from the state dict
    partial = {k: v for k, v in gathered.items() if "adaptkit_task" not in k}
    with pytest.raises(adaptkit.AdapterError, match="accelerator.get_state_dict"):
        adaptkit.save_adapter(model, tmp_path / "partial", state_dict=partial)
    assert not (tmp_path / "partial").exists()


def test_a_save_that_fails_half_way_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    folder = adaptkit.save_adapter(model, tmp_path / "adapter")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        next(iter(adaptkit.model.adapter_entry(model)[1].site_modules.values())).up.bias.add_(1.0)

    def broken(data):
        raise OSError("disk full")

    monkeypatch.setattr("adaptkit.checkpoint.json_text", broken)  # after the tensor file is written
    with pytest.raises(OSError, match="disk full"):
        adaptkit.save_adapter(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no new tensors beside an old config


def test_the_fsdp1_policy_puts_every_adapter_tensor_in_a_unit_of_its_own_kind():
    """FSDP1 flattens each unit's own parameters into one: with the policy, no unit mixes an
    adapter's tensors with the frozen base's, nor a trained adapter's with a frozen one's."""
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), "task")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=4), "other", activate=False)
    policy = adaptkit.fsdp_auto_wrap_policy(model)
    units = [m for m in model.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]

    def own(module):  # the parameters a unit flattens: those outside any unit below it
        below = {id(p) for u in units if u is not module and any(u is m for m in module.modules())
                 for p in u.parameters()}
        return [p for p in module.parameters() if id(p) not in below]

    blocks = [m for m in units if type(m).__name__ == "BertLayer"]
    assert len(blocks) == 2
    for unit in units:
        kinds = {p.requires_grad for p in own(unit)}
        assert len(kinds) <= 1, type(unit).__name__
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    in_units = {id(p) for u in units for p in own(u)}
    assert trained <= in_units


def test_adding_to_a_model_whose_parameters_are_sharded_is_refused_and_changes_nothing():
    """ZeRO-3 marks its partitioned parameters (``ds_id``): a parameter marked so is enough to
    refuse, before anything is added."""
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), "task")
    next(model.parameters()).ds_id = 0
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(adaptkit.AdapterError, match="already sharded by DeepSpeed ZeRO-3.*The order that works"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=4), "more", activate=False)
    with pytest.raises(adaptkit.AdapterError, match="already sharded"):
        adaptkit.load_adapter(model, ROOT / "tests" / "fixtures" / "format1_bert")
    assert [n for n, _ in model.named_parameters()] == names
    assert engines.sharded_by(tiny_model("bert")) is None
    with torch.no_grad():
        model(**tiny_inputs(model))
