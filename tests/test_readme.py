"""The README's Python examples run as written (with a tiny local model in ADAPTKIT_README_MODEL)."""

import os
import re
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


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_python_example_runs(index, tiny_model_dir, tmp_path):
    env = {**os.environ, "ADAPTKIT_README_MODEL": str(tiny_model_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", EXAMPLES[index]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
