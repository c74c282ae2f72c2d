"""Read a data file as records: one mapping from column name to value per row, and where it is.

Formats: GLUE's TSV (lines split on tabs, quote characters are text, fixed column names for
the headerless files), CSV and TSV with the ``csv`` module's quoting, JSON lines, parquet.
A row that cannot be read (bad UTF-8, wrong number of fields, invalid JSON) comes back with a
problem instead of values, so the caller decides whether to skip it or stop; a file that
cannot be read at all raises ``DataError`` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow
import pyarrow.parquet

#: Formats of a user's files, by file suffix.
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
                  ".ndjson": "jsonl", ".parquet": "parquet"}


class DataError(ValueError):
    """A split cannot be loaded: missing or malformed file, or the Hub is unreachable."""


@dataclass(frozen=True)
class Record:
    """One row: its values by column, or the reason it cannot be read."""

    where: str  # "line 7" (text files) or "row 3" (parquet)
    position: int  # 0-based position among the file's data rows, unreadable ones included
    values: dict[str, object] | None
    problem: str | None = None


@dataclass
class RecordFile:
    """A file opened for reading: its column names when it has a header, and its records."""

    path: Path
    columns: tuple[str, ...] | None  # None: JSON lines, where each record names its own
    records: Iterator[Record]
    header_where: str = "line 1"  # where a missing column is reported

    def error(self, where: str, reason: object) -> DataError:
        return DataError(f"{self.path} {where}: {reason}")

    def require(self, needed: tuple[str, ...]) -> None:
        """Refuse a file whose header lacks a needed column, before any row is read."""
        missing = [name for name in needed if self.columns is not None and name not in self.columns]
        if missing:
            has = "the header has" if self.header_where.startswith("line") else "the file has"
            raise self.error(self.header_where,
                             f"missing column {', '.join(map(repr, missing))}; {has} {', '.join(self.columns)}")


def file_format(path: Path) -> str:
    """A user's file format from its suffix."""
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; use one of "
                        f"{', '.join(SUFFIX_FORMATS)} (CSV, TSV, JSON lines, parquet)") from None


def open_records(path: Path, fmt: str, headerless_columns: tuple[str, ...] | None = None) -> RecordFile:
    """Open ``path`` as ``fmt`` ("glue-tsv", "csv", "tsv", "jsonl", "parquet")."""
    if not path.is_file():
        raise DataError(f"{path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    if fmt == "glue-tsv":
        return _glue_tsv(path, headerless_columns)
    if fmt in ("csv", "tsv"):
        return _csv(path, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return RecordFile(path, None, _jsonl(path))
    return _parquet(path)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end-of-line) for each line; a last line needs no newline."""
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            yield number, line.rstrip(b"\r\n")


def _decode(line: bytes) -> str:
    """The line as text; raises ValueError naming the first byte that is not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"invalid UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start + 1})") from None


def _glue_tsv(path: Path, headerless_columns: tuple[str, ...] | None) -> RecordFile:
    """GLUE's TSV: each line decoded on its own (one bad byte costs one row, not the file)."""
    lines = _lines(path)
    if headerless_columns is None:
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path} line 1: the file is empty, expected a header line")
        try:
            columns = tuple(_decode(first[1]).removeprefix("\ufeff").split("\t"))  # MRPC starts with a BOM
        except ValueError as reason:
            raise DataError(f"{path} line 1: {reason}") from None
    else:
        columns = headerless_columns
    first_row = 1 if headerless_columns else 2
    expected = f"{len(columns)} tab-separated fields ({', '.join(columns)})"

    def records() -> Iterator[Record]:
        empty = True
        for number, line in lines:
            empty = False
            where, position = f"line {number}", number - first_row
            try:
                fields = _decode(line).split("\t")
            except ValueError as reason:
                yield Record(where, position, None, str(reason))
                continue
            if len(fields) != len(columns):
                yield Record(where, position, None, f"expected {expected}, found {len(fields)}")
            else:
                yield Record(where, position, dict(zip(columns, fields)))
        if empty:
            what = f"the file is empty, expected rows of {expected}" if headerless_columns else \
                "no data rows after the header"
            raise DataError(f"{path} line {first_row}: {what}")

    return RecordFile(path, columns, records())


