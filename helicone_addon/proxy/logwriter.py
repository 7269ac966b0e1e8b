"""HeliconeLog: every finished LLM call becomes one row of the SQLite log.

The event loop only hands the finished call over (no parsing, no I/O here): to the store's writer
thread, or with helicone_log_process to a log writer process (`store/process.py`). There the row
is built (usage, cost, redaction: record.py) and inserted in a batch; the flow's row listeners
(cents accounting, the mitmweb comment, exporters) get the built row on a thread of the proxy.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from helicone_addon import config, pipes, pricing
from helicone_addon.proxy.flowrecord import META, FlowRecord
from helicone_addon.record import build_row
from helicone_addon.store import LogStore
from helicone_addon.store.gauges import add_counters, has_table
from helicone_addon.store.process import LogProcess

logger = logging.getLogger("helicone_addon")

#: The GIL switch interval the proxy runs with (seconds; CPython's default is 0.005). The event loop
#: gives the GIL up at every socket wait and takes it back through this many seconds' wait at most
#: while the writer thread builds rows: 0.1 ms measured p99 7.75 ms at c=1 against 8.97 ms with
#: 0.5 ms, and no loss of throughput.
LOOP_SWITCH_INTERVAL = 0.0001

COUNTER_PERIOD_S = 2.0


def addon_counters(skip: object = None) -> dict[str, int]:
    """The counters of this process's addons (their `counters` dicts: cache, rate limits, Redis,
    refused connections, span export), in one dict: what `store_counters` and /metrics show."""
    values: dict[str, int] = {}
    for addon in ctx.master.addons.chain:
        counters = getattr(addon, "counters", None)
        if isinstance(counters, dict) and addon is not skip:
            values.update(counters)
    return values


class HeliconeLog:
    def __init__(self) -> None:
        self.store: LogStore | None = None
        self.price_overrides: dict | None = None
        self.shipper = None  # fleet.postgres.Shipper when helicone_postgres is set
        self._publisher: asyncio.Task | None = None
        self._opened: Path | None = None
        self._running = False

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_db", str, "", "Path of the SQLite log database (default: <helicone_data_dir>/helicone.db).",
        )
        loader.add_option(
            "helicone_price_overrides", str, "",
            'Price overrides as JSON: {"model-or-glob": {"input_mtok": 2.5, "output_mtok": 10, '
            '"cache_read_mtok": 1.25, "cache_write_mtok": 3.75}} (USD per million tokens).',
        )
        loader.add_option(
            "helicone_estimate_usage", bool, True,
            "Estimate tokens with tiktoken when a stream reports no usage (rows marked usage_source='estimated').",
        )
        loader.add_option(
            "helicone_retention_days", int, 0,
            "Delete logged calls older than this many days (0: keep everything). Applied in the background.",
        )
        loader.add_option(
            "helicone_max_db_mb", int, 0,
            "Keep the log database under this size in MiB by deleting the oldest calls (0: no limit).",
        )
        loader.add_option(
            "helicone_log_process", bool, False,
            "Build and write log rows in a process of its own (usage, pricing and SQLite on their own "
            "GIL and core). Pays only with a core to spare: on 2 cores it measured slower than the thread.",
        )
        loader.add_option(
            "helicone_postgres", str, "",
            "Fleet mode: postgresql://user@host:port/db that every replica ships its log to (the local "
            "SQLite stays the write-ahead outbox; needs the 'fleet' extra). Empty: local log only.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "helicone_price_overrides" in updated:
            text = opts.helicone_price_overrides.strip()
            try:
                self.price_overrides = pricing.parse_overrides(text) if text else None
            except ValueError as e:
                raise exceptions.OptionsError(f"helicone_price_overrides: {e}") from e
            if isinstance(self.store, LogProcess):
                self.store.price_overrides = self.price_overrides
        if "helicone_estimate_usage" in updated and isinstance(self.store, LogProcess):
            self.store.estimate = opts.helicone_estimate_usage
        if "helicone_retention_days" in updated and opts.helicone_retention_days < 0:
            raise exceptions.OptionsError("helicone_retention_days must be >= 0")
        if "helicone_max_db_mb" in updated and opts.helicone_max_db_mb < 0:
            raise exceptions.OptionsError("helicone_max_db_mb must be >= 0")
        if self.store is not None and updated & {"helicone_retention_days", "helicone_max_db_mb"}:
            self.store.retention_days = opts.helicone_retention_days
            self.store.max_db_bytes = opts.helicone_max_db_mb * 1024 * 1024
        if "helicone_postgres" in updated and opts.helicone_postgres:
            from helicone_addon.fleet import is_postgres_url

            if not is_postgres_url(opts.helicone_postgres):
                raise exceptions.OptionsError(
                    f"helicone_postgres must be a postgresql:// URL, not {opts.helicone_postgres!r}")
        if self._running and updated & {"helicone_data_dir", "helicone_db", "helicone_postgres", "helicone_log_process"}:
            self._close()
            self._open()

    def running(self) -> None:
        # The writer thread is CPU-bound Python: with the default 5 ms GIL switch interval it can
        # hold the event loop off for that long, each time the loop gives the GIL up (p99 latency).
        sys.setswitchinterval(min(sys.getswitchinterval(), LOOP_SWITCH_INTERVAL))
        self._running = True
        self._open()

    def done(self) -> None:
        self._close()

    @property
    def db_path(self) -> Path:
        return config.db_path(ctx.options.helicone_data_dir, ctx.options.helicone_db)

    def _open(self) -> None:
        path = self.db_path
        if self._opened == path:
            return
        self._close()
        config.ensure_private_dir(Path(ctx.options.helicone_data_dir).expanduser())
        retention = {"retention_days": ctx.options.helicone_retention_days,
                     "max_db_bytes": ctx.options.helicone_max_db_mb * 1024 * 1024}
        if ctx.options.helicone_log_process and pipes.can_spawn():
            self.store = LogProcess(path, **retention, price_overrides=self.price_overrides,
                                    estimate=ctx.options.helicone_estimate_usage).start()
        else:
            self.store = LogStore(path, **retention).start()
        self._opened = path
        logger.info("helicone: logging LLM calls to %s", path)
        self._start_shipper(path)
        self._publisher = asyncio.get_running_loop().create_task(self._publish_counters(path))

    def _start_shipper(self, path: Path) -> None:
        url = ctx.options.helicone_postgres
        if not url:
            if has_table(path, "shipper_state"):
                from helicone_addon.fleet.outbox import unregister

                unregister(path)  # a shipper configured once and then removed: stop queueing for it
            return
        from helicone_addon.fleet.postgres import Shipper

        self.shipper = Shipper(path, url).start()
        logger.info("helicone: shipping the log to %s", url.split("@")[-1])

    async def _publish_counters(self, path: Path) -> None:
        """Every few seconds, what the other addons counted since (cache, rate limits, Redis,
        refused connections, span export) is added to the log's `store_counters` table, where users
        query them; every process on the log adds its own."""
        published: dict[str, int] = {}
        while True:
            await asyncio.sleep(COUNTER_PERIOD_S)
            values = addon_counters(skip=self)
            for k, v in values.items():
                if v < published.get(k, 0):  # a counter that started over (its addon was reconfigured)
                    published[k] = v
            deltas = {k: v - published.get(k, 0) for k, v in values.items() if v > published.get(k, 0)}
            if deltas:
                try:
                    await asyncio.to_thread(add_counters, path, deltas)
                    published.update({k: values[k] for k in deltas})
                except Exception as e:  # a locked or read-only log: try again next period
                    logger.debug("helicone: counters not written: %s", e)

    def _close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        if self.shipper is not None:
            self.shipper.stop()
            self.shipper = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self._opened = None

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow.metadata.get(META))

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow.metadata.get(META))

    def _finish(self, rec: FlowRecord | None) -> None:
        """Hand the finished call to the writer thread. Cheap: no parsing, no I/O here."""
        if rec is None or not rec.id or rec.finished or self.store is None:
            return
        rec.finished = True  # once, even if both response and error fire
        call, listeners, store = rec.call, tuple(rec.on_row), self.store
        if isinstance(store, LogProcess):
            store.submit_call(call, listeners)  # queued; its sender thread pickles it (~20 µs)
            return
        overrides, estimate = self.price_overrides, ctx.options.helicone_estimate_usage

        def job():
            row, props = build_row(call, price_overrides=overrides, estimate=estimate)
            for listener in listeners:
                try:
                    listener(row, props)
                except Exception:
                    store.counters["listener_errors"] = store.counters.get("listener_errors", 0) + 1
                    logger.exception("helicone: a row listener failed for %s", call.id)
            return row, props

        store.submit(job)
