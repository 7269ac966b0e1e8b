"""`Exporters`: the row subscribers of one proxy process, behind one `on_row`.

Prometheus metrics are always kept (a few microseconds per call) and served by `routes()` on the
local API port; the OTLP span exporter runs only when an endpoint is configured, in a process of
its own (`otel_process.py`), so that building and encoding spans never takes the proxy's GIL. The
hub is what the addon holds: it creates, reconfigures and closes the subscribers, and shields the
log writer from any of them failing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .prometheus import Metrics, metrics_route

logger = logging.getLogger(__name__)


class Exporters:
    def __init__(
        self,
        store_counters: Callable[[], Mapping[str, float] | None] | None = None,
        shipper_lag: Callable[[], Mapping[str, float] | None] | None = None,
    ) -> None:
        self.metrics = Metrics(store_counters, shipper_lag)
        self.otel = None
        self.errors = 0
        self.metrics.add_counters("helicone_otlp", self._otel_counters, "OpenTelemetry span export")

    def _otel_counters(self) -> Mapping[str, float]:
        otel = self.otel
        return dict(otel.counters) if otel is not None else {}

    def set_otlp(self, endpoint: str, headers: str = "", content: bool = False) -> None:
        """Start, replace or (endpoint '') stop the OTLP exporter. ValueError on a bad endpoint or
        headers, leaving the current exporter as it was."""
        new = None
        if endpoint.strip():
            from .otel_process import OtelProcess
            from .rows import parse_otlp_headers

            new = OtelProcess(endpoint, parse_otlp_headers(headers), content)
        old, self.otel = self.otel, new
        if old is not None:  # flushing may wait on the collector: never on the caller's thread
            threading.Thread(target=old.close, name="helicone-otlp-close", daemon=True).start()

    @property
    def subscribers(self) -> list[Any]:
        return [s for s in (self.metrics, self.otel) if s is not None]

    def on_row(self, row: dict[str, Any], props: list[dict[str, Any]]) -> None:
        """Every subscriber sees the finished call. Log writer thread; never raises."""
        for sub in self.subscribers:
            try:
                sub.on_row(row, props)
            except Exception:  # subscribers count their own failures; this is a bug in one
                self.errors += 1
                logger.exception("helicone: exporter %s failed", type(sub).__name__)

    def routes(self) -> list[Any]:
        """Starlette routes for the local API: GET /metrics."""
        return [metrics_route(self.metrics)]

    def close(self) -> None:
        if self.otel is not None:
            self.otel.close()
            self.otel = None
