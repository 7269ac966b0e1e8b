"""The local Helicone API: feedback, scores, properties, query, and async log ingestion.

A small HTTP server on its own loopback port (mitmproxy option ``helicone_api_port``, default 8585),
started with the proxy. It speaks Helicone's Jawn REST API (SPEC B.9) and the worker's async log
endpoints (SPEC B.10). No mitmproxy import: it runs in daemon threads (``ThreadingHTTPServer``), every
handler opens its own SQLite connection, and logged calls go through ``record.build_row`` via
``LogStore.submit`` like a proxied call, so a row is the same whichever door the call came through.

    POST /v1/request/{id}/feedback   {"rating": bool}                        -> 201 {"data": null, "error": null}
    POST /v1/request/{id}/score      {"scores": {"name": int | bool}}        -> 201
    PUT  /v1/request/{id}/property   {"key": str, "value": str}              -> 200
    GET  /v1/request/{id}[?includeBody=false]                                -> 200 {"data": HeliconeRequest}
    POST /v1/request/query           {filter, limit, offset, sort, ...}      -> 201 {"data": [HeliconeRequest]}
         (also /v1/request/query-clickhouse; POST /v1/request/query-ids {"requestIds": [...]} -> 200)
    POST /v1/feedback                {"helicone-id": id, "rating": bool}     -> 200 (legacy worker route)
    POST /custom/v1/log, /oai/v1/log, /anthropic/v1/log, /googleapis/v1/log  -> 200 text "ok" + helicone-id
         (also /v1/trace/custom/v1/log and /v1/trace/custom/log, as Jawn)

Replies use Helicone's envelope ``{"data": ..., "error": null | str}``. When accepted keys are
configured, every route needs ``Authorization: Bearer <key>`` (``Helicone-Auth: Bearer <key>`` is
accepted too), else 401.

Filters are Helicone's AST (``"all"`` | leaf ``{"<table>": {"<column>": {"<op>": value}}}`` | branch
``{"left": .., "operator": "and" | "or", "right": ..}``) translated to SQL with whitelisted column
expressions and ``?`` parameters only; see ``TABLES``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import headers as hdrs
from . import providers
from .record import CallState, build_row, iso

logger = logging.getLogger("helicone_addon.api")

MAX_PAYLOAD = 10 * 1024 * 1024  # Helicone: JSON.stringify(payload).length > 10 MB -> 400
HARD_BODY_LIMIT = 64 * 1024 * 1024  # bodies beyond this are drained and refused without being buffered
DEFAULT_UUID = "00000000-0000-0000-0000-000000000000"  # Helicone's cache_reference_id when not a cache hit
MAX_LIMIT = 1000
MAX_FILTER_DEPTH = 64

# async log path -> provider the path stands for (None: from the payload's URL)
LOG_PATHS: dict[str, str | None] = {
    "/custom/v1/log": None,
    "/oai/v1/log": "openai",
    "/anthropic/v1/log": "anthropic",
    "/googleapis/v1/log": "gemini",
    "/v1/trace/custom/v1/log": None,
    "/v1/trace/custom/log": None,
}

MSG_REQUIRED = "One of the required fields is missing, providerRequest, providerResponse, or timing"
MSG_INVALID_UUID = "Invalid requestId: must be a valid UUID"
MSG_NOT_FOUND = "Request not found"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FilterError(ValueError):
    """A filter / sort / paging value the query API does not accept (-> 400 with this message)."""


# =============================================================================================
# Filter AST -> SQL
#
# Every column a filter may name maps to a fixed SQL expression over `requests r`; the user's
# table, column and operator names are only ever dictionary keys, values are only ever `?` params.

TEXT, NUMBER, TIMESTAMP, BOOL = "text", "number", "timestamp", "bool"

TEXT_OPS = ("equals", "not-equals", "like", "ilike", "contains", "not-contains")
NUMBER_OPS = ("equals", "not-equals", "gte", "lte", "lt", "gt")
TIMESTAMP_OPS = ("equals", "gte", "lte", "lt", "gt")
BOOL_OPS = ("equals",)
OPS = {TEXT: TEXT_OPS, NUMBER: NUMBER_OPS, TIMESTAMP: TIMESTAMP_OPS, BOOL: BOOL_OPS}

_FEEDBACK_RATING = "(SELECT f.rating FROM feedback f WHERE f.request_id = r.id)"
_FEEDBACK_CREATED = "(SELECT f.created_at FROM feedback f WHERE f.request_id = r.id)"
_RESPONSE_CREATED = "strftime('%Y-%m-%dT%H:%M:%fZ', r.created_at, '+' || (COALESCE(r.latency_ms, 0) / 1000.0) || ' seconds')"

_RMT: dict[str, tuple[str, str]] = {
    "request_id": ("r.id", TEXT),
    "request_created_at": ("r.created_at", TIMESTAMP),
    "response_created_at": (_RESPONSE_CREATED, TIMESTAMP),
    "latency": ("r.latency_ms", NUMBER),
    "cost": ("r.cost_usd", NUMBER),
    "provider": ("r.provider", TEXT),
    "time_to_first_token": ("r.ttft_ms", NUMBER),
    "status": ("r.status", NUMBER),
    "model": ("r.model", TEXT),
    "user_id": ("r.user_id", TEXT),
    "prompt_tokens": ("r.prompt_tokens", NUMBER),
    "completion_tokens": ("r.completion_tokens", NUMBER),
    "prompt_cache_read_tokens": ("r.cached_tokens", NUMBER),
    "prompt_cache_write_tokens": ("r.cache_write_tokens", NUMBER),
    "total_tokens": ("r.total_tokens", NUMBER),
    "target_url": ("r.target_url", TEXT),
    "cache_reference_id": ("r.cache_reference_id", TEXT),
    "cached": ("r.cache_hit", BOOL),
    "helicone-score-feedback": (_FEEDBACK_RATING, BOOL),
    # local extras
    "session_id": ("r.session_id", TEXT),
    "source": ("r.source", TEXT),
    "streamed": ("r.streamed", BOOL),
}

TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "request": {
        "id": ("r.id", TEXT),
        "created_at": ("r.created_at", TIMESTAMP),
        "user_id": ("r.user_id", TEXT),
        "model": ("COALESCE(r.model_requested, r.model)", TEXT),
        "path": ("r.path", TEXT),
        "prompt": ("r.request_body", TEXT),
        "provider": ("r.provider", TEXT),
        "session_id": ("r.session_id", TEXT),
        "source": ("r.source", TEXT),
    },
    "response": {
        "status": ("r.status", NUMBER),
        "model": ("r.model", TEXT),
        "body_model": ("r.model", TEXT),
        "body_tokens": ("r.total_tokens", NUMBER),
        "body_completion": ("r.response_body", TEXT),
    },
    "feedback": {
        "rating": (_FEEDBACK_RATING, BOOL),
        "created_at": (_FEEDBACK_CREATED, TIMESTAMP),
    },
    "request_response_rmt": _RMT,
    "request_response_log": _RMT,
    "sessions_request_response_rmt": {
        "session_session_id": ("r.session_id", TEXT),
        "session_session_name": ("r.session_name", TEXT),
    },
    "properties_table": {
        "key": ("p.key", TEXT),
        "value": ("p.value", TEXT),
    },
}

# Helicone keeps the session headers as properties; here they are columns.
_SESSION_PROPERTIES = {
    "helicone-session-id": "r.session_id",
    "helicone-session-path": "r.session_path",
    "helicone-session-name": "r.session_name",
}

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


def _json_type(v: Any) -> str:
    return type(v).__name__ if v is not None else "null"


def _timestamp_param(v: Any, where: str) -> str:
    """An ISO-8601 string (or epoch milliseconds) -> the stored form 'YYYY-MM-DDTHH:MM:SS.mmmZ'."""
    if isinstance(v, bool):
        raise FilterError(f"{where}: expected an ISO-8601 timestamp string, got a boolean")
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise FilterError(f"{where}: timestamp must be finite")
        return iso(v / 1000.0)
    if not isinstance(v, str) or not v.strip():
        raise FilterError(f"{where}: expected an ISO-8601 timestamp string, got {_json_type(v)}")
    s = v.strip()
    if re.fullmatch(r"\d{11,}", s):
        return iso(int(s) / 1000.0)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise FilterError(f"{where}: {v!r} is not an ISO-8601 timestamp (e.g. 2025-01-31T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return iso(dt.timestamp())


def _number_param(v: Any, where: str) -> float | int:
    if isinstance(v, bool) or v is None:
        raise FilterError(f"{where}: expected a number, got {_json_type(v)}")
    if isinstance(v, str):
        try:
            v = float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            raise FilterError(f"{where}: {v!r} is not a number") from None
    if not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise FilterError(f"{where}: expected a finite number, got {_json_type(v)}")
    return v


def _text_param(v: Any, where: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise FilterError(f"{where}: expected a string, got {_json_type(v)}")


def _bool_param(v: Any, where: str) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return int(v.lower() == "true")
    raise FilterError(f"{where}: expected true or false, got {_json_type(v)}")


def _condition(expr: str, kind: str, op: str, value: Any, params: list, where: str) -> str:
    """One `expr <op> ?` condition; appends its parameter."""
    if op not in OPS[kind]:
        raise FilterError(f"{where}: operator {op!r} is not allowed on a {kind} column; allowed: {', '.join(OPS[kind])}")
    if kind == TEXT:
        p = _text_param(value, where)
        if op == "equals":
            params.append(p)
            return f"{expr} = ?"
        if op == "not-equals":
            params.append(p)
            return f"({expr} IS NULL OR {expr} != ?)"
        if op == "like":  # case-sensitive: the connection runs with PRAGMA case_sensitive_like = ON
            params.append(p)
            return f"{expr} LIKE ?"
        if op == "ilike":
            params.append(p)
            return f"lower({expr}) LIKE lower(?)"
        if op == "contains":
            params.append(p)
            return f"instr(lower({expr}), lower(?)) > 0"
        params.append(p)  # not-contains
        return f"({expr} IS NULL OR instr(lower({expr}), lower(?)) = 0)"
    if kind == NUMBER:
        p = _number_param(value, where)
        params.append(p)
        if op == "not-equals":
            return f"({expr} IS NULL OR {expr} != ?)"
        return f"{expr} {_CMP[op]} ?"
    if kind == TIMESTAMP:
        params.append(_timestamp_param(value, where))
        return f"{expr} {_CMP[op]} ?"
    params.append(_bool_param(value, where))  # BOOL
    return f"{expr} = ?"


_CMP = {"equals": "=", "gte": ">=", "lte": "<=", "lt": "<", "gt": ">"}
_NEGATIVE = {"not-equals": "equals", "not-contains": "contains"}


def _ops(node: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(node, dict) or not node:
        raise FilterError(f"{where}: expected an operator object such as {{\"equals\": ...}}, got {_json_type(node)}")
    return list(node.items())


def _keyed_exists(
    table_sql: str, key_sql: str, key_params: list, value_sql: str, kind: str, ops: list[tuple[str, Any]],
    params: list, where: str,
) -> str:
    """EXISTS over a key/value child table (properties, scores). Negative operators mean: no such match."""
    parts = []
    for op, value in ops:
        positive = _NEGATIVE.get(op)
        sub: list = list(key_params)
        cond = _condition(value_sql, kind, positive or op, value, sub, f"{where}.{op}")
        params.extend(sub)
        sql = f"EXISTS (SELECT 1 FROM {table_sql} WHERE {key_sql} AND {cond})"
        parts.append(f"NOT {sql}" if positive else sql)
    return " AND ".join(parts)


def _properties_leaf(spec: Any, params: list, where: str) -> str:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"{where}: expected {{\"<property>\": {{\"<op>\": value}}}}")
    parts = []
    for key, opnode in spec.items():
        w = f"{where}.{key}"
        ops = _ops(opnode, w)
        col = _SESSION_PROPERTIES.get(key.lower())
        if col is not None:
            parts.extend(_condition(col, TEXT, op, v, params, f"{w}.{op}") for op, v in ops)
            continue
        parts.append(_keyed_exists(
            "properties p", "p.request_id = r.id AND lower(p.key) = lower(?)", [key], "p.value", TEXT, ops, params, w,
        ))
    return " AND ".join(parts)


def _scores_leaf(spec: Any, params: list, where: str) -> str:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f"{where}: expected {{\"<score name>\": {{\"<op>\": number}}}}")
    parts = []
    for name, opnode in spec.items():
        w = f"{where}.{name}"
        parts.append(_keyed_exists(
            "scores s", "s.request_id = r.id AND s.name = ?", [name], "s.value", NUMBER, _ops(opnode, w), params, w,
        ))
    return " AND ".join(parts)


def build_filter(node: Any, params: list, depth: int = 0, where: str = "filter") -> str:
    """Helicone's filter AST -> a SQL boolean expression over `requests r`, parameters appended."""
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
    if node == "all":
        return "1 = 1"
    if not isinstance(node, dict):
        raise FilterError(f"{where}: expected \"all\", a leaf {{\"<table>\": {{...}}}} or a branch "
                          f"{{\"left\", \"operator\", \"right\"}}, got {_json_type(node)}")
    if "operator" in node or "left" in node or "right" in node:
        op = node.get("operator")
        if op not in ("and", "or"):
            raise FilterError(f"{where}.operator: expected \"and\" or \"or\", got {op!r}")
        if "left" not in node or "right" not in node:
            raise FilterError(f"{where}: a branch needs both \"left\" and \"right\"")
        left = build_filter(node["left"], params, depth + 1, f"{where}.left")
        right = build_filter(node["right"], params, depth + 1, f"{where}.right")
        return f"(({left}) {op.upper()} ({right}))"
    if not node:
        raise FilterError(f"{where}: empty filter object; use \"all\" for no filter")
    parts = []
    for table, spec in node.items():
        w = f"{where}.{table}"
        if table == "properties":
            parts.append(_properties_leaf(spec, params, w))
            continue
        columns = TABLES.get(table)
        if columns is None:
            raise FilterError(f"{where}: unknown table {table!r}; supported: {', '.join(['properties', *TABLES])}")
        if not isinstance(spec, dict) or not spec:
            raise FilterError(f"{w}: expected {{\"<column>\": {{\"<op>\": value}}}}")
        for col, opnode in spec.items():
            wc = f"{w}.{col}"
            if table in ("request_response_rmt", "request_response_log") and col in ("properties", "search_properties"):
                parts.append(_properties_leaf(opnode, params, wc))
                continue
            if table in ("request_response_rmt", "request_response_log") and col == "scores":
                parts.append(_scores_leaf(opnode, params, wc))
                continue
            if col not in columns:
                raise FilterError(f"{w}: unknown column {col!r}; supported: {', '.join(columns)}")
            expr, kind = columns[col]
            ops = _ops(opnode, wc)
            if table == "properties_table":
                parts.append(_keyed_exists("properties p", "p.request_id = r.id", [], expr, kind, ops, params, wc))
                continue
            parts.extend(_condition(expr, kind, op, v, params, f"{wc}.{op}") for op, v in ops)
    return "(" + " AND ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _int_field(body: dict, name: str, default: int, lo: int, hi: int | None) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise FilterError(f"{name}: expected an integer, got {_json_type(v)}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        raise FilterError(f"{name}: {v} is out of range ({lo} to {hi})" if hi is not None else f"{name}: must be >= {lo}")
    return v


