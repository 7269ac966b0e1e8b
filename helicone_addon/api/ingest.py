"""The async log routes (Helicone's worker and Jawn): POST a call made elsewhere, get it logged.

    POST /custom/v1/log, /oai/v1/log, /anthropic/v1/log, /googleapis/v1/log  -> 200 text "ok" + helicone-id
         (also /v1/trace/custom/v1/log and /v1/trace/custom/log, as Jawn)

The payload format (paths, validation, decoding) lives in asynclog.py, shared with the async logger
that sends it. A valid payload becomes a row through `record.build_row` on the log writer thread,
like a proxied call (`source='async'`). Errors answer ``{"error": message}``; a failure after
validation answers 200 ``{"error": ...}``, as Helicone does.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import asynclog
from ..record import build_row
from .backend import Backend
from .web import LOG, MAX_PAYLOAD, ApiError, endpoint, json_reply, logger, read_body, require_json, text


def _too_big(raw: bytes | None) -> tuple[bool, Any]:
    """Helicone measures JSON.stringify(payload): a body over MAX_PAYLOAD may still fit compacted.
    (too big?, the parsed payload when it had to be parsed to tell)."""
    if raw is None:
        return True, asynclog.MISSING
    if len(raw) <= MAX_PAYLOAD:
        return False, asynclog.MISSING
    try:
        model = json.loads(raw)
    except (ValueError, RecursionError):
        return True, asynclog.MISSING
    return len(json.dumps(model, ensure_ascii=False, separators=(",", ":"))) > MAX_PAYLOAD, model


def submit(backend: Backend, model: dict, http_headers: list[tuple[str, str]], path_provider: str | None) -> str:
    """Queue a validated payload for the log writer; returns the call's id."""
    state = asynclog.to_call_state(model, http_headers, path_provider)
    if backend.submit is None:
        raise RuntimeError("no log store to write to")
    overrides, estimate = backend.price_overrides(), backend.estimate
    backend.submit(lambda: build_row(state, price_overrides=overrides, estimate=estimate))
    return state.id


@endpoint(LOG)
async def log(request: Request) -> Response:
    require_json(request)
    raw = await read_body(request)
    too_big, model = _too_big(raw)
    if too_big:
        return text(400, "Payload too large")
    assert raw is not None
    if model is asynclog.MISSING:
        try:
            model = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"Invalid JSON body: {e}") from None
    if asynclog.SURROGATE_ESCAPE.search(raw):
        model = asynclog.scrub_surrogates(model)
    error = asynclog.validate(model)
    if error is not None:
        raise ApiError(400, error)
    path_provider = asynclog.LOG_ROUTES[request.url.path][0]
    try:
        rid = submit(request.app.state.backend, model, list(request.headers.items()), path_provider)
    except Exception as e:  # Helicone: a logging failure after validation -> 200 {"error": ...}
        logger.exception("helicone api: async log could not be recorded")
        return json_reply(200, {"error": str(e)})
    return text(200, "ok", {"helicone-id": rid})


ROUTES = [Route(path, log, methods=["POST"]) for path in asynclog.LOG_ROUTES]
