"""What the API's routes act on: the log database (read, and small writes of feedback, scores and
properties) and the log writer that turns ingested calls into rows. Blocking: routes call it from a
worker thread (`starlette.concurrency.run_in_threadpool`)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import connect
from .web import ApiError

MSG_INVALID_UUID = "Invalid requestId: must be a valid UUID"
MSG_NOT_FOUND = "Request not found"


def request_id(value: Any) -> str:
    """A request id from a path or body, normalized; ApiError 400 when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ApiError(400, MSG_INVALID_UUID) from None


@dataclass
class Backend:
    """``submit`` is ``LogStore.submit``; ``price_overrides`` is read per call (options may change).
    ``row_wait``: how long a route waits for a just-finished call's row to be written before 404."""

    db_path: Path
    submit: Callable[[Any], None] | None
    price_overrides: Callable[[], dict | None]
    row_wait: float = 2.0
    estimate: bool = True
    fleet_url: str = ""  # postgresql://...: the query routes read the whole fleet's log there

    def connect_for_query(self) -> sqlite3.Connection:
        """The log the query routes read: this proxy's, or with a fleet a copy of the PostgreSQL one."""
        if not self.fleet_url:
            return self.connect()
        from ..fleet.pgread import open_report_db

        conn = open_report_db(self.fleet_url).conn
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA case_sensitive_like = ON")
        return conn

    def connect(self) -> sqlite3.Connection:
        return connect(self.db_path)

    @contextlib.contextmanager
    def for_request(self, rid: str) -> Iterator[sqlite3.Connection]:
        """A connection to the log once request rid's row exists (see `existing`), closed after."""
        conn = self.connect()
        try:
            self.existing(conn, rid)
            yield conn
        finally:
            conn.close()

    def existing(self, conn: sqlite3.Connection, rid: str) -> str:
        """rid, once its row exists (waiting up to row_wait); ApiError 404 if it never shows up."""
        deadline = time.monotonic() + self.row_wait
        while not conn.execute("SELECT 1 FROM requests WHERE id = ?", (rid,)).fetchone():
            if time.monotonic() >= deadline:
                raise ApiError(404, MSG_NOT_FOUND)
            time.sleep(0.025)
        return rid
