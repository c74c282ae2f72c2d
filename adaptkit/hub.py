"""Publishing an adapter on the Hugging Face Hub (``load_adapter(model, repo_id)`` reads it back)."""

from __future__ import annotations

import tempfile

from huggingface_hub import HfApi
from torch import nn

from .checkpoint import save_adapter
from .model import adapter_entry


def push_adapter(model: nn.Module, repo_id: str, name: str | None = None, *, private: bool | None = None,
                 token: str | None = None, commit_message: str | None = None) -> str:
    """Save adapter ``name`` (default: the active one) and upload it to ``repo_id``, creating the
    repo if needed; returns the commit's URL. ``load_adapter(model, repo_id)`` reads it back."""
    name, _ = adapter_entry(model, name)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="adaptkit-push-") as folder:
        save_adapter(model, folder, name=name)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                   commit_message=commit_message or f"adaptkit adapter {name}")
    return str(getattr(commit, "commit_url", commit))
