"""OTLP/HTTP trace ingestion: OpenLLMetry and OpenTelemetry GenAI spans become rows of the log.

Pure (no Starlette, no store): the API (api/otlp.py) reads a body with `decode_traces` /
`decode_logs`, hands the spans (`spans`) or log events (`log_events`) to its `TraceBook`, and
submits one `row_job` per call it returns. Each job builds the row through `record.build_row`,
like a proxied call, with `source='otlp'` and `usage_source='client'` when the client's
instrumentation reported the tokens.

    decode.py  bodies (protobuf / JSON, gzip) -> span and log-record views
    genai.py   an LLM span (and its events) -> Call: provider, models, usage, content, timing
    wire.py    Call -> the provider's request/response bodies -> CallState
    book.py    TraceBook: sessions from the span tree, duplicates, twins, late log events
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..record import CallState, build_row
from .book import TraceBook, request_id
from .decode import JSON, PROTOBUF, OtlpError, decode_logs, decode_traces, empty_response, log_events, media_type, spans
from .genai import Call
from .wire import SOURCE, USAGE_SOURCE, finish_row

__all__ = [
    "JSON",
    "PROTOBUF",
    "SOURCE",
    "USAGE_SOURCE",
    "Call",
    "OtlpError",
    "TraceBook",
    "decode_logs",
    "decode_traces",
    "empty_response",
    "log_events",
    "media_type",
    "request_id",
    "row_job",
    "spans",
]


def row_job(
    state: CallState, call: Call, *, price_overrides: dict | None = None, estimate: bool = True
) -> Callable[[], tuple[dict[str, Any], list[dict[str, str]]]]:
    """A job for the log writer (`LogStore.submit`): the row of one traced call."""

    def job() -> tuple[dict[str, Any], list[dict[str, str]]]:
        row, props = build_row(state, price_overrides=price_overrides, estimate=estimate)
        return finish_row(row, call), props

    return job
