"""The log database: open (creating it private) and migrate it, and insert rows into it fast."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from ..config import ensure_private_dir
from .migrations import migrate

Row = dict[str, Any]


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
    # rows built alike have their keys in the same order: comparing key tuples is cheaper than
    # comparing key sets (rows with the same keys in another order take the merge, which keeps cols)
    nulls: frozenset[str] = frozenset()
    if all(map(cols.__eq__, map(tuple, rows))):
        nulls = _null_columns(rows, cols)
    else:
        merged = dict.fromkeys(cols)
        for r in rows:
            merged.update(dict.fromkeys(r))
        cols = tuple(merged)
    bound = tuple(c for c in cols if c not in nulls) if nulls else cols
    per = max(1, min(len(rows), _MAX_VARS // max(1, len(bound))))
    getter = _getter(bound)
    for i in range(0, len(rows), per):
        chunk = rows[i : i + per]
        key = (table, cols, nulls, len(chunk))
        sql = _sql_cache.get(key)
        if sql is None:
            one = "(" + ", ".join("NULL" if c in nulls else "?" for c in cols) + ")"
            sql = (f"INSERT OR REPLACE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES "
                   + ", ".join([one] * len(chunk)))
            if len(_sql_cache) > 256:
                _sql_cache.clear()
            _sql_cache[key] = sql
        try:  # a tuple: sqlite3 reads its items directly
            params = tuple(chain.from_iterable(map(getter, chunk)))
        except KeyError:  # a row lacks some columns: they are NULL
            params = tuple([r.get(c) for r in chunk for c in bound])
        try:
            conn.execute(sql, params)
        except sqlite3.ProgrammingError:  # a value sqlite3 cannot bind (dict, list, date, ...)
            conn.execute(sql, [jsonify_if_needed(v) for v in params])


def _getter(cols: tuple[str, ...]):
    """row -> tuple of its values in those columns."""
    if len(cols) > 1:
        return itemgetter(*cols)
    if cols:
        return lambda r, c=cols[0]: (r[c],)
    return lambda r: ()


def _null_columns(rows: list[Row], cols: tuple[str, ...]) -> frozenset[str]:
    """The columns that are None in every row (all rows have every column). The statement writes
    NULL for them instead of binding a None per row: sqlite3 binds a None through its adapter
    lookup, the slowest bind there is, and many columns of a log row are empty in every row of a
    batch."""
    maybe = tuple(c for c in cols if rows[0][c] is None)
    if not maybe:
        return frozenset()
    n = len(rows)
    # one column's values per tuple (zip does the transposing without a Python loop)
    columns = zip(*map(_getter(maybe), rows), strict=True)
    return frozenset(c for c, values in zip(maybe, columns, strict=True) if values.count(None) == n)


def clean_row(row: Row) -> Row:
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
