"""Hub ids: load from huggingface_hub's cache offline, push through its API (mocked: no network)."""

import shutil

import pytest
import torch
from huggingface_hub import constants

import adaptkit
from tiny_models import logits, tiny_inputs, tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def trained(tmp_path):
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8), name="rte")
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05)
    adaptkit.save_adapter(model, tmp_path / "rte")
    return model, tmp_path / "rte"


def fill_cache(cache, repo_id, folder):
    """The layout huggingface_hub writes on download: refs/main → snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def test_load_adapter_takes_a_hub_id_offline_from_the_cache(trained, tmp_path, monkeypatch):
    model, folder = trained
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fill_cache(tmp_path / "cache", "someone/bert-rte-adapter", folder)
    fresh = tiny_model("bert")
    assert adaptkit.load_adapter(fresh, "someone/bert-rte-adapter") == "rte"
    inputs = tiny_inputs(fresh)
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))


def test_unknown_hub_id_offline_says_so_and_leaves_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = tiny_model("bert")
    with pytest.raises(adaptkit.CheckpointError, match="no folder here.*HF_HUB_OFFLINE"):
        adaptkit.load_adapter(model, "someone/missing")
    assert adaptkit.list_adapters(model) == {}


def test_push_adapter_uploads_a_loadable_folder(trained, tmp_path, monkeypatch):
    model, _ = trained
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            shutil.copytree(folder_path, tmp_path / "uploaded")
            calls["message"] = commit_message
            return type("Commit", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    monkeypatch.setattr("adaptkit.hub.HfApi", FakeApi)
    url = adaptkit.push_adapter(model, "someone/bert-rte-adapter", private=True, token="t")
    assert url.endswith("someone/bert-rte-adapter/commit/1")
    assert calls["repo"] == ("someone/bert-rte-adapter", True, True) and calls["token"] == "t"
    assert calls["message"] == "adaptkit adapter rte"
    fresh = tiny_model("bert")
    adaptkit.load_adapter(fresh, tmp_path / "uploaded")
    inputs = tiny_inputs(fresh)
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))
