"""Counters and gauges users can query: the `store_counters(name, value)` table of the log."""

from __future__ import annotations

import logging
import os
import sqlite3

logger = logging.getLogger(__name__)


def add_counters(path: str | os.PathLike, deltas: dict[str, int]) -> None:
    """Add `deltas` to the counters in store_counters (a short transaction on a connection of its
    own). Adding, not setting: processes sharing the log (`--workers`, two proxies on one data dir)
    and restarts all add up in the same counter."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO store_counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(deltas.items()),
            )
    finally:
        conn.close()


def bump_counter(conn: sqlite3.Connection, name: str, n: int) -> None:
    """Add `n` to the counter `name` (the writer's own connection; a failure is only logged)."""
    try:
        with conn:
            conn.execute(
                "INSERT INTO store_counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                [name, n],
            )
    except sqlite3.Error as e:
        logger.debug("helicone: could not add %d to store counter %s: %s", n, name, e)


def has_table(path: str | os.PathLike, table: str) -> bool:
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone() is not None
    finally:
        conn.close()
