"""benchmarks/efficiency.py: a worker measures one variant end to end; ratios and the table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import efficiency  # noqa: E402
from glue_run_fixtures import write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.mark.parametrize("variant", ["adaptkit-houlsby-64", "adaptkit-houlsby-ffn-64-frozen-ln", "adaptkit-pfeiffer-64",
                                     "adaptkit-houlsby-64-adapter-only", "top-2", "lora-r8", "full"])
def test_worker_measures_a_variant_and_its_checkpoint_reloads_exactly(variant, tiny_model, monkeypatch):
    monkeypatch.setattr(efficiency, "SIZE", 16)  # the tiny model's hidden size is 64
    result = efficiency.worker(variant, tiny_model, steps=1, inference_steps=1)
    assert len(result["train_step_s"]) == 1 and len(result["inference_s"]) == 1
    assert len(result["load_s"]) == efficiency.LOAD_REPEATS
    assert result["peak_rss_after_steps_bytes"] >= result["peak_rss_after_load_bytes"] > 0
    assert result["checkpoint_bytes"] == sum(result["checkpoint_files"].values()) > 0
    assert result["reloaded_model_matches"], "the saved checkpoint gives back the trained model's logits"
    json.dumps(result)


def fake_round(step, memory, checkpoint=1000, load=0.1):
    return {"trainable_parameters": 10, "transformers": "x", "train_step_s": [step, step + 0.2],
            "inference_s": [step / 4], "peak_rss_after_load_bytes": memory - 100, "peak_rss_after_steps_bytes": memory,
            "checkpoint_bytes": checkpoint, "checkpoint_files": {"a": checkpoint}, "load_s": [load, load * 3, load],
            "reloaded_model_matches": True}


def test_ratios_against_full_and_adapterhub():
    results = {"full": efficiency.summarize([fake_round(4.0, 2000, 90_000), fake_round(4.4, 2000, 90_000)]),
               "adaptkit-houlsby-64": efficiency.summarize([fake_round(3.0, 1800), fake_round(3.0, 1800)]),
               "adaptkit-houlsby-64-adapter-only": efficiency.summarize([fake_round(3.0, 1800, load=0.02)] * 2),
               "adapterhub-double-seq-bn-64": efficiency.summarize([fake_round(2.0, 1900, load=0.03)] * 2)}
    assert results["full"]["train_step_s"] == pytest.approx(4.3), "median over rounds of each round's median"
    ratios = efficiency.ratios(results)
    assert ratios["vs_full"]["adaptkit-houlsby-64"]["train_step_s"] == pytest.approx(3.1 / 4.3, abs=1e-4)
    pair = ratios["adaptkit_vs_adapterhub"]["adaptkit-houlsby-64 / adapterhub-double-seq-bn-64"]
    assert pair["train_step_s"]["value"] == pytest.approx(3.1 / 2.1, abs=1e-4) and pair["train_step_s"]["meets_target"] is False
    assert pair["peak_rss_bytes"]["meets_target"] is True and "target" not in pair["checkpoint_bytes"]
    load = ratios["load_vs_adapterhub"]  # medians of each round's loads, so the slow middle load is left out
    assert load["value"] == pytest.approx(0.02 / 0.03, abs=1e-4) and load["meets_target"] is True
    report = {"machine": {"cpu": "cpu", "torch": "t"}, "date": "d", "command": "c", "notes": ["n"],
              "settings": {"rounds": 2, "steps": 2, "inference_steps": 1}, "results": results, "ratios": ratios}
    table = efficiency.markdown(report)
    assert "| adaptkit-houlsby-64 | 10 | 3.10 s |" in table and "1.476 ✗" in table
    assert "(the same adapter, no head or LayerNorms): 0.67 (target ≤ 1.3: met)" in table
    without_full = efficiency.ratios({k: v for k, v in results.items() if k != "full"})
    assert without_full["vs_full"] == {} and "| – | – |" in efficiency.markdown({**report, "ratios": without_full})


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        efficiency.main(["--rounds", "0"])
    assert "at least 1" in capsys.readouterr().err