def build_query(body: dict) -> tuple[str, list]:
    """A /v1/request/query body -> (SQL selecting request ids in order, params)."""
    if not isinstance(body, dict):
        raise FilterError(f"the body must be a JSON object, got {_json_type(body)}")
    params: list = []
    where = build_filter(body.get("filter", "all"), params)
    extra = []
    is_cached = body.get("isCached")
    if is_cached is not None:
        extra.append(f"r.cache_hit = {_bool_param(is_cached, 'isCached')}")
    is_scored = body.get("isScored")
    if is_scored is not None:
        exists = ("(EXISTS (SELECT 1 FROM scores s WHERE s.request_id = r.id) "
                  "OR EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = r.id))")
        extra.append(exists if _bool_param(is_scored, "isScored") else f"NOT {exists}")
    if extra:
        where = " AND ".join([where, *extra])
    limit = _int_field(body, "limit", 10, 0, MAX_LIMIT)
    offset = _int_field(body, "offset", 0, 0, None)
    sort = body.get("sort") or {"created_at": "desc"}
    if not isinstance(sort, dict):
        raise FilterError(f"sort: expected an object such as {{\"created_at\": \"desc\"}}, got {_json_type(sort)}")
    order = []
    for key, direction in sort.items():
        col = SORT_COLUMNS.get(key)
        if col is None:
            raise FilterError(f"sort: unknown key {key!r}; supported: {', '.join(SORT_COLUMNS)}")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise FilterError(f"sort.{key}: expected \"asc\" or \"desc\", got {direction!r}")
        order.append(f"{col} {direction.upper()}")
    order.append("r.id ASC")
    sql = f"SELECT r.* FROM requests r WHERE {where} ORDER BY {', '.join(order)} LIMIT ? OFFSET ?"
    return sql, [*params, limit, offset]


