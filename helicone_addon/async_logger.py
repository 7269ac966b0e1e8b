"""HeliconeAsyncLogger: log openai / anthropic SDK calls from inside the app, off the call's path.

    from helicone_addon.async_logger import HeliconeAsyncLogger

    hlog = HeliconeAsyncLogger()                                  # straight into the SQLite log
    hlog = HeliconeAsyncLogger(endpoint="http://127.0.0.1:8585")  # or to a Helicone-style /v1/log endpoint
    client = hlog.instrument(openai.OpenAI())                     # also anthropic.Anthropic(), Async*, httpx clients

    client.chat.completions.create(..., extra_headers={"Helicone-User-Id": "alice",
                                                       "Helicone-Property-Feature": "search"})
    with hlog.meta(user_id="alice", session_id="s-1", properties={"feature": "search"}):
        client.chat.completions.create(...)
    hlog.last_request_id   # id of the last call logged in this context (for feedback / scores)
    hlog.flush(); hlog.close()

How: ``instrument`` wraps the transport(s) of the client's httpx / httpx2 client (openai >= 3 and
anthropic >= 2 use ``httpx2``; classes are found by duck typing, nothing here imports either). The
wrapper strips ``Helicone-*`` headers before the request leaves, adds ``Helicone-Id`` to the response
headers, and wraps the response byte stream in a tee that copies chunks as the app reads them (no
buffering, no extra await). When the stream is consumed or closed, the finished call is handed over
without blocking: to a ``LogStore`` writer thread (usage, cost and the row are built there by
``record.build_row``, as for a proxied call; ``source='logger'``) or to a sender thread that POSTs
Helicone's async log payload (asynclog.py) to ``endpoint`` (``source='async'`` there). Logging failures
are counted in ``counters`` and logged; they never reach the call.

This module must not import mitmproxy.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from . import config, providers, security
from . import headers as hdrs

logger = logging.getLogger("helicone_addon.async_logger")

MAX_LOGGED_BYTES = 128 * 1024 * 1024  # bytes of one response kept for the log (the app gets all of them)


@dataclass
class _Call:
    """What the wrapper saw of one call (raw; turned into a row off the app's thread)."""

    id: str
    started_at: float
    method: str
    url: str
    sdk: str | None
    request_headers: list[tuple[str, str]]  # as the app sent them, Helicone-* included
    helicone: list[tuple[str, str]]  # Helicone-* pairs: logger defaults, meta() context, then the call's own
    request_body: bytes | None
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    kept: int = 0
    first_chunk_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    cancelled: bool = False
    exhausted: bool = False
    finished: bool = False

    def header(self, name: str, which: str = "response") -> str | None:
        pairs = self.response_headers if which == "response" else self.request_headers
        name = name.lower()
        return next((v for k, v in pairs if k.lower() == name), None)


def _find_base(obj: Any, name: str) -> type | None:
    """The httpx / httpx2 class called `name` that `obj` belongs with (MRO first, then its package)."""
    for cls in type(obj).__mro__:
        if cls.__name__ == name:
            return cls
    import sys

    mod = sys.modules.get(type(obj).__module__.partition(".")[0])
    base = getattr(mod, name, None)
    return base if isinstance(base, type) else None


_TEE_CLASSES: dict[tuple[type | None, bool], type] = {}


def _tee_class(stream: Any, is_async: bool) -> type:
    base = _find_base(stream, "AsyncByteStream" if is_async else "SyncByteStream")
    key = (base, is_async)
    cls = _TEE_CLASSES.get(key)
    if cls is None:
        mixin = _AsyncTee if is_async else _SyncTee
        cls = type(mixin.__name__, (mixin, base) if base is not None else (mixin,), {})
        _TEE_CLASSES[key] = cls
    return cls


# SSE events that end a stream: SDKs close the response right after them, before the HTTP body's end
_TERMINAL = (b"[DONE]", b"message_stop", b"response.completed", b"response.failed", b"response.incomplete")


def _looks_complete(c: _Call) -> bool:
    """Was a response closed early only after its last event (then it is not a cancellation)?"""
    if not c.chunks or "event-stream" not in (c.header("content-type") or "").lower():
        return False
    if (c.header("content-encoding") or "identity").lower() != "identity":
        return True  # cannot look inside cheaply; do not guess a cancellation
    tail = b"".join(c.chunks[-3:])[-512:]
    return any(t in tail for t in _TERMINAL)


class _TeeBase:
    def __init__(self, inner: Any, call: _Call, owner: HeliconeAsyncLogger) -> None:
        self._inner = inner
        self._call = call
        self._owner = owner

    def _chunk(self, data: bytes) -> None:
        try:
            if data:
                c = self._call
                if c.first_chunk_at is None:
                    c.first_chunk_at = time.time()
                if c.kept < self._owner.max_logged_bytes:
                    c.chunks.append(bytes(data))
                    c.kept += len(data)
        except Exception:  # noqa: BLE001 - never reaches the app
            self._owner._count("internal_errors")

    def _finish(self, error: BaseException | None = None) -> None:
        c = self._call
        if c.finished:
            return
        c.finished = True
        try:
            c.ended_at = time.time()
            if error is not None and c.error is None:
                c.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            elif not c.exhausted and c.error is None and not _looks_complete(c):
                c.cancelled = True
                c.error = "cancelled: the response was closed before it was read to the end"
            self._owner._emit(c)
        except Exception:  # never reaches the app
            self._owner._count("internal_errors")
            logger.exception("helicone async logger: could not hand over a finished call")

    def __del__(self) -> None:  # an abandoned response still gets logged
        try:
            if not self._call.finished:
                self._finish()
        except Exception:  # noqa: BLE001, S110 - never raise from a finalizer
            pass


class _SyncTee(_TeeBase):
    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._chunk(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as e:
            self._finish(e)
            raise
        self._call.exhausted = True
        self._finish()

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


class _AsyncTee(_TeeBase):
    async def __aiter__(self):
        try:
            async for chunk in self._inner:
                self._chunk(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as e:
            self._finish(e)
            raise
        self._call.exhausted = True
        self._finish()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._finish()


class _TransportBase:
    def __init__(self, inner: Any, owner: HeliconeAsyncLogger, sdk: str | None) -> None:
        self._inner = inner
        self._owner = owner
        self._sdk = sdk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _wrap_response(self, response: Any, call: _Call | None, is_async: bool) -> Any:
        if call is None:
            return response
        try:
            call.status = int(response.status_code)
            call.response_headers = [(str(k), str(v)) for k, v in response.headers.multi_items()] \
                if hasattr(response.headers, "multi_items") else [(str(k), str(v)) for k, v in response.headers.items()]
            response.headers[hdrs.R_ID] = call.id
            response.stream = _tee_class(response.stream, is_async)(response.stream, call, self._owner)
        except Exception:
            self._owner._count("internal_errors")
            logger.exception("helicone async logger: could not attach to a response")
        return response


class _SyncLoggingTransport(_TransportBase):
    def handle_request(self, request: Any) -> Any:
        call = self._owner._begin(request, self._sdk)
        try:
            response = self._inner.handle_request(request)
        except BaseException as e:
            self._owner._fail(call, e)
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
        call = self._owner._begin(request, self._sdk)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as e:
            self._owner._fail(call, e)
            raise
        return self._wrap_response(response, call, is_async=True)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)


def _meta_pairs(
    user_id: str | None = None,
    session_id: str | None = None,
    session_path: str | None = None,
    session_name: str | None = None,
    properties: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for name, value in (("Helicone-User-Id", user_id), ("Helicone-Session-Id", session_id),
                        ("Helicone-Session-Path", session_path), ("Helicone-Session-Name", session_name)):
        if value is not None:
            pairs.append((name, str(value)))
    for k, v in (properties or {}).items():
        pairs.append((f"Helicone-Property-{k}", str(v)))
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for k, v in items:
        if not hdrs.is_helicone(k):
            raise ValueError(f"meta headers must be Helicone-* headers, got {k!r}")
        pairs.append((k, str(v)))
    return tuple(pairs)


class HeliconeAsyncLogger:
    """Logs SDK calls after the fact. Give ``db_path`` (default: the proxy's database) or ``endpoint``.

    ``endpoint``: base URL of a Helicone-style log API (``http://127.0.0.1:8585``, or Helicone's own
    ``https://api.worker.helicone.ai``); the path (``/oai/v1/log``, ``/anthropic/v1/log``, ...) is picked
    per call, unless the URL already ends in ``/log``. ``api_key`` is sent as ``Authorization: Bearer``;
    without it, ``$HELICONE_API_KEY``, else (for a loopback endpoint only) the local API's token from
    ``<data_dir>/api-token`` (``data_dir`` defaults to the proxy's, see config.py).
    ``provider`` forces the provider id of every call (else: known host, then the SDK, then the path).
    ``user_id`` / ``properties`` / ``session_*`` are defaults for every call.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        endpoint: str | None = None,
        *,
        api_key: str | None = None,
        data_dir: str | Path | None = None,
        provider: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        session_path: str | None = None,
        session_name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        price_overrides: dict | None = None,
        estimate: bool = True,
        timeout: float = 10.0,
        max_queue: int = 10000,
        max_logged_bytes: int = MAX_LOGGED_BYTES,
    ) -> None:
        if db_path is not None and endpoint is not None:
            raise ValueError("give db_path or endpoint, not both")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.db_path = None if endpoint else Path(db_path).expanduser() if db_path else config.db_path()
        self.api_key = api_key
        self.data_dir = data_dir
        self.provider = provider.lower() if provider else None
        self.price_overrides = price_overrides
        self.estimate = estimate
        self.timeout = timeout
        self.max_logged_bytes = max_logged_bytes
        self.counters = {"logged": 0, "sent": 0, "failed": 0, "dropped": 0, "internal_errors": 0}
        self._lock = threading.Lock()
        self._defaults = _meta_pairs(user_id, session_id, session_path, session_name, properties)
        self._meta: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
            f"helicone_meta_{id(self)}", default=()
        )
        self._last_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"helicone_last_id_{id(self)}", default=None
        )
        self._closed = False
        self._store = None
        self._queue: queue.Queue | None = None
        self._sender: threading.Thread | None = None
        if self.endpoint:
            self._queue = queue.Queue(maxsize=max_queue)
            self._sender = threading.Thread(target=self._send_loop, name="helicone-async-log-sender", daemon=True)
            self._sender.start()
        else:
            try:
                from .store import LogStore

                self._store = LogStore(self.db_path).start()
            except Exception as e:  # noqa: BLE001 - a broken destination must not break the app
                self._store = None
                logger.error("helicone async logger: cannot open %s (%s); calls will NOT be logged", self.db_path, e)

    # -- public API ------------------------------------------------------------------------------
    def instrument(self, client: Any) -> Any:
        """Wrap an openai / anthropic client (sync or async), or an httpx / httpx2 client, in place."""
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
        http._transport = self._wrap(http._transport, sdk, is_async)
        mounts = getattr(http, "_mounts", None)
        if isinstance(mounts, dict):
            for pattern, transport in list(mounts.items()):
                if transport is not None:
                    mounts[pattern] = self._wrap(transport, sdk, is_async)
        return client

    @contextlib.contextmanager
    def meta(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        session_path: str | None = None,
        session_name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[None]:
        """Helicone metadata for the calls made inside the block (nests; inner values win)."""
        pairs = _meta_pairs(user_id, session_id, session_path, session_name, properties, headers)
        token = self._meta.set(self._meta.get() + pairs)
        try:
            yield
        finally:
            self._meta.reset(token)

    def stats(self) -> dict[str, int]:
        """The logger's counters plus, in database mode, the log store's (prefixed ``store_``)."""
        with self._lock:
            out = dict(self.counters)
        store = self._store
        if store is not None:
            out.update({f"store_{k}": v for k, v in store.counters.items()})
        return out

    @property
    def last_request_id(self) -> str | None:
        """The Helicone id of the last call started in this thread / task context."""
        return self._last_id.get()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every call finished so far is written / sent. True when all were handled."""
        deadline = time.monotonic() + timeout
        if self._queue is not None:
            while self._queue.unfinished_tasks:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
        if self._store is not None:
            return self._store.flush(max(0.0, deadline - time.monotonic()))
        return True

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        if self._queue is not None and self._sender is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._sender.join(timeout)
        if self._store is not None:
            self._store.close(timeout)
            self._store = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wrapping ----------------------------------------------------------------------------------
    def _wrap(self, transport: Any, sdk: str | None, is_async: bool) -> Any:
        if isinstance(transport, _TransportBase) and transport._owner is self:
            return transport
        cls = _AsyncLoggingTransport if is_async else _SyncLoggingTransport
        return cls(transport, self, sdk)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def _begin(self, request: Any, sdk: str | None) -> _Call | None:
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
            self._count("internal_errors")
            logger.exception("helicone async logger: could not read the request")
            return None
        try:
            pairs = [*self._defaults, *self._meta.get(), *own]
            rid = None
            for k, v in pairs:
                if k.lower() == hdrs.H_REQUEST_ID and hdrs.UUID_RE.match(v.strip()):
                    rid = v.strip().lower()
            rid = rid or str(uuid.uuid4())
            try:
                body = request.content  # the SDKs send bytes bodies, already read
            except Exception:  # noqa: BLE001 - a streamed upload: not logged
                body = None
            call = _Call(
                id=rid,
                started_at=time.time(),
                method=str(request.method),
                url=str(request.url),
                sdk=sdk,
                request_headers=sent,
                helicone=pairs,
                request_body=bytes(body) if body is not None else None,
            )
            self._last_id.set(rid)
            return call
        except Exception:
            self._count("internal_errors")
            logger.exception("helicone async logger: could not start a call record")
            return None

    def _fail(self, call: _Call | None, error: BaseException) -> None:
        if call is None or call.finished:
            return
        try:
            call.ended_at = time.time()
            call.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            call.finished = True
            self._emit(call)
        except Exception:  # noqa: BLE001
            self._count("internal_errors")

    def _emit(self, call: _Call) -> None:
        """Hand a finished call over. Never blocks, never raises."""
        try:
            if self._closed:
                self._count("dropped")
                return
            if self._queue is not None:
                try:
                    self._queue.put_nowait(call)
                except queue.Full:
                    self._count("dropped")
                    logger.warning("helicone async logger: send queue full; a call was not logged")
                return
            if self._store is None:
                self._count("dropped")
                return
            self._store.submit(lambda: self._row(call))
        except Exception:
            self._count("internal_errors")
            logger.exception("helicone async logger: could not queue a call")

    # -- off the app's thread: rows and payloads ---------------------------------------------------------
    def _provider(self, call: _Call, opts: hdrs.CallOptions, host: str, path: str) -> str | None:
        if self.provider:
            return self.provider
        if opts.target_provider:
            return opts.target_provider.lower()
        return providers.DEFAULT_MATCHER.provider_for(host) or call.sdk or providers.provider_from_path(path)

    def _row(self, call: _Call):
        from .record import CallState, build_row

        opts = dataclasses.replace(hdrs.parse(call.helicone, strict=False), request_id=call.id)
        parts = urlsplit(call.url)
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        provider = self._provider(call, opts, host, path)
        ctype = call.header("content-type") or ""
        streamed = "event-stream" in ctype.lower()
        state = CallState(
            id=call.id,
            started_at=call.started_at,
            source="logger",
            provider=provider,
            api=providers.api_for(provider, path),
            method=call.method,
            host=host,
            path=path,
            url=call.url,
            target_url=call.url,
            options=opts,
            request_headers=call.request_headers,
            request_body=call.request_body,
            status=call.status,
            response_headers=call.response_headers,
            response_body=None if streamed else b"".join(call.chunks) if call.status is not None else None,
            chunks=list(call.chunks) if streamed else None,
            content_encoding=call.header("content-encoding"),
            content_type=ctype or None,
            first_chunk_at=call.first_chunk_at if streamed else None,
            ended_at=call.ended_at,
            streamed=streamed,
            error=call.error,
            cancelled=call.cancelled,
        )
        row, props = build_row(state, price_overrides=self.price_overrides, estimate=self.estimate)
        self._count("logged")
        return row, props

    def _payload(self, call: _Call) -> tuple[str, dict, list[tuple[str, str]]]:
        """Helicone's async log payload for one call: (url, body, extra headers)."""
        from .usage import decode_body

        opts = hdrs.parse(call.helicone, strict=False)
        parts = urlsplit(call.url)
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        provider = self._provider(call, opts, host, path)
        try:
            req_json = json.loads(call.request_body) if call.request_body else {}
        except ValueError:
            req_json = {"body": call.request_body.decode("utf-8", "replace") if call.request_body else ""}
        raw = b"".join(call.chunks)
        try:
            body = decode_body(raw, call.header("content-encoding")) if raw else b""
        except Exception:  # noqa: BLE001
            body = raw
        text = body.decode("utf-8", "replace")
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
        skip = {"content-encoding", "content-length", "transfer-encoding", "set-cookie"}
        response["headers"] = {k: v for k, v in call.response_headers if k.lower() not in skip}
        pairs = [*call.helicone, (hdrs.H_REQUEST_ID, call.id)]
        meta: dict[str, str] = {}
        for k, v in pairs:
            meta[k] = v
        end = call.ended_at or time.time()
        timing: dict[str, Any] = {
            "startTime": {"seconds": int(call.started_at), "milliseconds": int(call.started_at * 1000) % 1000},
            "endTime": {"seconds": int(end), "milliseconds": int(end * 1000) % 1000},
        }
        if call.first_chunk_at is not None and "event-stream" in ctype:
            timing["timeToFirstToken"] = round((call.first_chunk_at - call.started_at) * 1000)
        payload = {
            "providerRequest": {"url": call.url, "json": req_json, "meta": meta},
            "providerResponse": response,
            "timing": timing,
        }
        if self.endpoint and self.endpoint.endswith("/log"):
            url = self.endpoint
        else:
            from .asynclog import log_path

            url = f"{self.endpoint}{log_path(provider)}"
        headers = [(k, v) for k, v in pairs if k.lower() != hdrs.H_AUTH]
        if provider and not opts.target_provider:
            headers.append(("Helicone-Target-Provider", provider))
        return url, payload, headers

    def _api_key(self) -> str | None:
        """The key sent to the endpoint: api_key, else $HELICONE_API_KEY, else the local API's token
        file when the endpoint is on this machine (read per send: the proxy may start later)."""
        if self.api_key:
            return self.api_key
        if security.is_loopback(urlsplit(self.endpoint or "").hostname or ""):
            return security.client_token(self.data_dir)
        return os.environ.get(security.TOKEN_ENV) or None

    def _send_loop(self) -> None:
        assert self._queue is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        warned = 0
        while True:
            call = self._queue.get()
            try:
                if call is None:
                    return
                url, payload, extra = self._payload(call)
                data = json.dumps(payload).encode()
                req = urllib.request.Request(url, data=data, method="POST")
                req.add_header("Content-Type", "application/json")
                api_key = self._api_key()
                if api_key:
                    req.add_header("Authorization", f"Bearer {api_key}")
                for k, v in extra:
                    req.add_header(k, v)
                err = None
                for attempt in range(2):
                    try:
                        with opener.open(req, timeout=self.timeout) as resp:
                            reply = resp.read(4096)
                        if resp.status == 200 and reply.strip().startswith(b"{"):
                            err = f"the endpoint answered 200 {reply[:200]!r}"  # Helicone: logging failed
                        else:
                            err = None
                        break
                    except urllib.error.HTTPError as e:
                        err = f"HTTP {e.code}: {e.read(300)!r}"
                        if e.code < 500:
                            break
                    except (OSError, ValueError) as e:
                        err = f"{type(e).__name__}: {e}"
                    time.sleep(0.2 * (attempt + 1))
                if err is None:
                    self._count("sent")
                else:
                    self._count("failed")
                    if warned < 5 or warned % 100 == 0:
                        logger.warning("helicone async logger: could not send a log to %s: %s", url, err)
                    warned += 1
            except Exception:
                self._count("internal_errors")
                logger.exception("helicone async logger: sender error")
            finally:
                self._queue.task_done()
