"""Adapters on the Hugging Face Hub: a repo id works wherever a folder does, and a push uploads one.

Downloads go through ``huggingface_hub`` so its cache and ``HF_HUB_OFFLINE`` apply as for models.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalEntryNotFoundError
from torch import nn

from .errors import CheckpointError
from .model import adapter_entry

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


def local_folder(path_or_repo: str | Path, patterns: list[str], revision: str | None = None) -> Path:
    """The folder itself, or a snapshot of the Hub repo of that id holding ``patterns``."""
    path = Path(path_or_repo)
    if path.exists() or not _REPO_ID.fullmatch(str(path_or_repo)):
        return path
    try:
        return Path(snapshot_download(str(path_or_repo), allow_patterns=patterns, revision=revision))
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as exc:
        raise CheckpointError(
            f"{path_or_repo!r} is no folder here, and the Hub repo of that id could not be fetched "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Pass a local folder, or check "
            "the repo id, your network and token; with HF_HUB_OFFLINE=1 only a cached copy is used") from None


def push_adapter(model: nn.Module, repo_id: str, name: str | None = None, *, private: bool | None = None,
                 token: str | None = None, commit_message: str | None = None) -> str:
    """Save adapter ``name`` (default: the active one) and upload it to ``repo_id``, creating the
    repo if needed; returns the commit's URL. ``load_adapter(model, repo_id)`` reads it back."""
    from .checkpoint import save_adapter  # checkpoint imports this module

    name, _ = adapter_entry(model, name)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="adaptkit-push-") as folder:
        save_adapter(model, folder, name=name)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                   commit_message=commit_message or f"adaptkit adapter {name}")
    return str(getattr(commit, "commit_url", commit))
