"""One OpenTelemetry span per LLM call, following the GenAI semantic conventions, sent over OTLP/HTTP.

`OtelExporter.on_row` is a row subscriber (see `helicone_addon.exporters`): on the log writer
thread it only builds the finished span and hands it to a `BatchSpanProcessor`, whose own thread
encodes and posts the batches. Nothing global is touched: no global TracerProvider, no propagator.

The call span (kind CLIENT, named "{gen_ai.operation.name} {gen_ai.request.model}", e.g.
"chat gpt-4o-mini") starts at `created_at` and lasts `latency_ms`. Its parent:

* the app's span, when the request carried a W3C `traceparent` (and `tracestate`): the call joins
  the app's own trace and follows its sampling decision (flag 00: not exported);
* else, for a call with `Helicone-Session-Id`, the session's trace: trace id derived from the session
  id, one INTERNAL span for the session ("session <name>") and one per `Helicone-Session-Path` node
  ("session_path /a", "session_path /a/b", each the child of the one above), span ids derived from
  (session id, node path). So `/a/b` is a child of `/a` in every process and every run. A node
  span is created, not merely linked, so trace viewers draw the tree; it is emitted once per process
  (remembered in a bounded set), the first time a call under it is seen, with that call's times:
  later calls under the same node still hang below it, past its end. Several proxies on one data
  dir each emit the node once, which a backend shows as duplicate spans with one id;
* else a trace of its own, whose trace id is the call's Helicone-Id (UUID) itself.

Prompt and completion content is exported only with `content=True`, as the conventions' opt-in span
attributes `gen_ai.system_instructions`, `gen_ai.input.messages` and `gen_ai.output.messages` (JSON
strings). The conventions' event form is a log record, which would need a second (logs) pipeline.

A collector that is down or refusing costs spans, never calls: `counters` counts the spans queued
(each then exported, or failed: the collector refused or stayed unreachable for the export time-out)
and those dropped because `max_queue_size` spans were already waiting, plus rows the exporter failed
on (`errors`). Once drained, spans_queued == spans_exported + spans_failed.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import genai
from .rows import properties, traces_url

logger = logging.getLogger(__name__)

MAX_CONTENT_CHARS = 256 * 1024  # per content attribute; longer texts are cut (marked) to fit
NODE_MEMORY = 10_000  # session path nodes remembered as already emitted
_PROPAGATOR = TraceContextTextMapPropagator()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


def _ns(created_at: str | None) -> int | None:
    if not created_at:
        return None
    try:
        return int(datetime.fromisoformat(created_at).timestamp() * 1_000_000) * 1000
    except (ValueError, TypeError):
        return None


class _Counting(SpanExporter):
    """Wraps the OTLP exporter: every span ends up counted as exported or failed."""

    def __init__(self, inner: SpanExporter, counters: dict[str, int]) -> None:
        self.inner = inner
        self.counters = counters
        self.closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            logger.exception("helicone otlp: export raised")
            result = SpanExportResult.FAILURE
        self.counters["spans_exported" if result == SpanExportResult.SUCCESS else "spans_failed"] += len(spans)
        return result

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BatchProcessor(BatchSpanProcessor):
    """BatchSpanProcessor with exact accounting: a span is either queued (then exported or failed)
    or dropped here because `limit` spans are already queued or being exported. (The SDK's own
    full queue only logs what it drops; this limit keeps it from ever filling.)"""

    def __init__(self, exporter: SpanExporter, counters: dict[str, int], limit: int, batch: int, **kw: Any) -> None:
        super().__init__(exporter, max_queue_size=limit + batch, max_export_batch_size=batch, **kw)
        self.counters = counters
        self.limit = limit
        self.closed = False

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        c = self.counters
        if self.closed or c["spans_queued"] - c["spans_exported"] - c["spans_failed"] >= self.limit:
            c["spans_dropped"] += 1
            return
        c["spans_queued"] += 1
        super().on_end(span)

    def shutdown(self) -> None:
        self.closed = True
        super().shutdown()


class OtelExporter:
    """Row subscriber exporting one GenAI span per call to an OTLP/HTTP collector.

    `timeout`: seconds an export may take, retries included (None: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    else the SDK's 10). `max_queue_size` spans may wait; beyond, new spans are dropped (counted).
    The standard OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES variables apply to the resource."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        content: bool = False,
        *,
        timeout: float | None = None,
        max_queue_size: int = 8192,
        schedule_delay_millis: int = 1000,
        service_name: str = "helicone-addon",
        exporter: SpanExporter | None = None,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.endpoint = traces_url(endpoint)
        self.content = content
        self.counters = {"spans_queued": 0, "spans_exported": 0, "spans_failed": 0, "spans_dropped": 0, "errors": 0}
        inner = exporter or OTLPSpanExporter(endpoint=self.endpoint, headers=dict(headers or {}), timeout=timeout)
        resource = Resource.create()  # reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": service_name}))
        self.resource = resource
        self.scope = InstrumentationScope("helicone_addon")
        self._random = RandomIdGenerator()
        self._exporter = _Counting(inner, self.counters)
        self.processor = _BatchProcessor(
            self._exporter, self.counters, limit=max_queue_size,
            batch=min(max_queue_size, 64 if content else 512), schedule_delay_millis=schedule_delay_millis,
        )
        self._nodes: OrderedDict[tuple[int, int], None] = OrderedDict()

    # -- the subscriber ---------------------------------------------------------------------------
    def on_row(self, row: dict[str, Any], props: list[dict[str, Any]] | None = None) -> None:
        """Queue the call's span (and its session nodes). Writer thread; never raises, never blocks."""
        try:
            self._emit(row, props or [])
        except Exception:
            self.counters["errors"] += 1
            logger.exception("helicone otlp: no span for call %s", row.get("id") if isinstance(row, dict) else row)

    def force_flush(self, timeout: float = 10) -> bool:
        return self.processor.force_flush(int(timeout * 1000))

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued for up to `timeout` seconds, then stop: a collector that is down
        holds the proxy's exit that long at most (what is left is counted as failed)."""
        try:
            self.force_flush(timeout)
        finally:
            self._exporter.shutdown()  # ends an export still retrying
            self.processor.shutdown()

    # -- spans ----------------------------------------------------------------------------------------
    # The call is over when its row exists: its span is built finished, as the SDK's ReadableSpan,
    # and handed to the batch processor like an ended span. Going through a Tracer instead (start,
    # then end at once) validates and copies every attribute and runs the sampler for a decision
    # already taken: measured, it cost the writer thread as much again as building the row itself.
    def _span(self, name: str, ctx: SpanContext, parent: SpanContext | None, kind: SpanKind,
              attributes: dict[str, Any], start: int, end: int, status: Status = _OK) -> None:
        self.processor.on_end(ReadableSpan(
            name, ctx, parent, self.resource, attributes, kind=kind, status=status,
            start_time=start, end_time=end, instrumentation_scope=self.scope,
        ))

    def _emit(self, row: dict[str, Any], props: list[dict[str, Any]]) -> None:
        start = _ns(row.get("created_at")) or 0
        latency = row.get("latency_ms")
        end = start + int(latency * 1_000_000) if isinstance(latency, int | float) and latency > 0 else start
        parent, trace_id = self._parent(row, start, end)
        if parent is not None and not parent.trace_flags.sampled:
            return  # the app's trace is not sampled: neither is the call
        request_id = str(row.get("id") or "")
        span_id = genai.span_id_for("call", request_id) if request_id else self._random.generate_span_id()
        ctx = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED,
                          trace_state=parent.trace_state if parent is not None else None)
        op = genai.operation_name(row.get("api"))
        model = row.get("model_requested") or row.get("model")
        status = _OK
        if genai.error_type(row) is not None:
            status = Status(StatusCode.ERROR, str(row.get("error") or f"HTTP {row.get('status')}")[:500])
        self._span(f"{op} {model}" if model else op, ctx, parent, SpanKind.CLIENT,
                   self._attributes(row, props, op), start, end, status)

    def _parent(self, row: dict[str, Any], start: int, end: int) -> tuple[SpanContext | None, int]:
        """(parent span context or None, trace id) of the call's span."""
        hdrs = _headers(row)
        if hdrs.get("traceparent"):
            carrier = {k: hdrs[k] for k in ("traceparent", "tracestate") if k in hdrs}
            app = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
            if app.is_valid:
                return app, app.trace_id
        session = row.get("session_id")
        if session:
            return self._session_parent(row, str(session), start, end)
        request_id = row.get("id")
        return None, genai.trace_id_for_request(str(request_id)) if request_id else self._random.generate_trace_id()

    def _session_parent(self, row: dict[str, Any], session: str, start: int, end: int) -> tuple[SpanContext, int]:
        """Emit the session's root and path-node spans not emitted yet; the deepest node is the parent."""
        trace_id = genai.trace_id_for_session(session)
        name = row.get("session_name")
        parent: SpanContext | None = None  # the session span is the trace's root
        chain = [("", genai.span_id_for("session", session))]
        chain += [(node, genai.span_id_for("session", session, node)) for node in genai.session_nodes(row.get("session_path"))]
        for node, span_id in chain:
            ctx = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)
            key = (trace_id, span_id)
            if key not in self._nodes:
                attrs = {"helicone.session.id": session, "helicone.session.path": node or "/"}
                if name:
                    attrs["helicone.session.name"] = str(name)
                span_name = f"session_path {node}" if node else f"session {name or session}"[:200]
                self._span(span_name, ctx, parent, SpanKind.INTERNAL, attrs, start, end)
                self._nodes[key] = None
                if len(self._nodes) > NODE_MEMORY:
                    self._nodes.popitem(last=False)
            else:
                self._nodes.move_to_end(key)
            parent = ctx
        assert parent is not None
        return parent, trace_id

    def _attributes(self, row: dict[str, Any], props: list[dict[str, Any]], op: str) -> dict[str, Any]:
        """The span's attributes. Encoding costs about a microsecond per attribute on the export
        thread, so what a value says by its absence is left out: zero cache and reasoning tokens,
        `helicone.rate_limited` / `retries` / `request.stream` when false or 0, `error.type` on success."""
        get = row.get
        status = get("status")
        ok = isinstance(status, int) and 200 <= status < 300
        provider = get("provider")
        a: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": genai.provider_name(provider),
            "gen_ai.system": genai.system_name(provider),
            "helicone.request_id": get("id"),
            "helicone.cache_hit": bool(get("cache_hit")),
        }
        optional = (
            ("gen_ai.request.model", get("model_requested")),
            ("gen_ai.response.model", get("model") if ok else None),
            ("gen_ai.usage.input_tokens", get("prompt_tokens")),
            ("gen_ai.usage.output_tokens", get("completion_tokens")),
            ("gen_ai.usage.cache_read.input_tokens", get("cached_tokens") or None),
            ("gen_ai.usage.cache_creation.input_tokens", get("cache_write_tokens") or None),
            ("gen_ai.usage.reasoning.output_tokens", get("reasoning_tokens") or None),
            ("gen_ai.request.stream", True if get("streamed") else None),
            ("gen_ai.conversation.id", get("session_id")),
            ("server.address", get("host") or None),
            ("error.type", genai.error_type(row)),
            ("helicone.user_id", get("user_id")),
            ("helicone.session.id", get("session_id")),
            ("helicone.session.path", get("session_path")),
            ("helicone.session.name", get("session_name")),
            ("helicone.rate_limited", True if get("rate_limited") else None),
            ("helicone.retries", get("retries") or None),
            ("helicone.cost_usd", get("cost_usd")),
            ("helicone.usage_source", "estimated" if get("usage_source") == "estimated" else None),
        )
        for key, value in optional:
            if value is not None:
                a[key] = value
        ttft = get("ttft_ms")
        if isinstance(ttft, int | float):
            a["gen_ai.response.time_to_first_chunk"] = ttft / 1000
        body = get("response_body")
        if body:
            reasons = genai.finish_reasons(body, get("api"))
            if reasons:
                a["gen_ai.response.finish_reasons"] = tuple(reasons)
            if ok:
                rid = genai.response_id(body)
                if rid:
                    a["gen_ai.response.id"] = rid
        for key, value in properties(row, props).items():
            a[f"helicone.property.{key}"] = value
        if self.content:
            a.update(_content(row))
        return a


