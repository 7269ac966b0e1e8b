"""The shipper: copies a replica's log (requests, properties, feedback, scores) from its local SQLite
database, the write-ahead outbox, to the fleet's PostgreSQL, in batches, in its own thread.

How rows are found: `start()` registers the shipper in the SQLite log (`shipper_state`, migration
m006). From then on triggers note the request id of every row written or changed in
`shipper_outbox`, in commit order; rows that existed before registration are shipped by a backfill
that walks `requests` by rowid up to the last rowid at registration. Each batch reads up to `batch`
request ids (outbox first, then backfill), reads their current rows, upserts them into PostgreSQL in
one transaction (`INSERT ... ON CONFLICT (pk) DO UPDATE`), and only after PostgreSQL committed,
deletes those outbox entries and moves the high-water mark (`shipper_state.hwm`, the last outbox
sequence number shipped; `backfill_from`, the last backfilled rowid) in SQLite. A crash between the
two commits ships the batch again: at least once, idempotent on the request id, so PostgreSQL holds
each request once. Retention deleting local rows deletes nothing in PostgreSQL.

PostgreSQL unreachable or failing: the batch stays in the outbox; the shipper backs off (doubling from
`interval` up to `max_backoff`), logs once per outage and once when it is back, counts (`counters`),
reconnects, and drains the backlog at full speed afterwards. Rows PostgreSQL rejects for their data
(after the batch is retried one request at a time) are logged, counted (`rejected`) and skipped, so
one bad row cannot stop the fleet log.

Lag: `lag()` -> Lag(rows, seconds): requests waiting to be shipped and the age of the oldest change
waiting. The shipper also keeps gauges in the SQLite `store_counters` table: `shipper_lag_rows`,
`shipper_lag_s`, `shipper_shipped`, `shipper_rejected`, `pg_errors`, `pg_outages`.

Changing `pg_url` to another database ships the whole local log again to the new one.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from . import pg_schema, pg_target
from .outbox import Lag, Outbox, unregister

__all__ = ["Shipper", "Lag", "unregister"]

log = logging.getLogger(__name__)

COUNTER_NAMES = ("shipped", "batches", "rejected", "coerced", "pg_errors", "pg_outages", "pg_recoveries", "sqlite_errors")
GAUGE_PERIOD_S = 1.0


class Shipper:
    """Ships one SQLite log to PostgreSQL in a background thread (`start()` / `stop()`)."""

    def __init__(
        self,
        sqlite_path: str | Path,
        pg_url: str,
        *,
        batch: int = 500,
        interval: float = 0.2,
        max_backoff: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        self.sqlite_path = Path(sqlite_path)
        self.pg_url = pg_url
        self.target = pg_target(pg_url)
        self.batch = max(1, int(batch))
        self.interval = float(interval)
        self.max_backoff = float(max_backoff)
        self.connect_timeout = max(2, int(connect_timeout))
        self.counters: dict[str, int] = {n: 0 for n in COUNTER_NAMES}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ship_lock = threading.Lock()
        self._pg: psycopg.Connection | None = None
        self.outbox = Outbox(self.sqlite_path, self.target, self.batch)
        self._down_since: float | None = None
        self._next_gauges = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Shipper:
        """Register in the SQLite log (from now on every change is noted) and start the thread."""
        self.register()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="helicone-shipper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop the thread (what is not shipped yet stays in the outbox for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._ship_lock:
            self._close_pg()
            self.outbox.close()

    def wake(self) -> None:
        """Ship now rather than at the next interval (e.g. after a burst of writes)."""
        self._wake.set()

    def flush(self, timeout: float = 30) -> bool:
        """Ship until nothing waits (True), or give up after `timeout` seconds (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.ship_once() == 0 and self.lag().rows == 0:
                    self._write_gauges(force=True)
                    return True
            except (psycopg.Error, sqlite3.Error, OSError):
                time.sleep(min(self.interval, max(0.0, deadline - time.monotonic())))
        return False

    def register(self) -> None:
        """Note this target in the SQLite log; from now on every change is noted for shipping."""
        with self._ship_lock:
            self.outbox.register()

    def lag(self) -> Lag:
        """Requests waiting to be shipped, and the age in seconds of the oldest waiting change."""
        return self.outbox.lag()

    def _write_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_gauges:
            return
        self._next_gauges = now + GAUGE_PERIOD_S
        with self._ship_lock:
            try:
                lag = self.outbox.lag_on(self.outbox.conn())
            except sqlite3.Error:
                return
            self.outbox.write_gauges({
                "shipper_lag_rows": lag.rows,
                "shipper_lag_s": math.ceil(lag.seconds),
                "shipper_shipped": self.counters["shipped"],
                "shipper_rejected": self.counters["rejected"],
                "pg_errors": self.counters["pg_errors"],
                "pg_outages": self.counters["pg_outages"],
            })  # fmt: skip

    # -- PostgreSQL side ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._close_pg()
            conn = psycopg.connect(
                self.pg_url,
                connect_timeout=self.connect_timeout,
                application_name="helicone-addon-shipper",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=10000,
            )
            changed = pg_schema.migrate(conn)
            if changed:
                log.info("helicone shipper: PostgreSQL schema: %s", ", ".join(changed))
            self._pg = conn
        return self._pg

    def _close_pg(self) -> None:
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception as e:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                log.debug("helicone shipper: closing the PostgreSQL connection failed: %s", e)
            self._pg = None

    def _upsert(self, pg: psycopg.Connection, data: dict[str, list[dict[str, Any]]], ids: list[str]) -> int:
        """Write the batch in one transaction; on a data error, one request at a time (savepoints),
        skipping the requests PostgreSQL rejects. Returns how many requests were written."""
        tables = pg_schema.tables()
        by_id: dict[str, dict[str, list[tuple]]] = {i: {} for i in ids}
        for name, rows in data.items():
            id_col = "id" if name == "requests" else "request_id"
            for r in rows:
                values, lost = pg_schema.coerce(tables[name], r)
                self.counters["coerced"] += lost
                by_id.setdefault(r[id_col], {}).setdefault(name, []).append(values)
        present = [i for i in ids if by_id.get(i, {}).get("requests")]  # deleted locally: nothing to ship
        try:
            with pg.transaction(), pg.cursor() as cur:
                for name, t in tables.items():  # COPY into a staging table, then one upsert
                    params = [v for i in present for v in by_id[i].get(name, [])]
                    if params:
                        cur.execute(pg_schema.stage_sql(t))
                        with cur.copy(pg_schema.copy_sql(t)) as copy:
                            for values in params:
                                copy.write_row(values)
                        cur.execute(pg_schema.merge_sql(t))
            return len(present)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.warning("helicone shipper: PostgreSQL refused a batch (%s); retrying it request by request", exc)
        written = 0
        with pg.transaction():
            for i in present:
                try:
                    with pg.transaction():  # a savepoint
                        for name, t in tables.items():
                            if by_id[i].get(name):
                                with pg.cursor() as cur:
                                    cur.executemany(pg_schema.upsert_sql(t), by_id[i][name])
                    written += 1
                except (psycopg.DataError, psycopg.IntegrityError) as exc:
                    self.counters["rejected"] += 1
                    log.error("helicone shipper: PostgreSQL rejected request %s, skipped: %s", i, exc)
        return written

    # -- one batch ---------------------------------------------------------------------------------

    def ship_once(self) -> int:
        """Ship one batch; returns how many requests it covered (0: nothing waited). Raises the
        PostgreSQL or SQLite error of a failed attempt (the batch stays in the outbox)."""
        with self._ship_lock:
            conn = self.outbox.conn()
            conn.execute("BEGIN")  # one read snapshot for the ids and their rows
            try:
                ids, max_seq, backfill, moved = self.outbox.pick(conn)
                data = self.outbox.read(conn, ids) if ids else {}
            finally:
                conn.execute("COMMIT")
            if not ids and not max_seq and not moved:
                return 0
            if ids:
                self._upsert(self._connect(), data, ids)
            self.outbox.commit(max_seq, backfill, len(ids))
            self.counters["shipped"] += len(ids)
            self.counters["batches"] += 1
            return len(ids)

    # -- thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.is_set():
            try:
                n = self.ship_once()
            except (psycopg.Error, OSError) as exc:
                self._pg_failed(exc)
                self._write_gauges()
                self._sleep(delay)
                delay = min(max(delay * 2, self.interval), self.max_backoff)
                continue
            except sqlite3.Error as exc:
                self.counters["sqlite_errors"] += 1
                log.warning("helicone shipper: reading the local log failed: %s", exc)
                self._sleep(delay)
                delay = min(max(delay * 2, self.interval), self.max_backoff)
                continue
            except Exception:  # never let the thread die: the outbox keeps everything
                self.counters["sqlite_errors"] += 1
                log.exception("helicone shipper: unexpected error")
                self._sleep(self.max_backoff)
                continue
            delay = self.interval
            if self._down_since is not None:
                self._pg_recovered()
            self._write_gauges()
            if n < self.batch:
                self._sleep(self.interval)
        self._write_gauges(force=True)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _pg_failed(self, exc: BaseException) -> None:
        self.counters["pg_errors"] += 1
        self._close_pg()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.counters["pg_outages"] += 1
            log.warning(
                "helicone shipper: PostgreSQL at %s unavailable (%s: %s); rows stay in the local log "
                "and are shipped when it is back",
                self.target, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )  # fmt: skip

    def _pg_recovered(self) -> None:
        since, self._down_since = self._down_since, None
        self.counters["pg_recoveries"] += 1
        lag = self.lag()
        log.warning(
            "helicone shipper: PostgreSQL at %s is back after %.1f s; %d requests waiting",
            self.target, time.monotonic() - (since or time.monotonic()), lag.rows,
        )  # fmt: skip