# =============================================================================================
# Rows -> HeliconeRequest records


def connect(db_path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA case_sensitive_like = ON")
    return conn


def _maybe_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _in(ids: list[str]) -> str:
    return ",".join("?" * len(ids))


def records_for(conn: sqlite3.Connection, rows: list[sqlite3.Row], include_body: bool = True) -> list[dict]:
    """`requests` rows -> HeliconeRequest-shaped dicts, with feedback, scores and properties attached."""
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    feedback: dict[str, sqlite3.Row] = {}
    scores: dict[str, dict[str, int]] = {i: {} for i in ids}
    props: dict[str, dict[str, str]] = {i: {} for i in ids}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk:chunk + 500]
        for f in conn.execute(f"SELECT * FROM feedback WHERE request_id IN ({_in(part)})", part):
            feedback[f["request_id"]] = f
        for s in conn.execute(f"SELECT request_id, name, value FROM scores WHERE request_id IN ({_in(part)})", part):
            scores[s["request_id"]][s["name"]] = s["value"]
        for p in conn.execute(f"SELECT request_id, key, value FROM properties WHERE request_id IN ({_in(part)})", part):
            props[p["request_id"]][p["key"]] = p["value"]
    return [_record(r, feedback.get(r["id"]), scores[r["id"]], props[r["id"]], include_body) for r in rows]


