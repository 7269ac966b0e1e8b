"""OTLP/HTTP bodies -> plain Python views of spans and log records.

Both encodings of the OTLP/HTTP protocol are read: binary protobuf (``application/x-protobuf``)
and its JSON mapping (``application/json``), gzip-compressed or not. The JSON mapping differs from
protobuf's canonical JSON in one way that matters: trace and span ids are hex strings, not base64;
`_ids_to_base64` converts them before `google.protobuf.json_format` parses the rest.

Anything wrong with a body raises `OtlpError` with a message naming the problem (and the span
when one span is at fault); the API answers it with a 400.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_DECOMPRESSED = 64 * 1024 * 1024  # a gzip body may not inflate beyond this
PROTOBUF, JSON = "application/x-protobuf", "application/json"
_HEX = re.compile(r"^[0-9a-fA-F]*$")
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


class OtlpError(ValueError):
    """A body that cannot be read as OTLP; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------
# bodies


def media_type(content_type: str | None, required: bool = False) -> str | None:
    """The encoding a Content-Type names: PROTOBUF, JSON, or None when there is no Content-Type
    (unless `required`). Raises OtlpError (415) for anything else."""
    if not content_type:
        if required:
            raise OtlpError("Content-Type is missing: OTLP/HTTP bodies are application/x-protobuf or application/json", 415)
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"):
        return PROTOBUF
    if media == JSON or media.endswith("+json"):
        return JSON
    raise OtlpError(
        f"Unsupported Content-Type {content_type!r}: OTLP/HTTP bodies are application/x-protobuf or "
        "application/json",
        415,
    )


def _inflate(raw: bytes, how: str) -> bytes:
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[how]
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, MAX_DECOMPRESSED)
        if d.unconsumed_tail:
            raise OtlpError(f"The {how} body inflates beyond {MAX_DECOMPRESSED // (1024 * 1024)} MB")
        out += d.flush()
    except zlib.error as e:
        raise OtlpError(f"Content-Encoding is {how} but the body is not valid {how} data ({e})") from None
    if not d.eof:
        raise OtlpError(f"Content-Encoding is {how} but the body is truncated {how} data")
    return out


def decompress(raw: bytes, content_encoding: str | None) -> bytes:
    """The body without its Content-Encoding (gzip, deflate or identity). A gzip body sent without
    the header is recognized by its magic bytes (a protobuf or JSON body never starts with them)."""
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity"):
        return _inflate(raw, "gzip") if raw[:2] == b"\x1f\x8b" else raw
    if enc in ("gzip", "x-gzip"):
        return _inflate(raw, "gzip")
    if enc == "deflate":
        return _inflate(raw, "deflate")
    raise OtlpError(f"Unsupported Content-Encoding {content_encoding!r}: use gzip or none", 415)


