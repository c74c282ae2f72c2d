"""Fault injection: kill -9 and --resume, divergence, damaged files, bad rows, where outputs go."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import adaptkit
from glue_run_fixtures import write_rte, write_tiny_model
from glue_tasks.cli import main
from glue_tasks.losses import TaskLoss
from glue_tasks.resume import STATE_FILE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def train_argv(model_dir, data, out, *extra):
    return ["train", "--task", "rte", "--model", str(model_dir), "--data-dir", str(data), "--output-dir", str(out),
            "--epochs", "2", "--batch-size", "4", "--save-every", "2", *extra]


def saved_step(state: Path) -> int:
    with safe_open(str(state), framework="pt") as handle:
        return json.loads(handle.metadata()["progress"])["step"]


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(model_dir, tmp_path):
    data = write_rte(tmp_path / "glue", n_train=400, n_dev=16)  # 100 batches an epoch: a wide window to kill in
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "glue_tasks"]
    subprocess.run(command + train_argv(model_dir, data, tmp_path / "whole"), env=env, check=True, capture_output=True)

    victim = subprocess.Popen(command + train_argv(model_dir, data, tmp_path / "killed"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / STATE_FILE
    deadline = time.time() + 240
    while not (state.exists() and saved_step(state) >= 4) and time.time() < deadline:
        time.sleep(0.005)
    victim.kill()  # SIGKILL: no handler, no cleanup
    victim.wait()
    assert state.exists(), "no training state was saved within 240 s"
    assert not (tmp_path / "killed" / "results.json").exists(), "the run must be killed before it finished"
    assert 4 <= saved_step(state) < 100, "killed in the middle of the first epoch (100 batches)"

    resumed = subprocess.run(command + train_argv(model_dir, data, tmp_path / "killed", "--resume"), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch" in resumed.stdout
    whole = load_file(tmp_path / "whole" / "adapter" / adaptkit.WEIGHTS_NAME)
    again = load_file(tmp_path / "killed" / "adapter" / adaptkit.WEIGHTS_NAME)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole), "CPU resume is bit-identical"
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "killed")]
    assert results[0]["history"][-1]["dev"] == results[1]["history"][-1]["dev"]
    assert not state.exists(), "a finished run removes its training state"


def test_resume_needs_a_state_and_the_same_settings(model_dir, tmp_path, capsys):
    data = write_rte(tmp_path / "glue")
    assert main(train_argv(model_dir, data, tmp_path / "none", "--resume")) == 2
    assert "no training state" in capsys.readouterr().err
    out = tmp_path / "run"
    out.mkdir()
    (out / STATE_FILE).write_bytes(b"not a safetensors file")
    assert main(train_argv(model_dir, data, out, "--resume")) == 2
    assert "unreadable" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(model_dir, tmp_path, capsys, monkeypatch):
    data, out = run_interrupted_after_first_epoch(model_dir, tmp_path, monkeypatch)
    assert main(train_argv(model_dir, data, out, "--resume", "--lr", "0.1")) == 2
    assert "other settings (lr)" in capsys.readouterr().err


def test_a_state_saved_before_a_setting_existed_still_resumes(model_dir, tmp_path, monkeypatch):
    """A state written by an older version lacks newer settings (here the method's train_layernorms);
    it resumes at their defaults instead of being refused as "other settings"."""
    data, out = run_interrupted_after_first_epoch(model_dir, tmp_path, monkeypatch)
    state = out / STATE_FILE
    with safe_open(str(state), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["config"])
    del config["method"]["train_layernorms"]
    save_file(tensors, str(state), metadata={**metadata, "config": json.dumps(config)})
    assert main(train_argv(model_dir, data, out, "--resume")) == 0
    assert json.loads((out / "results.json").read_text())["best_epoch"] in (1, 2)


def run_interrupted_after_first_epoch(model_dir, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Train on fresh data until the first epoch's state is saved, then stop; returns (data, output dir)."""
    data = write_rte(tmp_path / "glue")
    out = tmp_path / "run"
    interrupt_after_first_epoch(monkeypatch)
    assert main(train_argv(model_dir, data, out)) == 130  # Ctrl-C: one line, what was saved, how to resume
    monkeypatch.undo()
    return data, out


def interrupt_after_first_epoch(monkeypatch):
    from glue_tasks import train as train_module
    original = train_module.save_train_state

    def save_then_stop(path, modules, optimizer, scheduler, progress, *rest):
        original(path, modules, optimizer, scheduler, progress, *rest)
        if progress.batch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_train_state", save_then_stop)


def test_nan_loss_stops_with_step_and_lr_and_keeps_the_last_good_state(model_dir, tmp_path, capsys, monkeypatch):
    data = write_rte(tmp_path / "glue")
    original, calls = TaskLoss.forward, []

    def poisoned(self, logits, labels):
        calls.append(1)
        loss = original(self, logits, labels)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(TaskLoss, "forward", poisoned)
    out = tmp_path / "run"
    assert main(train_argv(model_dir, data, out, "--lr", "1e-3")) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 1, step 5 (learning rate" in err and STATE_FILE in err
    assert saved_step(out / STATE_FILE) == 4
    assert not (out / "results.json").exists()


def test_edited_checkpoint_is_refused(tmp_path):
    from tiny_models import tiny_model
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    adaptkit.save_adapter(model, tmp_path)
    path = tmp_path / adaptkit.WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in a tensor, same size
    path.write_bytes(bytes(data))
    with pytest.raises(adaptkit.CheckpointError, match=f"{path}.*checksum"):
        adaptkit.load_adapter(tiny_model("bert"), tmp_path)


def test_skip_bad_rows_reports_the_count(model_dir, tmp_path, capsys):
    data = write_rte(tmp_path / "glue")
    train_file = data / "RTE" / "train.tsv"
    with open(train_file, "a") as handle:
        handle.write("99\tonly two fields\n100\ta\tb\tmaybe\n")
    assert main(train_argv(model_dir, data, tmp_path / "strict", "--epochs", "1")) == 2
    assert "RTE/train.tsv line 50" in capsys.readouterr().err
    assert main(train_argv(model_dir, data, tmp_path / "lenient", "--epochs", "1", "--skip-bad-rows")) == 0
    assert "(2 bad rows skipped)" in capsys.readouterr().out
    assert json.loads((tmp_path / "lenient" / "results.json").read_text())["skipped_rows"] == 2


def test_nothing_is_written_outside_the_output_dir(model_dir, tmp_path, monkeypatch):
    data = write_rte(tmp_path / "glue")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if "out" not in p.relative_to(tmp_path).parts}

    before = snapshot()
    assert main(train_argv(model_dir, data, tmp_path / "out", "--epochs", "1")) == 0
    assert snapshot() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter", "results.json", "run_config.json"]
