"""adaptkit-glue train runs inside adaptkit's CPU kernels unless told not to, and records the choice."""

import contextlib

import pytest

import adaptkit.cpu_speed
from glue_run_fixtures import MISSING_GLUE, train_on_missing_data
from glue_tasks.train import TrainConfig

KERNELS = [("fast_cpu_dropout", "--torch-dropout", "torch_dropout"),
           ("fast_cpu_attention", "--torch-attention", "torch_attention")]


@pytest.mark.parametrize("kernel, flag, field", KERNELS)
def test_the_config_records_the_choice(kernel, flag, field):
    assert TrainConfig(output_dir="x", task="rte").to_dict()[field] is False
    assert getattr(TrainConfig(output_dir="x", task="rte", **{field: True}), field) is True


@pytest.mark.parametrize("kernel, flag, field", KERNELS)
@pytest.mark.parametrize("opted_out", [False, True])
def test_train_runs_inside_it_unless_told_not_to(kernel, flag, field, opted_out, tmp_path, monkeypatch, capsys):
    seen = []

    @contextlib.contextmanager
    def recording():
        seen.append(True)
        yield
    monkeypatch.setattr(adaptkit.cpu_speed, kernel, recording)
    flags = [flag] if opted_out else []
    assert train_on_missing_data(tmp_path, flags) == 2  # the missing data stops the run inside the block
    assert MISSING_GLUE in capsys.readouterr().err and len(seen) == (0 if opted_out else 1)
