"""HeliconeLog: every finished LLM call becomes one row of the SQLite log.

The event loop only hands the finished call to the store's writer thread (no parsing, no I/O
here). There the row is built (usage, cost, redaction: record.py), the flow's row listeners run
(cents accounting, the mitmweb comment, exporters), and the row is inserted in a batch.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from helicone_addon import config, pricing
from helicone_addon.proxy.flowrecord import META, FlowRecord
from helicone_addon.record import build_row
from helicone_addon.store import LogStore

logger = logging.getLogger("helicone_addon")


class HeliconeLog:
    def __init__(self) -> None:
        self.store: LogStore | None = None
        self.price_overrides: dict | None = None
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

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "helicone_price_overrides" in updated:
            text = opts.helicone_price_overrides.strip()
            try:
                self.price_overrides = pricing.parse_overrides(text) if text else None
            except ValueError as e:
                raise exceptions.OptionsError(f"helicone_price_overrides: {e}") from e
        if "helicone_retention_days" in updated and opts.helicone_retention_days < 0:
            raise exceptions.OptionsError("helicone_retention_days must be >= 0")
        if "helicone_max_db_mb" in updated and opts.helicone_max_db_mb < 0:
            raise exceptions.OptionsError("helicone_max_db_mb must be >= 0")
        if self.store is not None and updated & {"helicone_retention_days", "helicone_max_db_mb"}:
            self.store.retention_days = opts.helicone_retention_days
            self.store.max_db_bytes = opts.helicone_max_db_mb * 1024 * 1024
        if self._running and updated & {"helicone_data_dir", "helicone_db"}:
            self._open()

    def running(self) -> None:
        # The writer thread is CPU-bound Python: with the default 5 ms GIL switch interval it can
        # hold the event loop off for that long (p99 latency). Hand the GIL back sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
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
        self.store = LogStore(
            path,
            retention_days=ctx.options.helicone_retention_days,
            max_db_bytes=ctx.options.helicone_max_db_mb * 1024 * 1024,
        ).start()
        self._opened = path
        logger.info("helicone: logging LLM calls to %s", path)

    def _close(self) -> None:
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