def _headers(row: dict[str, Any]) -> dict[str, str]:
    """The request headers, when they carry a trace context (else {} without parsing them)."""
    raw = row.get("request_headers")
    if isinstance(raw, dict):
        return raw
    if not raw or "traceparent" not in raw:
        return {}
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _content(row: dict[str, Any]) -> dict[str, str]:
    """The opt-in content attributes (JSON strings, each at most MAX_CONTENT_CHARS)."""
    from helicone_addon import usage

    out: dict[str, str] = {}
    system, messages = genai.input_messages(row.get("api"), row.get("request_body"))
    if system:
        out["gen_ai.system_instructions"] = _fit(system)
    if messages:
        out["gen_ai.input.messages"] = _fit(messages)
    body = row.get("response_body")
    if body and isinstance(row.get("status"), int) and 200 <= row["status"] < 300:
        parsed = usage.parse_response(row.get("api") or "unknown", body.encode("utf-8", "surrogatepass"),
                                      None, row.get("status"))
        if parsed.text:
            out["gen_ai.output.messages"] = _fit(genai.output_messages(parsed.text, genai.finish_reasons(body, row.get("api"))))
    return out


def _fit(value: list) -> str:
    """JSON of messages/parts, text contents cut evenly so the whole stays under MAX_CONTENT_CHARS."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_CONTENT_CHARS:
        return text
    parts = [p for m in value for p in (m.get("parts", []) if "parts" in m else [m]) if isinstance(p.get("content"), str)]
    budget = max(64, MAX_CONTENT_CHARS // max(1, len(parts)) - 64)
    for p in parts:
        if len(p["content"]) > budget:
            p["content"] = p["content"][:budget] + "…[truncated]"
    return json.dumps(value, ensure_ascii=False)
