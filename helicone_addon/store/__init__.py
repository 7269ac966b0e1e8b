"""The log store: SQLite through sqlite-utils, written by two background threads.

Hooks only call `LogStore.submit(job)`, which never blocks and never touches SQLite. The writer
thread collects jobs into batches and builds their rows (usage, pricing); the insert thread writes
each batch in one transaction, one multi-row statement per table (see `insert_rows`). SQLite runs
with the GIL released, so building the next batch overlaps writing the last one. When the database
cannot be written (locked for long, read-only, disk full, deleted), rows are retried, then spilled
to `<db>.spill.jsonl` and loaded back on the next start; every such event is logged and counted
(`LogStore.counters`, and the `store_counters` table when writable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from ..config import ensure_private_dir
from .migrations import migrate

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Job = Callable[[], tuple[Row, list[Row]]] | tuple[Row, list[Row]]

_STOP = object()


@contextlib.contextmanager
def _setup_lock(path: Path):
    """Serialise creating and migrating the database across processes. Two proxies (or a proxy and
    `helicone-addon logs`) started at the same moment on a new data dir would otherwise both read
    "no migrations applied" and both run them: "table requests already exists". SQLite's own locks
    do not cover this (sqlite-utils' DDL runs in autocommit), so an flock on `<db>.lock`, a file of
    its own: the live database file itself is never opened outside SQLite (that would drop SQLite's
    POSIX locks). No lock where the file cannot be made (a read-only data dir: nothing to migrate)."""
    try:
        import fcntl

        old = os.umask(0o077)
        try:
            fd = os.open(Path(str(path) + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        finally:
            os.umask(old)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_db(path: str | os.PathLike) -> sqlite_utils.Database:
    """Open (creating 0600, in a 0700 dir) and migrate the database. For readers and the writer."""
    path = Path(path)
    ensure_private_dir(path.parent)
    with _setup_lock(path):
        return _open_and_migrate(path)


def _open_and_migrate(path: Path) -> sqlite_utils.Database:
    if not path.exists():
        old = os.umask(0o077)
        try:
            sqlite3.connect(path).close()
        finally:
            os.umask(old)
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA busy_timeout = 30000")
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2 and db.execute("PRAGMA page_count").fetchone()[0] < 64:
        # a new (or nearly empty) log: incremental auto-vacuum lets retention give space back
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
    try:
        db.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:  # read-only file: stay in the current mode
        pass
    db.execute("PRAGMA synchronous = NORMAL")
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            try:
                os.chmod(p, 0o600)
            except OSError:
                pass
    migrate(db)
    return db


_MAX_VARS = 32766  # bound parameters per statement (SQLite's default limit since 3.32)
_sql_cache: dict[tuple[str, tuple[str, ...], int], str] = {}


def insert_rows(conn: sqlite3.Connection, table: str, rows: list[Row]) -> None:
    """``INSERT OR REPLACE`` the rows, as few statements as possible (one per batch, in practice).

    One multi-row statement rather than ``executemany``: the full-text index is fed by triggers,
    and FTS5 writes its pending terms out at the end of every statement, so one statement per row
    would write one tiny index segment per row (and merge them) -- over twice the cost of the whole
    insert. SQLite runs the statement with the GIL released, so the proxy's event loop is not held
    while the rows and their index are written. Columns are the union of the rows' keys (missing
    ones are NULL); dicts, lists, dates, ... are stored as sqlite-utils would store them.
    """
    if not rows:
        return
    cols = tuple(rows[0])
    keys = set(cols)
    if any(r.keys() != keys for r in rows):
        merged = dict.fromkeys(cols)
        for r in rows:
            merged.update(dict.fromkeys(r))
        cols = tuple(merged)
    per = max(1, min(len(rows), _MAX_VARS // len(cols)))
    getter = itemgetter(*cols) if len(cols) > 1 else (lambda r, c=cols[0]: (r[c],))
    for i in range(0, len(rows), per):
        chunk = rows[i : i + per]
        key = (table, cols, len(chunk))
        sql = _sql_cache.get(key)
        if sql is None:
            one = "(" + ", ".join("?" * len(cols)) + ")"
            sql = (f"INSERT OR REPLACE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES "
                   + ", ".join([one] * len(chunk)))
            if len(_sql_cache) > 256:
                _sql_cache.clear()
            _sql_cache[key] = sql
        try:
            params = [v for r in chunk for v in getter(r)]
        except KeyError:  # a row lacks some columns: they are NULL
            params = [r.get(c) for r in chunk for c in cols]
        try:
            conn.execute(sql, params)
        except sqlite3.ProgrammingError:  # a value sqlite3 cannot bind (dict, list, date, ...)
            conn.execute(sql, [jsonify_if_needed(v) for v in params])


def _clean(row: Row) -> Row:
    """Replace what UTF-8 cannot encode (lone surrogates) with U+FFFD; integers beyond SQLite's
    64 bits (garbage usage numbers) become NULL."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str):
            v = v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        elif isinstance(v, int) and not -(2**63) <= v < 2**63:
            v = None
        out[k] = v
    return out


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
        self.spill_path = Path(str(self.path) + ".spill.jsonl")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_row = on_row
        self.retention_days = retention_days
        self.max_db_bytes = max_db_bytes
        self.retention_interval = retention_interval
        self._next_retention = 0.0
        self._persisted: dict[str, int] = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.counters = {"written": 0, "spilled": 0, "reloaded": 0, "dropped": 0, "build_errors": 0, "write_retries": 0}
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
        while True:
            retention = bool(self.retention_days or self.max_db_bytes)
            try:
                item = self._built.get(timeout=max(0.0, self._next_retention - time.monotonic()) if retention else None)
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
                rows, props = [_clean(r) for r in rows], [_clean(p) for p in props]
            except Exception as e:
                self.counters["write_retries"] += 1
                logger.warning("helicone: log write failed (attempt %d): %s", attempt + 1, e)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                self._drop_connection()
        self._spill(rows, props)

    def apply_retention(self) -> dict[str, int]:
        """Delete rows older than retention_days, then the oldest rows while the file exceeds
        max_db_bytes; give the space back with an incremental vacuum. Runs on the writer thread."""
        db = self._db
        if db is None:
            return {}
        deleted = {"age": 0, "size": 0}
        if self.retention_days:
            from datetime import UTC, datetime, timedelta

            cutoff = (datetime.now(UTC) - timedelta(days=self.retention_days)).isoformat(timespec="milliseconds")
            deleted["age"] = self._delete_where("created_at < ?", [cutoff.replace("+00:00", "Z")])
        if self.max_db_bytes:
            for _ in range(50):
                if self._db_bytes() <= self.max_db_bytes:
                    break
                total = db.execute("SELECT count(*) FROM requests").fetchone()[0]
                if not total:
                    break
                n = max(1, total // 10)
                got = self._delete_where(
                    "id IN (SELECT id FROM requests ORDER BY created_at LIMIT ?)", [n]
                )
                deleted["size"] += got
                self._vacuum()
        if deleted["age"] or deleted["size"]:
            self._vacuum()
            self._bump_counter("retention_deleted", deleted["age"] + deleted["size"])
            logger.info("helicone: retention deleted %d old rows, %d for size", deleted["age"], deleted["size"])
        return deleted

    def _delete_where(self, where: str, params: list) -> int:
        db = self._db
        assert db is not None
        with db.conn:
            ids = f"SELECT id FROM requests WHERE {where}"
            for table in ("properties", "feedback", "scores"):
                if db[table].exists():
                    db.execute(f"DELETE FROM [{table}] WHERE request_id IN ({ids})", params)
            return db.execute(f"DELETE FROM requests WHERE {where}", params).rowcount

    def _vacuum(self) -> None:
        db = self._db
        assert db is not None
        if db["requests_fts"].exists():  # FTS5 frees deleted rows' space only when merged
            with db.conn:
                db.execute("INSERT INTO requests_fts(requests_fts) VALUES ('optimize')")
        db.execute("PRAGMA incremental_vacuum").fetchall()
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass

    def _db_bytes(self) -> int:
        db = self._db
        assert db is not None
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return used * page_size

    def _drop_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.conn.close()
            except Exception:
                pass
            self._db = None

    def _reopen(self) -> None:
        self._drop_connection()
        self._db = open_db(self.path)

    def _spill(self, rows: list[Row], props: list[Row]) -> None:
        try:
            old = os.umask(0o077)
            try:
                with open(self.spill_path, "a", encoding="utf-8") as f:
                    for row in rows:
                        rp = [p for p in props if p["request_id"] == row["id"]]
                        f.write(json.dumps({"row": row, "properties": rp}) + "\n")
            finally:
                os.umask(old)
            self.counters["spilled"] += len(rows)
            logger.error("helicone: database not writable; %d rows spilled to %s", len(rows), self.spill_path)
        except Exception as e:
            self.counters["dropped"] += len(rows)
            logger.error("helicone: database and spill file not writable; %d rows DROPPED: %s", len(rows), e)

    def _reload_spill(self) -> None:
        if not self.spill_path.exists() or self._db is None:
            return
        rows, props = [], []
        try:
            for line in self.spill_path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                rows.append(item["row"])
                props.extend(item.get("properties", []))
            rows, props = [_clean(r) for r in rows], [_clean(p) for p in props]
            lost = 0
            conn = self._db.conn
            try:
                with conn:
                    insert_rows(conn, "requests", rows)
                    insert_rows(conn, "properties", props)
            except sqlite3.Error:  # one bad row must not keep the others out: one at a time
                for row in rows:
                    try:
                        with conn:
                            insert_rows(conn, "requests", [row])
                            insert_rows(conn, "properties", [p for p in props if p.get("request_id") == row.get("id")])
                    except Exception as e:
                        lost += 1
                        logger.error("helicone: spilled row %s could not be reloaded: %s", row.get("id"), e)
            self.spill_path.unlink()
            self.counters["reloaded"] += len(rows) - lost
            self.counters["dropped"] += lost
            self._bump_counter("reloaded", len(rows) - lost)
            self._persist_counters()
            logger.warning("helicone: reloaded %d spilled rows from %s (%d unreadable, dropped)",
                           len(rows) - lost, self.spill_path, lost)
        except Exception as e:
            logger.error("helicone: could not reload spilled rows from %s: %s", self.spill_path, e)

    def _persist_counters(self) -> None:
        """Make spilled/dropped rows visible in the store_counters table once it is writable again."""
        for name in ("spilled", "dropped"):
            delta = self.counters[name] - self._persisted.get(name, 0)
            if delta:
                self._bump_counter(name, delta)
                self._persisted[name] = self.counters[name]

    def _bump_counter(self, name: str, n: int) -> None:
        try:
            assert self._db is not None
            with self._db.conn:
                self._db.execute(
                    "INSERT INTO store_counters(name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    [name, n],
                )
        except Exception:
            pass
