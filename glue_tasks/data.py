"""Load a split as a ``datasets.Dataset``: a file's rows (or the Hub's) in a task's columns.

Every split comes back with the task's text fields, ``label`` (class id, float score for a
regression task, -1 where a test split has no labels) and ``idx`` (0-based position of the row
in its file, counting rows that were skipped, so it stays the same with or without skipping).
``collect_rows`` does this for any file format; GLUE tasks and the user's own files
(``own_data.py``) both go through it.

GLUE files (``data_dir``) follow the official download layout::

    DIR/RTE/train.tsv  DIR/RTE/dev.tsv  DIR/RTE/test.tsv
    DIR/MNLI/dev_matched.tsv  DIR/MNLI/test_mismatched.tsv  ...

A parquet file next to them takes precedence for its split. It is looked up under the
split name first, then under the TSV stem: ``train.parquet``; ``validation.parquet`` or
``dev.parquet``; ``validation_matched.parquet`` or ``dev_matched.parquet``;
``test.parquet``; ``test_matched.parquet``... It must have the Hub columns (the task's
text fields and ``label``, which test splits may omit; ``idx`` is optional).
GLUE's TSV quoting is never interpreted: quote characters are text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy

from .records import DataError, RecordFile, open_records
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
#: The split name of training rows held out to choose settings (``--tune-fraction``), never the dev set.
HELD_OUT = "held_out"


class BadRow(Exception):
    """One row cannot be used; the message says why, the caller adds where."""


@dataclass(frozen=True)
class _TsvLayout:
    """How one task's GLUE TSV files name their columns and write their labels."""

    text_columns: tuple[str, ...]  # file columns holding task.text_fields, same order
    label_column: str
    labels_are_names: bool = False  # "entailment" rather than "0"
    headerless_columns: tuple[str, ...] | None = None  # train/dev files without a header line


_PAIR = ("sentence1", "sentence2")
_TSV_LAYOUTS: dict[str, _TsvLayout] = {
    "cola": _TsvLayout(("sentence",), "label", headerless_columns=("source", "label", "mark", "sentence")),
    "sst2": _TsvLayout(("sentence",), "label"),
    "mrpc": _TsvLayout(("#1 String", "#2 String"), "Quality"),
    "stsb": _TsvLayout(_PAIR, "score"),
    "qqp": _TsvLayout(("question1", "question2"), "is_duplicate"),
    "mnli": _TsvLayout(_PAIR, "gold_label", labels_are_names=True),
    "qnli": _TsvLayout(("question", "sentence"), "label", labels_are_names=True),
    "rte": _TsvLayout(_PAIR, "label", labels_are_names=True),
    "wnli": _TsvLayout(_PAIR, "label"),
}


@dataclass(frozen=True)
class LoadReport:
    """A loaded split plus what was dropped on the way, for callers that report it."""

    dataset: datasets.Dataset
    source: str  # file path, or the Hub dataset id
    skipped: tuple[str, ...] = ()  # one "line N: reason" per skipped bad row

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def task_features(task: Task | str) -> datasets.Features:
    """The columns every loader returns, typed as on the Hub (ClassLabel keeps the names)."""
    task = get_task(task)
    label = datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    return datasets.Features(
        {
            **{field: datasets.Value("string") for field in task.text_fields},
            "label": label,
            "idx": datasets.Value("int64"),
        }
    )


def label_parser(task: Task, spellings: tuple[str, ...] | None, allow_missing: bool) -> Callable[[object], int | float]:
    """Map a label as written in a file to its id (or score); -1 is accepted only for unlabelled test splits.

    ``spellings`` are the class labels as the file writes them, in id order."""
    if task.is_regression:
        low, high = task.score_range or (-math.inf, math.inf)

        def parse_score(raw: object) -> float:
            if is_missing(raw):
                raise BadRow("no label (empty)")
            try:
                score = float(raw)
            except (TypeError, ValueError):
                score = math.nan
            if (math.isfinite(score) and low <= score <= high) or (allow_missing and score == -1):
                return score
            where = f"a number in [{low:g}, {high:g}]" if task.score_range else "a finite number"
            raise BadRow(f"score {str(raw)!r} is not {where}")

        return parse_score

    ids = {spelling: i for i, spelling in enumerate(spellings)}
    if allow_missing:
        ids["-1"] = -1

    def parse_class(raw: object) -> int:
        if is_missing(raw):
            raise BadRow("no label (empty)")
        try:
            return ids[label_text(raw)]
        except KeyError:
            raise BadRow(f"label {label_text(raw)!r} is not one of {', '.join(spellings)}") from None

    return parse_class


