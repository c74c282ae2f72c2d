"""What a newcomer following the README hits first: task spellings, --version, run folders that
work from anywhere, checkpoints others can read."""

import json
import os
import stat
import subprocess
import sys

import pytest

from glue_run_fixtures import write_rte, write_tiny_model
from glue_tasks.cli import build_parser, main


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("spelling", ["RTE", "rte", "SST-2", "sts-b", "STS-B", "MNLI"])
def test_task_names_as_the_readme_and_the_glue_download_write_them(spelling, tmp_path):
    args = build_parser().parse_args(["train", "--task", spelling, "--output-dir", str(tmp_path)])
    assert args.task == spelling.lower().replace("-", "")


def test_version_and_unknown_task_in_cli_terms(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("adaptkit-glue ")
    with pytest.raises(SystemExit):
        main(["train", "--task", "glue", "--output-dir", "x"])
    assert "unknown GLUE task 'glue'; valid tasks: cola, sst2" in capsys.readouterr().err


def test_run_config_paths_are_absolute_and_checkpoints_readable_by_others(tiny_model_dir, tmp_path, monkeypatch):
    write_rte(tmp_path / "glue")
    monkeypatch.chdir(tmp_path)
    old_umask = os.umask(0o022)
    try:
        assert main(["train", "--task", "rte", "--model", os.path.relpath(tiny_model_dir), "--data-dir", "glue",
                     "--output-dir", "run", "--epochs", "1", "--batch-size", "8", "--size", "8"]) == 0
    finally:
        os.umask(old_umask)
    config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert config["data_dir"] == str(tmp_path / "glue") and config["model"] == str(tiny_model_dir)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    monkeypatch.chdir(tmp_path.parent)
    assert main(["eval", "--run-dir", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("model, message", [
    ("./no/such/model", "no model at that path"),
    ("/tmp/definitely/missing/model", "no model at that path"),
])
def test_missing_model_path_is_named_before_anything_loads(model, message, tmp_path, capsys):
    assert main(["train", "--task", "rte", "--model", model, "--output-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_folder_without_a_model_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--task", "rte", "--model", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "run")]) == 2
    assert "holds no model (no config.json)" in capsys.readouterr().err


def test_one_plain_line_for_a_new_head_and_none_in_eval(tiny_model_dir, tmp_path, capfd):
    write_rte(tmp_path / "glue")
    assert main(["train", "--task", "rte", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "glue"),
                 "--output-dir", str(tmp_path / "run"), "--epochs", "1", "--size", "8"]) == 0
    err = capfd.readouterr().err
    assert "new classification head (classifier.bias, classifier.weight)" in err
    assert "LOAD REPORT" not in err and "\x1b[" not in err
    assert main(["eval", "--run-dir", str(tmp_path / "run")]) == 0
    err = capfd.readouterr().err
    assert "classification head" not in err and "LOAD REPORT" not in err


def test_help_imports_neither_torch_nor_datasets():
    code = ("import sys\nfrom glue_tasks.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out[-300:]
    assert "--epochs EPOCHS" in out and "300 optimizer steps" in " ".join(out.split())


@pytest.mark.parametrize("flags, message", [
    (["--method", "full", "--size", "8"], "--size does not apply to --method full"),
    (["--method", "adapter", "--top-k", "2"], "--top-k does not apply to --method adapter"),
    (["--method", "lora", "--placement", "pfeiffer"], "--placement does not apply to --method lora"),
    (["--size", "0"], "--size must be >= 1"),
])
def test_method_flags_that_do_not_apply_are_refused_before_any_model_loads(flags, message, tmp_path, capsys):
    assert main(["train", "--task", "rte", "--model", "./no/such/model", "--output-dir", str(tmp_path / "run"),
                 *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_failed_run_leaves_no_empty_output_dir_and_predict_falls_back_to_dev(tiny_model_dir, tmp_path, capfd):
    write_rte(tmp_path / "glue")
    run = tmp_path / "run"
    assert main(["train", "--task", "rte", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "nowhere"),
                 "--output-dir", str(run), "--epochs", "1"]) == 2
    assert not run.exists()
    assert main(["train", "--task", "rte", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "glue"),
                 "--output-dir", str(run), "--epochs", "1", "--size", "8"]) == 0
    out = capfd.readouterr().out
    assert "trainable parameters" in out and "wrote " in out and "adapter/adapter_model.safetensors" in out
    assert main(["predict", "--run-dir", str(run), "--output", str(tmp_path / "pred")]) == 0
    assert "predicting the dev split (validation) instead" in capfd.readouterr().err
    lines = (tmp_path / "pred" / "RTE-validation.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction\tp_entailment\tp_not_entailment" and len(lines) == 17
