"""sweep.py resumes and skips finished runs; report.py turns results into a table and a plot."""

import argparse
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "investigations"))
import report  # noqa: E402
import sweep  # noqa: E402


def fake_result(run, score):
    return {"score": score, "best_epoch": 2, "dev": {"validation": {"accuracy": score}}, "wall_seconds": 60.0,
            "parameters": {"trainable": 1000 * (1 + len(run.label)), "trainable_percent": 1.5, "total": 10**6},
            "machine": {"cpu": "test cpu", "cores": 2, "gpu": None, "torch": "x", "transformers": "y"},
            "date": "2026-11-28T00:00:00+00:00"}


def test_sweep_runs_each_cell_once_and_resumes(tmp_path, monkeypatch):
    calls = []

    def execute(run, work_dir, data_dir, threads=None, kept=None):
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

    def execute(run, work_dir, data_dir, threads=None, kept=None):
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
    # variant b is twice a within 1% in every round, while the machine's speed drifts by up to 120%
    drift = [1.0 + 0.3 * (i % 5) for i in range(30)]
    run = {"samples": {"a": drift, "b": [2 * d * (1.01 if i % 2 else 0.99) for i, d in enumerate(drift)]},
           "other_cores": [0.0] * 29 + [1.5]}
    entry = overhead.ratio_entry("layernorm_price", run, "b", "a", "what", interval=True)
    assert entry["basis"] == "quiet rounds (29 of 30)" and entry["value"] == pytest.approx(2.0, abs=0.025)
    low, high = entry["interval_95"]
    assert 1.97 <= low <= high <= 2.03  # the pairing cancels the drift
    assert entry["ratio_of_medians"] == pytest.approx(2.0, abs=0.1)
    # where the pairing matters: b is 3x a in six rounds and equal in six, the medians say 1.5
    mixed = {"samples": {"a": [1.0] * 6 + [3.0] * 6, "b": [3.0] * 12}, "other_cores": [0.0] * 12}
    mixed_entry = overhead.ratio_entry("layernorm_price", mixed, "b", "a", "what")
    assert (mixed_entry["value"], mixed_entry["ratio_of_medians"]) == (2.0, 1.5)
    assert entry["meets_target"] is False and entry["meets_target_at_interval_top"] is False
    assert set(overhead.TRAIN_VARIANTS) >= {n for _, top, bottom, _ in overhead.TRAIN_RATIOS for n in (top, bottom)}


def test_overhead_verdict_tells_a_missed_target_from_an_unresolved_one():
    import overhead
    assert overhead.verdict(0.98, 1.049, 1.05) == "met"
    assert overhead.verdict(1.051, 1.09, 1.05) == "missed"
    assert overhead.verdict(0.996, 1.091, 1.05) == "not resolved"
    # a noisy machine: b is 1.02 x a on average, each round off by up to 12%
    noise = [1.0 + 0.12 * ((7 * i) % 11 - 5) / 5 for i in range(40)]
    run = {"samples": {"a": [1.0] * 40, "b": [1.02 * n for n in noise]}, "other_cores": [0.0] * 40}
    entry = overhead.ratio_entry("layernorm_price", run, "b", "a", "what", interval=True)
    low, high = entry["interval_95"]
    assert low < 1.05 < high and entry["verdict"] == "not resolved"
    assert entry["meets_target_at_interval_top"] is False
    q1, q3 = entry["per_round_quartiles"]
    assert q1 < 1.0 < 1.04 < q3  # the spread that needs more rounds shows in the file


def test_overhead_inference_ratio_has_an_interval_and_a_verdict(monkeypatch):
    """Inference on/off is judged like the training ratios: the interval's upper end against the target."""
    import overhead

    import adaptkit
    from tiny_models import tiny_inputs, tiny_model

    def tiny_adapted(config):
        model = tiny_model("bert")
        adaptkit.add_adapter(model, config, name="bench")
        return model
    monkeypatch.setattr(overhead, "load_model", tiny_adapted)
    model = tiny_model("bert")
    stats, entry = overhead.bench_inference(tiny_inputs(model), overhead.MIN_STEPS, "m24")
    low, high = entry["interval_95"]
    assert low <= entry["value"] <= high and entry["target"] == overhead.TARGETS["inference_latency_m24"]
    assert entry["verdict"] == overhead.verdict(low, high, entry["target"])
    assert len(stats["adapters_on"]["samples_s"]) >= overhead.MIN_STEPS


