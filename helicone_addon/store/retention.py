"""Retention: delete rows older than `helicone_retention_days`, then the oldest rows while the log is
bigger than `helicone_max_db_mb`, and give the space back (incremental auto-vacuum). Run by the
writer's insert thread (`LogStore.apply_retention`), on the writer's connection."""

from __future__ import annotations

import logging
import sqlite3

import sqlite_utils

from .gauges import bump_counter

logger = logging.getLogger(__name__)


def apply(db: sqlite_utils.Database, days: float, max_bytes: int) -> dict[str, int]:
    """Delete rows older than `days`, then the oldest rows while the file exceeds `max_bytes`
    (0: no limit); vacuum. The number of rows deleted, by cause."""
    deleted = {"age": 0, "size": 0}
    if days:
        from datetime import UTC, datetime, timedelta

        cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
        deleted["age"] = _delete_where(db, "created_at < ?", [cutoff.replace("+00:00", "Z")])
    if max_bytes:
        for _ in range(50):
            if _db_bytes(db) <= max_bytes:
                break
            total = db.execute("SELECT count(*) FROM requests").fetchone()[0]
            if not total:
                break
            n = max(1, total // 10)
            got = _delete_where(db, "id IN (SELECT id FROM requests ORDER BY created_at LIMIT ?)", [n])
            deleted["size"] += got
            _vacuum(db)
    if deleted["age"] or deleted["size"]:
        _vacuum(db)
        bump_counter(db.conn, "retention_deleted", deleted["age"] + deleted["size"])
        logger.info("helicone: retention deleted %d old rows, %d for size", deleted["age"], deleted["size"])
    return deleted


def _delete_where(db: sqlite_utils.Database, where: str, params: list) -> int:
    with db.conn:
        ids = f"SELECT id FROM requests WHERE {where}"
        for table in ("properties", "feedback", "scores"):
            if db[table].exists():
                db.execute(f"DELETE FROM [{table}] WHERE request_id IN ({ids})", params)
        return db.execute(f"DELETE FROM requests WHERE {where}", params).rowcount


def _vacuum(db: sqlite_utils.Database) -> None:
    if db["requests_fts"].exists():  # FTS5 frees deleted rows' space only when merged
        with db.conn:
            db.execute("INSERT INTO requests_fts(requests_fts) VALUES ('optimize')")
    db.execute("PRAGMA incremental_vacuum").fetchall()
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:  # a reader holds the WAL: checkpoint next time
        pass


def _db_bytes(db: sqlite_utils.Database) -> int:
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return used * page_size
