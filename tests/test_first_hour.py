"""What a newcomer following the README hits first: task spellings, --version, run folders that
work from anywhere, checkpoints others can read."""

import json
import os
import stat

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
