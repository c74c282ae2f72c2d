"""Checkpoint files: contents, atomic writes, and every way a bad checkpoint is refused."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from transformers import AutoModelForTokenClassification

import adaptkit
from adaptkit.atomic import replaced_folder, sha256_file
from tiny_models import logits, tiny_config, tiny_inputs, tiny_model


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="rte")
    adaptkit.save_adapter(model, tmp_path / "rte")
    return tmp_path / "rte"


def trained_and_saved(model, directory, **config):
    """The model with an adapter whose weights and LayerNorms moved from their start, saved there."""
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, **config), name=directory.name)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1)
    adaptkit.save_adapter(model, directory)
    return model


def base_values(model):
    """The model's own state, without any adapter's tensors: the same backbone for another class."""
    return {k: v for k, v in model.state_dict().items() if "adaptkit" not in k}


def rewrite_tensors(directory, change):
    """Edit the tensor file and record its new checksum, so only the edit itself is wrong."""
    path = directory / adaptkit.WEIGHTS_NAME
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    meta = json.loads((directory / adaptkit.CONFIG_NAME).read_text())
    meta["files"][adaptkit.WEIGHTS_NAME]["sha256"] = sha256_file(path)
    (directory / adaptkit.CONFIG_NAME).write_text(json.dumps(meta))


def test_checkpoint_holds_only_what_trained_and_describes_the_base(saved):
    meta = json.loads((saved / adaptkit.CONFIG_NAME).read_text())
    assert meta["name"] == "rte" and meta["config"]["size"] == 8
    assert meta["base_model"]["model_type"] == "bert" and meta["base_model"]["fingerprint"]
    keys = set(load_file(saved / adaptkit.WEIGHTS_NAME))
    assert all(k.startswith(("adapter:", "task:")) for k in keys)
    assert any("LayerNorm" in k for k in keys) and any("classifier" in k for k in keys)
    assert not any("query" in k or "word_embeddings" in k for k in keys)
    assert not list(saved.glob("*.tmp")), "no temporary files left behind"


def test_head_and_layernorms_can_stay_frozen(tmp_path):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, train_layernorms=False, train_head=False))
    assert adaptkit.count_parameters(model).trainable_count == adaptkit.count_parameters(model).trainable["adapters"]
    adaptkit.save_adapter(model, tmp_path)
    assert all(k.startswith("adapter:") for k in load_file(tmp_path / adaptkit.WEIGHTS_NAME))


def test_wrong_architecture_is_refused_naming_both(saved):
    with pytest.raises(adaptkit.BaseModelMismatchError, match=r"trained on .*\(bert.*this model is .*\(roberta"):
        adaptkit.load_adapter(tiny_model("roberta"), saved)


def test_same_architecture_other_weights_is_refused(saved):
    with pytest.raises(adaptkit.BaseModelMismatchError, match="other pretrained weights"):
        adaptkit.load_adapter(tiny_model("bert", seed=123), saved)


def test_base_in_lower_precision_still_matches(saved):
    model = tiny_model("bert").to(torch.bfloat16)
    adaptkit.load_adapter(model, saved)
    assert {p.dtype for n, p in model.named_parameters() if "adaptkit" in n} == {torch.float32}


def test_wrong_number_of_labels_names_the_head(saved):
    with pytest.raises(adaptkit.CheckpointError, match="this model has 3 labels"):
        adaptkit.load_adapter(tiny_model("bert", num_labels=3), saved)


def test_truncated_tensor_file(saved):
    path = saved / adaptkit.WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(adaptkit.CheckpointError, match="adapter_model.safetensors does not match the checksum.*truncated"):
        adaptkit.load_adapter(tiny_model("bert"), saved)


def test_missing_extra_and_misshapen_tensors(saved):
    rewrite_tensors(saved, lambda t: t.pop(next(k for k in t if k.endswith("up.bias"))))
    with pytest.raises(adaptkit.CheckpointError, match="missing"):
        adaptkit.load_adapter(tiny_model("bert"), saved)
    rewrite_tensors(saved, lambda t: t.update({"adapter:x:down.bias": torch.zeros(3)}))
    with pytest.raises(adaptkit.CheckpointError, match="unexpected"):
        adaptkit.load_adapter(tiny_model("bert"), saved)


def test_misshapen_tensor(saved):
    key = "adapter:bert.encoder.layer.0.output.dense:down.bias"
    rewrite_tensors(saved, lambda t: t.update({key: torch.zeros(5)}))
    with pytest.raises(adaptkit.CheckpointError, match=r"has shape \(5,\), this model expects \(8,\)"):
        adaptkit.load_adapter(tiny_model("bert"), saved)


def test_newer_format_and_missing_files(saved, tmp_path):
    meta = json.loads((saved / adaptkit.CONFIG_NAME).read_text())
    meta["format_version"] = 99
    (saved / adaptkit.CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(adaptkit.CheckpointError, match="newer than this adaptkit"):
        adaptkit.load_adapter(tiny_model("bert"), saved)
    with pytest.raises(adaptkit.CheckpointError, match="adapter_config.json not found"):
        adaptkit.load_adapter(tiny_model("bert"), tmp_path / "nowhere")
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8))
    model.save_pretrained(tmp_path / "whole")
    with pytest.raises(adaptkit.CheckpointError, match="adapter_config.json not found.*restore_adapters"):
        adaptkit.load_adapter(tiny_model("bert"), tmp_path / "whole")


def test_failed_load_leaves_the_model_untouched(saved):
    model = tiny_model("bert", num_labels=3)
    inputs = tiny_inputs(model)
    before = logits(model, inputs)
    with pytest.raises(adaptkit.CheckpointError):
        adaptkit.load_adapter(model, saved)
    assert adaptkit.list_adapters(model) == {}
    assert torch.equal(logits(model, inputs), before)


def test_interrupted_save_keeps_the_old_checkpoint(saved, monkeypatch):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8), name="rte")
    before = (saved / adaptkit.WEIGHTS_NAME).read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("adaptkit.checkpoint.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        adaptkit.save_adapter(model, saved)
    assert (saved / adaptkit.WEIGHTS_NAME).read_bytes() == before
    assert not list(saved.glob(".*tmp"))
    adaptkit.load_adapter(tiny_model("bert"), saved)


def token_classifier(seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForTokenClassification.from_config(tiny_config("bert", num_labels=2)).eval()


def test_head_of_another_kind_is_refused_naming_both_classes(tmp_path, saved):
    tagger = token_classifier()
    adaptkit.add_adapter(tagger, adaptkit.AdapterConfig.houlsby(size=8), name="ner")
    adaptkit.save_adapter(tagger, tmp_path / "ner")
    pattern = r"head trained on {}.*this model is {}.*load_head=False"
    with pytest.raises(adaptkit.CheckpointError, match=pattern.format(
            "BertForTokenClassification", "BertForSequenceClassification")):
        adaptkit.load_adapter(tiny_model("bert"), tmp_path / "ner")
    with pytest.raises(adaptkit.CheckpointError, match=pattern.format(
            "BertForSequenceClassification", "BertForTokenClassification")):
        adaptkit.load_adapter(token_classifier(), saved)


def test_load_head_false_loads_adapter_and_layernorms_onto_another_head(tmp_path):
    tagger = trained_and_saved(token_classifier(), tmp_path / "ner")
    model = tiny_model("bert")
    with adaptkit.adapters_disabled(tagger):
        model.bert.load_state_dict(base_values(tagger.bert), strict=False)
    head = model.classifier.weight.detach().clone()
    adaptkit.load_adapter(model, tmp_path / "ner", load_head=False)
    assert not adaptkit.list_adapters(model)["ner"].train_head
    assert torch.equal(model.classifier.weight, head), "the model keeps its own head"
    assert torch.equal(model.bert.encoder.layer[0].output.LayerNorm.weight,
                       tagger.bert.encoder.layer[0].output.LayerNorm.weight)
    inputs = tiny_inputs(model)
    with torch.no_grad():
        assert torch.allclose(model.bert(**inputs).last_hidden_state,
                              tagger.bert(**inputs).last_hidden_state)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", "1", "'format_version' must be a positive integer"),
    ("files", None, "'files' must be an object"),
    ("sites", [{"name": "x"}], "'sites' must be a list"),
    ("name", 3, "'name' must be a string"),
    ("config", {"size": 8, "colour": "red"}, r"adapter config is invalid \(unknown adapter config field"),
    ("config", {"size": 8, "train_head": True}, r"adapter config is invalid \(field\(s\) \['activation'"),
])
def test_malformed_config_fields_are_checkpoint_errors(saved, field, value, message):
    meta = json.loads((saved / adaptkit.CONFIG_NAME).read_text())
    meta[field] = value
    (saved / adaptkit.CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(adaptkit.CheckpointError, match=message):
        adaptkit.load_adapter(tiny_model("bert"), saved)


def test_an_adapter_trained_with_a_head_loads_onto_the_bare_encoder(tmp_path):
    """Train with a head, embed with the encoder: the saved names carry the task model's ``bert.``."""
    classifier = trained_and_saved(tiny_model("bert"), tmp_path / "rte")
    encoder = tiny_model("bert", head=False)
    encoder.load_state_dict(classifier.bert.state_dict(), strict=False)  # the same backbone weights
    with pytest.raises(adaptkit.CheckpointError, match="load_head=False"):
        adaptkit.load_adapter(encoder, tmp_path / "rte")
    adaptkit.load_adapter(encoder, tmp_path / "rte", load_head=False)
    inputs = tiny_inputs(classifier)
    with torch.no_grad():
        torch.testing.assert_close(encoder(**inputs).last_hidden_state,
                                   classifier.bert(**inputs).last_hidden_state, atol=0, rtol=0)
        with adaptkit.adapters_disabled(encoder):
            assert not torch.allclose(encoder(**inputs).last_hidden_state,
                                      classifier.bert(**inputs).last_hidden_state, atol=1e-3)


