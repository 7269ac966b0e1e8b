"""`csv` export: the log's columns (helicone_addon/columns.py order), one row per call.

Empty cells are NULLs; numbers are written so that reading them back gives the same value
(Python's shortest round-trip float form)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str], out: TextIO) -> int:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    n = 0
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        n += 1
    return n
