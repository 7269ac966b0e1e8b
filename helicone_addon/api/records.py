"""Rows of the log -> Helicone's `HeliconeRequest` records (what GET /v1/request/{id} and the query
routes answer), with feedback, scores and properties attached.

The mapping is derived from the log's columns (columns.py): the columns Helicone has a field for
appear under Helicone's name (`HELICONE_FIELDS`), the bodies are parsed JSON, and every other column
appears under its own name, so a new column shows up in the API without touching this module.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import headers as hdrs
from ..columns import BY_NAME, NAMES
from ..record import iso

DEFAULT_UUID = "00000000-0000-0000-0000-000000000000"  # Helicone's cache_reference_id when not a cache hit

# Helicone's field -> the column holding it
HELICONE_FIELDS: dict[str, str] = {
    "request_id": "id",
    "request_created_at": "created_at",
    "request_path": "path",
    "request_user_id": "user_id",
    "request_model": "model_requested",
    "response_id": "id",
    "response_status": "status",
    "response_model": "model",
    "provider": "provider",
    "delay_ms": "latency_ms",
    "time_to_first_token": "ttft_ms",
    "total_tokens": "total_tokens",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "prompt_cache_write_tokens": "cache_write_tokens",
    "prompt_cache_read_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "cost": "cost_usd",
    "costUSD": "cost_usd",
    "target_url": "target_url",
    "model": "model",
    "cache_reference_id": "cache_reference_id",
}
# Helicone's fields the log has nothing for
HELICONE_NULLS = (
    "prompt_audio_tokens", "completion_audio_tokens", "cache_enabled", "country_code", "helicone_user",
    "prompt_id", "prompt_version", "asset_ids", "asset_urls", "signed_body_url", "llmSchema",
)  # fmt: skip
FLAGS = frozenset({"cache_hit", "streamed", "rate_limited"})  # 0/1 columns, given as booleans
JSON_COLUMNS = frozenset({"attempts"})  # JSON text columns, given parsed
# columns given in another shape (bodies, properties) or left out (raw header and usage JSON)
SHAPED = frozenset({"request_body", "response_body", "properties", "request_headers", "response_headers", "usage_raw"})
EXTRAS: tuple[str, ...] = tuple(c for c in NAMES if c not in SHAPED and c not in HELICONE_FIELDS.values())

_unknown = {*HELICONE_FIELDS.values(), *FLAGS, *JSON_COLUMNS, *SHAPED} - set(BY_NAME)
if _unknown:
    raise ImportError(f"api/records.py names columns that columns.py does not have: {sorted(_unknown)}")

_SESSION_PROPERTIES = (
    ("Helicone-Session-Id", "session_id"),
    ("Helicone-Session-Path", "session_path"),
    ("Helicone-Session-Name", "session_name"),
)


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A connection for the API's reads and small writes (rows by name, case-sensitive LIKE)."""
    conn = sqlite3.connect(str(db_path), timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA case_sensitive_like = ON")
    return conn


def placeholders(values: list) -> str:
    return ",".join("?" * len(values))


def _maybe_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _json_object(text: str | None) -> dict:
    value = _maybe_json(text) if text else None
    return value if isinstance(value, dict) else {}


def records_for(conn: sqlite3.Connection, rows: list[sqlite3.Row], include_body: bool = True) -> list[dict]:
    """`requests` rows -> HeliconeRequest-shaped dicts, with feedback, scores and properties attached."""
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    feedback: dict[str, sqlite3.Row] = {}
    scores: dict[str, dict[str, int]] = {i: {} for i in ids}
    props: dict[str, dict[str, str]] = {i: {} for i in ids}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk : chunk + 500]
        marks = placeholders(part)
        for f in conn.execute(f"SELECT * FROM feedback WHERE request_id IN ({marks})", part):
            feedback[f["request_id"]] = f
        for s in conn.execute(f"SELECT request_id, name, value FROM scores WHERE request_id IN ({marks})", part):
            scores[s["request_id"]][s["name"]] = s["value"]
        for p in conn.execute(f"SELECT request_id, key, value FROM properties WHERE request_id IN ({marks})", part):
            props[p["request_id"]][p["key"]] = p["value"]
    return [record(dict(r), feedback.get(r["id"]), scores[r["id"]], props[r["id"]], include_body) for r in rows]


def _properties(row: dict, table_props: dict[str, str]) -> dict[str, str]:
    """The row's properties (JSON column, then the properties table), with the session headers."""
    properties = {str(k): str(v) for k, v in _json_object(row.get("properties")).items()}
    properties.update(table_props)
    for name, col in _SESSION_PROPERTIES:
        if row.get(col):
            properties[name] = row[col]
    return properties


def _response_created(row: dict) -> str | None:
    created, latency = row.get("created_at"), row.get("latency_ms")
    if not created or latency is None:
        return None
    try:
        return iso(datetime.fromisoformat(created).timestamp() + latency / 1000.0)
    except ValueError:
        return None


def _value(row: dict, column: str) -> Any:
    v = row.get(column)
    if column in FLAGS:
        return bool(v)
    if column in JSON_COLUMNS:
        return _maybe_json(v)
    return v


def record(
    row: dict, fb: sqlite3.Row | None, scores: dict[str, int], table_props: dict[str, str], include_body: bool
) -> dict:
    """One row (as a dict) -> a HeliconeRequest record."""
    properties = _properties(row, table_props)
    out: dict[str, Any] = {field: row.get(column) for field, column in HELICONE_FIELDS.items()}
    out.update(dict.fromkeys(HELICONE_NULLS))
    out["cache_reference_id"] = out["cache_reference_id"] or DEFAULT_UUID
    out.update({
        "request_body": _maybe_json(row.get("request_body")) if include_body else None,
        "response_body": _maybe_json(row.get("response_body")) if include_body else None,
        "request_properties": properties,
        "properties": properties,
        "model_override": _json_object(row.get("request_headers")).get(hdrs.H_MODEL_OVERRIDE),
        "response_created_at": _response_created(row),
        "feedback_created_at": fb["created_at"] if fb is not None else None,
        "feedback_id": row["id"] if fb is not None else None,
        "feedback_rating": bool(fb["rating"]) if fb is not None and fb["rating"] is not None else None,
        "scores": scores,
    })
    out.update({column: _value(row, column) for column in EXTRAS})  # local extras: every other column
    return out
