"""The SQLite side of the fleet shipper: the outbox of a replica's log (migration m006).

`Outbox.register()` notes the PostgreSQL target in `shipper_state`, which switches on the triggers
that note every changed request id in `shipper_outbox`; rows from before the registration are
covered by a backfill over `requests.rowid`. `pick()` chooses the next batch of request ids (outbox
first, in commit order, then the backfill), `read()` loads their current rows, `commit()` notes the
progress once PostgreSQL has them, `lag_on()` says what still waits. Not thread-safe: the Shipper
serialises the calls.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from ..store import open_db
from . import pg_schema

log = logging.getLogger("helicone_addon.fleet.postgres")

_IN_CHUNK = 500  # ids per `IN (...)` query


class Lag(NamedTuple):
    rows: int  # requests changed locally and not yet in PostgreSQL
    seconds: float  # age of the oldest of those changes (0 when nothing waits)


class Outbox:
    def __init__(self, sqlite_path: str | Path, target: str, batch: int) -> None:
        self.sqlite_path = Path(sqlite_path)
        self.target = target
        self.batch = batch
        self._lite: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        if self._lite is None:
            open_db(self.sqlite_path).conn.close()  # create / migrate (m006) like the writer does
            conn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            self._lite = conn
        return self._lite

    def register(self) -> None:
        """Note this target in `shipper_state`; a new target backfills every existing request."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT target FROM shipper_state").fetchone()
            if row is None or row["target"] != self.target or conn.execute(
                "SELECT count(*) FROM shipper_state"
            ).fetchone()[0] != 1:
                last = conn.execute("SELECT coalesce(max(rowid), 0) FROM requests").fetchone()[0]
                conn.execute("DELETE FROM shipper_state")
                conn.execute("DELETE FROM shipper_outbox")
                conn.execute(
                    "INSERT INTO shipper_state (target, hwm, backfill_from, backfill_to, registered_at) "
                    "VALUES (?, 0, 0, ?, ?)",
                    [self.target, last, time.time()],
                )
                if row is not None:
                    log.warning("helicone shipper: new target %s: shipping the whole local log again", self.target)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _state(self, conn: sqlite3.Connection) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM shipper_state").fetchone()
        if row is None:
            raise RuntimeError("shipper not registered in the SQLite log (call start() or register())")
        return row

    def lag(self) -> Lag:
        """Requests waiting to be shipped, and the age in seconds of the oldest waiting change."""
        conn = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            return self.lag_on(conn)
        finally:
            conn.close()

    def lag_on(self, conn: sqlite3.Connection) -> Lag:
        st = conn.execute("SELECT backfill_from, backfill_to, registered_at FROM shipper_state").fetchone()
        if st is None:
            return Lag(0, 0.0)
        oldest = conn.execute("SELECT min(queued_at) FROM shipper_outbox").fetchone()[0]
        if st[0] < st[1]:  # backfilling: those rows wait too (a request in both counts once)
            pending = conn.execute(
                "SELECT count(*) FROM (SELECT request_id FROM shipper_outbox UNION "
                "SELECT id FROM requests WHERE rowid > ? AND rowid <= ?)",
                [st[0], st[1]],
            ).fetchone()[0]
            oldest = st[2] if oldest is None else min(oldest, st[2])
        else:
            pending = conn.execute("SELECT count(DISTINCT request_id) FROM shipper_outbox").fetchone()[0]
        seconds = 0.0 if not pending or oldest is None else max(0.0, time.time() - oldest)
        return Lag(int(pending), seconds)

    def pick(self, conn: sqlite3.Connection) -> tuple[list[str], int, int, bool]:
        """(request ids to ship, last outbox seq among them, new backfill position, moved)."""
        st = self._state(conn)
        ids: dict[str, None] = {}
        max_seq = 0
        for seq, rid in conn.execute(
            "SELECT seq, request_id FROM shipper_outbox ORDER BY seq LIMIT ?", [self.batch]
        ):
            ids[rid] = None
            max_seq = seq
        backfill = st["backfill_from"]
        room = self.batch - len(ids)
        if room > 0 and backfill < st["backfill_to"]:
            got = conn.execute(
                "SELECT rowid, id FROM requests WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                [backfill, st["backfill_to"], room],
            ).fetchall()
            for rowid, rid in got:
                ids[rid] = None
            backfill = got[-1][0] if len(got) == room else st["backfill_to"]
        return [i for i in ids if i is not None], max_seq, backfill, backfill != st["backfill_from"]

    def read(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, t in pg_schema.tables().items():
            id_col = "id" if name == "requests" else "request_id"
            rows: list[dict[str, Any]] = []
            for chunk in _chunks(ids, _IN_CHUNK):
                marks = ", ".join("?" * len(chunk))
                for r in conn.execute(f"SELECT * FROM [{name}] WHERE [{id_col}] IN ({marks})", chunk):
                    rows.append(dict(r))
            out[name] = rows
        return out

    def commit(self, max_seq: int, backfill: int, shipped: int) -> None:
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if max_seq:
                conn.execute("DELETE FROM shipper_outbox WHERE seq <= ?", [max_seq])
            conn.execute(
                "UPDATE shipper_state SET hwm = max(hwm, ?), backfill_from = max(backfill_from, ?), "
                "shipped = shipped + ?, last_shipped_at = ?",
                [max_seq, backfill, shipped, time.time()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write_gauges(self, values: dict[str, int]) -> None:
        """Set gauges in the `store_counters` table (best effort)."""
        try:
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO store_counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    list(values.items()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.debug("helicone shipper: could not write store_counters: %s", exc)

    def close(self) -> None:
        if self._lite is not None:
            self._lite.close()
            self._lite = None


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def unregister(sqlite_path: str | Path) -> bool:
    """Switch the outbox off (no shipper configured any more): forget the target and what waited.
    Returns True when a shipper was registered. Cheap when none was: call it at every start
    without a PostgreSQL URL so the outbox cannot grow unshipped."""
    conn = sqlite3.connect(sqlite_path, timeout=30, isolation_level=None)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'shipper_state'").fetchone():
            return False
        if not conn.execute("SELECT 1 FROM shipper_state").fetchone():
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM shipper_state")
            conn.execute("DELETE FROM shipper_outbox")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.warning("helicone shipper: no PostgreSQL configured any more; stopped noting changes for shipping")
        return True
    finally:
        conn.close()
