"""The per-flow record every addon of the chain reads and writes: `flow.metadata["helicone"]`.

It holds the call's facts (`call`, a `CallState` that becomes the log row) and the proxy's own
working state (keys, short-circuits, headers to add, what to do once the row exists). Addons never
call each other: they meet here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from helicone_addon import headers
from helicone_addon.record import CallState

META = "helicone"
SHORT_CIRCUIT = "helicone_short_circuit"  # flow.metadata key mitmweb users can filter on

RowListener = Callable[[dict[str, Any], list[dict[str, Any]]], None]


@dataclass
class FlowRecord:
    call: CallState
    url_parts: tuple[str, str, int]  # (scheme, host, port) as the client asked, for a lazy URL
    short_circuit: str | None = None  # 'header' | 'auth' | 'cache' | 'ratelimit' | 'replay'
    cache_key: str | None = None
    rate_limit_key: str | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)  # added before the first byte
    on_row: list[RowListener] = field(default_factory=list)  # run on the writer once the row is built
    replaying: bool = False  # sent to the replay server: the later addons leave it alone
    finished: bool = False  # handed to the log (response and error can both fire)

    @property
    def id(self) -> str:
        return self.call.id

    def incoming_url(self) -> str:
        """The URL as the client asked for it (before map_remote or the gateway rewrote it)."""
        if not self.call.url:
            scheme, host, port = self.url_parts
            default = 443 if scheme == "https" else 80
            authority = host if port == default else f"{host}:{port}"
            self.call.url = f"{scheme}://{authority}{self.call.path}"
        return self.call.url


def record_of(flow: http.HTTPFlow) -> FlowRecord | None:
    """The record of an LLM call still to be handled: None for other flows, or once answered."""
    rec = flow.metadata.get(META)
    if rec is None or rec.replaying or flow.response is not None or flow.error is not None:
        return None
    return rec


def json_response(status: int, body: Any, extra: Sequence[tuple[str, str]] = ()) -> http.Response:
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        [(b"content-type", b"application/json; charset=utf-8")] + [(k.encode(), v.encode()) for k, v in extra],
    )


def error_response(status: int, err: headers.HeaderError) -> http.Response:
    return json_response(status, err.body(), [(headers.R_ERROR, "true")])


def short_circuit(flow: http.HTTPFlow, rec: FlowRecord, kind: str, resp: http.Response, error: str | None) -> None:
    """Answer the client ourselves: the call never goes upstream."""
    call = rec.call
    rec.short_circuit = kind
    call.error = error
    call.status = resp.status_code
    resp.headers[headers.R_ID] = call.id
    if kind != "cache":
        resp.headers.setdefault(headers.R_STATUS, "success")
    call.ended_at = time.time()
    flow.metadata[SHORT_CIRCUIT] = kind
    flow.response = resp
