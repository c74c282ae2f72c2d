"""A resumable record of finished runs: one JSON line per run in ``results.jsonl``, keyed by the
run's settings, so a grid (``compare``, ``benchmarks/sweep.py``) interrupted at any moment
resumes by skipping every key already written."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_lines(results_file: Path) -> list[dict]:
    """The finished runs' lines; a torn last line (a kill during the write) is ignored."""
    lines = []
    if results_file.exists():
        for text in results_file.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and "key" in line:
                lines.append(line)
    return lines


def done_keys(results_file: Path) -> set[str]:
    return {line["key"] for line in read_lines(results_file)}


def append_line(results_file: Path, line: dict) -> None:
    """Append one line durably; a torn line left by a kill is closed first so it cannot swallow this one."""
    text = json.dumps(line, sort_keys=True)
    results_file.parent.mkdir(parents=True, exist_ok=True)
    with open(results_file, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(text.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
