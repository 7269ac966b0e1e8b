"""The one translation of "which calls" into SQL over the log's `requests r`.

Two front ends produce the same filter tree and compile it here:

* the local API's query body (Helicone's filter AST: ``"all"`` | leaf
  ``{"<table>": {"<column>": {"<op>": value}}}`` | branch ``{"left": .., "operator": "and" | "or",
  "right": ..}``), see api/query.py;
* the command line's ``--since/--user/--model/--status/...`` (``reports.Filters``), which builds a
  tree with `leaf`, `any_of` and `all_of`.

Every column a filter may name maps to a fixed SQL expression (`TABLES`, built from the log's
columns in columns.py); table, column and operator names from the user are only ever dictionary
keys, and values only ever `?` parameters. Bad input raises `FilterError` with a message meant for
the user (the API answers it with a 400, the CLI exits with status 2).

Times go through `parse_time`, the one parser of user-given times: ISO-8601 dates and date-times
(naive means UTC), epoch milliseconds, and for the CLI relative ages (30m, 12h, 7d, 2w), `today`,
`yesterday` and `now`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .columns import BY_NAME


class FilterError(ValueError):
    """A filter, sort, paging or time value that is not accepted. The message is meant for users."""


MAX_FILTER_DEPTH = 64

TEXT, NUMBER, TIMESTAMP, BOOL = "text", "number", "timestamp", "bool"

# Helicone's operators, plus `glob` (SQLite GLOB: case-sensitive, * ? [...]) on text columns.
OPS: dict[str, tuple[str, ...]] = {
    TEXT: ("equals", "not-equals", "like", "ilike", "contains", "not-contains", "glob"),
    NUMBER: ("equals", "not-equals", "gte", "lte", "lt", "gt"),
    TIMESTAMP: ("equals", "gte", "lte", "lt", "gt"),
    BOOL: ("equals",),
}
_CMP = {"equals": "=", "gte": ">=", "lte": "<=", "lt": "<", "gt": ">"}
_NEGATIVE = {"not-equals": "equals", "not-contains": "contains"}

# A call is an error when it got no HTTP response, an HTTP status >= 400, or has an error message
# (e.g. an error event inside a 200 stream). Always 0 or 1, never NULL.
ERROR_SQL = "(r.status IS NULL OR r.status >= 400 OR coalesce(r.error, '') != '')"


# ---------------------------------------------------------------------------------------------
# times


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_utc(dt: datetime) -> str:
    """The text form of `created_at`: 'YYYY-MM-DDTHH:MM:SS.mmmZ' (UTC)."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_epoch_ms(ms: float) -> str:
    return iso_utc(datetime.fromtimestamp(ms / 1000.0, UTC))


