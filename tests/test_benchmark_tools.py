"""sweep.py resumes and skips finished runs; report.py turns results into a table and a plot."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import report  # noqa: E402
import sweep  # noqa: E402


def fake_result(run, score):
    return {"score": score, "best_epoch": 2, "dev": {"validation": {"accuracy": score}}, "wall_seconds": 60.0,
            "parameters": {"trainable": 1000 * (1 + len(run.label)), "trainable_percent": 1.5, "total": 10**6},
            "machine": {"cpu": "test cpu", "cores": 2, "gpu": None, "torch": "x", "transformers": "y"},
            "date": "2026-11-28T00:00:00+00:00"}


def test_sweep_runs_each_cell_once_and_resumes(tmp_path, monkeypatch):
    calls = []

    def execute(run, work_dir, data_dir, threads=None):
        calls.append(run.slug)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return fake_result(run, 0.6)

    monkeypatch.setattr(sweep, "execute", execute)
    argv = ["--preset", "cpu-small", "--results-dir", str(tmp_path), "--tasks", "rte", "--methods", "full", "top-0"]
    assert sweep.main(argv) == 1, "a failed run makes the sweep exit non-zero"
    assert len(calls) == 6
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5
    with open(tmp_path / "results.jsonl", "a") as handle:
        handle.write('{"key": "torn')  # a kill in the middle of a write
    calls.clear()
    assert sweep.main(argv) == 0
    assert len(calls) == 1, "only the failed run is retried"
    calls.clear()
    assert sweep.main(argv) == 0 and calls == []


def test_select_by_task_method_and_seed():
    runs = sweep.select(sweep.cpu_small().runs, ["rte", "cola"], ["full"], [1])
    assert [(r.task, r.label, r.seed) for r in runs] == [("rte", "full", 1), ("cola", "full", 1)]


def test_cli_args_carry_the_method():
    run = sweep.Run("rte", sweep.adapter(64, "pfeiffer"), 1e-3, 2, 3, loss="cosine", max_train_samples=100)
    args = run.cli_args()
    assert args[args.index("--placement") + 1] == "pfeiffer" and args[args.index("--size") + 1] == "64"
    assert args[args.index("--max-train-samples") + 1] == "100" and run.label == "adapter-pfeiffer-64+cosine"
    assert args[args.index("--batch-size") + 1] == "32" and "--freeze-layernorms" not in args
    frozen = sweep.Run("rte", {**sweep.adapter(8), "train_layernorms": False}, 1e-3, 2, 1)
    assert "--freeze-layernorms" in frozen.cli_args() and frozen.label == "adapter-houlsby-frozen-ln-8"


def test_batch_size_enters_the_key_only_when_not_the_default():
    """Results recorded before batch_size existed (batch 32) still count as done."""
    run = sweep.Run("rte", {"name": "full"}, 5e-5, 1, 3)
    assert "batch_size" not in json.loads(run.key)
    small = sweep.Run("rte", {"name": "full"}, 5e-5, 1, 3, batch_size=8)
    assert json.loads(small.key)["batch_size"] == 8 and small.key != run.key


def test_report_writes_table_plot_and_missing_cells(tmp_path):
    preset = sweep.cpu_small()
    (tmp_path / "preset.json").write_text(json.dumps({"preset": "cpu-small", "description": preset.description}))
    chosen = [r for r in preset.runs if r.task in ("rte", "mrpc") and r.label in ("full", "adapter-houlsby-64",
                                                                               "adapter-houlsby-64+cosine")]
    for run in chosen:
        sweep.append_result(tmp_path / "results.jsonl", run, fake_result(run, 0.5 + 0.01 * run.seed))
    assert report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| full |" in summary and "52.0 ± 1.0 (3)" in summary
    assert "## Cosine loss" in summary and "adapter-houlsby-64 | cosine |" in summary
    assert "| rte | full | 2 | 5e-05 | 52.00 | 2 | 1.0 min |" in summary
    assert f"## Missing runs ({len(preset.runs) - len(chosen)})" in summary
    assert (tmp_path / "score_vs_params.png").read_bytes()[:4] == b"\x89PNG"


def test_report_on_empty_results(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("")
    assert report.main([str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def test_report_keeps_learning_rates_apart(tmp_path):
    """An lr sweep: seeds are averaged, learning rates are not; each lr is its own row and plot line."""
    preset = sweep.cpu_small_lr()
    (tmp_path / "preset.json").write_text(json.dumps({"preset": "cpu-small-lr", "description": preset.description}))
    houlsby = [r for r in preset.runs if r.label == "adapter-houlsby-64"]
    assert sorted(r.lr for r in houlsby) == [3e-4, 1e-3, 3e-3] and len({r.key for r in preset.runs}) == 12
    for run in houlsby:
        sweep.append_result(tmp_path / "results.jsonl", run, fake_result(run, run.lr * 100))
    assert report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| adapter-houlsby-64 lr=")]
    assert [row.split(" |")[0] for row in rows] == ["| adapter-houlsby-64 lr=0.0003", "| adapter-houlsby-64 lr=0.001",
                                                    "| adapter-houlsby-64 lr=0.003"]
    assert "| 3.0 (1) |" in rows[0] and "| 30.0 (1) |" in rows[2], "no averaging across learning rates"
    assert "## Missing runs (9)" in summary
    assert report.family("adapter-houlsby-64 lr=0.003") == "adapter-houlsby lr=0.003"


@pytest.mark.parametrize("label, fam", [("top-3", "top-k"), ("adapter-houlsby-8", "adapter-houlsby"), ("lora-r8", "lora"),
                                        ("adapter-houlsby-ffn-frozen-ln-64", "adapter-houlsby-ffn-frozen-ln")])
def test_families(label, fam):
    assert report.family(label) == fam


def test_parallel_sweep_writes_each_run_once_and_caps_threads(tmp_path, monkeypatch):
    seen = []

    def execute(run, work_dir, data_dir, threads=None):
        seen.append((run.slug, threads))
        if run.label == "top-0" and run.seed == 2:
            raise RuntimeError("boom")
        return fake_result(run, 0.6)

    monkeypatch.setattr(sweep, "execute", execute)
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    argv = ["--preset", "cpu-small", "--results-dir", str(tmp_path), "--tasks", "rte", "--methods", "full", "top-0",
            "--jobs", "4", "--model", "/models/minilm", "--mixed-precision", "bf16"]
    assert sweep.main(argv) == 1
    assert sorted(slug for slug, _ in seen) == sorted({slug for slug, _ in seen}) and len(seen) == 6
    assert {threads for _, threads in seen} == {2}, "8 cores shared by 4 runs"
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {r["model"] for r in rows} == {"/models/minilm"}
    meta = json.loads((tmp_path / "preset.json").read_text())
    assert meta["jobs"] == 4 and meta["overrides"] == {"model": "/models/minilm", "mixed_precision": "bf16"}

    assert report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    missing = len(sweep.cpu_small().runs) - 5
    assert f"## Missing runs ({missing})" in summary, "runs under --model/--mixed-precision count as done"
    assert "- rte-top-0-lr0.01-s2-e2" in summary and "mixed precision: bf16" in summary
    assert "(4 run(s) at a time)" in summary


def test_sweep_runs_as_a_script_without_the_package_installed(tmp_path):
    """gpu_sweep.sh runs sweep.py on a machine where the project is not installed."""
    # -S: no site processing, so no editable install; the dependencies come from site-packages by path.
    site_packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(site_packages)}
    done = subprocess.run([sys.executable, "-S", str(Path(sweep.__file__)), "--preset", "cpu-small-lr", "--dry-run",
                           "--results-dir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "12 runs selected" in done.stdout + done.stderr


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--preset", "cpu-small", "--jobs", "0", "--dry-run"])
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_overhead_ratios_are_paired_with_a_bootstrap_interval():
    import overhead
    # variant b is twice a in every round, while the machine's speed drifts from round to round
    drift = [1.0 + 0.3 * (i % 5) for i in range(30)]
    run = {"samples": {"a": [d for d in drift], "b": [2 * d for d in drift]}, "other_cores": [0.0] * 29 + [1.5]}
    entry = overhead.ratio_entry("layernorm_price", run, "b", "a", "what", interval=True)
    assert entry["basis"] == "quiet rounds (29 of 30)" and entry["value"] == pytest.approx(2.0)
    assert entry["interval_95"][0] <= 2.0 <= entry["interval_95"][1]
    assert entry["meets_target"] is False and entry["meets_target_at_interval_top"] is False
    assert set(overhead.TRAIN_VARIANTS) >= {n for _, top, bottom, _ in overhead.TRAIN_RATIOS for n in (top, bottom)}


def test_layer_choice_preset_runs_the_top_blocks_only():
    runs = sweep.PRESETS["layer-choice"]().runs
    assert len(runs) == 18 and {r.method["adapter_top"] for r in runs} == {2, 3, 4}
    assert [r.task for r in runs[:9]] == ["rte"] * 9  # RTE first: a partial run answers for one task
    assert runs[0].label == "adapter-houlsby-top4-64" and "--adapter-top" in runs[0].cli_args()
