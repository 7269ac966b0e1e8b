"""HeliconeExporters: Prometheus metrics and OpenTelemetry spans of every finished call.

It holds the process's `exporters.hub.Exporters` and subscribes it to each LLM flow's row (the
flow record's `on_row` listeners, run on the log writer thread once the row is built). The local
API serves its `routes()` (`GET /metrics`); options `helicone_otlp_*` configure the span export.
"""

from __future__ import annotations

from mitmproxy import ctx, exceptions, http

from helicone_addon.proxy.flowrecord import META, FlowRecord
from helicone_addon.proxy.logwriter import addon_counters

OTLP_OPTIONS = {"helicone_otlp_endpoint", "helicone_otlp_headers", "helicone_otlp_content"}


class HeliconeExporters:
    def __init__(self) -> None:
        self.hub = None  # helicone_addon.exporters.hub.Exporters, made at the first configure

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_otlp_endpoint", str, "",
            "OTLP/HTTP collector to send one OpenTelemetry GenAI span per LLM call to, e.g. "
            "http://localhost:4318 (/v1/traces is added when the URL has no path). Empty: off.",
        )
        loader.add_option(
            "helicone_otlp_headers", str, "",
            "Headers for the OTLP collector as name=value pairs separated by commas (values "
            "percent-decoded), e.g. 'Authorization=Bearer%20abc,x-tenant=acme'.",
        )
        loader.add_option(
            "helicone_otlp_content", bool, False,
            "Also export prompts and completions in the spans (gen_ai.input.messages / output.messages).",
        )

    def configure(self, updated: set[str]) -> None:
        if self.hub is None:
            from helicone_addon.exporters.hub import Exporters

            self.hub = Exporters(store_counters=self._store_counters, shipper_lag=self._shipper_lag)
            self.hub.metrics.add_counters("helicone_fleet_shipper", self._shipper_counters, "Fleet shipper (PostgreSQL)")
            self.hub.metrics.add_counters("helicone_proxy", self._addon_counters, "Proxy counter")
        if updated & OTLP_OPTIONS:
            opts = ctx.options
            try:
                self.hub.set_otlp(opts.helicone_otlp_endpoint, opts.helicone_otlp_headers, opts.helicone_otlp_content)
            except ValueError as e:
                raise exceptions.OptionsError(f"helicone_otlp_endpoint / helicone_otlp_headers: {e}") from e

    @property
    def counters(self) -> dict[str, int]:
        """The span export's counters (otlp_spans_queued, otlp_spans_exported, ..., otlp_errors),
        which HeliconeLog publishes in the log's `store_counters` table beside /metrics."""
        otel = self.hub.otel if self.hub is not None else None
        return {f"otlp_{k}": v for k, v in otel.counters.items()} if otel is not None else {}

    @staticmethod
    def _store_counters() -> dict:
        log = ctx.master.addons.get("heliconelog")
        store = getattr(log, "store", None)
        return dict(store.counters) if store is not None else {}

    @staticmethod
    def _shipper_lag() -> dict:
        """The fleet shipper's lag (rows waiting, age in seconds of the oldest), when it runs."""
        shipper = getattr(ctx.master.addons.get("heliconelog"), "shipper", None)
        if shipper is None:
            return {}
        lag = shipper.lag()
        return {"rows": lag.rows, "seconds": lag.seconds}

    def _addon_counters(self) -> dict:
        """The other addons' counters (cache, rate limits, Redis, refused connections); the span
        export's own are `helicone_otlp_*` already."""
        return addon_counters(skip=self)

    @staticmethod
    def _shipper_counters() -> dict:
        shipper = getattr(ctx.master.addons.get("heliconelog"), "shipper", None)
        return dict(shipper.counters) if shipper is not None else {}

    def routes(self) -> list:
        """Routes for the local API: GET /metrics."""
        return self.hub.routes() if self.hub is not None else []

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)  # made by HeliconeCalls for LLM calls
        if rec is not None and self.hub is not None:
            rec.on_row.append(self.hub.on_row)

    def done(self) -> None:
        if self.hub is None:
            return
        log = ctx.master.addons.get("heliconelog")  # its rows still queued get their spans first
        store = getattr(log, "store", None)
        if store is not None:
            store.flush(5)
        self.hub.close()
