"""Reading the fleet's log: `report`, `logs` and `sessions` over PostgreSQL.

Choice: rather than teach every report a second SQL dialect, `open_report_db(url)` copies the
needed part of the PostgreSQL log into a private in-memory SQLite database with the local log's
exact schema (the same migrations, the full-text index included) and returns it; the existing
report functions run on it unchanged and give the same answers as on a local log. What is copied
is kept small by pushing the simple filters down to PostgreSQL (time range, users, providers,
sessions, exact models), leaving out the bodies and headers when the caller does not show them
(`bodies=False`), and, for `logs -n N` without other filters, only the newest N calls. The filters
are applied again, exactly, by the reports on the copy; pushing down only narrows the copy.

The copy costs memory in proportion to what it holds: for a large fleet log, narrow it with
--since/--until. The PostgreSQL side is read in one read-only repeatable-read transaction through
a server-side cursor, so the copy is consistent even while replicas ship.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlite_utils

from ..columns import COLUMNS
from ..store.migrations import migrate
from . import pg_target

BODY_COLUMNS = ("request_body", "response_body", "request_headers", "response_headers", "usage_raw")
_FETCH = 2000


class FleetReadError(RuntimeError):
    """The fleet log cannot be read (no psycopg, unreachable server, no helicone log there)."""


def _pushdown(filters: Any) -> tuple[str, list[Any], bool]:
    """(PostgreSQL condition on alias r, params, exact): exact means the condition is the whole filter."""
    if filters is None:
        return "TRUE", [], True
    clauses: list[str] = []
    params: list[Any] = []
    if filters.since:
        clauses.append("r.created_at >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append("r.created_at < %s")
        params.append(filters.until)
    for column, values in (("user_id", filters.users), ("provider", filters.providers),
                           ("session_id", filters.sessions)):  # fmt: skip
        if values:
            clauses.append(f"r.{column} = ANY(%s)")
            params.append(list(values))
    exact = not filters.properties and not filters.statuses
    if filters.models:
        if any(any(c in m for c in "*?[") for m in filters.models):
            exact = False  # GLOB patterns are left to SQLite
        else:
            clauses.append("r.model = ANY(%s)")
            params.append(list(filters.models))
    return (" AND ".join(clauses) or "TRUE"), params, exact


def open_report_db(
    url: str,
    *,
    filters: Any = None,
    bodies: bool = True,
    newest: int | None = None,
    connect_timeout: int = 10,
) -> sqlite_utils.Database:
    """An in-memory SQLite copy of the fleet log at `url` (postgresql://...) that the functions
    of `helicone_addon.reports` can query. `filters` (a reports.Filters) narrows what is copied;
    `bodies=False` leaves bodies and headers out; `newest=N` copies only the newest N calls when
    the filters can all be applied in PostgreSQL (else everything matching is copied)."""
    try:
        import psycopg
    except ImportError:
        raise FleetReadError(
            "reading a PostgreSQL log needs psycopg: pip install 'helicone-addon[fleet]'"
        ) from None
    where, params, exact = _pushdown(filters)
    db = sqlite_utils.Database(memory=True)
    migrate(db)
    try:
        pg = psycopg.connect(url, connect_timeout=max(2, connect_timeout), application_name="helicone-addon-report")
    except psycopg.Error as e:
        raise FleetReadError(f"cannot connect to {_safe(url)}: {str(e).strip()}") from None
    try:
        pg.read_only = True
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with pg.transaction():
            have = _pg_columns(pg, "requests")
            if not have:
                raise FleetReadError(f"{_safe(url)} holds no helicone-addon log (no 'requests' table); "
                                     "start a replica with helicone_postgres set to create it")
            cols = [c.name for c in COLUMNS if (bodies or c.name not in BODY_COLUMNS) and c.name in have]
            sql = f"SELECT {', '.join('r.' + _q(c) for c in cols)} FROM requests r WHERE {where}"
            limited = bool(newest and exact)
            if limited:
                sql = f"SELECT * FROM ({sql} ORDER BY r.created_at DESC, r.id DESC LIMIT %s) r"
                params = [*params, int(newest or 0)]
            sql += " ORDER BY r.created_at, r.id"
            ids = _copy(pg, db, "requests", cols, sql, params)
            if ids and _pg_columns(pg, "properties"):
                pcols = list(db["properties"].columns_dict)
                select = f"SELECT {', '.join('p.' + _q(c) for c in pcols)} FROM properties p "
                if limited:  # a few ids
                    _copy(pg, db, "properties", pcols, select + "WHERE p.request_id = ANY(%s)", [ids])
                else:  # the same condition as the requests copied
                    _copy(pg, db, "properties", pcols,
                          select + f"JOIN requests r ON r.id = p.request_id WHERE {where}", params)
    except psycopg.Error as e:
        raise FleetReadError(f"reading {_safe(url)} failed: {str(e).strip()}") from None
    finally:
        pg.close()
    return db


def _copy(pg: Any, db: sqlite_utils.Database, table: str, cols: Sequence[str], sql: str,
          params: list[Any]) -> list[str]:  # fmt: skip
    """Stream the query's rows into the SQLite table; returns the first column's values."""
    insert = f"INSERT OR REPLACE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
    keys: list[str] = []
    with pg.cursor(name=f"helicone_copy_{table}") as cur:
        cur.itersize = _FETCH
        cur.execute(sql, params)
        while rows := cur.fetchmany(_FETCH):
            with db.conn:
                db.conn.executemany(insert, rows)
            keys.extend(r[0] for r in rows)
    return keys


def _pg_columns(pg: Any, table: str) -> set[str]:
    return {
        r[0]
        for r in pg.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s",
            [table],
        )
    }


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _safe(url: str) -> str:
    return pg_target(url)