def _ids_to_base64(obj: Any, keys: frozenset[str]) -> Any:
    """OTLP JSON carries ids as hex; protobuf JSON wants base64. Converted in place."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys and isinstance(v, str) and v and len(v) % 2 == 0 and _HEX.match(v):
                obj[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                _ids_to_base64(v, keys)
    elif isinstance(obj, list):
        for v in obj:
            _ids_to_base64(v, keys)
    return obj


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _event_names_to_attributes(doc: Any) -> None:
    """Log records' `eventName` (newer OTLP) kept as an `event.name` attribute, so an older proto
    package that lacks the field does not drop it."""
    if not isinstance(doc, dict):
        return
    for rl in doc.get("resourceLogs") or []:
        for sl in (rl or {}).get("scopeLogs") or []:
            for rec in (sl or {}).get("logRecords") or []:
                name = rec.get("eventName") if isinstance(rec, dict) else None
                if isinstance(name, str) and name:
                    rec.setdefault("attributes", []).append({"key": "event.name", "value": {"stringValue": name}})


def _parse(raw: bytes, media: str | None, msg: Message, what: str) -> Message:
    if media is None:  # no Content-Type: JSON if it looks like it
        media = JSON if raw.lstrip()[:1] == b"{" else PROTOBUF
    if media == JSON:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise OtlpError(f"Invalid OTLP JSON body: {e}") from None
        if not isinstance(doc, dict):
            raise OtlpError(f"Invalid OTLP JSON body: expected an object with {what!r}, got {type(doc).__name__}")
        if what == "resourceLogs":
            _event_names_to_attributes(doc)
        try:
            json_format.ParseDict(_ids_to_base64(doc, _ID_KEYS), msg, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
            raise OtlpError(f"Invalid OTLP JSON body: {e}") from None
        return msg
    try:
        msg.ParseFromString(raw)
    except (DecodeError, ValueError, RecursionError) as e:
        raise OtlpError(f"Invalid OTLP protobuf body (not an {type(msg).__name__}): {e}") from None
    return msg


def _check_ids(where: str, trace_id: bytes, span_id: bytes) -> None:
    if len(trace_id) != 16 or not any(trace_id):
        raise OtlpError(f"{where}: traceId must be 16 bytes (32 hex digits), not all zero; got {len(trace_id)} bytes")
    if len(span_id) != 8 or not any(span_id):
        raise OtlpError(f"{where}: spanId must be 8 bytes (16 hex digits), not all zero; got {len(span_id)} bytes")


def decode_traces(raw: bytes, content_type: str | None, content_encoding: str | None = None) -> ExportTraceServiceRequest:
    """An OTLP/HTTP traces body -> ExportTraceServiceRequest (OtlpError when it is not one)."""
    media = media_type(content_type)
    req = _parse(decompress(raw, content_encoding), media, ExportTraceServiceRequest(), "resourceSpans")
    assert isinstance(req, ExportTraceServiceRequest)
    for i, rs in enumerate(req.resource_spans):
        for j, ss in enumerate(rs.scope_spans):
            for k, sp in enumerate(ss.spans):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}] ({sp.name!r})"
                _check_ids(where, sp.trace_id, sp.span_id)
                if sp.parent_span_id and len(sp.parent_span_id) != 8:
                    raise OtlpError(f"{where}: parentSpanId must be 8 bytes or empty")
    return req


def decode_logs(raw: bytes, content_type: str | None, content_encoding: str | None = None) -> ExportLogsServiceRequest:
    """An OTLP/HTTP logs body -> ExportLogsServiceRequest (OtlpError when it is not one)."""
    media = media_type(content_type)
    req = _parse(decompress(raw, content_encoding), media, ExportLogsServiceRequest(), "resourceLogs")
    assert isinstance(req, ExportLogsServiceRequest)
    return req


def empty_response(kind: str, media: str | None) -> tuple[bytes, str]:
    """The body and Content-Type of a full-success export response, in the request's encoding."""
    msg: Message = ExportTraceServiceResponse() if kind == "traces" else ExportLogsServiceResponse()
    if media == JSON:
        return b"{}", JSON
    return msg.SerializeToString(), PROTOBUF


# ---------------------------------------------------------------------------------------------
# views


def any_value(v: Any) -> Any:
    """An OTLP AnyValue -> str | bool | int | float | list | dict | None."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class EventView:
    name: str
    time: float  # epoch seconds
    attrs: dict[str, Any]
    body: Any = None  # log records only


@dataclass
class SpanView:
    """One span, flattened: ids in hex, times in epoch seconds."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: float
    end: float
    attrs: dict[str, Any]
    events: list[EventView] = field(default_factory=list)
    error: bool = False
    status_message: str = ""
    scope: str = ""
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.trace_id, self.span_id


def _secs(nanos: int) -> float:
    return nanos / 1e9


def spans(req: ExportTraceServiceRequest) -> list[SpanView]:
    out = []
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                start = _secs(sp.start_time_unix_nano)
                out.append(
                    SpanView(
                        trace_id=sp.trace_id.hex(),
                        span_id=sp.span_id.hex(),
                        parent_id=sp.parent_span_id.hex() if any(sp.parent_span_id) else None,
                        name=sp.name,
                        start=start,
                        end=max(start, _secs(sp.end_time_unix_nano)),
                        attrs=attributes(sp.attributes),
                        events=[EventView(e.name, _secs(e.time_unix_nano), attributes(e.attributes)) for e in sp.events],
                        error=sp.status.code == STATUS_ERROR,
                        status_message=sp.status.message,
                        scope=scope,
                        resource=resource,
                    )
                )
    return out


def log_events(req: ExportLogsServiceRequest) -> list[tuple[tuple[str, str], EventView]]:
    """The log records that belong to a span, as ((trace id, span id), event); the event's name is
    the record's event name (the `event.name` attribute, or the newer `event_name` field)."""
    out = []
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if len(rec.trace_id) != 16 or len(rec.span_id) != 8:
                    continue
                attrs = attributes(rec.attributes)
                name = getattr(rec, "event_name", "") or attrs.get("event.name") or ""
                t = rec.time_unix_nano or rec.observed_time_unix_nano
                ev = EventView(str(name), _secs(t), attrs, any_value(rec.body))
                out.append(((rec.trace_id.hex(), rec.span_id.hex()), ev))
    return out
