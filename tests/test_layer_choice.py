"""Choosing the adapted blocks (``layers`` / AdapterHub's ``leave_out``, AdapterDrop) and freezing the
embeddings' LayerNorm: which sites and LayerNorms train, and that the blocks below run without autograd."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import adaptkit
from adaptkit.errors import AdapterConfigError, TargetModuleError
from glue_tasks.methods import MethodSpec, apply_method
from tiny_models import tiny_config, tiny_inputs, tiny_model

FIXTURES = Path(__file__).parent / "fixtures"


def four_block_bert():
    torch.manual_seed(0)
    config = tiny_config("bert")
    config.num_hidden_layers = 4
    return AutoModelForSequenceClassification.from_config(config).eval()


def trained_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def grad_flags(model, blocks, inputs):
    """Whether each block's output, and the embeddings' output, carry autograd in a training forward."""
    flags = {}
    handles = [model.bert.embeddings.register_forward_hook(
        lambda m, a, out: flags.__setitem__("embeddings", out.requires_grad))]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(
            lambda m, a, out, i=i: flags.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad)))
    model.train()
    model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
    for handle in handles:
        handle.remove()
    return flags


def test_top_blocks_only_and_nothing_below_them_trains():
    model = four_block_bert()
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, layers=[-2, -1]))
    assert {s.name.split(".")[3] for s in sites} == {"2", "3"} and len(sites) == 4
    trained = trained_names(model)
    assert not any(".layer.0." in n or ".layer.1." in n or "embeddings" in n for n in trained)
    assert any(".layer.2.attention.output.LayerNorm.adaptkit_task" in n for n in trained)
    flags = grad_flags(model, model.bert.encoder.layer, tiny_inputs(model))
    assert flags == {"embeddings": False, 0: False, 1: False, 2: True, 3: True}


def test_leave_out_is_adapterhubs_complement_of_layers():
    by_layers = adaptkit.resolve_sites(four_block_bert(), adaptkit.AdapterConfig(layers=[1, 3]))
    by_leave_out = adaptkit.resolve_sites(four_block_bert(), adaptkit.AdapterConfig(leave_out=[0, 2]))
    assert by_layers == by_leave_out and len(by_layers) == 4


def test_the_embeddings_norm_alone_can_be_frozen():
    model = four_block_bert()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8))
    assert grad_flags(model, model.bert.encoder.layer, tiny_inputs(model))["embeddings"] is True  # the paper's
    adaptkit.delete_adapter(model, "default")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, train_embedding_norm=False))
    trained = trained_names(model)
    assert not any("embeddings" in n for n in trained)
    assert sum("LayerNorm.adaptkit_task" in n for n in trained) == 4 * 2 * 2  # every block's two norms
    flags = grad_flags(model, model.bert.encoder.layer, tiny_inputs(model))
    assert flags["embeddings"] is False and flags[0] is True


def test_every_stack_of_an_encoder_decoder_gets_its_top_block():
    model = tiny_model("bart")
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, layers=[-1]))
    assert {s.name.split(".")[1] for s in sites} == {"encoder", "decoder"}
    assert all(".layers.1." in s.name for s in sites)
    assert not any(".layers.0." in n or "layernorm_embedding" in n for n in trained_names(model))


def test_pfeiffer_placement_takes_the_choice_too():
    sites = adaptkit.resolve_sites(tiny_model("gpt2"), adaptkit.AdapterConfig(placement="pfeiffer", leave_out=[0]))
    assert [s.name for s in sites] == ["transformer.h.1"]


@pytest.mark.parametrize("fields, match", [
    ({"layers": []}, "adapts no block"),
    ({"layers": "01"}, "list of block indices"),
    ({"layers": [1, 1]}, "distinct integer"),
    ({"layers": [True]}, "distinct integer"),
    ({"leave_out": [-1]}, "counts blocks from 0"),
    ({"layers": [1], "leave_out": [0]}, "not both"),
    ({"layers": [1], "target_modules": ["query"]}, "target_modules"),
])
def test_bad_choices_are_refused_in_the_config(fields, match):
    with pytest.raises(AdapterConfigError, match=match):
        adaptkit.AdapterConfig(**fields)


@pytest.mark.parametrize("fields, match", [
    ({"layers": [4]}, r"outside this model's 4 blocks .* -4..-1"),
    ({"layers": [-5]}, "outside this model's 4 blocks"),
    ({"leave_out": [0, 1, 2, 3]}, "leaves out every block"),
])
def test_indices_the_model_lacks_leave_it_unchanged(fields, match):
    model = four_block_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TargetModuleError, match=match):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig(**fields))
    assert adaptkit.list_adapters(model) == {} and model.state_dict().keys() == before.keys()
    assert all(p.requires_grad for p in model.parameters())


def test_the_choice_round_trips_through_a_checkpoint(tmp_path):
    model = four_block_bert()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, layers=[-1], init="bert"))
    inputs = tiny_inputs(model)
    with torch.no_grad():
        expected = model(**inputs).logits
    adaptkit.save_adapter(model, tmp_path)
    fresh = four_block_bert()
    adaptkit.load_adapter(fresh, tmp_path)
    assert adaptkit.list_adapters(fresh)["default"].layers == [-1]
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected)


def test_adapterhub_leave_out_becomes_the_config_field():
    from test_adapterhub import base_of
    folder = FIXTURES / "adapterhub_bert_seq_bn_variant"
    model = base_of(folder)
    name = adaptkit.load_adapter(model, folder)
    config = adaptkit.list_adapters(model)[name]
    assert config.leave_out == [0]
    assert not any(".layer.0." in site.name for site in adaptkit.model.adapter_entry(model, name)[1].sites)


def test_glue_method_spec_names_and_round_trips_the_choice():
    spec = MethodSpec(adapter_top=3)
    assert spec.label() == "adapter-houlsby-top3-64"
    assert spec.cli_args()[-2:] == ["--adapter-top", "3"]
    emb = MethodSpec(train_embedding_norm=False)
    assert emb.label() == "adapter-houlsby-frozen-emb-ln-64" and "--freeze-embedding-norm" in emb.cli_args()
    # the run keys of earlier results (sweeps, compare ledgers) stay as they were
    assert MethodSpec().relevant() == {"name": "adapter", "placement": "houlsby", "size": 64, "train_layernorms": True}
    with pytest.raises(ValueError, match="--freeze-embedding-norm applies"):
        MethodSpec(train_layernorms=False, train_embedding_norm=False)
    model = apply_method(four_block_bert(), MethodSpec(adapter_top=2, size=8))
    assert {s.name.split(".")[3] for s in adaptkit.model.adapter_entry(model)[1].sites} == {"2", "3"}
    with pytest.raises(ValueError, match="more than the model's 4"):
        apply_method(four_block_bert(), MethodSpec(adapter_top=5))
