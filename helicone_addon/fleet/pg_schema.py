"""The fleet log's PostgreSQL schema, derived from the SQLite log's: the same tables, column names
and meanings.

`requests` takes its columns from `helicone_addon.columns.COLUMNS` (the one column table); the side
tables (properties, feedback, scores) take theirs from the SQLite migrations, read off a migrated
in-memory database, so nothing lists a column twice. Types: str -> TEXT COLLATE "C" (byte order, as
SQLite compares text: ISO timestamps and ids sort the same on both), int -> BIGINT, float -> DOUBLE
PRECISION. No foreign keys: a replica's feedback may arrive before the request row it points at.

`migrate(conn)` creates what is missing and adds the columns a newer release brought (a column is
added, never renamed or dropped), under an advisory lock, so replicas starting together do not race.

`coerce(table, row)` turns a SQLite row (dynamically typed) into values PostgreSQL accepts for the
column types: a value that cannot be converted becomes NULL and is counted; NUL characters, which
PostgreSQL text cannot hold, become U+FFFD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..columns import COLUMNS

PG_TYPES = {str: 'TEXT COLLATE "C"', int: "BIGINT", float: "DOUBLE PRECISION"}
SIDE_TABLES = ("properties", "feedback", "scores")
INDEXES = {  # table -> column lists, as in the SQLite log
    "requests": (("created_at",), ("model",), ("user_id",), ("session_id",), ("provider",)),
    "properties": (("key", "value"),),
}
_LOCK_ID = 0x48454C49  # pg_advisory_xact_lock key of schema changes ("HELI")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, type], ...]
    pk: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.columns)


@cache
def tables() -> dict[str, Table]:
    """requests from COLUMNS; the side tables from the SQLite migrations."""
    import sqlite_utils

    from ..store.migrations import migrate

    db = sqlite_utils.Database(memory=True)
    migrate(db)
    out = {"requests": Table("requests", tuple((c.name, c.type) for c in COLUMNS), ("id",))}
    for name in SIDE_TABLES:
        t = db[name]
        cols = tuple((n, typ if typ in PG_TYPES else str) for n, typ in t.columns_dict.items())
        out[name] = Table(name, cols, tuple(t.pks))
    db.close()
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_sql(t: Table) -> str:
    cols = ", ".join(f"{_q(n)} {PG_TYPES[typ]}" + (" NOT NULL" if n in t.pk else "") for n, typ in t.columns)
    return f"CREATE TABLE IF NOT EXISTS {_q(t.name)} ({cols}, PRIMARY KEY ({', '.join(map(_q, t.pk))}))"


def upsert_sql(t: Table) -> str:
    """INSERT ... ON CONFLICT (pk) DO UPDATE: shipping a row twice leaves one row, the newest."""
    names = t.names
    rest = [n for n in names if n not in t.pk]
    action = "DO UPDATE SET " + ", ".join(f"{_q(n)} = EXCLUDED.{_q(n)}" for n in rest) if rest else "DO NOTHING"
    return (
        f"INSERT INTO {_q(t.name)} ({', '.join(map(_q, names))}) VALUES ({', '.join(['%s'] * len(names))}) "
        f"ON CONFLICT ({', '.join(map(_q, t.pk))}) {action}"
    )


def stage_sql(t: Table) -> str:
    """A session-private staging table that COPY fills and a merge empties (rows go at commit)."""
    return f"CREATE TEMP TABLE IF NOT EXISTS {_q('stage_' + t.name)} (LIKE {_q(t.name)}) ON COMMIT DELETE ROWS"


def copy_sql(t: Table) -> str:
    return f"COPY {_q('stage_' + t.name)} ({', '.join(map(_q, t.names))}) FROM STDIN"


def merge_sql(t: Table) -> str:
    """Upsert the staged rows (the same ON CONFLICT action as `upsert_sql`)."""
    names = ", ".join(map(_q, t.names))
    action = upsert_sql(t).split(" ON CONFLICT ", 1)[1]
    return f"INSERT INTO {_q(t.name)} ({names}) SELECT {names} FROM {_q('stage_' + t.name)} ON CONFLICT {action}"


def migrate(conn: Any) -> list[str]:
    """Create the tables and indexes, add missing columns. Returns what was changed."""
    changed: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
        for t in tables().values():
            exists = conn.execute("SELECT to_regclass(%s)", [t.name]).fetchone()[0] is not None
            if not exists:
                conn.execute(create_sql(t))
                changed.append(f"created {t.name}")
                continue
            have = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    [t.name],
                )
            }
            for n, typ in t.columns:
                if n not in have:
                    conn.execute(f"ALTER TABLE {_q(t.name)} ADD COLUMN IF NOT EXISTS {_q(n)} {PG_TYPES[typ]}")
                    changed.append(f"added {t.name}.{n}")
        for table, indexes in INDEXES.items():
            for cols in indexes:
                name = f"{table}_{'_'.join(cols)}"
                conn.execute(f"CREATE INDEX IF NOT EXISTS {_q(name)} ON {_q(table)} ({', '.join(map(_q, cols))})")
    return changed


# ------------------------------------------------------------------------------------------- values

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _to_text(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode("utf-8", "replace")
    elif not isinstance(v, str):
        v = str(v)
    return v.replace("\x00", "\ufffd") if "\x00" in v else v


def _to_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v if _INT_MIN <= v <= _INT_MAX else None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return _to_int(int(v))
    if isinstance(v, (str, bytes)):
        try:
            return _to_int(int(v.strip()))
        except ValueError:
            try:
                return _to_int(float(v))
            except ValueError:
                return None
    return None


def _to_float(v: Any) -> float | None:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (str, bytes)):
        try:
            return float(v)
        except ValueError:
            return None
    return None


_CONVERT = {str: _to_text, int: _to_int, float: _to_float}


def coerce(t: Table, row: dict[str, Any]) -> tuple[tuple[Any, ...], int]:
    """(values in column order, how many non-NULL values had to become NULL)."""
    out = []
    lost = 0
    for n, typ in t.columns:
        v = row.get(n)
        if v is None or (type(v) is typ and (typ is not str or "\x00" not in v)):
            out.append(v)  # the usual case: already the column's type
            continue
        c = _CONVERT[typ](v)
        if c is None:
            lost += 1
        out.append(c)
    return tuple(out), lost