#: How files write a missing value: these labels are missing, never a class of their own.
MISSING = ("", "nan", "na", "n/a", "null", "none")


def is_missing(raw: object) -> bool:
    return raw is None or (isinstance(raw, float) and math.isnan(raw)) or \
        (isinstance(raw, str) and raw.strip().lower() in MISSING)


def label_text(raw: object) -> str:
    """A class label as text, whatever the file type: 1, 1.0, "1" and " 1 " are the same class."""
    if isinstance(raw, bool):
        return str(raw).lower()
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def collect_rows(task: Task, file: RecordFile, text_columns: tuple[str, ...], label_column: str | None,
                 parse_label: Callable[[object], int | float], skip_bad_rows: bool,
                 idx_column: str | None = None, empty_text_is_bad: bool = False) -> LoadReport:
    """The task's columns from ``file``'s records; ``label_column`` None: an unlabelled split (-1).

    A bad row raises ``DataError`` naming the file and line, unless ``skip_bad_rows``: then it is
    dropped, counted in the report and logged as a warning. ``empty_text_is_bad``: an empty text
    (an empty CSV cell, a JSON null, a parquet null, only spaces) is a bad row, the same in every
    format; GLUE's own files keep theirs (QQP has a few), as the benchmarks read them."""
    file.require((*text_columns, *([label_column] if label_column else [])))
    columns: dict[str, list] = {name: [] for name in task_features(task)}
    skipped: list[str] = []
    for record in file.records:
        try:
            if record.problem:
                raise BadRow(record.problem)
            values = record.values
            texts = [_text(values, name, empty_text_is_bad) for name in text_columns]
            label = parse_label(_value(values, label_column)) if label_column else -1
        except BadRow as reason:
            if not skip_bad_rows:
                raise file.error(record.where, reason) from None
            skipped.append(f"{record.where}: {reason}")
            continue
        for field, text in zip(task.text_fields, texts):
            columns[field].append(text)
        columns["label"].append(label)
        columns["idx"].append(values[idx_column] if idx_column else record.position)
    if not columns["idx"]:
        raise DataError(f"{file.path}: no usable rows, all {len(skipped)} are bad (first: {skipped[0]})")
    if skipped:
        logger.warning("skipped %d bad rows in %s (first: %s)", len(skipped), file.path, skipped[0])
    dataset = datasets.Dataset.from_dict(columns, features=task_features(task))
    return LoadReport(dataset, str(file.path), tuple(skipped))


def _value(values: dict, column: str) -> object:
    if column not in values:
        raise BadRow(f"no {column!r} value (this row has {', '.join(map(repr, values)) or 'nothing'}; "
                     "--text-columns and --label-column name the columns to use)")
    return values[column]


def _text(values: dict, column: str, empty_is_bad: bool) -> str:
    text = _value(values, column)
    if empty_is_bad and (text is None or isinstance(text, float) and math.isnan(text)
                         or isinstance(text, str) and not text.strip()):
        raise BadRow(f"the {column!r} text is empty (fix the row, or pass --skip-bad-rows to leave such rows out)")
    if not isinstance(text, str):
        raise BadRow(f"{column!r} must be text, found {text!r}")
    return text


@dataclass(frozen=True)
class GlueData:
    """A GLUE task's splits, from ``data_dir`` (GLUE layout) or the Hub: the source a run reads."""

    task: Task
    data_dir: str | None = None
    skip_bad_rows: bool = False

    def available(self) -> list[str]:
        return available_splits(self.task, self.data_dir)

    def load(self, split: str) -> LoadReport:
        return load_split_with_report(self.task, split, self.data_dir, self.skip_bad_rows)


