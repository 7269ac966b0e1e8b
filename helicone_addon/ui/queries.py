"""What the web view's pages show, read from the log. Plain functions of a database; no HTTP here.

Totals come from reports.py, the code behind `helicone-addon report`, so a page and the terminal
never disagree; filters are reports.Filters (the one filter compiler).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from .. import render, reports
from ..reports import ERROR_SQL, Filters, percentile

RANGES = {"24h": "24 h", "7d": "7 days", "30d": "30 days", "all": "all time"}
DEFAULT_RANGE = "7d"
PAGE_SIZE = 50

LIST_COLUMNS = [
    "id", "created_at", "provider", "model", "status", "latency_ms", "ttft_ms", "prompt_tokens",
    "completion_tokens", "total_tokens", "usage_source", "cost_usd", "cache_hit", "user_id", "session_id",
    "session_path", "error",
]  # fmt: skip


def connect(path: str | Path) -> sqlite_utils.Database:
    """A read-only handle on the log (writes are refused by SQLite: PRAGMA query_only)."""
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return sqlite_utils.Database(conn)


def range_filters(range_key: str, now: datetime | None = None) -> Filters:
    if range_key not in RANGES or range_key == "all":
        return Filters()
    return Filters(since=reports.parse_time(range_key, now=now))


# ---------------------------------------------------------------------------------------------
# overview


def _ttft(db: sqlite_utils.Database, f: Filters) -> tuple[dict[Any, list[float]], list[float]]:
    where, params = f.where()
    by_model: dict[Any, list[float]] = defaultdict(list)
    every: list[float] = []
    for model, v in db.execute(f"SELECT r.model, r.ttft_ms FROM requests r WHERE {where} AND r.ttft_ms IS NOT NULL", params):
        by_model[model].append(v)
        every.append(v)
    return by_model, every


def _with_rates(d: dict[str, Any], ttfts: list[float]) -> dict[str, Any]:
    calls = d.get("calls") or 0
    d["error_rate"] = d["errors"] / calls if calls else None
    d["cache_hit_rate"] = d["cache_hits"] / calls if calls else None
    d["ttft_p50_ms"] = percentile(ttfts, 50)
    d["ttft_p95_ms"] = percentile(ttfts, 95)
    return d


def overview(db: sqlite_utils.Database, range_key: str, now: datetime | None = None) -> dict[str, Any]:
    """Totals and per-model rows (reports.report's numbers, plus rates and TTFT) and the chart series."""
    f = range_filters(range_key, now)
    (total,) = reports.report(db, [], f)
    by_model = reports.report(db, ["model"], f)
    ttft_by_model, ttft_all = _ttft(db, f)
    _with_rates(total, ttft_all)
    for row in by_model:
        _with_rates(row, ttft_by_model.get(row["model"], []))
    return {"range": range_key, "total": total, "models": by_model, "series": series(db, f, range_key, now)}


@dataclass
class Series:
    """Per-bucket values of the overview charts. buckets: labels in time order."""

    buckets: list[str] = field(default_factory=list)
    hourly: bool = False
    cost: dict[str, dict[str, float]] = field(default_factory=dict)  # series (model) -> bucket -> USD
    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50: dict[str, float | None] = field(default_factory=dict)
    p95: dict[str, float | None] = field(default_factory=dict)


def _buckets(first: str | None, last: str | None, range_key: str, now: datetime) -> tuple[list[str], bool]:
    if range_key == "24h":
        start = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
        return [(start + timedelta(hours=i)).strftime("%Y-%m-%dT%H") for i in range(25)], True
    if range_key in ("7d", "30d"):
        days = int(range_key[:-1])
        d0 = (now - timedelta(days=days)).date()
    elif first:
        d0 = datetime.fromisoformat(first[:10]).date()
    else:
        return [], False
    d1 = now.date() if range_key != "all" or not last else max(datetime.fromisoformat(last[:10]).date(), d0)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)], False


def fold_map(db: sqlite_utils.Database, f: Filters) -> dict[str, str]:
    """requested model -> the model that answered it most often (for folding failed calls)."""
    where, params = f.where()
    counts: dict[str, Counter] = defaultdict(Counter)
    sql = (
        f"SELECT r.model_requested, r.model, count(*) FROM requests r WHERE {where} AND NOT {ERROR_SQL} "
        "AND r.model_requested IS NOT NULL AND r.model IS NOT NULL GROUP BY 1, 2"
    )
    for requested, model, n in db.execute(sql, params):
        counts[requested][model] += n
    return {req: c.most_common(1)[0][0] for req, c in counts.items()}


