"""Reading the log for an export: the matching rows, oldest first, one at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from ..columns import NAMES
from ..redact import redact_url, redact_value
from ..headers import SECRET_HEADERS
from ..reports import Filters


def table_columns(db: sqlite_utils.Database) -> list[str]:
    """The log's columns (columns.py order) that this database has."""
    have = set(db["requests"].columns_dict)
    return [c for c in NAMES if c in have]


def iter_rows(db: sqlite_utils.Database, filters: Filters | None = None, where: str | None = None) -> Iterator[dict[str, Any]]:
    """Matching `requests` rows as dicts (every column of columns.py the database has), in the
    order they were received. `where`: an extra SQL condition on alias r."""
    cols = table_columns(db)
    cond, params = (filters or Filters()).where()
    if where:
        cond = f"({cond}) AND ({where})"
    sql = f"SELECT {', '.join('r.' + c for c in cols)} FROM requests r WHERE {cond} ORDER BY r.created_at, r.rowid"
    for row in db.execute(sql, params):
        yield dict(zip(cols, row, strict=True))


def loads(text: Any, default: Any = None) -> Any:
    """A JSON column -> its value; empty or malformed -> default."""
    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _already_redacted(value: str) -> bool:
    return "[REDACTED sha256:" in value


def header_dict(raw: Any) -> dict[str, str]:
    """A logged headers column -> {lower-case name: value}, secrets redacted (the log stores them
    redacted already; a row ingested from elsewhere is checked again)."""
    data = loads(raw, {}) if isinstance(raw, str) else raw
    out: dict[str, str] = {}
    if not isinstance(data, dict):
        return out
    for k, v in data.items():
        name, value = str(k).lower(), str(v)
        if name in SECRET_HEADERS and not _already_redacted(value):
            value = redact_value(value)
        out[name] = value
    return out


def safe_url(url: str) -> str:
    """Redact `key=` style query values unless the log already did."""
    if "=REDACTED-" in url:
        return url
    return redact_url(url)


def row_url(row: dict[str, Any]) -> str:
    from ..replay import row_url as _row_url

    return safe_url(_row_url(row))


def body_json(text: Any) -> Any:
    """A logged body -> parsed JSON, or None when it is not JSON."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