def _record(r: sqlite3.Row, fb: sqlite3.Row | None, scores: dict[str, int], table_props: dict[str, str], include_body: bool) -> dict:
    row = dict(r)
    properties: dict[str, str] = {}
    if row.get("properties"):
        try:
            stored = json.loads(row["properties"])
            if isinstance(stored, dict):
                properties.update({str(k): str(v) for k, v in stored.items()})
        except ValueError:
            pass
    properties.update(table_props)
    for name, col in (("Helicone-Session-Id", "session_id"), ("Helicone-Session-Path", "session_path"),
                      ("Helicone-Session-Name", "session_name")):
        if row.get(col):
            properties[name] = row[col]
    model_override = None
    if row.get("request_headers"):
        try:
            rh = json.loads(row["request_headers"])
            model_override = rh.get(hdrs.H_MODEL_OVERRIDE) if isinstance(rh, dict) else None
        except ValueError:
            pass
    created = row.get("created_at")
    response_created = None
    if created and row.get("latency_ms") is not None:
        try:
            t0 = datetime.fromisoformat(created).timestamp()
            response_created = iso(t0 + row["latency_ms"] / 1000.0)
        except ValueError:
            pass
    return {
        "request_id": row["id"],
        "request_created_at": created,
        "request_body": _maybe_json(row.get("request_body")) if include_body else None,
        "request_path": row.get("path"),
        "request_user_id": row.get("user_id"),
        "request_properties": properties,
        "request_model": row.get("model_requested"),
        "model_override": model_override,
        "response_id": row["id"],
        "response_created_at": response_created,
        "response_body": _maybe_json(row.get("response_body")) if include_body else None,
        "response_status": row.get("status"),
        "response_model": row.get("model"),
        "provider": row.get("provider"),
        "delay_ms": row.get("latency_ms"),
        "time_to_first_token": row.get("ttft_ms"),
        "total_tokens": row.get("total_tokens"),
        "prompt_tokens": row.get("prompt_tokens"),
        "completion_tokens": row.get("completion_tokens"),
        "prompt_cache_write_tokens": row.get("cache_write_tokens"),
        "prompt_cache_read_tokens": row.get("cached_tokens"),
        "prompt_audio_tokens": None,
        "completion_audio_tokens": None,
        "reasoning_tokens": row.get("reasoning_tokens"),
        "cost": row.get("cost_usd"),
        "costUSD": row.get("cost_usd"),
        "feedback_created_at": fb["created_at"] if fb is not None else None,
        "feedback_id": row["id"] if fb is not None else None,
        "feedback_rating": bool(fb["rating"]) if fb is not None and fb["rating"] is not None else None,
        "scores": scores,
        "properties": properties,
        "target_url": row.get("target_url"),
        "model": row.get("model"),
        "cache_reference_id": row.get("cache_reference_id") or DEFAULT_UUID,
        "cache_enabled": None,
        "cache_hit": bool(row.get("cache_hit")),
        "country_code": None,
        "helicone_user": None,
        "prompt_id": None,
        "prompt_version": None,
        "asset_ids": None,
        "asset_urls": None,
        "signed_body_url": None,
        "llmSchema": None,
        # local extras
        "source": row.get("source"),
        "api": row.get("api"),
        "streamed": bool(row.get("streamed")),
        "usage_source": row.get("usage_source"),
        "cost_note": row.get("cost_note"),
        "error": row.get("error"),
        "retries": row.get("retries"),
        "rate_limited": bool(row.get("rate_limited")),
        "client_request_id": row.get("client_request_id"),
        "session_id": row.get("session_id"),
        "session_path": row.get("session_path"),
        "session_name": row.get("session_name"),
    }


