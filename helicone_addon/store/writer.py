"""The log writer: SQLite through sqlite-utils, written by two background threads.

Hooks only call `LogStore.submit(job)`, which never blocks and never touches SQLite. The writer
thread collects jobs into batches and builds their rows (usage, pricing); the insert thread writes
each batch in one transaction, one multi-row statement per table (see `db.insert_rows`). SQLite runs
with the GIL released, so building the next batch overlaps writing the last one. When the database
cannot be written (locked for long, read-only, disk full, deleted), rows are retried, then spilled
to `<db>.spill.jsonl` (`spill.py`) and loaded back on the next start; every such event is logged and
counted (`LogStore.counters`, and the `store_counters` table when writable). Retention (`retention.py`)
runs on the insert thread between batches.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from . import retention
from .db import Row, clean_row, insert_rows, open_db
from .gauges import bump_counter
from .spill import SpillFile

logger = logging.getLogger(__name__)

Job = Callable[[], tuple[Row, list[Row]]] | tuple[Row, list[Row]]

_STOP = object()

#: Linux nice steps by which the writer's threads yield the CPU to the proxy's event loop.
WRITER_NICE = 5


def lower_thread_priority(step: int = WRITER_NICE) -> bool:
    """Linux: raise the calling thread's nice value by `step` (threads have their own there).

    Where the proxy's event loop and the writer share a core (one core, or a pinned proxy), the
    insert thread's SQLite work runs without the GIL and the OS time-slices it against the loop: a
    request then waits for the CPU, not for the GIL. At nice +5 the loop gets ~3x the writer's share
    when both want the core, and the writer still keeps up (about a tenth of a core at 500 calls a
    second). Anywhere else, or when refused, nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):
        return False
    return True


COUNTERS = ("written", "spilled", "reloaded", "dropped", "build_errors", "write_retries")


