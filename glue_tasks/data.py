"""Load a GLUE split as a ``datasets.Dataset`` from local files or the Hugging Face Hub.

Local files (``data_dir``) follow the official GLUE download layout::

    DIR/RTE/train.tsv  DIR/RTE/dev.tsv  DIR/RTE/test.tsv
    DIR/MNLI/dev_matched.tsv  DIR/MNLI/test_mismatched.tsv  ...

A parquet file next to them takes precedence for its split. It is looked up under the
split name first, then under the TSV stem: ``train.parquet``; ``validation.parquet`` or
``dev.parquet``; ``validation_matched.parquet`` or ``dev_matched.parquet``;
``test.parquet``; ``test_matched.parquet``... It must have the Hub columns (the task's
text fields and ``label``, which test splits may omit; ``idx`` is optional).

Every split comes back with the task's text fields, ``label`` (class id, float score for
STS-B, -1 where a test split has no labels) and ``idx`` (0-based position of the row in
its file, counting rows that were skipped, so it stays the same with or without skipping).

TSV quoting is never interpreted: quote characters are text. Each line is decoded on its
own, so one bad byte costs one row, not the file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet

from .tasks import GlueTask, get_task

logger = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"


class GlueDataError(ValueError):
    """A split cannot be loaded: missing or malformed file, or the Hub is unreachable."""


class _BadRow(Exception):
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


def glue_features(task: GlueTask | str) -> datasets.Features:
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


def load_split(
    task: GlueTask | str,
    split: str,
    data_dir: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> datasets.Dataset:
    """Load one split; see ``load_split_with_report`` to learn how many rows were skipped."""
    return load_split_with_report(task, split, data_dir, skip_bad_rows).dataset


def load_split_with_report(
    task: GlueTask | str,
    split: str,
    data_dir: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> LoadReport:
    """Load one split from ``data_dir`` (GLUE layout) or, without it, from the Hub.

    A bad row raises ``GlueDataError`` naming the file and line, unless ``skip_bad_rows``:
    then it is dropped, counted in the report and logged as a warning.
    """
    task = get_task(task)
    if split not in task.splits:
        raise GlueDataError(f"unknown split {split!r} for {task.name}; valid splits: {', '.join(task.splits)}")
    if data_dir is None:
        return LoadReport(_load_hub(task, split), HUB_DATASET)
    path = _find_file(task, split, Path(data_dir))
    rows = _Rows(task, path, skip_bad_rows)
    if path.suffix == ".parquet":
        _read_parquet(rows, task, split, path)
    else:
        _read_tsv(rows, task, split, path)
    return rows.report()


def available_splits(task: GlueTask | str, data_dir: str | Path | None) -> list[str]:
    """Splits that can be loaded: those with a file in ``data_dir``, or all of them on the Hub."""
    task = get_task(task)
    if data_dir is None:
        return list(task.splits)
    return [split for split in task.splits if any(p.is_file() for p in _candidate_files(task, split, Path(data_dir)))]


def _candidate_files(task: GlueTask, split: str, data_dir: Path) -> list[Path]:
    """Files that may hold a split, best first: parquet, then the official TSV."""
    folder = data_dir / task.dir_name
    tsv_stem = split.replace("validation", "dev")
    stems = dict.fromkeys((split, tsv_stem))  # ordered and without duplicates
    return [folder / f"{stem}.parquet" for stem in stems] + [folder / f"{tsv_stem}.tsv"]


def _find_file(task: GlueTask, split: str, data_dir: Path) -> Path:
    candidates = _candidate_files(task, split, data_dir)
    for path in candidates:
        if path.is_file():
            return path
    tsv, others = candidates[-1], ", ".join(p.name for p in candidates[:-1])
    raise GlueDataError(
        f"{tsv} not found (nor {others} there): pass --data-dir pointing at the folder that holds "
        f"{task.dir_name}/, as in the official GLUE download"
    )


def _load_hub(task: GlueTask, split: str) -> datasets.Dataset:
    try:
        dataset = datasets.load_dataset(HUB_DATASET, task.name, split=split)
    except (ConnectionError, TimeoutError) as error:
        raise GlueDataError(
            f"cannot download {HUB_DATASET} ({task.name}, {split}): the Hugging Face Hub is unreachable ({error}); "
            f"pass --data-dir DIR where DIR holds the GLUE TSV layout ({task.dir_name}/train.tsv, "
            f"{task.dir_name}/dev.tsv, ...)"
        ) from error
    features = glue_features(task)
    return dataset.select_columns(list(features)).cast(features)


def _label_parser(task: GlueTask, by_name: bool, allow_missing: bool) -> Callable[[object], int | float]:
    """Map a label as written in a file to its id (or score); -1 is accepted only for test splits."""
    if task.is_regression:

        def parse_score(raw: object) -> float:
            try:
                score = float(raw)
            except (TypeError, ValueError):
                score = math.nan
            if 0 <= score <= 5 or (allow_missing and score == -1):
                return score
            raise _BadRow(f"score {str(raw)!r} is not a number in [0, 5]")

        return parse_score

    spellings = task.label_names if by_name else tuple(str(i) for i in range(task.num_labels))
    ids = {spelling: i for i, spelling in enumerate(spellings)}
    if allow_missing:
        ids["-1"] = -1

    def parse_class(raw: object) -> int:
        try:
            return ids[str(raw)]
        except KeyError:
            raise _BadRow(f"label {str(raw)!r} is not one of {', '.join(spellings)}") from None

    return parse_class


class _Rows:
    """Collects good rows; a bad row raises, or is only counted when skipping."""

    def __init__(self, task: GlueTask, path: Path, skip_bad_rows: bool):
        self.task, self.path, self.skip_bad_rows = task, path, skip_bad_rows
        self.columns: dict[str, list] = {name: [] for name in glue_features(task)}
        self.skipped: list[str] = []

    def error(self, where: str, reason: object) -> GlueDataError:
        return GlueDataError(f"{self.path} {where}: {reason}")

    def add(self, idx: int, texts: list[str], label: int | float) -> None:
        for field, text in zip(self.task.text_fields, texts):
            self.columns[field].append(text)
        self.columns["label"].append(label)
        self.columns["idx"].append(idx)

    def bad(self, where: str, reason: _BadRow) -> None:
        if not self.skip_bad_rows:
            raise self.error(where, reason)
        self.skipped.append(f"{where}: {reason}")

    def report(self) -> LoadReport:
        if not self.columns["idx"]:
            raise GlueDataError(
                f"{self.path}: no usable rows, all {len(self.skipped)} are bad (first: {self.skipped[0]})"
            )
        if self.skipped:
            logger.warning("skipped %d bad rows in %s (first: %s)", len(self.skipped), self.path, self.skipped[0])
        dataset = datasets.Dataset.from_dict(self.columns, features=glue_features(self.task))
        return LoadReport(dataset, str(self.path), tuple(self.skipped))


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end-of-line) for each line; a last line needs no newline."""
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            yield number, line.rstrip(b"\r\n")


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _BadRow(f"invalid UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start + 1})") from None