def test_an_adapter_trained_on_the_bare_encoder_loads_under_a_head_without_one(tmp_path):
    encoder = tiny_model("bert", head=False)
    adaptkit.add_adapter(encoder, adaptkit.AdapterConfig.houlsby(size=8), name="enc")
    adaptkit.save_adapter(encoder, tmp_path / "enc")
    classifier = tiny_model("bert")
    classifier.bert.load_state_dict(base_values(encoder))
    before = {n: p.detach().clone() for n, p in classifier.state_dict().items()}
    with pytest.raises(adaptkit.CheckpointError, match="saved without a head.*load_head=False"):
        adaptkit.load_adapter(classifier, tmp_path / "enc")
    assert classifier.state_dict().keys() == before.keys() and adaptkit.list_adapters(classifier) == {}
    adaptkit.load_adapter(classifier, tmp_path / "enc", load_head=False)
    inputs = tiny_inputs(classifier)
    with torch.no_grad():
        torch.testing.assert_close(classifier.bert(**inputs).last_hidden_state,
                                   encoder(**inputs).last_hidden_state, atol=0, rtol=0)


def test_an_adapters_own_head_runs_on_the_bare_model_only(tmp_path):
    """AdapterHub's heads (and adapters converted from AdapterHub) are the adapter's own head, on
    the bare model: refused beside a model's head; load_head=False leaves it out everywhere."""
    head = {"type": "classification", "num_labels": 3, "layers": 2, "activation": "tanh", "token": "first",
            "dropout": 0.0, "bias": True}
    encoder = trained_and_saved(tiny_model("bert", head=False), tmp_path / "own", head=head)
    inputs = tiny_inputs(encoder)
    classifier = tiny_model("bert")
    classifier.bert.load_state_dict(base_values(encoder))
    with pytest.raises(adaptkit.CheckpointError, match="own head onto the bare base model.*load_head=False"):
        adaptkit.load_adapter(classifier, tmp_path / "own")
    adaptkit.load_adapter(classifier, tmp_path / "own", load_head=False)
    bare = tiny_model("bert", head=False)
    bare.load_state_dict(base_values(encoder))
    adaptkit.load_adapter(bare, tmp_path / "own", load_head=False)
    with torch.no_grad():
        assert "logits" not in bare(**inputs), "no head was loaded"
        assert encoder(**inputs).logits.shape == (2, 3)
        for model in (classifier.bert, bare):
            torch.testing.assert_close(model(**inputs).last_hidden_state, encoder(**inputs).last_hidden_state,
                                       atol=0, rtol=0)


def test_a_replaced_folder_is_the_old_one_or_the_new_one_whole(tmp_path):
    """The stage-then-swap that epoch checkpoints and the sweep's kept adapters use: an error while
    filling leaves the old folder and no staging; success swaps the new one in whole."""
    folder = tmp_path / "best"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with replaced_folder(folder) as staging:
            staging.mkdir()
            (staging / "new.txt").write_text("half")
            raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and (folder / "old.txt").exists()
    with replaced_folder(folder, writes=False) as staging:  # a rank that helps gather touches nothing
        assert staging == tmp_path / ".best.partial"
    assert (folder / "old.txt").exists()
    with replaced_folder(folder) as staging:
        staging.mkdir()
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"] and [p.name for p in folder.iterdir()] == ["new.txt"]
