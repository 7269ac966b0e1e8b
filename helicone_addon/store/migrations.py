"""Schema of the log, as small ordered migration functions (in the style of simonw/llm).

Each function runs once per database, in order; applied names are kept in `_migrations`.
The column names of `requests` are a public interface: users query them by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from .. import render
from ..columns import added_in

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_requests(db: sqlite_utils.Database) -> None:
    db["requests"].create(
        added_in(1),
        pk="id",
    )
    db["requests"].create_index(["created_at"])
    db["requests"].create_index(["model"])
    db["requests"].create_index(["user_id"])
    db["requests"].create_index(["session_id"])
    db["requests"].create_index(["provider"])


@migration
def m002_properties(db: sqlite_utils.Database) -> None:
    db["properties"].create(
        {"request_id": str, "key": str, "value": str},
        pk=("request_id", "key"),
        foreign_keys=[("request_id", "requests", "id")],
    )
    db["properties"].create_index(["key", "value"])


@migration
def m003_feedback_scores(db: sqlite_utils.Database) -> None:
    db["feedback"].create(
        {"request_id": str, "rating": int, "created_at": str},
        pk="request_id",
        foreign_keys=[("request_id", "requests", "id")],
    )
    db["scores"].create(
        {"request_id": str, "name": str, "value": int, "created_at": str},
        pk=("request_id", "name"),
        foreign_keys=[("request_id", "requests", "id")],
    )


@migration
def m004_counters(db: sqlite_utils.Database) -> None:
    """Store health counters users can query (rows spilled, dropped, reloaded)."""
    db["store_counters"].create({"name": str, "value": int}, pk="name")


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration; returns the names applied now."""
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.conn:
            fn(db)
            db["_migrations"].insert(
                {"name": fn.__name__, "applied_at": _now()}, replace=True
            )
        applied.append(fn.__name__)
    return applied


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@migration
def m005_fts(db: sqlite_utils.Database) -> None:
    """Full-text search over prompts and responses (`helicone-addon logs -q`, Datasette's search box).

    An external-content FTS5 table `requests_fts` kept in sync by triggers on `requests`.
    `replace=True` makes a re-run after an interrupted first run safe (sqlite-utils runs DDL with
    executescript, which commits as it goes).
    """
    db["requests"].enable_fts(["request_body", "response_body"], create_triggers=True, replace=True)


# tables whose changes the fleet shipper copies to PostgreSQL, with their request id column
SHIPPED_TABLES = {"requests": "id", "properties": "request_id", "feedback": "request_id", "scores": "request_id"}


@migration
def m006_shipper(db: sqlite_utils.Database) -> None:
    """The outbox of the fleet shipper (helicone_addon.fleet.postgres): while a shipper is registered
    (a row in `shipper_state`), triggers note the request id of every row written to the shipped
    tables in `shipper_outbox`, in commit order (AUTOINCREMENT: a sequence number is never reused).
    The shipper copies those requests to PostgreSQL and then deletes their outbox entries. Without a
    registered shipper the triggers do nothing."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS shipper_state ("
        " target TEXT PRIMARY KEY,"  # the PostgreSQL database shipped to (URL without password)
        " hwm INTEGER NOT NULL DEFAULT 0,"  # the last outbox sequence number shipped
        " backfill_from INTEGER NOT NULL DEFAULT 0,"  # requests.rowid shipped so far by the backfill
        " backfill_to INTEGER NOT NULL DEFAULT 0,"  # last requests.rowid written before registration
        " shipped INTEGER NOT NULL DEFAULT 0,"  # requests shipped (a re-shipped request counts again)
        " registered_at REAL NOT NULL,"  # unix time
        " last_shipped_at REAL)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS shipper_outbox ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, queued_at REAL NOT NULL)"
    )
    now = "(julianday('now') - 2440587.5) * 86400.0"
    for table, id_column in SHIPPED_TABLES.items():
        for event in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS shipper_{table}_{event.lower()} AFTER {event} ON [{table}] "
                "WHEN EXISTS (SELECT 1 FROM shipper_state) BEGIN "
                f"INSERT INTO shipper_outbox (request_id, queued_at) VALUES (NEW.[{id_column}], {now}); END"
            )


@migration
def m007_text_search(db: sqlite_utils.Database) -> None:
    """Searchable text: `prompt_text` and `response_text` (a streamed answer joined), filled in for
    the rows already logged, and the full-text index rebuilt over them instead of the raw bodies
    (in which a streamed answer is split across events and never matches a phrase)."""
    table = db["requests"]
    for name, type_ in added_in(7).items():
        if name not in table.columns_dict:
            table.add_column(name, type_)
    if db["requests_fts"].exists():  # drop the old index first: the back-fill fires no triggers
        table.disable_fts()
    last = -1
    while True:  # in batches, so a large log is never read into memory at once
        rows = db.execute(
            "SELECT rowid, api, status, request_body, response_body FROM requests WHERE rowid > ? ORDER BY rowid LIMIT 500",
            [last],
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        updates = [(*render.texts(api, req, resp, status=status), rowid) for rowid, api, status, req, resp in rows]
        db.conn.executemany("UPDATE requests SET prompt_text = ?, response_text = ? WHERE rowid = ?", updates)
    table.enable_fts(["prompt_text", "response_text"], create_triggers=True, replace=True)


@migration
def m008_replay(db: sqlite_utils.Database) -> None:
    """Record and replay: chunk arrival of streams, and the links of replayed and re-run calls."""
    for name, typ in added_in(8).items():
        if name not in db["requests"].columns_dict:  # a re-run after an interrupted first run
            db["requests"].add_column(name, typ)
    db["requests"].create_index(["replayed_from"], if_not_exists=True)
    db["requests"].create_index(["rerun_of"], if_not_exists=True)
