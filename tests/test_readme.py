"""The README's Python examples run as written (with a tiny local model in ADAPTKIT_README_MODEL)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from glue_run_fixtures import write_tiny_model

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = sorted((README.parent / "docs").glob("*.md"))
EXAMPLES = [example for page in (README, *DOCS)
            for example in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model"))


def test_the_readme_has_python_examples_and_stays_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(re.findall(r"```python\n", text)) >= 3 and len(text.splitlines()) <= 300
    assert "cpu_speed" not in text  # opt-in process-wide settings: documented in docs/, not the front door


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


BASH_BLOCKS = [block.splitlines() for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"),
                                                       re.DOTALL)]
GLUE_BLOCKS = [[line for line in block if line.startswith("adaptkit-glue ")] for block in BASH_BLOCKS]
GLUE_BLOCKS = [block for block in GLUE_BLOCKS if block]
LAUNCH_LINES = [line for block in BASH_BLOCKS for line in block if line.startswith(("accelerate ", "torchrun "))]


def _write_readme_data(folder: Path) -> Path:
    """Tiny stand-ins for ../shared/data/glue (RTE, SST-2) and the own-data CSV files."""
    from glue_run_fixtures import write_rte
    data = write_rte(folder / "glue")
    (data / "SST-2").mkdir()
    for split in ("train", "dev"):
        rows = [f"a {'fine' if i % 2 else 'poor'} film {i}\t{i % 2}" for i in range(24)]
        (data / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    rows = [f"item {i} was {['awful', 'fine', 'great'][i % 3]},{i % 3 + 1}" for i in range(30)]
    (folder / "reviews.csv").write_text("review,stars\n" + "\n".join(rows) + "\n")
    (folder / "new_reviews.csv").write_text("review\nit was great\nit was awful\n")
    return data


def test_the_readme_shows_the_main_job_first_result_and_own_data():
    firsts = [[c.split()[1] for c in block] for block in GLUE_BLOCKS]
    assert firsts == [["train"], ["train", "eval", "predict"], ["train", "eval", "predict"], ["compare"]]
    assert any("--train-file" in line for block in GLUE_BLOCKS for line in block)


@pytest.mark.parametrize("block", GLUE_BLOCKS, ids=lambda block: block[0].split("--output-dir")[-1].strip())
def test_readme_commands_run_in_order(block, tiny_model_dir, tmp_path):
    """Each block's commands, with the documented substitution: a tiny model, tiny files for
    ../shared/data/glue and the CSV files, and a short run (--max-train-samples 16 --epochs 1; compare
    with two methods)."""
    data = _write_readme_data(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in block:
        args = shlex.split(command.replace("../shared/data/glue", str(data)), comments=True)[1:]
        if args[0] in ("train", "compare"):
            args += ["--model", str(tiny_model_dir), "--max-train-samples", "16", "--epochs", "1"]
        if args[0] == "compare":
            args += ["--methods", "scratch-small", "top-0"]
        done = subprocess.run([sys.executable, "-m", "glue_tasks", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    outputs = {"runs/rte": "submission/RTE-validation.tsv", "runs/reviews": "predictions/new_reviews-predictions.tsv",
               "runs/first": "runs/first/results.json", "runs/compare-sst2": "runs/compare-sst2/summary.md"}
    expected = next(path for run, path in outputs.items() if run in block[0])
    assert (tmp_path / expected).is_file()


def test_readme_launch_lines_parse():
    """Several processes cannot run here; each launcher flag must be one the launcher documents, and
    the rest must parse as an adaptkit-glue command."""
    from glue_tasks.cli import build_parser
    assert {line.split()[0] for line in LAUNCH_LINES} == {"accelerate", "torchrun"}
    for line in LAUNCH_LINES:
        words = shlex.split(line)
        module = words.index("-m")
        launcher = words[:module]
        help_text = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--help"]
                                   if launcher[0] == "accelerate" else
                                   [sys.executable, "-m", "torch.distributed.run", "--help"],
                                   capture_output=True, text=True, timeout=120).stdout
        for flag in (w for w in launcher if w.startswith("--")):
            assert flag in help_text or flag.replace("_", "-") in help_text, (line, flag)
        if "--config_file" in launcher:  # a committed accelerate config that accelerate reads
            from accelerate.commands.config.config_args import load_config_from_file
            config = load_config_from_file(str(README.parent / launcher[launcher.index("--config_file") + 1]))
            ds_file = (getattr(config, "deepspeed_config", None) or {}).get("deepspeed_config_file")
            assert ds_file is None or json.loads((README.parent / ds_file).read_text())["zero_optimization"]
        assert words[module + 1] == "glue_tasks"
        build_parser().parse_args(words[module + 2:])


def test_readme_first_result_and_main_job_match_their_committed_run():
    """The commands that benchmarks/readme_runs.py ran are the README's, and the README quotes its numbers."""
    import json
    sys.path.insert(0, str(README.parent / "benchmarks"))
    from readme_runs import COMMANDS, OUT
    lines = [line for block in GLUE_BLOCKS for line in block]
    assert all(command in lines for command in COMMANDS.values())
    runs = json.loads(OUT.read_text())["runs"]
    text = README.read_text(encoding="utf-8")
    for run in runs.values():
        assert f"{100 * run['score']:.1f}" in text


def test_readme_quotes_the_first_results_time_and_load_and_the_small_data_benchmark():
    """The first result's time comes with the load it was measured under; the small-data line quotes
    every seed of benchmarks/results/small_data_defaults.json, at 300 rows, both settings."""
    import json
    text = README.read_text(encoding="utf-8")
    first = json.loads((README.parent / "benchmarks" / "results" / "readme_runs.json").read_text())["runs"]["first_result"]
    assert f"**{first['wall_seconds']:.0f} s**" in text and f"load average {first['load_average_before']:.2f}" in text
    table = json.loads((README.parent / "benchmarks" / "results" / "small_data_defaults.json").read_text())["table"]
    for runs in table["300"].values():
        assert " / ".join(f"{100 * runs[seed]['score']:.1f}" for seed in sorted(runs)) in text


def test_readme_fusion_table_quotes_the_committed_fusion_summary():
    """Each target's row in the README's AdapterFusion table carries benchmarks/results/fusion/summary.json's
    means, spreads, seed count, paired difference with its interval, and verdict."""
    summary = json.loads((README.parent / "benchmarks" / "results" / "fusion" / "summary.json").read_text())
    rows = {line.split("|")[1].strip(): line for line in map(str.strip, README.read_text(encoding="utf-8").splitlines())
            if line.startswith("| ") and line.count("|") >= 6}
    for target in summary["targets"]:
        row = rows[{"rte": "RTE", "mrpc": "MRPC"}[target["task"]]]
        for cell in (target["adapter"], target["fusion"]):
            assert f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}" in row
        diff = target["fusion_minus_adapter"]
        assert not diff["partial"], "the README table is for the complete 3-seed grid"
        assert f"{diff['difference']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]" in row
        assert target["verdict"].split(" (")[0] in row
    assert not summary["missing"]
