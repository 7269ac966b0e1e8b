"""Exports of the log: jsonl, openai-chat, har, csv and cassette, over the same filters as `report`.

    from helicone_addon.export import export_log
    result = export_log(db, "har", out, filters)      # out: a text file; -> ExportResult

`helicone-addon export` (export/cli.py) writes to a file atomically: an export that fails half
way leaves an existing file untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TextIO

import sqlite_utils

from ..replay import recordable_where
from ..reports import Filters
from .rows import iter_rows, table_columns

FORMATS = ("jsonl", "openai-chat", "har", "csv", "cassette")


@dataclass
class ExportResult:
    format: str
    written: int  # calls written
    skipped: int = 0  # matching calls the format could not use (openai-chat: not a successful chat call)


def _jsonl(rows: Iterable[dict[str, Any]], out: TextIO, convert: Callable[[dict], dict | None]) -> tuple[int, int]:
    written = skipped = 0
    for row in rows:
        rec = convert(row)
        if rec is None:
            skipped += 1
            continue
        out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    return written, skipped


def export_log(db: sqlite_utils.Database, fmt: str, out: TextIO, filters: Filters | None = None) -> ExportResult:
    """Write the calls matching `filters` in format `fmt` to `out`, oldest first."""
    if fmt == "jsonl":
        from .jsonl import jsonl_record

        return ExportResult(fmt, *_jsonl(iter_rows(db, filters), out, jsonl_record))
    if fmt == "openai-chat":
        from .chat import chat_example

        return ExportResult(fmt, *_jsonl(iter_rows(db, filters), out, chat_example))
    if fmt == "har":
        from .har import write_har

        return ExportResult(fmt, write_har(iter_rows(db, filters), out))
    if fmt == "csv":
        from .table import write_csv

        return ExportResult(fmt, write_csv(iter_rows(db, filters), table_columns(db), out))
    if fmt == "cassette":
        from .cassette import write_cassette

        where = recordable_where(table_columns(db))
        n = write_cassette(iter_rows(db, filters, where=where), out)
        total = sum(1 for _ in iter_rows(db, filters))
        return ExportResult(fmt, n, total - n)
    raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """A text file written in place of `path` only when the block succeeds ('-': stdout)."""
    if str(path) == "-":
        import sys

        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
