"""Prometheus metrics of the finished calls, for `GET /metrics` on the local API port.

`Metrics.on_row` is a row subscriber (see `helicone_addon.exporters`): it runs on the log writer
thread and only bumps in-memory counters. Everything lives in the instance's own
`CollectorRegistry`, never prometheus-client's global one, so several proxies in one Python process
(tests) do not mix.

Series (all counters end in `_total` in the text format):

    helicone_llm_calls_total{provider, model, status_class, cache}
        status_class: 2xx | 3xx | 4xx | 5xx | none (no answer: connection error, time-out)
        cache: hit (answered from the proxy's cache) | miss (cache asked for, not found) | off
    helicone_llm_tokens_total{provider, model, kind}
        kind: prompt | completion | cached | cache_write | reasoning (same meaning as the columns)
    helicone_llm_cost_usd_total{provider, model}          cost_usd summed (0 on cache hits)
    helicone_llm_cache_saved_usd_total{provider, model}   what cache hits would have cost
    helicone_llm_latency_seconds{provider, model}         histogram; calls answered upstream only
                                                          (cache hits and rate-limit refusals excluded)
    helicone_llm_ttft_seconds{provider, model}            histogram; streams with a first chunk
    helicone_llm_rate_limited_total{provider}             calls refused by Helicone-RateLimit-Policy
    helicone_llm_retries_total{provider}                  upstream retries made by the proxy
    helicone_metrics_other_labels_total{label}            rows whose model/provider became "other"
    helicone_exporter_errors_total{exporter}              rows a subscriber failed on

Read at scrape time (`add_counters` / `add_gauges`, and the constructor's shortcuts):

    helicone_store_<name>_total        LogStore.counters: written, spilled, reloaded, dropped, ...
    helicone_fleet_shipper_lag_<name>  the fleet shipper's lag, e.g. rows and seconds

Label values are bounded: no user, session or request ids; the first `max_models` distinct models
(and `max_providers` providers) keep their name, later ones are counted as `other`.

Several proxy processes on one data dir: each process serves its own `/metrics` on its own API
port and Prometheus scrapes each as a target (`sum by (...)` aggregates them); per-process targets
keep every number true to the process that made it.

`helicone-addon run --workers N` is the exception: N processes behind one port, and only worker 0
serves the local API. That is what prometheus-client's multiprocess mode is made for, and the
supervisor turns it on (`PROMETHEUS_MULTIPROC_DIR`: a fresh directory per run, removed when it
stops; see workers.py). Each worker's counters and histograms then live in files of its own,
worker 0's scrape adds them up (`MultiProcessCollector`), and a worker that crashed still counts
the calls it served. The scrape-time numbers, which only their process can read, are copied into
those files every second by each worker (`_Mirror`): counters by their increase, gauges as the
largest value among live workers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)
TOKEN_KINDS = {
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "cached": "cached_tokens",
    "cache_write": "cache_write_tokens",
    "reasoning": "reasoning_tokens",
}
OTHER = "other"
UNKNOWN = "unknown"
MAX_LABEL_LEN = 120
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_CACHE_ON = ("helicone-cache-enabled", "helicone-cache-read")

Source = Callable[[], Mapping[str, float] | None]


class BoundedLabel:
    """The first `limit` distinct values keep their name; later ones become 'other'."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.overflow = 0
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> str:
        if value is None or value == "":
            return UNKNOWN
        v = str(value)[:MAX_LABEL_LEN]
        if v in self.seen:
            return v
        with self._lock:
            if len(self.seen) < self.limit:
                self.seen.add(v)
                return v
        self.overflow += 1
        return OTHER


def status_class(status: Any) -> str:
    """200 -> '2xx'; None (no answer) -> 'none'."""
    if isinstance(status, int) and 100 <= status <= 599:
        return f"{status // 100}xx"
    return "none"


def cache_result(row: Mapping[str, Any]) -> str:
    """'hit' on a proxy cache hit, 'miss' when the call asked for the cache, else 'off'."""
    if row.get("cache_hit"):
        return "hit"
    raw = row.get("request_headers")
    if not raw or (isinstance(raw, str) and "helicone-cache-" not in raw):
        return "off"  # the common case, without parsing the headers
    try:
        hdrs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return "off"
    if isinstance(hdrs, dict):
        for name in _CACHE_ON:
            v = hdrs.get(name)
            if isinstance(v, str) and v.strip().lower() == "true":
                return "miss"
    return "off"