def _csv(path: Path, delimiter: str) -> RecordFile:
    """CSV/TSV with quoting; bytes that are not UTF-8 cost their row (kept as surrogates, then refused).

    A quoted field that never closes would swallow the rest of the file as one row; that is
    refused as a whole, with or without skipping bad rows, naming the line where it starts."""
    csv.field_size_limit(sys.maxsize)
    kind = "comma" if delimiter == "," else "tab"

    def reader(file):
        return csv.reader(file, delimiter=delimiter)

    with _open_text(path) as file:
        rows = reader(file)
        try:
            header = next(rows, None)
        except csv.Error as error:
            raise DataError(f"{path} line 1: {error}") from None
    if not header:
        raise DataError(f"{path} line 1: the file is empty, expected a header line naming the columns")
    if _bad_byte(header):
        raise DataError(f"{path} line 1: {_bad_byte(header)}")
    columns = tuple(name.strip() for name in header)

    def records() -> Iterator[Record]:
        with _open_text(path) as file:
            rows = reader(file)
            next(rows)
            position, start = 0, rows.line_num + 1
            while True:
                try:
                    fields = next(rows)
                except StopIteration:
                    break
                except csv.Error as error:
                    raise DataError(f"{path} line {start}: unreadable ({error})") from None
                first, last, start = start, rows.line_num, rows.line_num + 1
                where = f"line {first}"
                if not fields:
                    continue  # a blank line
                if len(fields) != len(columns) and last > first:
                    raise DataError(f"{path} {where}: a quoted field opened here runs to line {last} (an unbalanced "
                                    f"quote character?); fix the quoting, or save the file as TSV without quotes")
                if _bad_byte(fields):
                    yield Record(where, position, None, _bad_byte(fields))
                elif len(fields) != len(columns):
                    yield Record(where, position, None, f"expected {len(columns)} {kind}-separated fields "
                                                        f"({', '.join(columns)}), found {len(fields)}")
                else:
                    yield Record(where, position, dict(zip(columns, fields)))
                position += 1
            if position == 0:
                raise DataError(f"{path} line 2: no data rows after the header")

    return RecordFile(path, columns, records())


def _open_text(path: Path):
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _bad_byte(fields: list[str]) -> str | None:
    """Why a row is not UTF-8 text, or None: undecodable bytes were kept as surrogates."""
    for field in fields:
        for char in field:
            if "\udc80" <= char <= "\udcff":
                return (f"invalid UTF-8 (byte 0x{ord(char) - 0xdc00:02x}); save the file as UTF-8 "
                        "(in a spreadsheet: CSV UTF-8)")
    return None


def _jsonl(path: Path) -> Iterator[Record]:
    position = 0
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            values = json.loads(_decode(line).removeprefix("\ufeff") if number == 1 else _decode(line))
        except ValueError as reason:
            yield Record(where, position, None, f"not a JSON object ({reason})")
        else:
            if isinstance(values, dict):
                yield Record(where, position, values)
            else:
                yield Record(where, position, None, f"expected one JSON object per line, found "
                                                    f"{type(values).__name__} (a JSON array file? write one "
                                                    "object per line)")
        position += 1
    if position == 0:
        raise DataError(f"{path} line 1: the file is empty, expected one JSON object per line")


def _parquet(path: Path) -> RecordFile:
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(f"{path} row 1: not a readable parquet file ({error})") from None

    def records() -> Iterator[Record]:
        if table.num_rows == 0:
            raise DataError(f"{path} row 1: no data rows, the file is empty")
        for position, values in enumerate(table.to_pylist()):
            yield Record(f"row {position + 1}", position, values)

    return RecordFile(path, tuple(table.column_names), records(), header_where="row 1")
