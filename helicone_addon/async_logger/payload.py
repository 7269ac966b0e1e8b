"""A captured call as Helicone's async log payload (the format: asynclog.py), for the endpoint sender."""

from __future__ import annotations

import json
import time
from typing import Any

from .. import headers as hdrs
from .call import Call

_SKIPPED_RESPONSE_HEADERS = {"content-encoding", "content-length", "transfer-encoding", "set-cookie"}


def build_payload(call: Call, endpoint: str, forced: str | None) -> tuple[str, dict, list[tuple[str, str]]]:
    """(url, body, extra headers) of the POST that logs `call` at `endpoint`; `forced` forces the provider id."""
    from ..asynclog import log_path
    from ..usage import decode_body

    opts = hdrs.parse(call.helicone, strict=False)
    _, _, provider = call.route(opts, forced)
    try:
        req_json = json.loads(call.request_body) if call.request_body else {}
    except ValueError:
        req_json = {"body": call.request_body.decode("utf-8", "replace") if call.request_body else ""}
    raw = b"".join(call.chunks)
    text = (decode_body(raw, call.header("content-encoding")) if raw else b"").decode("utf-8", "replace")
    response: dict[str, Any] = {"status": call.status if call.status is not None else -100}
    ctype = (call.header("content-type") or "").lower()
    resp_json: Any = None
    if "event-stream" not in ctype and text:
        try:
            resp_json = json.loads(text)
        except ValueError:
            resp_json = None
    if resp_json is not None:
        response["json"] = resp_json
    else:
        response["json"] = {"error": {"message": call.error}} if call.error and not text else {}
        if text:
            response["textBody"] = text
    response["headers"] = {k: v for k, v in call.response_headers if k.lower() not in _SKIPPED_RESPONSE_HEADERS}
    pairs = [*call.helicone, (hdrs.H_REQUEST_ID, call.id)]
    end = call.ended_at or time.time()
    timing: dict[str, Any] = {
        "startTime": {"seconds": int(call.started_at), "milliseconds": int(call.started_at * 1000) % 1000},
        "endTime": {"seconds": int(end), "milliseconds": int(end * 1000) % 1000},
    }
    if call.first_chunk_at is not None and "event-stream" in ctype:
        timing["timeToFirstToken"] = round((call.first_chunk_at - call.started_at) * 1000)
    payload = {
        "providerRequest": {"url": call.url, "json": req_json, "meta": dict(pairs)},
        "providerResponse": response,
        "timing": timing,
    }
    url = endpoint if endpoint.endswith("/log") else f"{endpoint}{log_path(provider)}"
    headers = [(k, v) for k, v in pairs if k.lower() != hdrs.H_AUTH]
    if provider and not opts.target_provider:
        headers.append(("Helicone-Target-Provider", provider))
    return url, payload, headers
