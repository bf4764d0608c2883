"""Reading a dataset's files (a mirror's, or the fixtures): JSON lines and CSV, row by row.

A bad file is an input error with one line naming the file and the line: a truncated JSON line,
a row without a field the task needs, a label out of range (the task's `row` function raises
ValueError/KeyError/IndexError/TypeError for it), bytes that are not UTF-8, a truncated gzip.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from harness.core.errors import UsageError

T = TypeVar("T")
ROW_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError)


def _identity(row: Any) -> Any:
    return row


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg})"
    return str(exc) or type(exc).__name__


def _rows(path: Path, lines: Iterable[tuple[int, Any]], parse: Callable[[Any], Any], row: Callable[[Any], T]) -> list[T]:
    """row(parse(raw)) for each (line number, raw line); every failure names the file and the line."""
    out: list[T] = []
    where = 1  # the line being read (a failure while reading names the line after the last good one)
    try:
        for where, raw in lines:
            out.append(row(parse(raw)))
            where += 1
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (EOFError, gzip.BadGzipFile, csv.Error) as exc:
        raise UsageError(f"{path}:{where}: unreadable ({exc})") from None
    except ROW_ERRORS as exc:
        raise UsageError(f"{path}:{where}: {_reason(exc)}") from None
    return out


def read_jsonl(path: Path, row: Callable[[Any], T] = _identity, *, gzipped: bool = False) -> list[T]:
    """`row(value)` of each non-blank line of a JSON-lines file (gzipped or plain)."""

    def lines() -> Iterable[tuple[int, str]]:
        with (gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")) as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    yield lineno, line

    return _rows(path, lines(), json.loads, row)


def read_csv(path: Path, row: Callable[[dict[str, str]], T], columns: Sequence[str]) -> list[T]:
    """`row(record)` of each data line of a CSV file with a header naming at least `columns`."""

    def records() -> Iterable[tuple[int, dict]]:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{path}:1: the header lacks column(s) {', '.join(missing)} "
                                 f"(expected {', '.join(columns)})")
            for record in reader:
                yield reader.line_num, record

    def complete(record: dict) -> dict:
        if None in record or any(v is None for v in record.values()):
            raise ValueError(f"expected {len(columns)} columns: {', '.join(columns)}")
        return record

    return _rows(path, records(), complete, row)


def choice_index(value: object, n_choices: int) -> int:
    """A gold label as an index into n choices (ValueError when it is not one)."""
    index = int(value)  # type: ignore[call-overload]
    if not 0 <= index < n_choices:
        raise ValueError(f"label {value!r} is out of range for {n_choices} choices")
    return index
