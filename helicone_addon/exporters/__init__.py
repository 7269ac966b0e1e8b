"""Row subscribers that speak the standards operations teams already run.

A subscriber gets every finished call once, on the log writer thread (never on the proxy's event
loop), after the row and its property rows are built::

    subscriber.on_row(row: dict, props: list[dict]) -> None

`row` has the columns of `helicone_addon.columns.COLUMNS`; `props` are the call's `properties`
rows (`request_id`, `key`, `value`). A subscriber is fast (no network I/O in `on_row`), never
raises, and counts its own failures where users can see them.

    prometheus.Metrics       counters and histograms for `GET /metrics` (prometheus-client)
    prometheus.metrics_route the Starlette route serving them
    otel.OtelExporter        one OpenTelemetry GenAI span per call, batched to an OTLP/HTTP collector
    otel_process.OtelProcess the same, run in a child process fed slim rows (what the proxy uses)
    rows.parse_otlp_headers  'k=v,k2=v2' (the helicone_otlp_headers option) -> dict
    rows.slim_row            what a span needs of a row (the proxy's process never imports the SDK)

The submodules are imported on demand: loading this package costs nothing when no exporter is on.
"""

from __future__ import annotations

from typing import Any, Protocol


class RowSubscriber(Protocol):
    def on_row(self, row: dict[str, Any], props: list[dict[str, Any]]) -> None: ...
