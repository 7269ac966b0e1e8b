"""The spill file `<db>.spill.jsonl`: rows the database would not take (locked for long, read-only,
disk full, deleted), one JSON line per request row with its property rows, private (0600). The
writer appends to it after its retries; the next start loads it back into the database."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

from .db import Row, clean_row, insert_rows

logger = logging.getLogger(__name__)


class SpillFile:
    def __init__(self, db_path: Path) -> None:
        self.path = Path(str(db_path) + ".spill.jsonl")

    def write(self, rows: list[Row], props: list[Row]) -> None:
        """Append the rows with their properties. Raises (OSError, ...) when the file cannot be written."""
        old = os.umask(0o077)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                for row in rows:
                    rp = [p for p in props if p["request_id"] == row["id"]]
                    f.write(json.dumps({"row": row, "properties": rp}) + "\n")
        finally:
            os.umask(old)

    def reload(self, conn: sqlite3.Connection) -> tuple[int, int] | None:
        """Insert the spilled rows and delete the file: (rows reloaded, rows lost). None when there is
        no file, or it could not be read or deleted (logged; the file stays for the next start)."""
        if not self.path.exists():
            return None
        rows, props = [], []
        try:
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                rows.append(item["row"])
                props.extend(item.get("properties", []))
            rows, props = [clean_row(r) for r in rows], [clean_row(p) for p in props]
            lost = self._insert(conn, rows, props)
            self.path.unlink()
        except Exception as e:
            logger.error("helicone: could not reload spilled rows from %s: %s", self.path, e)
            return None
        logger.warning("helicone: reloaded %d spilled rows from %s (%d unreadable, dropped)",
                       len(rows) - lost, self.path, lost)
        return len(rows) - lost, lost

    @staticmethod
    def _insert(conn: sqlite3.Connection, rows: list[Row], props: list[Row]) -> int:
        """All rows in one transaction; if that fails, one at a time. Returns the rows lost."""
        try:
            with conn:
                insert_rows(conn, "requests", rows)
                insert_rows(conn, "properties", props)
        except sqlite3.Error:  # one bad row must not keep the others out: one at a time
            return SpillFile._insert_each(conn, rows, props)
        return 0

    @staticmethod
    def _insert_each(conn: sqlite3.Connection, rows: list[Row], props: list[Row]) -> int:
        lost = 0
        for row in rows:
            try:
                with conn:
                    insert_rows(conn, "requests", [row])
                    insert_rows(conn, "properties", [p for p in props if p.get("request_id") == row.get("id")])
            except Exception as e:
                lost += 1
                logger.error("helicone: spilled row %s could not be reloaded: %s", row.get("id"), e)
        return lost