def test_overhead_times_a_chosen_subset_of_its_variants():
    import overhead
    assert overhead.variant_list("houlsby64-top3, full,houlsby64") == ["full", "houlsby64", "houlsby64-top3"]
    for bad in ("full,bogus", "full", "full,full", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="give two or more of full"):
            overhead.variant_list(bad)
    names = [name for name, *_ in overhead.ratios_of(["full", "houlsby64", "houlsby64-frozen-ln", "houlsby64-top3"])]
    assert names == ["train_step_time", "layernorm_price", "train_step_time_top3"]
    assert len(overhead.ratios_of(list(overhead.TRAIN_VARIANTS))) == len(overhead.TRAIN_RATIOS)


def test_dropout_masks_benchmark_compares_both_kernels(tmp_path, monkeypatch, capsys):
    import dropout_masks
    with pytest.raises(SystemExit):
        dropout_masks.main(["--rounds", "3"])
    assert "at least 10 rounds" in capsys.readouterr().err
    monkeypatch.setattr(dropout_masks, "SHAPES", {"tiny": (4, 1000)})
    monkeypatch.setattr(dropout_masks.adaptkit.cpu_speed, "reuse_freed_memory", lambda: False)  # process-wide
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng():
            assert dropout_masks.main(["--rounds", "10", "--output", str(tmp_path / "masks.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    tiny = json.loads((tmp_path / "masks.json").read_text())["shapes"]["tiny"]
    assert tiny["elements"] == 4000 and len(tiny["torch_kernel"]["samples_s"]) >= 10
    assert tiny["fast_cpu_dropout"]["ns_per_element"] > 0 and tiny["ratio"]["value"] > 0
    assert "interval_95" in tiny["ratio"]


def test_attention_kernel_benchmark_times_both_kernels(monkeypatch):
    """Each timed call runs one attention forward and backward, the fast kernel's through
    DropoutAttention and torch's not; memory compares the same variants under both kernels."""
    import attention_kernel
    from adaptkit.cpu_speed.attention import DropoutAttention
    for name, value in {"BATCH": 2, "SEQ_LEN": 8, "HEADS": 2, "HEAD_SIZE": 4}.items():
        monkeypatch.setattr(attention_kernel, name, value)
    calls = []
    apply = DropoutAttention.apply
    monkeypatch.setattr(DropoutAttention, "apply", lambda *a: (calls.append(1), apply(*a))[1])
    with torch.random.fork_rng():
        assert attention_kernel.timed_attention("torch")() > 0 and not calls
        assert attention_kernel.timed_attention("fast")() > 0 and len(calls) == 1
    flags_seen = []

    def fake_memory(flags, variants):
        flags_seen.append(flags)
        peak = 200 if flags else 100
        return {v: {"peak_after_steps": {"vm_hwm_bytes": peak * 2 ** 20}} for v in variants}, None
    monkeypatch.setattr(attention_kernel, "bench_memory", fake_memory)
    memory = attention_kernel.memory_by_kernel()
    assert flags_seen == [[], ["--torch-attention"]]
    assert memory["fast_over_torch"] == {v: 0.5 for v in attention_kernel.VARIANTS}


def test_allocator_comparison_alternates_processes_and_refuses_a_no_op(monkeypatch):
    import allocator
    order = []

    def fake_child(variant, setting, steps):
        order.append((variant, setting))
        slow = 2.0 if setting == "default" else 1.0
        return {"reused": setting == "reuse", "seconds": [slow] * steps, "faults": [100 if slow > 1 else 0] * steps}
    monkeypatch.setattr(allocator, "run_child", fake_child)
    results = allocator.measure(processes=2, steps=3)
    assert [s for v, s in order if v == "full"] == ["default", "reuse", "reuse", "default"]
    assert results["full"]["reuse_over_default"] == 0.5
    assert results["houlsby64"]["default"]["median_faults_per_step"] == 100
    assert results["houlsby64"]["reuse"]["process_medians_s"] == [1.0, 1.0]
    monkeypatch.setattr(allocator, "run_child", lambda *a: {"reused": False, "seconds": [1.0], "faults": [0]})
    with pytest.raises(SystemExit, match="did nothing here"):
        allocator.measure(processes=1, steps=1)


def test_layer_choice_preset_runs_the_top_blocks_only():
    runs = sweep.PRESETS["layer-choice"]().runs
    assert len(runs) == 24 and {r.method.get("adapter_top") for r in runs} == {2, 3, 4, None}
    frozen = [r for r in runs if "adapter_top" not in r.method]
    assert [r.label for r in frozen] == ["adapter-houlsby-frozen-emb-ln-64"] * 6
    assert all("--freeze-embedding-norm" in r.cli_args() for r in frozen) and runs[-6:] == frozen
    assert [r.task for r in runs[:9]] == ["rte"] * 9  # RTE first: a partial run answers for one task
    assert runs[0].label == "adapter-houlsby-top4-64" and "--adapter-top" in runs[0].cli_args()


def test_fusion_glue_preset_plans_sources_before_the_fusions_that_read_them(tmp_path, monkeypatch):
    runs = sweep.PRESETS["fusion"]().runs
    sources, fusions = runs[:15], runs[15:]
    assert len(fusions) == 6 and {r.label for r in sources} == {"adapter-houlsby-frozen-ln-64"}
    assert {(r.task, r.seed) for r in sources} == {(t, s) for t in ("sst2", "mrpc", "stsb", "cola", "rte")
                                                  for s in (1, 2, 3)}
    assert {(r.task, r.seed) for r in fusions} == {(t, s) for t in ("rte", "mrpc") for s in (1, 2, 3)}
    by_slug = {r.slug: r for r in sources}
    for fusion in fusions:
        fused = [by_slug[slug] for slug in fusion.method["fusion_sources"]]
        assert {r.seed for r in fused} == {fusion.seed} and fusion.task in {r.task for r in fused}  # its own adapter too
        assert len(fused) == 5 and fusion.label == "fusion-dynamic-5" and fusion.lr == 5e-5
        kept = sweep.kept_adapters(sweep.PRESETS["fusion"](), tmp_path)
        assert kept == tmp_path / "adapters"  # committed beside the results: the next machine finds them
        args = sweep.with_kept_sources(fusion, kept).cli_args()
        given = args[args.index("--fusion-sources") + 1: args.index("--fusion-sources") + 6]
        assert given == [str(kept / r.slug) for r in fused]
    assert json.loads(fusions[0].key)["method"]["fusion_sources"][0] == sources[0].slug  # no work dir in the key
    calls = []
    monkeypatch.setattr(sweep, "execute", lambda run, *a, **k: calls.append(run) or fake_result(run, 0.6))
    assert sweep.main(["--preset", "fusion", "--results-dir", str(tmp_path), "--seeds", "1"]) == 0
    assert [r.method["name"] for r in calls] == ["adapter"] * 5 + ["fusion"] * 2  # sources first


def test_layer_choice_joins_scores_with_costs(tmp_path, capsys):
    import layer_choice
    assert layer_choice.main(["--results", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err and not list(tmp_path.rglob("cost_quality.md"))
    for name, preset, runs in (("layer-choice", sweep.layer_choice(), 5),
                                ("glue-headline", sweep.glue_headline(), 12)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "preset.json").write_text(json.dumps({"preset": name, "description": preset.description}))
        for run in preset.runs[:runs]:  # layer-choice: RTE seed 1 complete, seed 2 only top 4 and top 3
            bonus = 0.01 * (run.method.get("adapter_top") or 6)
            sweep.append_result(tmp_path / name / "results.jsonl", run, fake_result(run, 0.5 + bonus + 0.01 * run.seed))
    shares = {"full": 1.0, "houlsby64": 0.8, "houlsby64-frozen-emb-ln": 0.7, "houlsby64-top4": 0.6,
              "houlsby64-top3": 0.5, "houlsby64-top2": 0.4}
    # 12 rounds: the first one contended (and wild), the 11 quiet ones drifting alike for every variant
    steps = {v: {"samples_s": [50.0 if v == "full" else 1.0] + [share * (1 + 0.1 * i) for i in range(11)]}
             for v, share in shares.items()}
    steps["other_cores_per_round"] = [1.0] + [0.0] * 11
    (tmp_path / "overhead.json").write_text(json.dumps({
        "date": "d", "settings": {"quiet_cores_below": 0.2}, "train_step_time": steps,
        "ratios": {"train_peak_memory": {"vs_full": shares}}}))
    assert layer_choice.main(["--results", str(tmp_path)]) == 0
    table = (tmp_path / "layer-choice" / "cost_quality.md").read_text()
    row = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| 0.50 | 0.50 | 54.5 ± 0.7 (2) | -3.0 [-3.0, -3.0] |" in row["| top 3 of 6 blocks"]
    assert "| 0.40 | 0.40 | 53.0 (1) | -4.0 [-4.0, -4.0] | – | – |" in row["| top 2 of 6 blocks"]
    assert "| 1.00 | 1.00 | 58.0 ± 1.0 (3) |  |" in row["| full fine-tuning"]
    assert (tmp_path / "layer-choice" / "cost_quality.png").read_bytes()[:4] == b"\x89PNG"
    rerun = sweep.Run("rte", {**sweep.adapter(64), "adapter_top": 3}, 1e-3, 1, 3, model="/elsewhere")
    sweep.append_result(tmp_path / "layer-choice" / "results.jsonl", rerun, fake_result(rerun, 0.5))
    assert layer_choice.main(["--results", str(tmp_path)]) == 2
    assert "adapter-houlsby-top3-64 seed 1 appears twice" in capsys.readouterr().err


def _claim_line(method, loss, seed, correct, trainable, n=200, lr=1e-3, phase="grid"):
    """A compare ledger line whose first ``correct`` share of the dev examples is predicted right."""
    labels = [i % 2 for i in range(n)]
    predictions = [y if i < correct * n else 1 - y for i, y in enumerate(labels)]
    return {"key": f"{phase}-{method}-{loss}-{seed}-{lr}", "phase": phase, "method": method, "loss": loss,
            "seed": seed, "task": "rte", "lr": lr, "score": correct, "seconds": 1.0,
            "parameters": {"trainable": trainable, "total": 10**6},
            "train_label_counts": {"a": 250, "b": 250},
            "dev_predictions": {"validation": {"prediction": predictions, "label": labels}}}


def test_seed_claims_report_tests_across_cells_and_names_what_is_missing(tmp_path):
    import seed_claims_report
    from glue_tasks.ledger import append_line
    pieces = {
        "claim1-rte": [("top-1", 0.6, 1000), ("top-2", 0.6, 100), ("adapter-houlsby-64", 0.9, 500),
                       ("adapter-houlsby-256", 0.95, 2000), ("full", 0.9, 10**6), ("scratch-small", 0.5, 50),
                       ("adapter-houlsby-8", 0.99, 400)],
        "claim2-sst2-500": [("scratch-small", 0.5, 50), ("scratch-small+cosine", 0.8, 50)],
        "claim3-sst2-500": [("scratch-small", 0.8, 50), ("adapter-houlsby-64", 0.5, 500), ("full", 0.8, 10**6)],
    }
    for piece, cells in pieces.items():
        for name, correct, trainable in cells:
            method, _, loss = name.partition("+")
            # full has 2 seeds of 3, houlsby-8 one: its lucky mean is not taken as the best adapter
            for seed in {"full": (1, 2), "adapter-houlsby-8": (1,)}.get(method, (1, 2, 3)):
                append_line(tmp_path / piece / "results.jsonl",
                            _claim_line(method, loss or "ce", seed, correct, trainable))
    assert seed_claims_report.main(["--results", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    rows = {line.split(" | ")[0]: line for line in summary.splitlines() if line.startswith("| ")}
    assert "| adapter-houlsby-64 (500) | +30.0 [" in rows["| top-1"] and rows["| top-1"].endswith("adapter better |")
    assert "no adapter with ≤ 100" in rows["| top-2"]
    assert "| full | 0.001 | 1,000,000 | 90.0 ± 0.0 (2) |" in summary
    assert "Best adapter (adapter-houlsby-256) − full fine-tuning: +5.0 [" in summary and "(seeds 1, 2 only)" in summary
    assert "### Claim 1 on MRPC (`claim1-mrpc`)\n\nNot run yet." in summary
    sst2 = next(line for line in summary.splitlines() if line.startswith("| SST-2 (2 classes) | 500 |"))
    assert "| 250 | 50.0 ± 0.0 (3) | 80.0 ± 0.0 (3) | +30.0 [" in sst2
    assert "| SST-2 (2 classes) | 1,000 | | not run yet |" in summary
    assert "adapter-houlsby-64: **negative transfer**; full: not distinguishable (interval includes 0)" in rows["| 500"]
    assert "| 5,000 | not run yet |" in summary
    assert (tmp_path / "claim1_score_vs_params.png").read_bytes()[:4] == b"\x89PNG"


def test_seed_claims_report_keeps_the_chosen_rate_and_refuses_a_seed_twice(tmp_path):
    import seed_claims_report
    from glue_tasks.ledger import append_line
    ledger = tmp_path / "results.jsonl"
    for lr, held_out in ((1e-3, 0.6), (3e-4, 0.7)):  # tuning chose 3e-4
        append_line(ledger, _claim_line("scratch-small", "ce", 1, held_out, 50, lr=lr, phase="tune"))
    append_line(ledger, _claim_line("scratch-small", "ce", 1, 0.1, 50, lr=1e-3))  # a stale grid run
    for seed in (1, 2, 3):
        append_line(ledger, _claim_line("scratch-small", "ce", seed, 0.8, 50, lr=3e-4))
    cells, failed = seed_claims_report.load_piece(tmp_path)
    cell = cells[("scratch-small", "ce")]
    assert failed == 0 and cell["lr"] == 3e-4 and cell["seeds"] == [1, 2, 3] and cell["mean"] == pytest.approx(0.8)
    append_line(ledger, {**_claim_line("scratch-small", "ce", 2, 0.5, 50, lr=3e-4), "key": "rerun"})
    with pytest.raises(ValueError, match="scratch-small ce lr 0.0003 seed 2 is there twice"):
        seed_claims_report.load_piece(tmp_path)
    tie = tmp_path / "tie"
    for lr in (3e-4, 1e-3):
        append_line(tie / "results.jsonl", _claim_line("scratch-small", "ce", 1, 0.6, 50, lr=lr, phase="tune"))
    assert seed_claims_report.chosen_lrs(tie, seed_claims_report.read_lines(tie / "results.jsonl")) == {
        "scratch-small": 1e-3}, "on a tie, the candidate compare lists first"


def test_a_finished_adapter_run_keeps_its_adapter_beside_the_results_for_the_fusions(tmp_path, monkeypatch):
    """The work directory stays on one machine; the adapters fusion runs read are kept where the
    results are committed, so a sweep continued elsewhere still finds them."""
    source = sweep.PRESETS["fusion"]().runs[0]

    def fake_train(cmd, **kwargs):
        out = Path(cmd[cmd.index("--output-dir") + 1])
        (out / "adapter").mkdir(parents=True)
        (out / "adapter" / "adapter_model.safetensors").write_bytes(b"tensors")
        (out / "results.json").write_text(json.dumps(fake_result(source, 0.6)))
        (out / "run_config.json").write_text(json.dumps({"task": source.task}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_train)
    kept = tmp_path / "results" / "adapters"
    sweep.execute(source, tmp_path / "work", None, kept=kept)
    assert (kept / source.slug / "adapter" / "adapter_model.safetensors").read_bytes() == b"tensors"
    from glue_tasks.methods import fusion_source_names
    assert fusion_source_names([str(kept / source.slug)]) == [source.task]  # what the fusion run reads
    assert sorted(p.name for p in kept.iterdir()) == [source.slug]  # no staging folder left


def test_the_fusion_report_pairs_each_fusion_with_its_targets_adapter_and_lists_what_is_missing(tmp_path):
    """A fusion far better than the adapter on the same dev examples is a gain beyond the interval;
    a target without its fusion is "not measured", and the runs not done are named."""
    import fusion_report

    rng = numpy.random.default_rng(0)
    labels = rng.integers(0, 2, 300).tolist()
    runs = {(r.task, r.method["name"], r.seed): r for r in sweep.PRESETS["fusion"]().runs}

    def line(task, method, right):
        predictions = [y if rng.random() < right else 1 - y for y in labels]
        score = sum(p == y for p, y in zip(predictions, labels)) / len(labels)
        run = runs[(task, method, 1)]
        return {"key": run.key, "task": task, "seed": 1, "method": run.method, "lr": run.lr, "result": {
            "score": score, "seed": 1, "task": task, "lr": run.lr, "wall_seconds": 10.0,
            "parameters": {"trainable": 1000 if method == "adapter" else 500, "total": 10**6},
            "train_label_counts": {"a": 5, "b": 5},
            "dev_predictions": {"validation": {"label": labels, "prediction": predictions}}}}

    lines = [line("rte", "adapter", 0.5), line("rte", "fusion", 0.9), line("mrpc", "adapter", 0.8)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert fusion_report.main(["--results", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    rte, mrpc = summary["targets"]
    assert rte["verdict"] == "gain" and rte["fusion_minus_adapter"]["low"] > 0
    assert mrpc["verdict"] == "not measured" and mrpc["fusion"] is None
    assert "mrpc-fusion-dynamic-5-lr5e-05-s1-e3" in summary["missing"] and len(summary["missing"]) == 18
    assert "| RTE |" in (tmp_path / "summary.md").read_text()
