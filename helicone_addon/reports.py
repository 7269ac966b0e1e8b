"""Analytics over the log: pure query functions that return lists of dicts (no printing).

Used by `helicone-addon report`, `logs` and `sessions` (see cli/report.py, cli/logs.py,
cli/sessions.py). Every function takes a `sqlite_utils.Database` opened on the log and a `Filters`,
and only reads.

Definitions (the README and the tests rely on them):

* a call is an *error* when it got no HTTP response (status NULL), an HTTP status >= 400, or has a
  non-empty `error` column (e.g. an error event inside a 200 stream);
* *day* is the UTC calendar day of `created_at` (its first 10 characters);
* latency percentiles use the nearest-rank method over the calls whose `latency_ms` is known:
  p-th percentile of N sorted values = value at 1-based rank ceil(p/100 * N); None when N = 0;
* token and cost sums treat NULL as 0; `unpriced` counts successful calls whose cost is unknown,
  so a cost total can be read as "at least";
* time filters compare `created_at` (ISO-8601 UTC) as text: `since` is inclusive, `until` exclusive;
* filters are compiled by filters.py, the same code as the local API's query filters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from .columns import LOG_COLUMNS
from .filters import (
    ERROR_SQL,
    FilterError,
    all_of,
    any_of,
    compile_filter,
    leaf,
    parse_time,  # noqa: F401 - the CLI's time parser is the filters' one
)

# Bad arguments (unknown group-by, malformed filter or time, ...) raise the filters' one error type.
ReportError = FilterError


# ---------------------------------------------------------------------------------------------
# filters

STATUS_HELP = "an HTTP status (429), a class (2xx, 4xx, 5xx), 'error', 'ok' or 'none' (no response)"


@dataclass
class Filters:
    """Which calls a report covers. Empty lists mean "any"; several values of one filter are OR-ed,
    different filters are AND-ed. Compiled by filters.py, like the local API's query filters."""

    since: str | None = None  # normalized ISO-8601 UTC, inclusive
    until: str | None = None  # normalized ISO-8601 UTC, exclusive
    users: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # exact, or a glob when it has * ? [
    providers: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    properties: list[tuple[str, str]] = field(default_factory=list)  # (key, value): all must match
    statuses: list[str] = field(default_factory=list)  # see STATUS_HELP

    def tree(self) -> Any:
        """The filter tree (filters.py's vocabulary, the API's query AST) of these filters."""
        nodes: list[Any] = []
        if self.since:
            nodes.append(leaf("request", "created_at", "gte", self.since))
        if self.until:
            nodes.append(leaf("request", "created_at", "lt", self.until))
        for column, values in (("user_id", self.users), ("provider", self.providers), ("session_id", self.sessions)):
            if values:
                nodes.append(any_of([leaf("request", column, "equals", v) for v in values]))
        if self.models:
            nodes.append(any_of([
                leaf("response", "model", "glob" if any(c in m for c in "*?[") else "equals", m) for m in self.models
            ]))
        for key, value in self.properties:
            nodes.append({"properties": {key: {"equals": value}}})
        if self.statuses:
            nodes.append(any_of([status_tree(s) for s in self.statuses]))
        return all_of(nodes)

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition on the alias `r` (the requests table) and its parameters."""
        return compile_filter(self.tree())


def status_tree(spec: str) -> Any:
    """One --status value -> a filter tree (raises ReportError)."""
    s = spec.strip().lower()
    rmt = "request_response_rmt"
    if re.fullmatch(r"\d{3}", s):
        return leaf(rmt, "status", "equals", int(s))
    if re.fullmatch(r"[1-5]xx", s):
        lo = int(s[0]) * 100
        return all_of([leaf(rmt, "status", "gte", lo), leaf(rmt, "status", "lt", lo + 100)])
    if s in ("error", "errors", "err", "ok"):
        return leaf(rmt, "is_error", "equals", s != "ok")
    if s in ("none", "null"):
        return leaf(rmt, "no_response", "equals", True)
    raise ReportError(f"unknown status filter {spec!r}: use {STATUS_HELP}")


def parse_status(spec: str) -> str:
    """Validate a --status value (raises ReportError)."""
    status_tree(spec)
    return spec.strip().lower()


def parse_property(spec: str) -> tuple[str, str]:
    """'key=value' -> (key, value)."""
    key, sep, value = spec.partition("=")
    if not sep or not key.strip():
        raise ReportError(f"bad property filter {spec!r}: use KEY=VALUE")
    return key.strip(), value


# ---------------------------------------------------------------------------------------------
# helpers


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the value at 1-based rank ceil(p/100 * N) of the sorted values."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def normalize_path(path: str | None) -> str:
    """Session path in canonical form: leading '/', no trailing or doubled '/'; empty -> '/'."""
    parts = [p for p in (path or "").strip().split("/") if p]
    return "/" + "/".join(parts)


def _round_money(d: dict[str, Any]) -> dict[str, Any]:
    """Drop float-summation noise (0.009059999999999999 -> 0.00906); 12 decimals keep every real digit."""
    for k in ("cost_usd", "cache_saved_usd"):
        if isinstance(d.get(k), float):
            d[k] = round(d[k], 12)
    return d


def has_fts(db: sqlite_utils.Database) -> bool:
    return db["requests_fts"].exists()


# ---------------------------------------------------------------------------------------------
# report

GROUPS: dict[str, str] = {
    "model": "r.model",
    "provider": "r.provider",
    "user": "r.user_id",
    "session": "r.session_id",
    "day": "substr(r.created_at, 1, 10)",
}
GROUP_HELP = "model, provider, user, session, day, property:<name>"

# metric -> SQL aggregate (over alias r)
AGGREGATES: dict[str, str] = {
    "calls": "count(*)",
    "errors": f"coalesce(sum(CASE WHEN {ERROR_SQL} THEN 1 ELSE 0 END), 0)",
    "rate_limited": "coalesce(sum(CASE WHEN r.rate_limited THEN 1 ELSE 0 END), 0)",
    "retries": "coalesce(sum(r.retries), 0)",
    "cache_hits": "coalesce(sum(CASE WHEN r.cache_hit THEN 1 ELSE 0 END), 0)",
    "prompt_tokens": "coalesce(sum(r.prompt_tokens), 0)",
    "completion_tokens": "coalesce(sum(r.completion_tokens), 0)",
    "total_tokens": "coalesce(sum(r.total_tokens), 0)",
    "cached_tokens": "coalesce(sum(r.cached_tokens), 0)",
    "cache_write_tokens": "coalesce(sum(r.cache_write_tokens), 0)",
    "reasoning_tokens": "coalesce(sum(r.reasoning_tokens), 0)",
    "cost_usd": "total(r.cost_usd)",
    "cache_saved_usd": "total(r.cache_saved_usd)",
    "unpriced": f"coalesce(sum(CASE WHEN r.cost_usd IS NULL AND NOT {ERROR_SQL} THEN 1 ELSE 0 END), 0)",
}
PERCENTILES = {"latency_p50_ms": 50, "latency_p95_ms": 95}
METRICS = [*AGGREGATES, *PERCENTILES]


def parse_group_by(specs: Iterable[str]) -> list[str]:
    """['model,day', 'property:team'] -> ['model', 'day', 'property:team'] (validated, deduplicated).

    'none' or 'total' alone means no grouping (one row of totals)."""
    out: list[str] = []
    for spec in specs:
        for part in spec.split(","):
            g = part.strip()
            if not g:
                continue
            low = g.lower()
            if low in ("none", "total", "all"):
                continue
            if low.startswith(("property:", "prop:", "p:")):
                name = g.split(":", 1)[1].strip()
                if not name:
                    raise ReportError(f"bad group-by {g!r}: property:<name> needs a name")
                g = f"property:{name}"
            elif low in GROUPS:
                g = low
            elif low in ("user_id", "session_id"):
                g = low[:-3]
            else:
                raise ReportError(f"unknown group-by {g!r}: use {GROUP_HELP}")
            if g not in out:
                out.append(g)
    return out


def report(
    db: sqlite_utils.Database,
    group_by: Sequence[str] = ("model",),
    filters: Filters | None = None,
    sort: str | None = None,
) -> list[dict[str, Any]]:
    """Aggregates per group. Each row: the group keys (named as in group_by, NULL -> None), then
    METRICS. With group_by=[] one row of totals, even over no calls; otherwise [] when nothing matches.

    Order: by sort (a metric, descending) if given; else by the group keys when grouping by day,
    else by cost then calls, descending. Ties and None keys go last, deterministically."""
    groups = parse_group_by(group_by)
    filters = filters or Filters()
    if sort is not None and sort not in METRICS and sort not in groups:
        raise ReportError(f"unknown sort {sort!r}: use one of {', '.join(METRICS)} or a group-by")

    key_exprs: list[str] = []
    joins: list[str] = []
    join_params: list[Any] = []
    for i, g in enumerate(groups):
        if g.startswith("property:"):
            joins.append(f"LEFT JOIN properties pg{i} ON pg{i}.request_id = r.id AND pg{i}.key = ?")
            join_params.append(g.split(":", 1)[1])
            key_exprs.append(f"pg{i}.value")
        else:
            key_exprs.append(GROUPS[g])
    where, where_params = filters.where()
    params = join_params + where_params
    keys_sql = "".join(f"{e} AS k{i}, " for i, e in enumerate(key_exprs))
    group_sql = f" GROUP BY {', '.join(f'k{i}' for i in range(len(groups)))}" if groups else ""
    sql = (
        f"SELECT {keys_sql}"
        + ", ".join(f"{expr} AS {name}" for name, expr in AGGREGATES.items())
        + f" FROM requests r {' '.join(joins)} WHERE {where}{group_sql}"
    )
    out: dict[tuple, dict[str, Any]] = {}
    for row in db.execute(sql, params).fetchall():
        key = tuple(row[: len(groups)])
        d: dict[str, Any] = dict(zip(groups, key))
        d.update(zip(AGGREGATES, row[len(groups):]))
        _round_money(d)
        out[key] = d
    if groups and not any(d["calls"] for d in out.values()):
        return []

    latencies: dict[tuple, list[float]] = {k: [] for k in out}
    lat_sql = (
        f"SELECT {keys_sql}r.latency_ms FROM requests r {' '.join(joins)} "
        f"WHERE {where} AND r.latency_ms IS NOT NULL"
    )
    for row in db.execute(lat_sql, params).fetchall():
        latencies.setdefault(tuple(row[: len(groups)]), []).append(row[len(groups)])
    for key, d in out.items():
        for name, p in PERCENTILES.items():
            d[name] = percentile(latencies.get(key, []), p)

    rows = list(out.values())
    return _sorted(rows, groups, sort)


def _sorted(rows: list[dict], groups: list[str], sort: str | None) -> list[dict]:
    def keyval(v: Any) -> tuple:
        return (v is None, "" if v is None else str(v))

    rows.sort(key=lambda d: tuple(keyval(d[g]) for g in groups))  # stable base order
    if sort in groups:
        return rows
    if sort is None and "day" in groups:
        return rows
    metric = sort or "cost_usd"
    secondary = "calls" if metric != "calls" else "cost_usd"

    def metric_key(d: dict) -> tuple:
        v, w = d.get(metric), d.get(secondary)
        return (v is None, -(v or 0), -(w or 0))

    rows.sort(key=metric_key)
    return rows


# ---------------------------------------------------------------------------------------------
# logs



def logs(
    db: sqlite_utils.Database,
    filters: Filters | None = None,
    limit: int | None = 3,
    query: str | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The latest `limit` matching calls (None or 0: all), oldest first (newest last, as `llm logs`).

    query: full-text search over request and response bodies (FTS5 table requests_fts); each word
    must occur (words are quoted, so FTS operators in user input are taken literally)."""
    filters = filters or Filters()
    cols = list(columns) if columns else [c for c in LOG_COLUMNS if c in _request_columns(db)]
    where, params = filters.where()
    if query is not None and query.strip():
        if not has_fts(db):
            raise ReportError("the log has no full-text index (requests_fts); run migrations first")
        quoted = db.quote_fts(query)
        if not quoted:
            raise ReportError(f"empty search query {query!r}")
        where += " AND r.rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ?)"
        params.append(quoted)
    sql = f"SELECT {', '.join('r.' + c for c in cols)} FROM requests r WHERE {where} ORDER BY r.created_at DESC, r.rowid DESC"
    if limit:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = [dict(zip(cols, row)) for row in db.execute(sql, params).fetchall()]
    rows.reverse()
    return rows


