"""HTTP plumbing shared by the API's routes: errors, replies in Helicone's shapes, request bodies.

Two reply shapes: Helicone's REST envelope ``{"data": ..., "error": null | str}`` (the /v1 routes)
and the async log routes' ``{"error": str}`` / text ``ok``. `ApiError` carries a status and a
message and is rendered in the shape of the route that raised it (`endpoint`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..filters import json_type

logger = logging.getLogger("helicone_addon.api")

MAX_PAYLOAD = 10 * 1024 * 1024  # Helicone: JSON.stringify(payload).length > 10 MB -> 400
HARD_BODY_LIMIT = 64 * 1024 * 1024  # bodies beyond this are read and dropped, never buffered

ENVELOPE, LOG = "envelope", "log"  # reply shapes


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, default=str).encode()
    return Response(body, status, headers, media_type="application/json; charset=utf-8")


def envelope(
    status: int, data: Any = None, error: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    return json_reply(status, {"data": data, "error": error}, headers)


def text(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(body, status, headers)


def error_reply(shape: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if shape == LOG:
        return json_reply(status, {"error": message}, headers)
    return envelope(status, error=message, headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(shape: str = ENVELOPE) -> Callable[[Endpoint], Endpoint]:
    """Render ApiError in the route's reply shape; log anything unexpected and answer 500."""

    def wrap(fn: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                return await fn(request)
            except ApiError as e:
                return error_reply(shape, e.status, e.message)
            except Exception as e:  # a bug must not kill the connection silently: log it, answer 500
                logger.exception("helicone api: %s %s failed", request.method, request.url.path)
                return envelope(500, error=f"Internal error: {e}")

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run

    return wrap


def require_json(request: Request) -> None:
    """Bodies must be declared JSON: a browser cannot send that cross-site without asking first
    (CORS preflight, which this server never grants), so forms and text/plain posts are refused."""
    ctype = request.headers.get("content-type")
    media = (ctype or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        got = f"got {ctype!r}" if ctype else "none was given"
        raise ApiError(415, f"Content-Type must be application/json ({got})")


async def read_body(request: Request) -> bytes | None:
    """The request body; None when it is over HARD_BODY_LIMIT (then read to the end and dropped)."""
    buf = bytearray()
    too_big = False
    async for chunk in request.stream():
        if too_big:
            continue
        buf += chunk
        if len(buf) > HARD_BODY_LIMIT:
            too_big, buf = True, bytearray()
    return None if too_big else bytes(buf)


def parse_object(raw: bytes | None) -> dict:
    """A request body that must be a JSON object (ApiError 400 otherwise)."""
    if raw is None or len(raw) > MAX_PAYLOAD:
        raise ApiError(400, "Payload too large")
    if not raw.strip():
        raise ApiError(400, "Missing JSON body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"Invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The body must be a JSON object, got {json_type(body)}")
    return body


async def json_object(request: Request) -> dict:
    require_json(request)
    return parse_object(await read_body(request))