class LogStore:
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.05,
        on_row: Callable[[Row], None] | None = None,
        retention_days: float = 0,
        max_db_bytes: int = 0,
        retention_interval: float = 600,
    ) -> None:
        self.path = Path(path)
        self.spill = SpillFile(self.path)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_row = on_row
        self.retention_days = retention_days
        self.max_db_bytes = max_db_bytes
        self.retention_interval = retention_interval
        self._next_retention = 0.0
        self._persisted: dict[str, int] = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._thread: threading.Thread | None = None
        self._inserter: threading.Thread | None = None
        self._built: queue.Queue = queue.Queue(maxsize=2)
        self._db: sqlite_utils.Database | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LogStore:
        try:
            self._db = open_db(self.path)
        except Exception as e:  # the proxy still serves; rows spill until the database works again
            logger.error("helicone: cannot open the log database %s: %s", self.path, e)
            self._db = None
        self._reload_spill()
        self._built = queue.Queue(maxsize=2)  # built batches waiting for the insert thread
        self._thread = threading.Thread(target=self._run, name="helicone-log-writer", daemon=True)
        self._inserter = threading.Thread(target=self._insert_loop, name="helicone-log-insert", daemon=True)
        self._inserter.start()
        self._thread.start()
        return self

    def close(self, timeout: float = 30) -> None:
        if self._thread is None:
            return
        self.queue.put(_STOP)
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        if self._inserter is not None:
            self._inserter.join(max(0.0, deadline - time.monotonic()))
        self._thread = self._inserter = None
        self._drop_connection()

    def submit(self, job: Job) -> None:
        """Hand a finished call to the writer. Never blocks, never raises."""
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self.queue.put(job)

    def flush(self, timeout: float = 10) -> bool:
        """Wait until everything submitted so far is written (for tests and shutdown)."""
        return self._idle.wait(timeout)

    # -- writer thread: batches, rows ---------------------------------------------------------
    def _run(self) -> None:
        lower_thread_priority()
        get = self.queue.get
        stop = False
        while not stop:
            item = get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_size:
                try:
                    nxt = get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._built.put(self._build(batch))
        self._built.put(_STOP)

    def _build(self, batch: list[Job]) -> tuple[list[Row], list[Row], int]:
        rows: list[Row] = []
        props: list[Row] = []
        for job in batch:
            try:
                row, prop_rows = job() if callable(job) else job
            except Exception:
                self.counters["build_errors"] += 1
                logger.exception("helicone: could not build a log row")
                continue
            rows.append(row)
            props.extend(prop_rows)
        return rows, props, len(batch)

    # -- insert thread: transactions, retention -------------------------------------------------
    def _insert_loop(self) -> None:
        lower_thread_priority()
        while True:
            retention_on = bool(self.retention_days or self.max_db_bytes)
            try:
                item = self._built.get(timeout=max(0.0, self._next_retention - time.monotonic()) if retention_on else None)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                self._insert_batch(*item)
            if (self.retention_days or self.max_db_bytes) and time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + self.retention_interval
                try:
                    self.apply_retention()
                except Exception as e:
                    logger.warning("helicone: retention failed: %s", e)

    def _insert_batch(self, rows: list[Row], props: list[Row], jobs: int) -> None:
        if rows:
            self._write(rows, props)
            if self.on_row is not None:
                for row in rows:
                    try:
                        self.on_row(row)
                    except Exception:
                        logger.exception("helicone: on_row callback failed")
        with self._lock:
            self._pending -= jobs
            if self._pending <= 0:
                self._pending = 0
                self._idle.set()

    def _write(self, rows: list[Row], props: list[Row]) -> None:
        delay = 0.05
        for attempt in range(5):
            try:
                if self._db is None or not self.path.exists():
                    self._reopen()
                db = self._db
                assert db is not None
                with db.conn:
                    insert_rows(db.conn, "requests", rows)
                    insert_rows(db.conn, "properties", props)
                self.counters["written"] += len(rows)
                self._persist_counters()
                return
            except (UnicodeEncodeError, OverflowError):
                # values SQLite cannot take (lone surrogates from undecodable bytes, absurd integers)
                rows, props = [clean_row(r) for r in rows], [clean_row(p) for p in props]
            except Exception as e:
                self.counters["write_retries"] += 1
                logger.warning("helicone: log write failed (attempt %d): %s", attempt + 1, e)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                self._drop_connection()
        self._spill(rows, props)

    def apply_retention(self) -> dict[str, int]:
        """Delete rows older than retention_days, then the oldest rows while the file exceeds
        max_db_bytes (see retention.py). Runs on the insert thread."""
        if self._db is None:
            return {}
        return retention.apply(self._db, self.retention_days, self.max_db_bytes)

    # -- the connection, the spill file, the counters --------------------------------------------
    def _drop_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.conn.close()
            except sqlite3.Error as e:
                logger.debug("helicone: closing the log database: %s", e)
            self._db = None

    def _reopen(self) -> None:
        self._drop_connection()
        self._db = open_db(self.path)

    def _spill(self, rows: list[Row], props: list[Row]) -> None:
        try:
            self.spill.write(rows, props)
        except Exception as e:
            self.counters["dropped"] += len(rows)
            logger.error("helicone: database and spill file not writable; %d rows DROPPED: %s", len(rows), e)
            return
        self.counters["spilled"] += len(rows)
        logger.error("helicone: database not writable; %d rows spilled to %s", len(rows), self.spill.path)

    def _reload_spill(self) -> None:
        if self._db is None:
            return
        done = self.spill.reload(self._db.conn)
        if done is None:
            return
        reloaded, lost = done
        self.counters["reloaded"] += reloaded
        self.counters["dropped"] += lost
        bump_counter(self._db.conn, "reloaded", reloaded)
        self._persist_counters()

    def _persist_counters(self) -> None:
        """Make spilled/dropped rows visible in the store_counters table once it is writable again."""
        if self._db is None:
            return
        for name in ("spilled", "dropped"):
            delta = self.counters[name] - self._persisted.get(name, 0)
            if delta:
                bump_counter(self._db.conn, name, delta)
                self._persisted[name] = self.counters[name]
