"""POST /v1/request/query: a query body (filter, sort, limit, offset, isCached, isScored) -> SQL
-> HeliconeRequest records. The filter itself is compiled by filters.py, like the CLI's."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..filters import FilterError, as_bool, build_filter, json_type
from .records import records_for

MAX_LIMIT = 1000

SORT_COLUMNS: dict[str, str] = {
    "created_at": "r.created_at",
    "request_created_at": "r.created_at",
    "latency": "r.latency_ms",
    "delay_ms": "r.latency_ms",
    "cost": "r.cost_usd",
    "total_tokens": "r.total_tokens",
    "prompt_tokens": "r.prompt_tokens",
    "completion_tokens": "r.completion_tokens",
    "time_to_first_token": "r.ttft_ms",
    "user_id": "r.user_id",
    "model": "r.model",
    "body_model": "r.model",
    "status": "r.status",
    "provider": "r.provider",
}

_SCORED = (
    "(EXISTS (SELECT 1 FROM scores s WHERE s.request_id = r.id) "
    "OR EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = r.id))"
)


def _int_field(body: dict, name: str, default: int, lo: int, hi: int | None) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise FilterError(f"{name}: expected an integer, got {json_type(v)}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        if hi is None:
            raise FilterError(f"{name}: must be >= {lo}")
        raise FilterError(f"{name}: {v} is out of range ({lo} to {hi})")
    return v


def _order(sort: Any) -> str:
    if not isinstance(sort, dict):
        raise FilterError(f'sort: expected an object such as {{"created_at": "desc"}}, got {json_type(sort)}')
    order = []
    for key, direction in sort.items():
        col = SORT_COLUMNS.get(key)
        if col is None:
            raise FilterError(f"sort: unknown key {key!r}; supported: {', '.join(SORT_COLUMNS)}")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise FilterError(f'sort.{key}: expected "asc" or "desc", got {direction!r}')
        order.append(f"{col} {direction.upper()}")
    order.append("r.id ASC")
    return ", ".join(order)


def build_query(body: dict) -> tuple[str, list]:
    """A /v1/request/query body -> (SQL selecting the rows in order, params). Raises FilterError."""
    if not isinstance(body, dict):
        raise FilterError(f"the body must be a JSON object, got {json_type(body)}")
    params: list = []
    where = [build_filter(body.get("filter", "all"), params)]
    if body.get("isCached") is not None:
        where.append(f"r.cache_hit = {as_bool(body['isCached'], 'isCached')}")
    if body.get("isScored") is not None:
        where.append(_SCORED if as_bool(body["isScored"], "isScored") else f"NOT {_SCORED}")
    limit = _int_field(body, "limit", 10, 0, MAX_LIMIT)
    offset = _int_field(body, "offset", 0, 0, None)
    order = _order(body.get("sort") or {"created_at": "desc"})
    sql = f"SELECT r.* FROM requests r WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?"
    return sql, [*params, limit, offset]


def query_requests(conn: sqlite3.Connection, body: dict) -> list[dict]:
    sql, params = build_query(body)
    return records_for(conn, conn.execute(sql, params).fetchall(), include_body=True)
