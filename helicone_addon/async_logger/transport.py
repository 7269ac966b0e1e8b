"""Wrapping an SDK's httpx / httpx2 transports (found by duck typing; neither is imported here).

On the app's thread, before a request leaves, the wrapper strips its ``Helicone-*`` headers and starts a
`Call`; on the response it adds ``Helicone-Id`` and puts a tee (tee.py) on the byte stream. A failed
request is handed over at once. Nothing here raises into the call: failures are counted and logged.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Self

from .. import headers as hdrs
from . import tee
from .call import Call
from .meta import request_id

if TYPE_CHECKING:
    from .owner import Owner

logger = logging.getLogger(__package__)


def instrument(client: Any, owner: Owner) -> Any:
    """Wrap the transports of an openai / anthropic client (sync or async), or an httpx / httpx2 client, in place."""
    sdk = type(client).__module__.partition(".")[0]
    sdk = sdk if sdk in ("openai", "anthropic") else None
    http = client
    inner = getattr(client, "_client", None)
    if inner is not None and hasattr(inner, "_transport"):
        http = inner
    if not hasattr(http, "_transport"):
        raise TypeError(
            "instrument() takes an openai / anthropic client or an httpx / httpx2 Client, "
            f"got {type(client).__name__}"
        )
    is_async = any(c.__name__ == "AsyncClient" for c in type(http).__mro__)
    http._transport = _wrap(http._transport, owner, sdk, is_async)
    mounts = getattr(http, "_mounts", None)
    if isinstance(mounts, dict):
        for pattern, transport in list(mounts.items()):
            if transport is not None:
                mounts[pattern] = _wrap(transport, owner, sdk, is_async)
    return client


def _wrap(transport: Any, owner: Owner, sdk: str | None, is_async: bool) -> Any:
    if isinstance(transport, _TransportBase) and transport._owner is owner:
        return transport
    cls = _AsyncLoggingTransport if is_async else _SyncLoggingTransport
    return cls(transport, owner, sdk)


def _request_body(request: Any) -> bytes | None:
    try:
        body = request.content  # the SDKs send bytes bodies, already read
    except RuntimeError:  # httpx(2).RequestNotRead: a streamed upload, not logged
        return None
    return bytes(body) if body is not None else None


class _TransportBase:
    def __init__(self, inner: Any, owner: Owner, sdk: str | None) -> None:
        self._inner = inner
        self._owner = owner
        self._sdk = sdk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _begin(self, request: Any) -> Call | None:
        """On the app's thread, before the request leaves: strip Helicone-*, note what is needed."""
        try:
            own: list[tuple[str, str]] = []
            sent: list[tuple[str, str]] = []
            for k, v in request.headers.multi_items():
                sent.append((k, v))
                if hdrs.is_helicone(k):
                    own.append((k, v))
            for name in {k for k, _ in own}:
                del request.headers[name]
        except Exception:
            self._owner._count("internal_errors")
            logger.exception("helicone async logger: could not read the request")
            return None
        try:
            meta = self._owner._meta
            pairs = meta.pairs(own)
            call = Call(
                id=request_id(pairs),
                started_at=time.time(),
                method=str(request.method),
                url=str(request.url),
                sdk=self._sdk,
                request_headers=sent,
                helicone=pairs,
                request_body=_request_body(request),
            )
            meta.last_id = call.id
            return call
        except Exception:
            self._owner._count("internal_errors")
            logger.exception("helicone async logger: could not start a call record")
            return None

    def _fail(self, call: Call | None, error: BaseException) -> None:
        if call is not None:
            self._owner._finish(call, error)

    def _wrap_response(self, response: Any, call: Call | None, is_async: bool) -> Any:
        if call is None:
            return response
        try:
            call.status = int(response.status_code)
            call.response_headers = [(str(k), str(v)) for k, v in response.headers.multi_items()] \
                if hasattr(response.headers, "multi_items") else [(str(k), str(v)) for k, v in response.headers.items()]
            response.headers[hdrs.R_ID] = call.id
            response.stream = tee.tee_class(response.stream, is_async)(response.stream, call, self._owner)
        except Exception:
            self._owner._count("internal_errors")
            logger.exception("helicone async logger: could not attach to a response")
        return response


class _SyncLoggingTransport(_TransportBase):
    def handle_request(self, request: Any) -> Any:
        call = self._begin(request)
        try:
            response = self._inner.handle_request(request)
        except BaseException as e:
            self._fail(call, e)
            raise
        return self._wrap_response(response, call, is_async=False)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> Self:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)


class _AsyncLoggingTransport(_TransportBase):
    async def handle_async_request(self, request: Any) -> Any:
        call = self._begin(request)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as e:
            self._fail(call, e)
            raise
        return self._wrap_response(response, call, is_async=True)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)