def carve(dataset: datasets.Dataset, fraction: float, stratify: bool,
          seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off ``fraction`` of the rows, by class when ``stratify``, with a fixed seed: (rest, carved).

    The seed does not follow the training seed, so every run of a comparison holds out the same rows."""
    rng = numpy.random.default_rng(seed)
    labels = numpy.asarray(dataset["label"])
    groups = [numpy.flatnonzero(labels == value) for value in numpy.unique(labels)] if stratify else \
        [numpy.arange(len(labels))]
    # Every class with 2 rows or more gives at least one, so none is missing from a small held-out set.
    counts = [max(1, round(fraction * len(rows))) if stratify and len(rows) > 1 else round(fraction * len(rows))
              for rows in groups]
    carved = numpy.sort(numpy.concatenate([rng.permutation(rows)[:count] for rows, count in zip(groups, counts)]))
    rest = numpy.setdiff1d(numpy.arange(len(labels)), carved)
    if len(carved) == 0 or len(rest) == 0:
        raise DataError(f"{len(labels)} rows are too few to hold out {fraction:g} of them; use more rows or "
                        "another fraction")
    return dataset.select(rest), dataset.select(carved)


def load_split(task: Task | str, split: str, data_dir: str | Path | None = None,
               skip_bad_rows: bool = False) -> datasets.Dataset:
    """Load one GLUE split; see ``load_split_with_report`` to learn how many rows were skipped."""
    return load_split_with_report(task, split, data_dir, skip_bad_rows).dataset


def load_split_with_report(task: Task | str, split: str, data_dir: str | Path | None = None,
                           skip_bad_rows: bool = False) -> LoadReport:
    """Load one GLUE split from ``data_dir`` (GLUE layout) or, without it, from the Hub."""
    task = get_task(task)
    if split not in task.splits:
        raise DataError(f"unknown split {split!r} for {task.name}; valid splits: {', '.join(task.splits)}")
    if data_dir is None:
        return LoadReport(_load_hub(task, split), HUB_DATASET)
    path = _find_file(task, split, Path(data_dir))
    is_test = split.startswith("test")
    if path.suffix == ".parquet":
        file = open_records(path, "parquet")
        names = tuple(str(i) for i in range(task.num_labels))
        label = None if is_test and "label" not in file.columns else "label"
        idx = "idx" if "idx" in file.columns else None
        return collect_rows(task, file, task.text_fields, label, label_parser(task, names, is_test),
                            skip_bad_rows, idx)
    layout = _TSV_LAYOUTS[task.name]
    # GLUE test files always have a header; CoLA's train and dev files have none.
    file = open_records(path, "glue-tsv", None if is_test else layout.headerless_columns)
    names = task.label_names if layout.labels_are_names else tuple(str(i) for i in range(task.num_labels))
    return collect_rows(task, file, layout.text_columns, None if is_test else layout.label_column,
                        label_parser(task, names, is_test), skip_bad_rows)


def available_splits(task: Task | str, data_dir: str | Path | None) -> list[str]:
    """Splits that can be loaded: those with a file in ``data_dir``, or all of them on the Hub."""
    task = get_task(task)
    if data_dir is None:
        return list(task.splits)
    return [split for split in task.splits if any(p.is_file() for p in _candidate_files(task, split, Path(data_dir)))]


def _candidate_files(task: Task, split: str, data_dir: Path) -> list[Path]:
    """Files that may hold a split, best first: parquet, then the official TSV."""
    folder = data_dir / task.dir_name
    tsv_stem = split.replace("validation", "dev")
    stems = dict.fromkeys((split, tsv_stem))  # ordered and without duplicates
    return [folder / f"{stem}.parquet" for stem in stems] + [folder / f"{tsv_stem}.tsv"]


def _find_file(task: Task, split: str, data_dir: Path) -> Path:
    candidates = _candidate_files(task, split, data_dir)
    for path in candidates:
        if path.is_file():
            return path
    tsv, others = candidates[-1], ", ".join(p.name for p in candidates[:-1])
    raise DataError(
        f"{tsv} not found (nor {others} there): pass --data-dir pointing at the folder that holds "
        f"{task.dir_name}/, as in the official GLUE download"
    )


def _load_hub(task: Task, split: str) -> datasets.Dataset:
    try:
        dataset = datasets.load_dataset(HUB_DATASET, task.name, split=split)
    except (ConnectionError, TimeoutError) as error:
        raise DataError(
            f"cannot download {HUB_DATASET} ({task.name}, {split}): the Hugging Face Hub is unreachable ({error}); "
            f"pass --data-dir DIR where DIR holds the GLUE TSV layout ({task.dir_name}/train.tsv, "
            f"{task.dir_name}/dev.tsv, ...)"
        ) from error
    features = task_features(task)
    return dataset.select_columns(list(features)).cast(features)