def parse_time(
    value: Any, *, end: bool = False, now: datetime | None = None, relative: bool = True, where: str = "time"
) -> str:
    """A user-given time -> ISO-8601 UTC text comparable with `created_at`.

    Accepts an ISO date or date-time (naive means UTC; 'Z' and offsets allowed), epoch milliseconds
    (a number, or a string of 11 digits or more), and with relative=True a relative age such as 30m,
    12h, 7d, 2w (that long before now), 'today', 'yesterday' or 'now'. With end=True a bare date (or
    today/yesterday) means the end of that day, so `--until 2025-05-31` includes the 31st.
    """
    if isinstance(value, bool):
        raise FilterError(f"{where}: expected an ISO-8601 timestamp string, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise FilterError(f"{where}: timestamp must be finite")
        return _from_epoch_ms(value)
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{where}: expected an ISO-8601 timestamp string, got {json_type(value)}")
    text = value.strip()
    if re.fullmatch(r"\d{11,}", text):
        return _from_epoch_ms(int(text))
    if relative:
        now = now or datetime.now(UTC)
        low = text.lower()
        m = _RELATIVE.match(low)
        if m:
            return iso_utc(now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}))
        if low == "now":
            return iso_utc(now)
        if low in ("today", "yesterday"):
            day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            if low == "yesterday":
                day -= timedelta(days=1)
            return iso_utc(day + timedelta(days=1) if end else day)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        if relative:
            raise FilterError(
                f"{where}: bad time {value!r}: use an ISO date/time (2025-05-01, 2025-05-01T12:00), "
                "a relative age (30m, 12h, 7d, 2w), 'today' or 'yesterday'"
            ) from None
        raise FilterError(f"{where}: {value!r} is not an ISO-8601 timestamp (e.g. 2025-01-31T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if end and _BARE_DATE.fullmatch(text):
        dt += timedelta(days=1)
    return iso_utc(dt)


# ---------------------------------------------------------------------------------------------
# values


def json_type(v: Any) -> str:
    """The JSON-ish name of a value's type, for messages."""
    return type(v).__name__ if v is not None else "null"


def _number(v: Any, where: str) -> float | int:
    if isinstance(v, bool) or v is None:
        raise FilterError(f"{where}: expected a number, got {json_type(v)}")
    if isinstance(v, str):
        try:
            v = float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            raise FilterError(f"{where}: {v!r} is not a number") from None
    if not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise FilterError(f"{where}: expected a finite number, got {json_type(v)}")
    return v


def _text(v: Any, where: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise FilterError(f"{where}: expected a string, got {json_type(v)}")


def as_bool(v: Any, where: str) -> int:
    """true/false (or their strings) -> 1/0."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return int(v.lower() == "true")
    raise FilterError(f"{where}: expected true or false, got {json_type(v)}")


# ---------------------------------------------------------------------------------------------
# what a filter may name


def _col(name: str, kind: str | None = None) -> tuple[str, str]:
    """A column of the log (it must exist in columns.py) with its filter kind: numbers for int and
    float columns, text for the others, unless `kind` says it is a timestamp or a flag."""
    column = BY_NAME[name]
    return f"r.{name}", kind or (NUMBER if column.type in (int, float) else TEXT)


_FEEDBACK_RATING = "(SELECT f.rating FROM feedback f WHERE f.request_id = r.id)"
_FEEDBACK_CREATED = "(SELECT f.created_at FROM feedback f WHERE f.request_id = r.id)"
_RESPONSE_CREATED = (
    "strftime('%Y-%m-%dT%H:%M:%fZ', r.created_at, '+' || (COALESCE(r.latency_ms, 0) / 1000.0) || ' seconds')"
)

_RMT: dict[str, tuple[str, str]] = {
    "request_id": _col("id"),
    "request_created_at": _col("created_at", TIMESTAMP),
    "response_created_at": (_RESPONSE_CREATED, TIMESTAMP),
    "latency": _col("latency_ms"),
    "cost": _col("cost_usd"),
    "provider": _col("provider"),
    "time_to_first_token": _col("ttft_ms"),
    "status": _col("status"),
    "model": _col("model"),
    "user_id": _col("user_id"),
    "prompt_tokens": _col("prompt_tokens"),
    "completion_tokens": _col("completion_tokens"),
    "prompt_cache_read_tokens": _col("cached_tokens"),
    "prompt_cache_write_tokens": _col("cache_write_tokens"),
    "total_tokens": _col("total_tokens"),
    "target_url": _col("target_url"),
    "cache_reference_id": _col("cache_reference_id"),
    "cached": _col("cache_hit", BOOL),
    "helicone-score-feedback": (_FEEDBACK_RATING, BOOL),
    # local extras
    "session_id": _col("session_id"),
    "source": _col("source"),
    "streamed": _col("streamed", BOOL),
    "is_error": (ERROR_SQL, BOOL),
    "no_response": ("(r.status IS NULL)", BOOL),
}

TABLES: dict[str, dict[str, tuple[str, str]]] = {
    "request": {
        "id": _col("id"),
        "created_at": _col("created_at", TIMESTAMP),
        "user_id": _col("user_id"),
        "model": ("COALESCE(r.model_requested, r.model)", TEXT),
        "path": _col("path"),
        "prompt": _col("request_body"),
        "provider": _col("provider"),
        "session_id": _col("session_id"),
        "source": _col("source"),
    },
    "response": {
        "status": _col("status"),
        "model": _col("model"),
        "body_model": _col("model"),
        "body_tokens": _col("total_tokens"),
        "body_completion": _col("response_body"),
    },
    "feedback": {
        "rating": (_FEEDBACK_RATING, BOOL),
        "created_at": (_FEEDBACK_CREATED, TIMESTAMP),
    },
    "request_response_rmt": _RMT,
    "request_response_log": _RMT,
    "sessions_request_response_rmt": {
        "session_session_id": _col("session_id"),
        "session_session_name": _col("session_name"),
    },
    "properties_table": {
        "key": ("p.key", TEXT),
        "value": ("p.value", TEXT),
    },
}
_RMT_TABLES = ("request_response_rmt", "request_response_log")

# Helicone keeps the session headers as properties; here they are columns.
SESSION_PROPERTIES = {
    "helicone-session-id": _col("session_id")[0],
    "helicone-session-path": _col("session_path")[0],
    "helicone-session-name": _col("session_name")[0],
}


# ---------------------------------------------------------------------------------------------
# building trees (for front ends other than the API)


def leaf(table: str, column: str, op: str, value: Any) -> dict:
    return {table: {column: {op: value}}}


def _join(nodes: Sequence[Any], operator: str) -> Any:
    """A balanced branch tree (depth log2 n, so long lists stay under MAX_FILTER_DEPTH)."""
    if not nodes:
        return "all"
    if len(nodes) == 1:
        return nodes[0]
    mid = len(nodes) // 2
    return {"left": _join(nodes[:mid], operator), "operator": operator, "right": _join(nodes[mid:], operator)}


def any_of(nodes: Sequence[Any]) -> Any:
    return _join(nodes, "or")


def all_of(nodes: Sequence[Any]) -> Any:
    return _join([n for n in nodes if n != "all"], "and")


# ---------------------------------------------------------------------------------------------
# compiling


def _condition(expr: str, kind: str, op: str, value: Any, params: list, where: str) -> str:
    """One `expr <op> ?` condition; appends its parameter."""
    if op not in OPS[kind]:
        raise FilterError(
            f"{where}: operator {op!r} is not allowed on a {kind} column; allowed: {', '.join(OPS[kind])}"
        )
    if kind == TEXT:
        params.append(_text(value, where))
        return {
            "equals": f"{expr} = ?",
            "not-equals": f"({expr} IS NULL OR {expr} != ?)",
            "like": f"{expr} LIKE ?",  # case-sensitive: connections run PRAGMA case_sensitive_like = ON
            "ilike": f"lower({expr}) LIKE lower(?)",
            "contains": f"instr(lower({expr}), lower(?)) > 0",
            "not-contains": f"({expr} IS NULL OR instr(lower({expr}), lower(?)) = 0)",
            "glob": f"{expr} GLOB ?",
        }[op]
    if kind == NUMBER:
        params.append(_number(value, where))
        if op == "not-equals":
            return f"({expr} IS NULL OR {expr} != ?)"
        return f"{expr} {_CMP[op]} ?"
    if kind == TIMESTAMP:
        params.append(parse_time(value, relative=False, where=where))
        return f"{expr} {_CMP[op]} ?"
    params.append(as_bool(value, where))
    return f"{expr} = ?"


def _ops(node: Any, where: str) -> list[tuple[str, Any]]:
    if not isinstance(node, dict) or not node:
        raise FilterError(f'{where}: expected an operator object such as {{"equals": ...}}, got {json_type(node)}')
    return list(node.items())


def _keyed_exists(
    table_sql: str,
    key_sql: str,
    key_params: list,
    value_sql: str,
    kind: str,
    ops: list[tuple[str, Any]],
    params: list,
    where: str,
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
        raise FilterError(f'{where}: expected {{"<property>": {{"<op>": value}}}}')
    parts = []
    for key, opnode in spec.items():
        w = f"{where}.{key}"
        ops = _ops(opnode, w)
        col = SESSION_PROPERTIES.get(key.lower())
        if col is not None:
            parts.extend(_condition(col, TEXT, op, v, params, f"{w}.{op}") for op, v in ops)
            continue
        key_sql = "p.request_id = r.id AND lower(p.key) = lower(?)"
        parts.append(_keyed_exists("properties p", key_sql, [key], "p.value", TEXT, ops, params, w))
    return " AND ".join(parts)


def _scores_leaf(spec: Any, params: list, where: str) -> str:
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f'{where}: expected {{"<score name>": {{"<op>": number}}}}')
    parts = []
    for name, opnode in spec.items():
        w = f"{where}.{name}"
        parts.append(
            _keyed_exists(
                "scores s", "s.request_id = r.id AND s.name = ?", [name], "s.value", NUMBER, _ops(opnode, w), params, w
            )
        )
    return " AND ".join(parts)


def _table_leaf(table: str, spec: Any, params: list, where: str) -> list[str]:
    columns = TABLES.get(table)
    if columns is None:
        raise FilterError(f"{where}: unknown table {table!r}; supported: {', '.join(['properties', *TABLES])}")
    if not isinstance(spec, dict) or not spec:
        raise FilterError(f'{where}: expected {{"<column>": {{"<op>": value}}}}')
    parts = []
    for col, opnode in spec.items():
        wc = f"{where}.{col}"
        if table in _RMT_TABLES and col in ("properties", "search_properties"):
            parts.append(_properties_leaf(opnode, params, wc))
            continue
        if table in _RMT_TABLES and col == "scores":
            parts.append(_scores_leaf(opnode, params, wc))
            continue
        if col not in columns:
            raise FilterError(f"{where}: unknown column {col!r}; supported: {', '.join(columns)}")
        expr, kind = columns[col]
        ops = _ops(opnode, wc)
        if table == "properties_table":
            parts.append(_keyed_exists("properties p", "p.request_id = r.id", [], expr, kind, ops, params, wc))
            continue
        parts.extend(_condition(expr, kind, op, v, params, f"{wc}.{op}") for op, v in ops)
    return parts


def build_filter(node: Any, params: list, depth: int = 0, where: str = "filter") -> str:
    """A filter tree -> a SQL boolean expression over `requests r`, parameters appended to params."""
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"filter nested deeper than {MAX_FILTER_DEPTH} levels")
    if node == "all":
        return "1 = 1"
    if not isinstance(node, dict):
        raise FilterError(
            f'{where}: expected "all", a leaf {{"<table>": {{...}}}} or a branch '
            f'{{"left", "operator", "right"}}, got {json_type(node)}'
        )
    if "operator" in node or "left" in node or "right" in node:
        op = node.get("operator")
        if op not in ("and", "or"):
            raise FilterError(f'{where}.operator: expected "and" or "or", got {op!r}')
        if "left" not in node or "right" not in node:
            raise FilterError(f'{where}: a branch needs both "left" and "right"')
        left = build_filter(node["left"], params, depth + 1, f"{where}.left")
        right = build_filter(node["right"], params, depth + 1, f"{where}.right")
        return f"(({left}) {op.upper()} ({right}))"
    if not node:
        raise FilterError(f'{where}: empty filter object; use "all" for no filter')
    parts = []
    for table, spec in node.items():
        w = f"{where}.{table}"
        if table == "properties":
            parts.append(_properties_leaf(spec, params, w))
        else:
            parts.extend(_table_leaf(table, spec, params, w))
    return "(" + " AND ".join(parts) + ")" if len(parts) > 1 else parts[0]


def compile_filter(node: Any) -> tuple[str, list[Any]]:
    """build_filter with fresh parameters: (SQL condition on `r`, params)."""
    params: list[Any] = []
    return build_filter(node, params), params
