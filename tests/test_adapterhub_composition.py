"""AdapterHub compositions (written by adapters 1.3.0 on transformers 4.57 as fixtures by
benchmarks/adapterhub_compat.py): each adapter loads from its own folder, a fusion from
``save_adapter_fusion``'s, and adaptkit's block reproduces AdapterHub's outputs; a wrong block does not."""

import json
from pathlib import Path

import pytest
import torch

import adaptkit
from benchmarks import adapterhub_compat as compat

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.glob("composition_*"))
#: per case, a block of the same adapters that computes something else
WRONG = {"stack": "Stack('task', 'lang')", "fuse": "Stack('a', 'b', 'c')", "parallel": "Parallel('b', 'a')",
         "average": "Average('a', 'b', weights=[0.7, 0.3])"}


def loaded(folder: Path):
    described = json.loads((folder / "base_config.json").read_text())
    model, expected, batch, bare = compat.rebuilt_base(folder)
    for name in described["names"]:
        assert adaptkit.load_adapter(model, folder / name) == name
    if described["fusion"]:
        adaptkit.load_fusion(model, folder / "fusion")
    return model, described, expected, batch, bare


def test_the_fixtures_cover_each_block_on_bert_and_roberta():
    assert CASES == sorted(f"composition_{t}_{c}" for t in ("bert", "roberta") for c in WRONG)


@pytest.mark.parametrize("case", CASES)
def test_adapterhub_compositions_are_reproduced(case):
    model, described, expected, batch, bare = loaded(FIXTURES / case)
    result = compat.judged(expected, bare, *outputs(model, batch, described["block"]))
    assert result["adapter_effect_max_abs"] > 1e-2 and result["tolerance"] < result["adapter_effect_max_abs"] / 100
    assert result["passed"], result
    wrong = compat.judged(expected, bare, *outputs(model, batch, WRONG[described["case"]]))
    assert not wrong["passed"] and wrong["hidden_max_abs_diff"] > 10 * result["tolerance"]


def outputs(model, batch, block_text):
    with torch.no_grad(), adaptkit.using(model, compat.composition_block(block_text)):
        out = model(**batch)
    return out.last_hidden_state, out.get("logits")


def test_an_adapterhub_fusion_refuses_missing_adapters_and_loads_without_its_head():
    folder = FIXTURES / "composition_bert_fuse"
    model, expected, batch, _ = compat.rebuilt_base(folder)
    adaptkit.load_adapter(model, folder / "a")
    with pytest.raises(adaptkit.CheckpointError, match="fuses adapter 'b', which this model lacks: load each fused"):
        adaptkit.load_fusion(model, folder / "fusion")
    with pytest.raises(adaptkit.CheckpointError, match="load_fusion"):
        adaptkit.load_adapter(model, folder / "fusion")
    for name in ("b", "c"):
        adaptkit.load_adapter(model, folder / name)
    block = adaptkit.load_fusion(model, folder / "fusion", load_head=False)
    with torch.no_grad():
        out = model(**batch)
    assert "logits" not in out
    torch.testing.assert_close(out.last_hidden_state, expected["hidden"], atol=1e-5, rtol=0)
    adaptkit.delete_fusion(model, block)


def test_an_adapterhub_fusion_resaved_by_adaptkit_reloads_exactly(tmp_path):
    folder = FIXTURES / "composition_roberta_fuse"
    model, described, expected, batch, _ = loaded(folder)
    adaptkit.save_fusion(model, tmp_path / "fusion", "a,b,c")
    fresh, *_ = compat.rebuilt_base(folder)
    for name in described["names"]:
        adaptkit.load_adapter(fresh, folder / name)
    adaptkit.load_fusion(fresh, tmp_path / "fusion")
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)