def query_requests(conn: sqlite3.Connection, body: dict) -> list[dict]:
    sql, params = build_query(body)
    rows = conn.execute(sql, params).fetchall()
    return records_for(conn, rows, include_body=True)


# =============================================================================================
# Async log payload (SPEC B.10)

_MISSING = object()


def _get(obj: Any, key: str) -> Any:
    """JS property access: anything that is not an object with that key gives undefined."""
    if isinstance(obj, dict):
        return obj.get(key, _MISSING)
    return _MISSING


def _js_typeof(v: Any) -> str:
    if v is _MISSING:
        return "undefined"
    if v is None or isinstance(v, (dict, list)):
        return "object"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "object"


def _js_falsy(v: Any) -> bool:
    if v is _MISSING or v is None or v is False:
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0 or math.isnan(v)
    return isinstance(v, str) and v == ""


def validate_async_log(model: Any) -> str | None:
    """The worker's validateAsyncLogModel, message for message; None when the payload is valid.

    `timing` may be left out (both times then default to now), as in the newer worker and Jawn.
    """
    if not isinstance(model, dict) or _js_falsy(_get(model, "providerRequest")) or _js_falsy(_get(model, "providerResponse")):
        return MSG_REQUIRED
    req = model["providerRequest"]
    if _js_typeof(_get(req, "url")) != "string":
        return "Invalid providerRequest: 'url' should be a string"
    if _js_typeof(_get(req, "meta")) != "object":
        return "Invalid providerRequest: 'meta' should be an object"
    if _get(req, "json") is _MISSING:
        return "Invalid providerRequest: 'json' is undefined"
    resp = model["providerResponse"]
    if _get(resp, "json") is _MISSING:
        return "Invalid providerResponse: 'json' is undefined"
    if _js_typeof(_get(resp, "status")) != "number":
        return "Invalid providerResponse: 'status' should be a number"
    if _js_typeof(_get(resp, "headers")) != "object":
        return "Invalid providerResponse: 'headers' should be an object"
    timing = _get(model, "timing")
    if _js_falsy(timing):
        return None
    values = {}
    for part in ("startTime", "endTime"):
        t = _get(timing, part)
        for unit in ("seconds", "milliseconds"):
            v = _get(t, unit)
            if _js_typeof(v) != "number":
                return f"Invalid timing: '{part}.{unit}' should be a number"
            values[(part, unit)] = v
    start = values[("startTime", "seconds")] * 1000 + values[("startTime", "milliseconds")]
    end = values[("endTime", "seconds")] * 1000 + values[("endTime", "milliseconds")]
    if not all(math.isfinite(x) and abs(x) <= 8.64e15 for x in (start, end)):
        return "Invalid timing structure or value type"
    if start > end:
        return "startTime cannot be greater than endTime"
    if start < 0 or end < 0:
        return "startTime and endTime cannot be negative"
    return None


