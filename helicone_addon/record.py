"""`CallState` (what the proxy learned about one call as it went) -> one `requests` row.

`build_row` does the heavy work of a call — decoding, usage extraction, estimation, pricing — and
runs on the store's writer thread, never on mitmproxy's event loop. The proxy, the API's log
ingestion and the async logger all go through it, so a call is understood the same way whichever
door it came through.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import pricing, render, usage
from .columns import USAGE_COLUMNS
from .headers import H_RERUN_OF, CallOptions
from .redact import redact_headers, redact_url
from .usage.types import ParsedResponse, RequestInfo

logger = logging.getLogger(__name__)


def _make_dumps():
    """``json.dumps`` with its default settings, for the JSON columns of a row.

    ``json.dumps`` sets up a new C encoder on every call, which costs more than encoding the few
    headers or the usage object of a call. Here the stdlib's C encoder is made once with the same
    settings (ASCII escapes, ", " and ": " separators, NaN allowed, keys in their order), so the text
    is the same as ``json.dumps`` gives. It skips the check for circular references: what is encoded
    here (header dicts, properties, attempts, usage objects parsed from JSON) holds none. Without the
    C encoder (another Python implementation) this is ``json.dumps`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return json.dumps
    encode = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None,
                  ": ", ", ", False, False, True)
    join = "".join

    def dumps(obj: Any) -> str:
        return join(encode(obj, 0))

    return dumps


_dumps = _make_dumps()


@dataclass
class CallState:
    """The facts of one call: what the client asked, what came back, what the proxy decided.

    The proxy fills it in as the call goes (it lives in the flow's record, see
    `helicone_addon/proxy/flowrecord.py`); the API and the async logger build one in a go. Once
    the call is finished nobody writes to it again, and `build_row` only reads it.
    """

    id: str
    started_at: float  # epoch seconds: the proxy received the request
    source: str = "proxy"
    provider: str | None = None
    api: str = "unknown"
    method: str = "POST"
    host: str = ""
    path: str = ""
    url: str = ""  # incoming URL as the client asked (before map_remote / gateway)
    target_url: str | None = None
    options: CallOptions | None = None
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes | None = None
    request_info: RequestInfo | None = None  # parsed request, when the proxy already needed it
    # response
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes | None = None  # raw (still content-encoded) body, non-streamed
    chunks: list[bytes] | None = None  # raw streamed chunks (still content-encoded)
    chunk_offsets_ms: list[int] | None = None  # arrival of each chunk, ms after the first
    content_encoding: str | None = None
    content_type: str | None = None
    first_chunk_at: float | None = None
    ended_at: float | None = None
    streamed: bool = False
    # decisions
    cache_hit: bool = False
    cache_reference_id: str | None = None  # on a hit: the call that filled the cache
    replayed_from: str | None = None  # replay mode: id of the recording that answered (-> replayed_from)
    rate_limited: bool = False
    retries: int = 0
    attempts: list[int | None] = field(default_factory=list)
    fallback_index: int | None = None
    error: str | None = None
    no_answer: bool = False  # the provider never answered (connection error, time-out): status NULL
    cancelled: bool = False


_seconds: dict[int, str] = {}  # whole second since the epoch -> "YYYY-MM-DDTHH:MM:SS"
_MAX_TS = 253402300800  # 10000-01-01: datetime's range ends before


def iso(ts: float) -> str:
    """ISO-8601 UTC time in milliseconds, as ``datetime.fromtimestamp(ts, UTC).isoformat(timespec=
    "milliseconds")`` writes it, with "Z" for "+00:00".

    Calls come in the same few seconds, so the text of each second is kept; the milliseconds are
    worked out as datetime does: the fraction rounded to microseconds half to even (which may carry
    into the next second), then cut to milliseconds.
    """
    if type(ts) is float and 0.0 <= ts < _MAX_TS:
        sec = int(ts)
        us = round((ts - sec) * 1e6)  # ts - sec is exact (the fraction datetime takes with modf)
        if us >= 1_000_000:
            sec += 1
            us -= 1_000_000
        head = _seconds.get(sec)
        if head is None:
            if len(_seconds) >= 4096:
                _seconds.clear()
            head = _seconds[sec] = datetime.fromtimestamp(sec, UTC).isoformat()[:-6]
        return f"{head}.{us // 1000:03d}Z"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def response_bytes(state: CallState) -> bytes:
    """The response body, content-decoded."""
    raw = b"".join(state.chunks) if state.chunks is not None else (state.response_body or b"")
    return usage.decode_body(raw, state.content_encoding) if raw else b""


def build_row(
    state: CallState,
    *,
    price_overrides: dict | None = None,
    estimate: bool = True,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The `requests` row and the `properties` rows of one finished call. Never raises, and
    never writes to `state`."""
    opts = state.options
    req = state.request_info
    if req is None:
        req = usage.parse_request(state.api, state.path, state.request_body)
    body = b""
    parsed = None
    if state.status is not None or state.chunks:
        try:
            body = response_bytes(state)
            parsed = usage.parse_response(state.api, body, state.content_type, state.status)
        except Exception:  # a parser bug must not lose the row
            logger.exception("usage extraction failed for %s", state.id)
    if parsed is None:
        parsed = ParsedResponse()

    u = parsed.usage
    if (
        u is None
        and estimate
        and state.status is not None
        and 200 <= state.status < 300
        and (parsed.streamed or state.streamed)
        and state.api != "unknown"
    ):
        try:
            u = usage.estimate(req, parsed, parsed.model or req.model)
        except Exception:
            logger.exception("usage estimate failed for %s", state.id)
    model = (opts.model_override if opts else None) or parsed.model or req.model

    cost = note = version = None
    saved = None
    if u is not None:
        try:
            pr = pricing.price(state.provider, model, u, overrides=price_overrides)
            cost, note, version = pr.cost_usd, pr.note, pr.prices_version
        except Exception as e:  # pragma: no cover - pricing never raises by contract
            note = f"pricing failed: {e}"
    if state.cache_hit:  # priced as the original call was; this one cost nothing
        saved, cost, note = cost, 0.0, "cache hit"

    error = state.error
    if parsed.error and not error:
        error = parsed.error
    if state.cancelled and not error:
        error = "cancelled: client disconnected"

    user_id = (opts.user_id if opts else None) or req.user
    props = dict(opts.properties) if opts else {}
    ended = state.ended_at or time.time()
    latency = (ended - state.started_at) * 1000 if state.status is not None or state.error else None
    ttft = (state.first_chunk_at - state.started_at) * 1000 if state.first_chunk_at else None

    omit_req = bool(opts and opts.omit_request)
    omit_resp = bool(opts and opts.omit_response)
    row: dict[str, Any] = {
        "id": state.id,
        "created_at": iso(state.started_at),
        "source": state.source,
        "provider": state.provider,
        "api": state.api,
        "method": state.method,
        "host": state.host,
        "path": redact_url(state.path),
        "target_url": redact_url(state.target_url) if state.target_url else None,
        "model": model,
        "model_requested": req.model,
        "status": None if state.no_answer else state.status,
        "streamed": int(bool(parsed.streamed or state.streamed)),
        "latency_ms": round(latency, 3) if latency is not None else None,
        "ttft_ms": round(ttft, 3) if ttft is not None else None,
        "usage_source": u.source if u else None,
        "usage_raw": _dumps(u.raw) if u is not None and u.raw is not None else None,
        "cost_usd": cost,
        "cost_note": note,
        "prices_version": version,
        "cache_saved_usd": saved,
        "user_id": user_id,
        "session_id": opts.session_id if opts else None,
        "session_path": opts.session_path if opts else None,
        "session_name": opts.session_name if opts else None,
        "properties": _dumps(props) if props else None,
        "cache_hit": int(state.cache_hit),
        "cache_reference_id": state.cache_reference_id,
        "retries": state.retries,
        "attempts": _dumps(state.attempts) if state.attempts else None,
        "fallback_index": state.fallback_index,
        "rate_limited": int(state.rate_limited),
        "error": error,
        "client_request_id": opts.client_request_id if opts else None,
        "request_headers": _dumps(redact_headers(state.request_headers)),
        "request_body": None if omit_req else _text(state.request_body),
        "response_headers": _dumps(redact_headers(state.response_headers)),
        "response_body": None if omit_resp else _text(body),
        "stream_offsets": _stream_offsets(state),
        "replayed_from": state.replayed_from,
        "rerun_of": _rerun_of(state.request_headers),
    }
    row["prompt_text"], row["response_text"] = render.texts(
        state.api, None if omit_req else state.request_body, None if omit_resp else body, status=state.status,
        parsed=parsed, request_json=req.json)
    for c in USAGE_COLUMNS:
        row[c] = getattr(u, c) if u is not None else None
    if u is not None and row["total_tokens"] is None and u.prompt_tokens is not None and u.completion_tokens is not None:
        row["total_tokens"] = u.prompt_tokens + u.completion_tokens
    prop_rows = [{"request_id": state.id, "key": k, "value": v} for k, v in props.items()]
    return row, prop_rows


def _stream_offsets(state: CallState) -> str | None:
    """Arrival of a stream's chunks as the `stream_offsets` column (see replay.encode_stream_offsets)."""
    if not state.chunks or not state.chunk_offsets_ms or state.first_chunk_at is None:
        return None
    from .replay import encode_stream_offsets

    try:
        return encode_stream_offsets(
            state.chunks, state.chunk_offsets_ms, state.content_encoding,
            first_ms=(state.first_chunk_at - state.started_at) * 1000,
        )
    except Exception:  # timing is a bonus: never lose the row for it
        logger.exception("stream offsets failed for %s", state.id)
        return None


def _rerun_of(request_headers: list[tuple[str, str]]) -> str | None:
    for name, value in request_headers:
        if name.lower() == H_RERUN_OF:
            return value.strip()[:200] or None
    return None
