"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it into place."""
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[tuple[Path, ...]]:
    """Temporary paths beside several files that belong together (a tensor file and the config
    that checksums it): all are written before any is renamed into place, so a failure on the way
    leaves every file as it was."""
    paths = tuple(Path(p) for p in paths)
    temps = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield tuple(temps)
        for tmp in temps:
            # mkstemp makes 0600, and a writer that replaces the file (safetensors does) makes its
            # own: give the file the permissions a plain open() would have.
            tmp.chmod(0o666 & ~_umask())
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced_folder(path: str | Path, writes: bool = True) -> Iterator[Path]:
    """Yield a staging folder beside ``path`` to fill; once filled without error it replaces
    ``path`` whole, so a reader (or a kill) meets the old folder or the new one, never a mix; an
    error removes the staging folder and leaves ``path`` as it was. ``writes=False``: a process
    that takes part without writing (a rank that helps gather) gets the same path, and nothing is
    touched."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    if writes:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
    except BaseException:
        if writes:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if writes and staging.exists():
        shutil.rmtree(path, ignore_errors=True)
        staging.rename(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_text(data: Any) -> str:
    """adaptkit's JSON files: indented, keys sorted, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json_text(data))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
