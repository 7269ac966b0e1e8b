"""HeliconeLog's counter publisher: every period, what the other addons counted since is ADDED to the
log's store_counters (the table's counters sum every process on the log, and restarts)."""

from __future__ import annotations

import asyncio
import sqlite3

from mitmproxy.test import taddons

from helicone_addon.proxy import logwriter
from helicone_addon.store import open_db


class Counting:
    def __init__(self) -> None:
        self.counters = {"cache_read_errors": 0, "fail_open": 0}


def table(path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, value FROM store_counters"))
    finally:
        conn.close()


def test_each_period_adds_what_was_counted_since(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    open_db(path).conn.close()
    monkeypatch.setattr(logwriter, "COUNTER_PERIOD_S", 0.01)
    asyncio.run(publish_and_check(path))


async def publish_and_check(path) -> None:
    log, counting = logwriter.HeliconeLog(), Counting()

    async def settled(want: dict[str, int]) -> dict[str, int]:
        """The table once it shows `want` (a loaded machine may take a while), then after three
        more periods: what was added must not be added again."""
        for _ in range(200):
            if table(path) == want:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        return table(path)

    with taddons.context(counting) as tctx:
        try:
            task = asyncio.get_running_loop().create_task(log._publish_counters(path))
            counting.counters["cache_read_errors"] = 2
            assert await settled({"cache_read_errors": 2}) == {"cache_read_errors": 2}  # zeros not written
            counting.counters.update(cache_read_errors=5, fail_open=1)
            assert await settled({"cache_read_errors": 5, "fail_open": 1}) == {"cache_read_errors": 5, "fail_open": 1}
            # the addon started over (reconfigured) at 1: followed from there, nothing subtracted
            counting.counters.update(cache_read_errors=1)
            assert await settled({"cache_read_errors": 5, "fail_open": 1}) == {"cache_read_errors": 5, "fail_open": 1}
            counting.counters.update(cache_read_errors=2)
            assert await settled({"cache_read_errors": 6, "fail_open": 1}) == {"cache_read_errors": 6, "fail_open": 1}
            task.cancel()
        finally:
            tctx.master._legacy_log_events.uninstall()
