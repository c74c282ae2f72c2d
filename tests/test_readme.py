"""The README's Python examples run as written (with a tiny local model in ADAPTKIT_README_MODEL)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from glue_run_fixtures import write_tiny_model

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def test_the_readme_has_python_examples():
    assert len(EXAMPLES) >= 3


@pytest.fixture(scope="module")
def adapterhub_env(tmp_path_factory):
    """An AdapterHub folder (a committed fixture) and its base, for "Coming from AdapterHub"."""
    from test_adapterhub import FIXTURES, base_of
    folder = FIXTURES / "adapterhub_bert_seq_bn"
    base = tmp_path_factory.mktemp("adapterhub-base")
    base_of(folder).save_pretrained(base)
    return {"ADAPTKIT_README_ADAPTERHUB": str(folder), "ADAPTKIT_README_ADAPTERHUB_BASE": str(base)}


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_python_example_runs(index, tiny_model_dir, adapterhub_env, tmp_path):
    env = {**os.environ, "ADAPTKIT_README_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1", **adapterhub_env}
    done = subprocess.run([sys.executable, "-c", EXAMPLES[index]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


COMMANDS = [line for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
            for line in block.splitlines() if line.startswith("adaptkit-glue ")]


def test_readme_glue_commands_run_in_order(tiny_model_dir, tmp_path):
    """The main job's commands, with the documented substitution: a tiny model and tiny RTE files
    for ../shared/data/glue, and a short run (--max-train-samples 16 --epochs 1)."""
    from glue_run_fixtures import write_rte
    assert [c.split()[1] for c in COMMANDS] == ["train", "eval", "predict"]
    data = write_rte(tmp_path / "glue")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in COMMANDS:
        args = shlex.split(command.replace("../shared/data/glue", str(data)), comments=True)[1:]
        if args[0] == "train":
            args += ["--model", str(tiny_model_dir), "--max-train-samples", "16", "--epochs", "1"]
        done = subprocess.run([sys.executable, "-m", "glue_tasks", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert (tmp_path / "submission" / "RTE-validation.tsv").is_file()
