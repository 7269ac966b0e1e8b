"""The log store (SQLite): `db` opens and migrates the database and inserts rows; `writer` holds
`LogStore`, the background writer the proxy hands finished calls to; `spill` keeps the rows the
database would not take; `retention` deletes old rows; `migrations` is the schema; `gauges` the
`store_counters` table."""

from .db import insert_rows, open_db
from .writer import LogStore

__all__ = ["LogStore", "insert_rows", "open_db"]
