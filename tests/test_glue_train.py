"""The training loop, methods, losses and CLI, end to end on a tiny model and synthetic data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adaptkit
from adaptkit.fusion import CollectedRegularization
from glue_run_fixtures import write_rte, write_stsb, write_tiny_model
from glue_tasks.cli import _train_config, build_parser, main
from glue_tasks.losses import TaskLoss
from glue_tasks.methods import MethodSpec, apply_method
from glue_tasks.tasks import get_task
from glue_tasks.train import load_base_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def rte_dir(tmp_path):
    return write_rte(tmp_path / "glue", test=True)


def train_args(model, data, out, *extra):
    return ["train", "--task", "rte", "--model", str(model), "--data-dir", str(data), "--output-dir", str(out),
            "--epochs", "2", "--batch-size", "8", *extra]


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def adapters_own(n, layernorms=True):
    """The adapter's own copy of a LayerNorm (if it trains them) or head parameter."""
    return ".adaptkit_task.values." in n and (layernorms and "LayerNorm" in n or n.startswith("classifier"))


@pytest.mark.parametrize("spec, expected", [
    (MethodSpec("adapter"), lambda n: ".adaptkit.adapters." in n or adapters_own(n)),
    (MethodSpec("adapter", placement="houlsby-ffn"),
     lambda n: (".adaptkit.adapters." in n and "attention" not in n) or adapters_own(n)),
    (MethodSpec("adapter", train_layernorms=False),
     lambda n: ".adaptkit.adapters." in n or adapters_own(n, layernorms=False)),
    (MethodSpec("full"), lambda n: True),
    (MethodSpec("top-k", top_k=0), lambda n: n.startswith("classifier")),
    (MethodSpec("top-k", top_k=1), lambda n: n.startswith(("classifier", "bert.encoder.layer.1."))),
    (MethodSpec("layernorm"), lambda n: "LayerNorm" in n or n.startswith("classifier")),
    (MethodSpec("lora"), lambda n: "lora_" in n or "classifier" in n and "modules_to_save" in n),
])
def test_each_method_trains_exactly_its_parameters(tiny_model_dir, spec, expected):
    model = apply_method(load_base_model(str(tiny_model_dir), get_task("rte")), spec)
    names = {n for n, _ in model.named_parameters()}
    assert trainable_names(model) == {n for n in names if expected(n)}
    assert trainable_names(model)


@pytest.mark.parametrize("spec", [MethodSpec("adapter", placement="houlsby-ffn", size=8, train_layernorms=False),
                                  MethodSpec("top-k", top_k=2), MethodSpec("lora", lora_rank=4, lora_targets=["query"]),
                                  MethodSpec("full")])
def test_method_flags_parse_back_into_the_same_spec(spec, tmp_path):
    args = build_parser().parse_args(["train", "--task", "rte", "--output-dir", str(tmp_path), *spec.cli_args()])
    assert _train_config(args).method == spec


def test_scratch_is_randomly_initialised_and_fully_trained(tiny_model_dir):
    pretrained = load_base_model(str(tiny_model_dir), get_task("rte"))
    scratch = apply_method(load_base_model(str(tiny_model_dir), get_task("rte"), pretrained=False), MethodSpec("scratch"))
    assert trainable_names(scratch) == {n for n, _ in scratch.named_parameters()}
    assert not torch.equal(scratch.bert.embeddings.word_embeddings.weight, pretrained.bert.embeddings.word_embeddings.weight)


def test_top_k_larger_than_depth_and_bad_lora_target(tiny_model_dir):
    base = load_base_model(str(tiny_model_dir), get_task("rte"))
    with pytest.raises(ValueError, match="more than the model's 2 transformer blocks"):
        apply_method(base, MethodSpec("top-k", top_k=3))
    with pytest.raises(adaptkit.TargetModuleError, match="'qq' matches no module"):
        apply_method(base, MethodSpec("lora", lora_targets=["query", "qq"]))


