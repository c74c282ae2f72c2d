"""A Hub repo id works wherever an adapter folder does: downloads go through ``huggingface_hub``, so
its cache and ``HF_HUB_OFFLINE`` apply as for models."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalEntryNotFoundError

from .errors import CheckpointError

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