def metric_name(*parts: str) -> str:
    return _NAME_BAD.sub("_", "_".join(p for p in parts if p)).strip("_")


def _source_numbers(owner: Metrics) -> Iterable[tuple[str, str, str, float]]:
    """(metric name, help, kind, value) of every number the scrape-time sources give now. A source
    that fails is counted in `helicone_exporter_errors_total{exporter="scrape"}` and skipped."""
    for prefix, fn, doc, kind in list(owner.sources):
        try:
            values = dict(fn() or {})
        except Exception:  # a source that fails must not fail the scrape
            owner.errors.labels("scrape").inc()
            logger.debug("helicone metrics: source %s failed", prefix, exc_info=True)
            continue
        for key in sorted(values):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            yield metric_name(prefix, key), f"{doc} ({key})", kind, value


class _ScrapeTime:
    """A custom collector: numbers owned by others (store, shipper, OTLP exporter), read per scrape."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration: the sources may not exist yet

    def collect(self) -> Iterable[Metric]:
        for name, doc, kind, value in _source_numbers(self.owner):
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)


def shared_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this process runs in that mode (the
    library decides at import time from the same variable)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return path if path and os.path.isdir(path) else None


class _Mirror:
    """Multiprocess mode: this process's scrape-time numbers, copied into its metric files, where
    worker 0's scrape adds up those of every worker. Counters grow by their increase since the last
    copy (a source that starts over, e.g. a reopened store, is followed from its new value); gauges
    report the largest value among live workers (a shipper's lag over one shared outbox)."""

    PERIOD_S = 1.0

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner
        self._metrics: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            for name, doc, kind, value in _source_numbers(self.owner):
                metric = self._metrics.get(name)
                if metric is None:
                    metric = self._metrics[name] = (
                        Counter(name, doc, registry=None) if kind == "counter"
                        else Gauge(name, doc, registry=None, multiprocess_mode="livemax"))
                if kind == "counter":
                    last = self._last.get(name, 0)
                    if value > last:
                        metric.inc(value - last)
                    self._last[name] = value
                else:
                    metric.set(value)

    def run(self) -> None:
        while True:
            time.sleep(self.PERIOD_S)
            try:
                self.sync()
            except Exception:  # never let the copying thread die
                logger.debug("helicone metrics: copy to the shared files failed", exc_info=True)


class _SyncFirst:
    """Collector run before `MultiProcessCollector` in worker 0's scrape: its own numbers, fresh."""

    def __init__(self, mirror: _Mirror) -> None:
        self.mirror = mirror

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self.mirror.sync()
        return []


class Metrics:
    """Prometheus metrics fed by finished rows; serve `render()` (or `metrics_route`) for scrapes."""

    def __init__(
        self,
        store_counters: Source | None = None,
        shipper_lag: Source | None = None,
        *,
        max_models: int = 50,
        max_providers: int = 32,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_label = BoundedLabel(max_models)
        self.provider_label = BoundedLabel(max_providers)
        self.sources: list[tuple[str, Source, str, str]] = []
        self._children: dict[tuple, Any] = {}  # (metric, labels) -> child: skips labels()' checks per row
        reg = self.registry
        reg.register(_ScrapeTime(self))  # first: a source failing in a scrape shows in that scrape's errors
        pm = ("provider", "model")
        self.calls = Counter("helicone_llm_calls", "LLM calls through the proxy",
                             (*pm, "status_class", "cache"), registry=reg)
        self.tokens = Counter("helicone_llm_tokens", "Tokens of LLM calls (kind as the log's token columns)",
                              (*pm, "kind"), registry=reg)
        self.cost = Counter("helicone_llm_cost_usd", "Cost of LLM calls in US dollars (0 on cache hits)",
                            pm, registry=reg)
        self.saved = Counter("helicone_llm_cache_saved_usd", "What proxy cache hits would have cost, US dollars",
                             pm, registry=reg)
        self.latency = Histogram("helicone_llm_latency_seconds",
                                 "Request to end of response, calls answered upstream (no cache hits or refusals)",
                                 pm, buckets=LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram("helicone_llm_ttft_seconds", "Time to the first streamed chunk",
                              pm, buckets=TTFT_BUCKETS, registry=reg)
        self.rate_limited = Counter("helicone_llm_rate_limited", "Calls refused by Helicone-RateLimit-Policy (429)",
                                    ("provider",), registry=reg)
        self.retries = Counter("helicone_llm_retries", "Upstream retries made by the proxy",
                               ("provider",), registry=reg)
        self.other = Counter("helicone_metrics_other_labels",
                             "Rows counted under the label value 'other' (too many distinct values)",
                             ("label",), registry=reg)
        self.errors = Counter("helicone_exporter_errors", "Rows or scrapes an exporter failed on",
                              ("exporter",), registry=reg)
        self.errors.labels("prometheus")  # present (at 0) from the first scrape
        if store_counters is not None:
            self.add_counters("helicone_store", store_counters, "Log store health counter")
        if shipper_lag is not None:
            self.add_gauges("helicone_fleet_shipper_lag", shipper_lag, "Fleet shipper lag")
        #: what a scrape shows: this registry, or (multiprocess mode, `--workers`) every worker's files
        self.exposed = self.registry
        path = shared_dir()
        if path is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            mirror = _Mirror(self)
            self.exposed = CollectorRegistry(auto_describe=False)
            self.exposed.register(_SyncFirst(mirror))
            MultiProcessCollector(self.exposed, path)
            threading.Thread(target=mirror.run, name="helicone-metrics-mirror", daemon=True).start()

    # -- scrape-time sources ---------------------------------------------------------------------
    def add_counters(self, prefix: str, fn: Source, doc: str) -> None:
        """Expose `fn()`'s {name: number} as counters `<prefix>_<name>_total`, read at each scrape."""
        self.sources.append((prefix, fn, doc, "counter"))

    def add_gauges(self, prefix: str, fn: Source, doc: str) -> None:
        """Expose `fn()`'s {name: number} as gauges `<prefix>_<name>`, read at each scrape."""
        self.sources.append((prefix, fn, doc, "gauge"))

    # -- the subscriber ---------------------------------------------------------------------------
    def on_row(self, row: dict[str, Any], props: list[dict[str, Any]] | None = None) -> None:
        """Count one finished call. Writer thread; never raises."""
        try:
            self._count(row)
        except Exception:
            self.errors.labels("prometheus").inc()
            logger.exception("helicone metrics: row not counted")

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _count(self, row: dict[str, Any]) -> None:
        m_over, p_over = self.model_label.overflow, self.provider_label.overflow
        provider = self.provider_label(row.get("provider"))
        model = self.model_label(row.get("model") or row.get("model_requested"))
        if self.model_label.overflow != m_over:
            self._child(self.other, "model").inc()
        if self.provider_label.overflow != p_over:
            self._child(self.other, "provider").inc()
        self._child(self.calls, provider, model, status_class(row.get("status")), cache_result(row)).inc()
        for kind, column in TOKEN_KINDS.items():
            n = row.get(column)
            if isinstance(n, int | float) and n > 0:
                self._child(self.tokens, provider, model, kind).inc(n)
        cost = row.get("cost_usd")
        if isinstance(cost, int | float) and cost >= 0:
            self._child(self.cost, provider, model).inc(cost)
        saved = row.get("cache_saved_usd")
        if row.get("cache_hit") and isinstance(saved, int | float) and saved >= 0:
            self._child(self.saved, provider, model).inc(saved)
        latency = row.get("latency_ms")
        if isinstance(latency, int | float) and not row.get("cache_hit") and not row.get("rate_limited"):
            self._child(self.latency, provider, model).observe(max(latency, 0) / 1000)
        ttft = row.get("ttft_ms")
        if isinstance(ttft, int | float):
            self._child(self.ttft, provider, model).observe(max(ttft, 0) / 1000)
        if row.get("rate_limited"):
            self._child(self.rate_limited, provider).inc()
        retries = row.get("retries")
        if isinstance(retries, int) and retries > 0:
            self._child(self.retries, provider).inc(retries)

    # -- exposition -------------------------------------------------------------------------------
    def render(self) -> bytes:
        """What a scrape shows, in Prometheus' text exposition format (0.0.4)."""
        return generate_latest(self.exposed)


def metrics_route(metrics: Metrics, path: str = "/metrics"):
    """A Starlette `Route` for `GET <path>`: Prometheus' text format 0.0.4, or OpenMetrics when the
    scraper's Accept header asks for it (prometheus-client's own negotiation).

    The endpoint is a plain function, so Starlette runs it in its thread pool: a scrape never
    blocks the API's event loop, whatever the sources cost."""
    from prometheus_client.exposition import choose_encoder
    from starlette.responses import Response
    from starlette.routing import Route

    def endpoint(request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics.exposed), headers={"content-type": content_type})

    return Route(path, endpoint, methods=["GET"], name="metrics")
