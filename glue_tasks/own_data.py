"""The user's own data: classification or regression from CSV, TSV, JSON lines or parquet files.

The task is read off the training file: the classes are the labels found there (integers in
numeric order, other labels alphabetically), or it is regression when the labels are
non-integer numbers or the user says so. The dev split is the user's dev file, or a share of
the training rows carved out with a fixed seed, stratified by class, so every training seed
and every method is scored on the same rows. Rows go through the same ``collect_rows`` as
GLUE's, with the same bad-row handling and errors naming file and line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy

from .data import BadRow, LoadReport, carve, collect_rows, is_missing, label_parser, label_text
from .records import DataError, file_format, open_records
from .tasks import Task, own_task

#: More integer classes than this earn a hint that the labels may be a quantity (--regression).
MANY_CLASSES = 50

#: The split names of an own-data task: a test split exists only when a file is given to predict.
SPLITS = ("train", "validation")


def task_name(train_file: str | Path) -> str:
    """A task name from the training file's name, usable in file names: reviews.csv -> "reviews"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(train_file).stem).strip("-") or "own"


def read_labels(train_file: Path, label_column: str) -> tuple[str, ...] | None:
    """The class names of the training file, or None when its labels are non-integer numbers (regression).

    Rows that cannot be read are left to the loader, which reports or skips them."""
    file = open_records(train_file, file_format(train_file))
    file.require((label_column,))
    labels = {}  # label text -> where first seen; missing values are the loader's to report
    for record in file.records:
        if record.values is not None and not is_missing(record.values.get(label_column)):
            text = label_text(record.values[label_column])
            if _number(text) is not None or text.lower() not in ("inf", "-inf", "+inf", "infinity", "-infinity"):
                labels.setdefault(text, record.where)
    if not labels:
        raise DataError(f"{train_file}: no row has a {label_column!r} value; pass --label-column with the "
                        "column that holds the labels")
    numbers = {text: _number(text) for text in labels}
    numeric = all(value is not None for value in numbers.values())
    if numeric and not all(value.is_integer() for value in numbers.values()):
        return None
    if len(labels) < 2:
        raise DataError(f"{train_file}: every row has the label {next(iter(labels))!r}; classification needs "
                        "at least two classes (for a numeric target pass --regression)")
    if numeric and len(labels) > MANY_CLASSES:
        print(f"{train_file}: {len(labels)} integer labels make {len(labels)} classes; if they are quantities "
              "(a count, a rating scale), pass --regression", file=sys.stderr)
    return tuple(sorted(labels, key=numbers.get) if numeric else sorted(labels))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if numpy.isfinite(value) else None


@dataclass(frozen=True)
class OwnData:
    """Where an own-data task's rows are, and how to read them."""

    task: Task
    train_file: str
    label_column: str
    dev_file: str | None = None
    dev_fraction: float = 0.1
    split_seed: int = 0
    skip_bad_rows: bool = False

    def load(self, split: str) -> LoadReport:
        """``train`` (less the carved dev rows) or ``validation`` (the dev file, or the carved rows)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r} for own data; valid splits: {', '.join(SPLITS)}")
        if split == "validation" and self.dev_file:
            return self.load_file(self.dev_file, labelled=True)
        report = self._train_rows
        if self.dev_file:
            return report
        train, dev = carve(report.dataset, self.dev_fraction, stratify=not self.task.is_regression,
                           seed=self.split_seed)
        return LoadReport(dev if split == "validation" else train, report.source, report.skipped)

    @cached_property
    def _train_rows(self) -> LoadReport:
        """The training file, parsed once: without a dev file both splits are carved from it."""
        return self.load_file(self.train_file, labelled=True)

    def load_file(self, path: str, labelled: bool) -> LoadReport:
        """Rows of ``path`` in the task's columns; not ``labelled``: labels are not read (prediction)."""
        path = Path(path)
        file = open_records(path, file_format(path))
        parse = label_parser(self.task, self.task.label_names, allow_missing=False)

        def parse_label(raw: object) -> int | float:
            try:
                return parse(raw)
            except BadRow as reason:
                if self.task.is_regression:
                    raise
                raise BadRow(f"{reason}: the classes are the labels of the training file "
                             f"{Path(self.train_file).name}") from None

        return collect_rows(self.task, file, self.task.text_fields, self.label_column if labelled else None,
                            parse_label, self.skip_bad_rows, empty_text_is_bad=True)


def make_own_task(train_file: str, text_columns: tuple[str, ...], label_column: str, regression: bool | None,
                  metric: str | None, labels: tuple[str, ...] | None = None) -> tuple[Task, bool]:
    """The task of an own-data run and whether it is regression; the labels are read from the
    training file unless given (a saved run gives them, so eval works without the training file)."""
    if labels is None and not regression:
        labels = read_labels(Path(train_file), label_column)
        regression = labels is None
    return own_task(task_name(train_file), tuple(text_columns), None if regression else tuple(labels), metric), \
        bool(regression)