def test_train_save_eval_predict_end_to_end(tiny_model_dir, rte_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_model_dir, rte_dir, out, "--lr", "5e-3")) == 0
    printed = capsys.readouterr().out
    assert "trainable parameters" in printed and "epoch 2/2" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "rte" and results["label"] == "adapter-houlsby-64"
    assert results["parameters"]["trainable"] < results["parameters"]["total"]
    assert len(results["history"]) == 2 and results["best_epoch"] in (1, 2)
    assert (out / "adapter" / adaptkit.WEIGHTS_NAME).is_file()

    assert main(["eval", "--run-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == results["dev"] and evaluated["score"] == results["score"]

    assert main(["predict", "--run-dir", str(out), "--output", str(tmp_path / "sub")]) == 0
    lines = (tmp_path / "sub" / "RTE.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 9
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}


def test_a_fusion_run_fuses_finished_adapter_runs_and_reproduces_its_score(tiny_model_dir, rte_dir, tmp_path, capsys,
                                                                          monkeypatch):
    """Two source runs (the second on STS-B's data), then AdapterFusion over them on RTE: only the
    fusion and its head copy train, with the dynamic preset's value regularization in the loss at
    every step (not in the source runs'); the run's folder holds the adapters too, and eval reproduces."""
    regularizations, unrecorded = [], CollectedRegularization.total

    def recorded(self):
        value = unrecorded(self)
        regularizations.append((len(self.terms), value.item()))
        return value
    monkeypatch.setattr(CollectedRegularization, "total", recorded)
    sources = [tmp_path / "rte-source", tmp_path / "stsb-source"]
    assert main(train_args(tiny_model_dir, rte_dir, sources[0], "--epochs", "1", "--freeze-layernorms")) == 0
    stsb = write_stsb(tmp_path / "glue")
    assert main(["train", "--task", "stsb", "--model", str(tiny_model_dir), "--data-dir", str(stsb),
                 "--output-dir", str(sources[1]), "--epochs", "1", "--batch-size", "8", "--freeze-layernorms"]) == 0
    assert regularizations and all(r == (0, 0.0) for r in regularizations)  # nothing in the source runs
    regularizations.clear()
    out = tmp_path / "fusion"
    assert main(train_args(tiny_model_dir, rte_dir, out, "--epochs", "1", "--method", "fusion",
                           "--fusion-sources", *map(str, sources), "--lr", "1e-3")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["label"] == "fusion-dynamic-2"
    assert len(regularizations) == results["schedule"]["steps"]
    assert {terms for terms, _ in regularizations} == {4}  # each step: the value layers at 2 sites x 2 blocks
    assert regularizations[0][1] < 1e-6 < regularizations[-1][1]  # the value matrices start at the identity, then move
    model = apply_method(load_base_model(str(tiny_model_dir), get_task("rte")),
                         MethodSpec("fusion", fusion_sources=[str(s) for s in sources]))
    assert all(".fusions.rte,stsb." in n or ".adaptkit_task.values.rte,stsb." in n for n in trainable_names(model))
    assert sorted(p.name for p in (out / "fusion" / "adapters").iterdir()) == ["rte", "stsb"]
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == evaluated["recorded_dev"]
    with pytest.raises(ValueError, match="not the output dir of a finished adapter run"):
        apply_method(load_base_model(str(tiny_model_dir), get_task("rte")),
                     MethodSpec("fusion", fusion_sources=[str(out)]))


@pytest.mark.parametrize("method", [["--method", "layernorm"], ["--method", "top-k", "--top-k", "1"], ["--method", "lora"],
                                    ["--method", "adapter", "--freeze-layernorms"]])
def test_small_checkpoints_of_baselines_reproduce_scores(tiny_model_dir, rte_dir, tmp_path, capsys, method):
    out = tmp_path / "run"
    assert main(train_args(tiny_model_dir, rte_dir, out, "--epochs", "1", *method)) == 0
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["dev"] == evaluated["recorded_dev"]


def test_the_loop_learns_the_giveaway_word(tiny_model_dir, tmp_path):
    data = write_rte(tmp_path / "glue", n_train=64, n_dev=32)
    assert main(train_args(tiny_model_dir, data, tmp_path / "run", "--method", "full", "--epochs", "6",
                           "--lr", "1e-3")) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["score"] >= 0.9


def test_full_results_only_unless_save_full(tiny_model_dir, rte_dir, tmp_path):
    assert main(train_args(tiny_model_dir, rte_dir, tmp_path / "a", "--method", "full", "--epochs", "1")) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["results.json", "run_config.json"]
    assert main(["eval", "--run-dir", str(tmp_path / "a")]) == 2
    assert main(train_args(tiny_model_dir, rte_dir, tmp_path / "b", "--method", "scratch", "--epochs", "1",
                           "--save-full")) == 0
    assert (tmp_path / "b" / "model" / "model.safetensors").is_file()
    assert main(["eval", "--run-dir", str(tmp_path / "b")]) == 0


def test_bf16_mixed_precision_on_cpu(tiny_model_dir, rte_dir, tmp_path):
    assert main(train_args(tiny_model_dir, rte_dir, tmp_path / "bf16", "--epochs", "1", "--mixed-precision", "bf16")) == 0
    assert json.loads((tmp_path / "bf16" / "results.json").read_text())["mixed_precision"] == "bf16"


def test_regression_and_cosine_losses_train(tiny_model_dir, rte_dir, tmp_path):
    stsb = write_stsb(tmp_path / "glue")
    assert main(["train", "--task", "stsb", "--model", str(tiny_model_dir), "--data-dir", str(stsb),
                 "--output-dir", str(tmp_path / "s"), "--epochs", "1", "--batch-size", "8"]) == 0
    assert set(json.loads((tmp_path / "s" / "results.json").read_text())["dev"]["validation"]) == {"pearson", "spearmanr"}
    for loss in ("cosine", "cosine+ce"):
        assert main(train_args(tiny_model_dir, rte_dir, tmp_path / loss, "--loss", loss, "--epochs", "1")) == 0
        assert json.loads((tmp_path / loss / "results.json").read_text())["loss"] == loss


def test_tokenized_splits_are_cached(tiny_model_dir, rte_dir):
    from transformers import AutoTokenizer
    from glue_tasks.data import load_split
    from glue_tasks.train import tokenize
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = load_split("rte", "train", rte_dir)
    first, again = tokenize(rows, tokenizer, get_task("rte"), 32), tokenize(rows, tokenizer, get_task("rte"), 32)
    assert first.cache_files and first.cache_files == again.cache_files
    assert first["input_ids"] == again["input_ids"]
    assert tokenize(rows, tokenizer, get_task("rte"), 16).cache_files != first.cache_files


def test_cosine_loss_values():
    loss = TaskLoss("cosine", num_labels=3, regression=False)
    labels = torch.tensor([0, 2])
    assert loss(torch.tensor([[5.0, 0, 0], [0, 0, 0.1]]), labels).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(torch.tensor([[0.0, 1, 0], [0, 1, 0]]), labels).item() == pytest.approx(1.0)
    combined = TaskLoss("cosine+ce", num_labels=3, regression=False, ce_weight=0.1)
    logits = torch.tensor([[1.0, 2, 3], [3, 2, 1]])
    ce = torch.nn.functional.cross_entropy(combined.ce_layer(torch.nn.functional.normalize(logits, dim=-1)), labels)
    assert combined(logits, labels).item() == pytest.approx(loss(logits, labels).item() + 0.1 * ce.item(), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--task", "stsb", "--loss", "cosine"], "STS-B is a regression task"),
    (["--task", "rte", "--data-dir", "/nonexistent"], "RTE/train.tsv not found"),
    (["--task", "rte", "--epochs", "0"], "--epochs must be >= 1"),
    (["--task", "rte", "--mixed-precision", "fp16", "--cpu"], "use --mixed-precision bf16 on the CPU"),
    (["--task", "rte", "--method", "full", "--freeze-layernorms"], "applies to --method adapter only"),
])
def test_cli_bad_input_exits_2_with_a_message(tiny_model_dir, tmp_path, capsys, args, message):
    argv = ["train", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o"), *args]
    if "--data-dir" not in args:
        argv += ["--data-dir", str(write_rte(tmp_path / "glue"))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_task_and_non_empty_output_dir(tiny_model_dir, rte_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--task", "rtee", "--output-dir", str(tmp_path)])
    assert "unknown GLUE task 'rtee'; valid tasks:" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(train_args(tiny_model_dir, rte_dir, tmp_path / "busy")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_two_processes_on_cpu_write_one_result(tiny_model_dir, rte_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "glue_tasks", *train_args(tiny_model_dir, rte_dir, out, "--epochs", "1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "results.json", "run_config.json"]
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [adaptkit.CONFIG_NAME, adaptkit.WEIGHTS_NAME]
