"""Schema of the log, as small ordered migration functions (in the style of simonw/llm).

Each function runs once per database, in order; applied names are kept in `_migrations`.
The column names of `requests` are a public interface: users query them by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

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


@migration
def m006_replay(db: sqlite_utils.Database) -> None:
    """Record and replay: chunk arrival of streams, and the links of replayed and re-run calls."""
    for name, typ in added_in(6).items():
        if name not in db["requests"].columns_dict:  # a re-run after an interrupted first run
            db["requests"].add_column(name, typ)
    db["requests"].create_index(["replayed_from"], if_not_exists=True)
    db["requests"].create_index(["rerun_of"], if_not_exists=True)