def _request_columns(db: sqlite_utils.Database) -> set[str]:
    return set(db["requests"].columns_dict)


# ---------------------------------------------------------------------------------------------
# sessions


def sessions(
    db: sqlite_utils.Database, filters: Filters | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """One row per session id among the matching calls, most recently active first:
    session_id, session_name (latest non-empty name logged for it), calls, errors, total_tokens,
    cost_usd, first_at, last_at."""
    filters = filters or Filters()
    where, params = filters.where()
    sql = f"""
        SELECT r.session_id,
          (SELECT s.session_name FROM requests s
            WHERE s.session_id = r.session_id AND coalesce(s.session_name, '') != ''
            ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1) AS session_name,
          count(*) AS calls,
          {AGGREGATES['errors']} AS errors,
          {AGGREGATES['total_tokens']} AS total_tokens,
          {AGGREGATES['cost_usd']} AS cost_usd,
          min(r.created_at) AS first_at,
          max(r.created_at) AS last_at
        FROM requests r
        WHERE r.session_id IS NOT NULL AND r.session_id != '' AND {where}
        GROUP BY r.session_id
        ORDER BY last_at DESC, r.session_id
    """
    if limit:
        sql += " LIMIT ?"
        params.append(int(limit))
    cur = db.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [_round_money(dict(zip(names, row))) for row in cur.fetchall()]


SESSION_CALL_COLUMNS = [
    "id", "created_at", "session_path", "session_name", "provider", "model", "status",
    "latency_ms", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "cache_hit",
    "error",
]  # fmt: skip


def session_calls(
    db: sqlite_utils.Database, session_id: str, filters: Filters | None = None
) -> list[dict[str, Any]]:
    """The calls of one session in time order; `path` is the normalized session_path."""
    filters = filters or Filters()
    where, params = filters.where()
    sql = (
        f"SELECT {', '.join('r.' + c for c in SESSION_CALL_COLUMNS)}, {ERROR_SQL} AS is_error "
        f"FROM requests r WHERE r.session_id = ? AND {where} ORDER BY r.created_at, r.rowid"
    )
    out = []
    for row in db.execute(sql, [session_id, *params]).fetchall():
        d = dict(zip([*SESSION_CALL_COLUMNS, "is_error"], row))
        d["path"] = normalize_path(d["session_path"])
        d["is_error"] = bool(d["is_error"])
        out.append(d)
    return out


NODE_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms")


def session_tree(
    db: sqlite_utils.Database, session_id: str, filters: Filters | None = None
) -> list[dict[str, Any]]:
    """A session's calls as a tree by session_path, flattened depth-first (parents before children,
    siblings in order of their first call). [] when the session has no matching call.

    Node keys: path, name (last segment, '/' for the root), depth, parent, own_calls (calls logged at
    exactly this path), and over the whole subtree (node totals include children): calls, errors,
    prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms (sum of the calls'
    latencies), first_at, last_at. The root '/' always comes first and holds the session's totals;
    calls with no path count at the root."""
    calls = session_calls(db, session_id, filters)
    if not calls:
        return []
    nodes: dict[str, dict[str, Any]] = {}

    def node(path: str) -> dict[str, Any]:
        n = nodes.get(path)
        if n is None:
            parts = [p for p in path.split("/") if p]
            n = {
                "path": path,
                "name": parts[-1] if parts else "/",
                "depth": len(parts),
                "parent": None if not parts else "/" + "/".join(parts[:-1]),
                "own_calls": 0,
                "calls": 0,
                "errors": 0,
                **{k: 0 for k in NODE_SUMS},
                "cost_usd": 0.0,
                "latency_ms": 0.0,
                "first_at": None,
                "last_at": None,
            }
            nodes[path] = n
        return n

    for c in calls:
        parts = [p for p in c["path"].split("/") if p]
        chain = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
        node(c["path"])["own_calls"] += 1
        for p in chain:
            n = node(p)
            n["calls"] += 1
            n["errors"] += int(c["is_error"])
            for k in NODE_SUMS:
                n[k] += c[k] or 0
            if n["first_at"] is None or c["created_at"] < n["first_at"]:
                n["first_at"] = c["created_at"]
            if n["last_at"] is None or c["created_at"] > n["last_at"]:
                n["last_at"] = c["created_at"]

    children: dict[str, list[dict]] = {}
    for n in nodes.values():
        if n["parent"] is not None:
            children.setdefault(n["parent"], []).append(n)
    out: list[dict[str, Any]] = []

    def walk(n: dict) -> None:
        out.append(n)
        for child in sorted(children.get(n["path"], []), key=lambda c: (c["first_at"] or "", c["name"])):
            walk(child)

    walk(nodes["/"])
    for n in out:
        _round_money(n)
        n["latency_ms"] = round(n["latency_ms"], 3)
    return out