def _read_tsv(rows: _Rows, task: GlueTask, split: str, path: Path) -> None:
    layout = _TSV_LAYOUTS[task.name]
    is_test = split.startswith("test")
    lines = _lines(path)
    has_header = is_test or layout.headerless_columns is None  # GLUE test files always have a header
    if has_header:
        columns = _read_header(rows, next(lines, None))
        needed = layout.text_columns if is_test else (*layout.text_columns, layout.label_column)
        missing = [name for name in needed if name not in columns]
        if missing:
            raise rows.error(
                "line 1", f"missing column {', '.join(map(repr, missing))}; the header has {', '.join(columns)}"
            )
    else:
        columns = layout.headerless_columns
    first_row_line = 2 if has_header else 1
    text_positions = [columns.index(name) for name in layout.text_columns]
    label_position = columns.index(layout.label_column) if layout.label_column in columns else None
    parse_label = _label_parser(task, layout.labels_are_names, allow_missing=is_test)
    expected = f"{len(columns)} tab-separated fields ({', '.join(columns)})"
    for number, line in lines:
        try:
            fields = _decode(line).split("\t")
            if len(fields) != len(columns):
                raise _BadRow(f"expected {expected}, found {len(fields)}")
            label = -1 if label_position is None else parse_label(fields[label_position])
            rows.add(number - first_row_line, [fields[p] for p in text_positions], label)
        except _BadRow as reason:
            rows.bad(f"line {number}", reason)
    if not rows.skipped and not rows.columns["idx"]:
        what = "no data rows after the header" if has_header else f"the file is empty, expected rows of {expected}"
        raise rows.error(f"line {first_row_line}", what)


def _read_header(rows: _Rows, first: tuple[int, bytes] | None) -> tuple[str, ...]:
    """Column names from the header line; MRPC's starts with a UTF-8 byte-order mark."""
    if first is None:
        raise rows.error("line 1", "the file is empty, expected a header line")
    try:
        header = _decode(first[1])
    except _BadRow as reason:
        raise rows.error("line 1", reason) from None
    return tuple(header.removeprefix("\ufeff").split("\t"))


def _read_parquet(rows: _Rows, task: GlueTask, split: str, path: Path) -> None:
    is_test = split.startswith("test")
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise rows.error("row 1", f"not a readable parquet file ({error})") from None
    needed = task.text_fields if is_test else (*task.text_fields, "label")
    missing = [name for name in needed if name not in table.column_names]
    if missing:
        raise rows.error(
            "row 1", f"missing column {', '.join(map(repr, missing))}; the file has {', '.join(table.column_names)}"
        )
    if table.num_rows == 0:
        raise rows.error("row 1", "no data rows, the file is empty")
    data = table.to_pydict()
    labels = data.get("label", [-1] * table.num_rows)
    idxs = data.get("idx", range(table.num_rows))
    parse_label = _label_parser(task, by_name=False, allow_missing=is_test)
    for row, (idx, label, *texts) in enumerate(zip(idxs, labels, *(data[f] for f in task.text_fields))):
        try:
            if not all(isinstance(text, str) for text in texts):
                raise _BadRow(f"text fields {', '.join(task.text_fields)} must be strings, found {texts!r}")
            rows.add(idx, texts, parse_label(label))
        except _BadRow as reason:
            rows.bad(f"row {row + 1}", reason)
