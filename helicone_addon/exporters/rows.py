"""What the proxy's own process needs for the OTLP export, without importing the OpenTelemetry SDK:
the option parsers, and the slim row handed to the exporter process (`otel_process.py`).

    parse_otlp_headers(text)       'k=v,k2=v2' (helicone_otlp_headers) -> dict
    traces_url(endpoint)           'http://host:4318' -> 'http://host:4318/v1/traces'
    slim_row(row, props, content)  the values of SPAN_COLUMNS, and the properties, of one row
    properties(row, props)         the call's Helicone properties as {key: value}
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# The columns a span reads (`OtelExporter._emit` and what it calls): what a row sent to another
# process to become a span needs (`slim_row`). The request headers only matter for a trace context.
SPAN_COLUMNS = (
    "id", "created_at", "latency_ms", "api", "provider", "host", "status", "error", "model_requested", "model",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "streamed",
    "ttft_ms", "cache_hit", "rate_limited", "retries", "cost_usd", "usage_source", "user_id",
    "session_id", "session_name", "session_path", "response_body", "request_headers", "request_body",
)
_HEADERS_AT = SPAN_COLUMNS.index("request_headers")
_REQUEST_BODY_AT = SPAN_COLUMNS.index("request_body")


def slim_row(row: dict[str, Any], props: list[dict[str, Any]], content: bool) -> tuple[tuple, list[tuple[str, str]]]:
    """(values of SPAN_COLUMNS, properties as (key, value)): all a span of the row needs, cheap to pickle.
    The request headers are kept only when they carry a `traceparent`, the request body only for content."""
    get = row.get
    values = [get(c) for c in SPAN_COLUMNS]
    raw = values[_HEADERS_AT]
    if isinstance(raw, str) and "traceparent" not in raw:
        values[_HEADERS_AT] = None
    if not content:
        values[_REQUEST_BODY_AT] = None
    return tuple(values), list(properties(row, props).items())


def parse_otlp_headers(text: str) -> dict[str, str]:
    """'k=v,k2=v2' -> {'k': 'v', 'k2': 'v2'} (the helicone_otlp_headers option).

    Values are percent-decoded, as in OTEL_EXPORTER_OTLP_HEADERS ('Authorization=Bearer%20abc');
    spaces around items are ignored, empty items too. Raises ValueError naming the bad item."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"OTLP header {item!r} has no '=': write name=value, separated by commas")
        if not key or not set(key) <= _TOKEN:
            raise ValueError(f"OTLP header name {key!r} is not a valid HTTP header name")
        if key.lower() in (k.lower() for k in out):
            raise ValueError(f"OTLP header {key!r} is given twice")
        value = unquote(value.strip())
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"OTLP header {key!r} has a line break or NUL in its value")
        out[key] = value
    return out


def traces_url(endpoint: str) -> str:
    """'http://host:4318' -> 'http://host:4318/v1/traces'; a URL with a path is used as given."""
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OTLP endpoint {endpoint!r} must be an http:// or https:// URL, e.g. http://localhost:4318")
    if parts.path in ("", "/"):
        return endpoint.strip().rstrip("/") + "/v1/traces"
    return endpoint.strip()


def properties(row: dict[str, Any], props: list[dict[str, Any]]) -> dict[str, str]:
    if props:
        return {str(p["key"]): str(p["value"]) for p in props if p.get("key") is not None}
    try:
        value = json.loads(row.get("properties") or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