def series(db: sqlite_utils.Database, f: Filters, range_key: str, now: datetime | None = None) -> Series:
    """Cost per bucket by model, calls and errors per bucket, latency p50/p95 per bucket.

    A call that failed before a model answered is logged under the model it asked for; it is
    counted in the series of the model that answers that request (e.g. a failed `gpt-4o` call
    joins `gpt-4o-2024-08-06`), so failures do not show up as separate $0 series."""
    now = now or datetime.now(UTC)
    where, params = f.where()
    width = 13 if range_key == "24h" else 10
    span = db.execute(f"SELECT min(r.created_at), max(r.created_at) FROM requests r WHERE {where}", params).fetchone()
    buckets, hourly = _buckets(span[0], span[1], range_key, now)
    out = Series(buckets=buckets, hourly=hourly)
    if not buckets:
        return out
    fold = fold_map(db, f)
    sql = (
        f"SELECT substr(r.created_at, 1, {width}), r.model, r.model_requested, {ERROR_SQL}, count(*), total(r.cost_usd) "
        f"FROM requests r WHERE {where} GROUP BY 1, 2, 3, 4"
    )
    known = set(buckets)
    for bucket, model, requested, is_error, n, cost in db.execute(sql, params):
        if bucket not in known:
            continue
        name = (fold.get(requested) if is_error else None) or model or requested or "(unknown)"
        out.cost.setdefault(name, {})
        out.cost[name][bucket] = out.cost[name].get(bucket, 0.0) + cost
        out.calls[bucket] = out.calls.get(bucket, 0) + n
        if is_error:
            out.errors[bucket] = out.errors.get(bucket, 0) + n
    lat: dict[str, list[float]] = defaultdict(list)
    sql = f"SELECT substr(r.created_at, 1, {width}), r.latency_ms FROM requests r WHERE {where} AND r.latency_ms IS NOT NULL"
    for bucket, v in db.execute(sql, params):
        lat[bucket].append(v)
    for b in buckets:
        out.p50[b] = percentile(lat.get(b, []), 50)
        out.p95[b] = percentile(lat.get(b, []), 95)
    return out


# ---------------------------------------------------------------------------------------------
# requests


@dataclass
class Query:
    """The requests page's filters, from its URL (repeatable: model, provider, status, user, prop)."""

    range: str = "all"
    models: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    props: list[str] = field(default_factory=list)  # "key=value"
    q: str = ""
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> Query:
        """params: a multi-dict (Starlette's QueryParams). Raises reports.ReportError on bad input."""
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            raise reports.ReportError(f"bad page {params.get('page')!r}") from None
        query = cls(
            range=params.get("range") if params.get("range") in RANGES else "all",
            models=params.getlist("model"),
            providers=params.getlist("provider"),
            statuses=params.getlist("status"),
            users=params.getlist("user"),
            sessions=params.getlist("session"),
            props=params.getlist("prop"),
            q=(params.get("q") or "").strip(),
            page=page,
        )
        query.filters()  # validate now
        return query

    def filters(self) -> Filters:
        f = range_filters(self.range)
        f.models, f.providers, f.users, f.sessions = list(self.models), list(self.providers), list(self.users), list(self.sessions)
        f.statuses = [reports.parse_status(s) for s in self.statuses]
        f.properties = [reports.parse_property(p) for p in self.props]
        return f

    def items(self) -> list[tuple[str, str]]:
        """The URL parameters of this query (without the page)."""
        out = [("range", self.range)] if self.range != "all" else []
        for key, values in (("model", self.models), ("provider", self.providers), ("status", self.statuses),
                            ("user", self.users), ("session", self.sessions), ("prop", self.props)):
            out += [(key, v) for v in values]
        if self.q:
            out.append(("q", self.q))
        return out


def _where(db: sqlite_utils.Database, query: Query) -> tuple[str, list[Any]]:
    where, params = query.filters().where()
    if query.q:
        if not reports.has_fts(db):
            raise reports.ReportError("the log has no full-text index yet: run `helicone-addon logs` once to migrate it")
        quoted = db.quote_fts(query.q)
        where += " AND r.rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH ?)"
        params = [*params, quoted]
    return where, params


FACETS = {"model": "r.model", "provider": "r.provider", "status": "r.status", "user": "r.user_id"}