def _header_pairs(obj: Any) -> list[tuple[str, str]]:
    """meta / headers given as an object (or a list of [name, value] pairs) -> pairs of strings."""
    if isinstance(obj, dict):
        items: Iterable = obj.items()
    elif isinstance(obj, list):
        items = [p for p in obj if isinstance(p, (list, tuple)) and len(p) == 2]
    else:
        return []
    out = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v)
        out.append((str(k), str(v)))
    return out


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def scrub_surrogates(obj: Any) -> Any:
    """Lone UTF-16 surrogates ("\\ud800" in JSON) cannot be stored by SQLite: replace them with '?'."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_surrogates(v) for v in obj]
    return obj


def _sse_text(obj: Any) -> bool:
    return isinstance(obj, str) and obj.lstrip().startswith(("data:", "event:", ":"))


def state_from_async_log(
    model: dict,
    http_headers: Iterable[tuple[str, str]],
    path_provider: str | None,
    *,
    source: str = "async",
    now: float | None = None,
) -> CallState:
    """A validated async log payload (+ the log call's own headers) -> the CallState of that call.

    Helicone headers may come in `providerRequest.meta` or as HTTP headers of the log call; they are
    merged and the HTTP headers win.
    """
    req = model["providerRequest"]
    resp = model["providerResponse"]
    merged: dict[str, tuple[str, str]] = {}
    for k, v in _header_pairs(req.get("meta")):
        merged[k.lower()] = (k, v)
    for k, v in http_headers:
        if hdrs.is_helicone(k):
            merged[k.lower()] = (k, v)
    pairs = list(merged.values())
    opts = hdrs.parse(pairs, strict=False)

    url = req["url"]
    parts = urlsplit(url) if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) else None
    host = (parts.hostname or "") if parts else ""
    if parts:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    else:
        path = url
    if opts.target_provider:
        provider = opts.target_provider.lower()
    elif path_provider:
        provider = path_provider
    else:
        provider = providers.detect(host, path) or "custom"
    api = providers.api_for(provider, path)
    req_json = req.get("json")
    if api == providers.API_UNKNOWN:
        if provider == "anthropic":
            api = providers.API_ANTHROPIC
        elif provider in ("gemini", "vertex"):
            api = providers.API_GEMINI
        elif isinstance(req_json, dict) and isinstance(req_json.get("messages"), list):
            api = providers.API_OPENAI_CHAT

    text_body = resp.get("textBody")
    resp_json = resp.get("json")
    if isinstance(text_body, str) and text_body:
        body = text_body
    elif isinstance(resp_json, dict) and isinstance(resp_json.get("streamed_data"), list):
        body = "".join("data: " + json.dumps(d, ensure_ascii=False) + "\n\n" for d in resp_json["streamed_data"])
    else:
        body = json.dumps(resp_json, ensure_ascii=False)
    resp_headers = _header_pairs(resp.get("headers"))
    ctype = next((v for k, v in resp_headers if k.lower() == "content-type"), None)
    if ctype is None or (_sse_text(body) and "event-stream" not in ctype):
        ctype = "text/event-stream" if _sse_text(body) else "application/json"
    resp_headers = [(k, v) for k, v in resp_headers if k.lower() not in ("content-encoding", "content-length")]

    now = time.time() if now is None else now
    timing = model.get("timing", _MISSING)
    if _js_falsy(timing):
        started = ended = now
        ttft = None
    else:
        started = (timing["startTime"]["seconds"] * 1000 + timing["startTime"]["milliseconds"]) / 1000.0
        ended = (timing["endTime"]["seconds"] * 1000 + timing["endTime"]["milliseconds"]) / 1000.0
        ttft = timing.get("timeToFirstToken")
        if isinstance(ttft, bool) or not isinstance(ttft, (int, float)) or not math.isfinite(ttft) or ttft < 0:
            ttft = None
    status = resp["status"]
    status = int(status) if isinstance(status, (int, float)) and math.isfinite(status) else None
    is_stream = isinstance(req_json, dict) and (req_json.get("stream") is True or req_json.get("stream") == 1)

    return CallState(
        id=opts.request_id,
        started_at=started,
        source=source,
        provider=provider,
        api=api,
        method="POST",
        host=host,
        path=path,
        url=url,
        target_url=url if parts else None,
        options=opts,
        request_headers=pairs,
        request_body=json.dumps(req_json, ensure_ascii=False).encode() if req_json is not None else None,
        status=status,
        response_headers=resp_headers,
        response_body=body.encode(),
        content_type=ctype,
        first_chunk_at=started + ttft / 1000.0 if ttft is not None else None,
        ended_at=ended,
        streamed=is_stream,
    )


# =============================================================================================
# HTTP server

_ROUTES: list[tuple[re.Pattern, str, str]] = [
    (re.compile(r"^/v1/request/query$"), "POST", "query"),
    (re.compile(r"^/v1/request/query-clickhouse$"), "POST", "query"),
    (re.compile(r"^/v1/request/query-ids$"), "POST", "query_ids"),
    (re.compile(r"^/v1/request/(?P<id>[^/]+)/feedback$"), "POST", "feedback"),
    (re.compile(r"^/v1/request/(?P<id>[^/]+)/score$"), "POST", "score"),
    (re.compile(r"^/v1/request/(?P<id>[^/]+)/property$"), "PUT", "property"),
    (re.compile(r"^/v1/request/(?P<id>[^/]+)$"), "GET", "get"),
    (re.compile(r"^/v1/feedback$"), "POST", "legacy_feedback"),
]


def _as_callable(v: Any) -> Callable[[], Any]:
    return v if callable(v) else (lambda: v)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class ApiServer:
    """The local Helicone API on (host, port); port 0 picks a free one (see `.port`).

    ``auth_keys`` and ``price_overrides`` may be values or zero-argument callables (read per request,
    so option changes apply without a restart). ``submit`` is ``LogStore.submit``.
    ``row_wait`` is how long feedback / score / property / GET wait for a just-finished call's row
    to be written before answering 404.
    """

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 8585,
        auth_keys: Iterable[str] | Callable[[], Iterable[str]] = (),
        submit: Callable[[Any], None] | None = None,
        price_overrides: dict | Callable[[], dict | None] | None = None,
        *,
        row_wait: float = 2.0,
        estimate: bool = True,
    ) -> None:
        self.db_path = Path(db_path)
        self.host = host
        self.requested_port = port
        self._auth_keys = _as_callable(auth_keys)
        self.submit = submit
        self._price_overrides = _as_callable(price_overrides)
        self.row_wait = row_wait
        self.estimate = estimate
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ApiServer:
        from .store import open_db

        try:
            open_db(self.db_path).conn.close()  # the schema exists before the first request
        except Exception as e:  # noqa: BLE001 - serve anyway; requests report the database error
            logger.error("helicone api: cannot open %s yet: %s", self.db_path, e)
        api = self

        class Handler(_Handler):
            server_api = api

        cls = _Server6 if ":" in self.host else _Server
        self._server = cls((self.host, self.requested_port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="helicone-api", daemon=True
        )
        self._thread.start()
        logger.info("helicone: local Helicone API on http://%s:%d", self.host, self.port)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "ApiServer not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- auth ----------------------------------------------------------------------------------
    def authorized(self, headers: Any) -> bool:
        keys = set(self._auth_keys() or ())
        if not keys:
            return True
        for name in ("authorization", hdrs.H_AUTH):
            value = (headers.get(name) or "").strip()
            if value.lower().startswith("bearer "):
                value = value[7:].strip()
            if value and value in keys:
                return True
        return False

    # -- data ------------------------------------------------------------------------------------
    def wait_for_row(self, conn: sqlite3.Connection, request_id: str) -> bool:
        deadline = time.monotonic() + self.row_wait
        while True:
            if conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.025)

    def ingest(self, model: dict, http_headers: list[tuple[str, str]], path_provider: str | None) -> str:
        state = state_from_async_log(model, http_headers, path_provider)
        overrides = self._price_overrides()
        estimate = self.estimate
        if self.submit is None:
            raise RuntimeError("no log store to write to")
        self.submit(lambda: build_row(state, price_overrides=overrides, estimate=estimate))
        return state.id


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError):
        raise ApiError(400, MSG_INVALID_UUID) from None


def _now_iso() -> str:
    return iso(time.time())


class _Handler(BaseHTTPRequestHandler):
    server_api: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "helicone-addon-api"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("api: " + format, *args)

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj, default=str).encode(), "application/json; charset=utf-8", extra)

    def _envelope(self, status: int, data: Any = None, error: str | None = None) -> None:
        self._json(status, {"data": data, "error": error})

    def _text(self, status: int, text: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", extra)

    def _read_body(self) -> bytes | None:
        """The request body; None when it is over HARD_BODY_LIMIT (drained, not kept)."""
        te = (self.headers.get("transfer-encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked()
        try:
            n = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise ApiError(400, "Invalid Content-Length") from None
        if n <= 0:
            return b""
        if n > HARD_BODY_LIMIT:
            left = n
            while left > 0:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
            return None
        return self.rfile.read(n)

    def _read_chunked(self) -> bytes | None:
        buf = bytearray()
        too_big = False
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise ApiError(400, "Invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return None if too_big else bytes(buf)
            left = size
            while left > 0:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    raise ApiError(400, "Truncated chunked body")
                left -= len(got)
                if not too_big:
                    buf += got
                    if len(buf) > HARD_BODY_LIMIT:
                        too_big = True
                        buf = bytearray()
            self.rfile.readline(3)

    def _json_body(self, raw: bytes | None) -> dict:
        if raw is None or len(raw) > MAX_PAYLOAD:
            raise ApiError(400, "Payload too large")
        if not raw.strip():
            raise ApiError(400, "Missing JSON body")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"Invalid JSON body: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"The body must be a JSON object, got {_json_type(body)}")
        return body

    # -- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path in LOG_PATHS:
                if self.command != "POST":
                    self._read_body()
                    raise ApiError(405, f"Method {self.command} not allowed; use POST")
                self._log(LOG_PATHS[path])
                return
            for pattern, method, name in _ROUTES:
                m = pattern.match(path)
                if m is None:
                    continue
                if self.command != method:
                    self._read_body()
                    raise ApiError(405, f"Method {self.command} not allowed on {path}; use {method}")
                raw = self._read_body() if method != "GET" else b""
                if not self.server_api.authorized(self.headers):
                    if name == "legacy_feedback":
                        self._text(401, "Unauthorized")
                    else:
                        self._envelope(401, error="Unauthorized")
                    return
                getattr(self, f"_route_{name}")(raw, **m.groupdict())
                return
            self._read_body()
            raise ApiError(404, f"Not found: {self.command} {path}")
        except ApiError as e:
            if path in LOG_PATHS:
                self._json(e.status, {"error": e.message})
            else:
                self._envelope(e.status, error=e.message)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # never kill the server thread silently
            logger.exception("helicone api: %s %s failed", self.command, self.path)
            try:
                self._envelope(500, error=f"Internal error: {e}")
            except OSError:
                logger.debug("helicone api: could not send the 500 reply", exc_info=True)

    # -- routes --------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        return connect(self.server_api.db_path)

    def _existing(self, conn: sqlite3.Connection, request_id: str) -> str:
        rid = _uuid(request_id)
        if not self.server_api.wait_for_row(conn, rid):
            raise ApiError(404, MSG_NOT_FOUND)
        return rid

    def _route_feedback(self, raw: bytes, id: str) -> None:
        rid = _uuid(id)
        body = self._json_body(raw)
        rating = body.get("rating")
        if not isinstance(rating, bool):
            raise ApiError(400, f"'rating' must be true or false, got {_json_type(rating)}")
        self._set_feedback(rid, rating)
        self._envelope(201)

    def _set_feedback(self, rid: str, rating: bool) -> None:
        conn = self._open()
        try:
            self._existing(conn, rid)
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO feedback (request_id, rating, created_at) VALUES (?, ?, ?)",
                    (rid, int(rating), _now_iso()),
                )
        finally:
            conn.close()

    def _route_legacy_feedback(self, raw: bytes) -> None:
        body = self._json_body(raw)
        hid = body.get("helicone-id")
        rating = body.get("rating")
        if not isinstance(hid, str):
            raise ApiError(400, "'helicone-id' must be a request id string")
        if not isinstance(rating, bool):
            raise ApiError(400, f"'rating' must be true or false, got {_json_type(rating)}")
        rid = _uuid(hid)
        self._set_feedback(rid, rating)
        self._json(200, {"message": "Feedback added successfully.", "helicone_id": rid})

    def _route_score(self, raw: bytes, id: str) -> None:
        rid = _uuid(id)
        body = self._json_body(raw)
        scores = body.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise ApiError(400, "'scores' must be a non-empty object of {\"<name>\": integer | boolean}")
        values = []
        for name, v in scores.items():
            if not name:
                raise ApiError(400, "Score names must be non-empty strings")
            if isinstance(v, bool) or (isinstance(v, float) and math.isfinite(v) and v.is_integer()):
                v = int(v)
            elif not isinstance(v, int):
                raise ApiError(400, f"Score value for key '{name}' must be an integer or a boolean, got {v!r} "
                                    "(floats are not accepted)")
            if not -(2**63) <= v < 2**63:
                raise ApiError(400, f"Score value for key '{name}' is out of range (64-bit integer)")
            values.append((rid, name, v))
        conn = self._open()
        try:
            self._existing(conn, rid)
            now = _now_iso()
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO scores (request_id, name, value, created_at) VALUES (?, ?, ?, ?)",
                    [(*v, now) for v in values],
                )
        finally:
            conn.close()
        self._envelope(201)

    def _route_property(self, raw: bytes, id: str) -> None:
        rid = _uuid(id)
        body = self._json_body(raw)
        key, value = body.get("key"), body.get("value")
        if not isinstance(key, str) or not key:
            raise ApiError(400, "'key' must be a non-empty string")
        if not isinstance(value, str):
            raise ApiError(400, f"'value' must be a string, got {_json_type(value)}")
        conn = self._open()
        try:
            self._existing(conn, rid)
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR REPLACE INTO properties (request_id, key, value) VALUES (?, ?, ?)", (rid, key, value)
                )
                cur = conn.execute("SELECT properties FROM requests WHERE id = ?", (rid,)).fetchone()
                try:
                    props = json.loads(cur["properties"]) if cur and cur["properties"] else {}
                except ValueError:
                    props = {}
                if not isinstance(props, dict):
                    props = {}
                props[key] = value
                conn.execute("UPDATE requests SET properties = ? WHERE id = ?", (json.dumps(props), rid))
        finally:
            conn.close()
        self._envelope(200)

    def _route_get(self, raw: bytes, id: str) -> None:
        rid = _uuid(id)
        qs = parse_qs(urlsplit(self.path).query)
        include = (qs.get("includeBody", ["true"])[-1] or "true").lower() != "false"
        conn = self._open()
        try:
            self._existing(conn, rid)
            rows = conn.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchall()
            records = records_for(conn, rows, include_body=include)
        finally:
            conn.close()
        if not records:
            raise ApiError(404, MSG_NOT_FOUND)
        self._envelope(200, records[0])

    def _route_query(self, raw: bytes) -> None:
        body = self._json_body(raw)
        conn = self._open()
        try:
            try:
                data = query_requests(conn, body)
            except FilterError as e:
                raise ApiError(400, str(e)) from None
        finally:
            conn.close()
        self._envelope(201, data)

    def _route_query_ids(self, raw: bytes) -> None:
        body = self._json_body(raw)
        ids = body.get("requestIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "'requestIds' must be an array of request id strings")
        if len(ids) > MAX_LIMIT:
            raise ApiError(400, f"'requestIds' may hold at most {MAX_LIMIT} ids")
        clean = [_uuid(i) for i in ids]
        conn = self._open()
        try:
            rows = conn.execute(f"SELECT * FROM requests WHERE id IN ({_in(clean)})", clean).fetchall() if clean else []
            by_id = {r["id"]: r for r in rows}
            records = records_for(conn, [by_id[i] for i in clean if i in by_id], include_body=True)
        finally:
            conn.close()
        self._envelope(200, records)

    # -- async log ingestion -------------------------------------------------------------------
    def _log(self, path_provider: str | None) -> None:
        raw = self._read_body()
        model: Any = _MISSING
        if raw is None:
            self._text(400, "Payload too large")
            return
        if len(raw) > MAX_PAYLOAD:
            # Helicone measures JSON.stringify(payload): compact JSON may still fit
            try:
                model = json.loads(raw)
                too_big = len(json.dumps(model, ensure_ascii=False, separators=(",", ":"))) > MAX_PAYLOAD
            except (ValueError, RecursionError):
                too_big = True
            if too_big:
                self._text(400, "Payload too large")
                return
        if not self.server_api.authorized(self.headers):
            self._text(401, "Unauthorized")
            return
        if model is _MISSING:
            try:
                model = json.loads(raw) if raw.strip() else None
            except (ValueError, RecursionError) as e:
                raise ApiError(400, f"Invalid JSON body: {e}") from None
        if _SURROGATE_ESCAPE.search(raw):
            model = scrub_surrogates(model)
        error = validate_async_log(model)
        if error is not None:
            self._json(400, {"error": error})
            return
        try:
            rid = self.server_api.ingest(model, list(self.headers.items()), path_provider)
        except Exception as e:  # Helicone: a logging failure after validation -> 200 {"error": ...}
            logger.exception("helicone api: async log could not be recorded")
            self._json(200, {"error": str(e)})
            return
        self._text(200, "ok", [("helicone-id", rid)])