def requests_page(db: sqlite_utils.Database, query: Query) -> dict[str, Any]:
    """One page of calls (newest first), the total count and the facet counts."""
    where, params = _where(db, query)
    total = db.execute(f"SELECT count(*) FROM requests r WHERE {where}", params).fetchone()[0]
    cols = ", ".join(f"r.{c}" for c in LIST_COLUMNS)
    sql = f"SELECT {cols} FROM requests r WHERE {where} ORDER BY r.created_at DESC, r.rowid DESC LIMIT ? OFFSET ?"
    rows = [dict(zip(LIST_COLUMNS, r)) for r in db.execute(sql, [*params, PAGE_SIZE, (query.page - 1) * PAGE_SIZE])]
    facets: dict[str, list[tuple[Any, int]]] = {}
    for name, expr in FACETS.items():
        sql = f"SELECT {expr}, count(*) FROM requests r WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12"
        facets[name] = [(v, n) for v, n in db.execute(sql, params)]
    sql = (
        f"SELECT p.key, p.value, count(*) FROM properties p JOIN requests r ON r.id = p.request_id "
        f"WHERE {where} GROUP BY 1, 2 ORDER BY 1, 3 DESC LIMIT 60"
    )
    props: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, value, n in db.execute(sql, params):
        props[key].append((value, n))
    return {"rows": rows, "total": total, "facets": facets, "props": dict(props), "pages": max(1, -(-total // PAGE_SIZE))}


# ---------------------------------------------------------------------------------------------
# one call, sessions


def call(db: sqlite_utils.Database, request_id: str) -> dict[str, Any] | None:
    cur = db.execute("SELECT * FROM requests WHERE id = ?", [request_id])
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip([d[0] for d in cur.description], row))
    out["feedback"] = None
    out["scores"] = []
    if db["feedback"].exists():
        fb = db.execute("SELECT rating, created_at FROM feedback WHERE request_id = ?", [request_id]).fetchone()
        out["feedback"] = {"rating": fb[0], "created_at": fb[1]} if fb else None
    if db["scores"].exists():
        out["scores"] = [{"name": n, "value": v} for n, v in db.execute(
            "SELECT name, value FROM scores WHERE request_id = ? ORDER BY name", [request_id])]
    for key in ("properties", "request_headers", "response_headers", "attempts"):
        try:
            out[key + "_json"] = json.loads(out[key]) if out.get(key) else None
        except ValueError:
            out[key + "_json"] = None
    return out


def sessions(db: sqlite_utils.Database, range_key: str) -> list[dict[str, Any]]:
    return reports.sessions(db, range_filters(range_key), limit=500)


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def session(db: sqlite_utils.Database, session_id: str) -> dict[str, Any] | None:
    """A session as `helicone-addon sessions ID` draws it (reports.session_tree), each node with its
    own calls, plus a timeline: every call placed from its start to its end on the session's span."""
    nodes = reports.session_tree(db, session_id)
    if not nodes:
        return None
    calls = reports.session_calls(db, session_id)
    ttft = dict(db.execute("SELECT id, ttft_ms FROM requests WHERE session_id = ?", [session_id]).fetchall())
    for c in calls:
        c["start"] = _epoch(c["created_at"])
        c["end"] = c["start"] + (c["latency_ms"] or 0) / 1000
        c["ttft_ms"] = ttft.get(c["id"])
    t0 = min(c["start"] for c in calls)
    span = max(max(c["end"] for c in calls) - t0, 0.001)
    for c in calls:
        c["left_pct"] = 100 * (c["start"] - t0) / span
        c["width_pct"] = max(100 * (c["end"] - c["start"]) / span, 0.4)
        c["offset_ms"] = (c["start"] - t0) * 1000
    by_path: dict[str, list[dict]] = defaultdict(list)
    for c in calls:
        by_path[c["path"]].append(c)
    labels = render.tree_labels(nodes)
    for i, n in enumerate(nodes):
        n["label"] = labels[i]
        n["call_prefix"] = render.call_prefix(nodes, i)
    for n in nodes:  # wall-clock duration of the node's subtree: first start to last end
        inside = [c for c in calls if c["path"] == n["path"] or c["path"].startswith(n["path"].rstrip("/") + "/")]
        n["wall_ms"] = (max(c["end"] for c in inside) - min(c["start"] for c in inside)) * 1000 if inside else None
        n["left_pct"] = 100 * (min(c["start"] for c in inside) - t0) / span if inside else 0
        n["width_pct"] = max(n["wall_ms"] / 10 / span, 0.4) if inside else 0
        n["own"] = by_path.get(n["path"], [])
    name = next((c["session_name"] for c in reversed(calls) if c.get("session_name")), None)
    return {"id": session_id, "name": name, "nodes": nodes, "calls": calls, "t0": t0, "span_ms": span * 1000}
