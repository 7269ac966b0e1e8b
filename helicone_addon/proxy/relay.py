"""In-process relay for calls with Helicone retries or fallbacks (SPEC A.3, B.2.5, B.5, B.12).

Why a relay: mitmproxy can stream a response to the client only when it arrives over the flow's
own server connection, and a `response` hook that re-sends the request can only hand back a buffered
body (MITMPROXY.md section 5). So a call with `Helicone-Retry-Enabled: true` or `Helicone-Fallbacks`
is pointed at a small HTTP/1.1 server on 127.0.0.1 inside the proxy's own event loop:

    client -> mitmproxy -> relay (127.0.0.1:<port>) -> attempts with httpx -> provider

`Relay.route()` (called from the addon's `request` hook, after map_remote, gateway target, cache and
rate limit) registers a job under a random token and points `flow.request` at the relay with the
token in `x-helicone-relay-token`. The relay connection handler takes the job, makes the attempts,
and answers mitmproxy with the final response only:

- A retryable answer (429, 5xx) or a connection error / time-out is read and dropped, then the
  relay sleeps the SPEC B.5 back-off (`asyncio.sleep`: other flows keep flowing) and tries again.
  Nothing reaches the client before the final attempt answers, so a streamed call is retried
  before its first byte; once the final response has started it is never retried.
- Fallbacks (SPEC B.2.5): the entries are the targets, in order (the original target is not used;
  its path and query are kept). Each entry's `headers` replace the request headers entirely (only
  `content-type` is carried over when the entry has none, so the body stays readable), and its
  `bodyKeyOverride` is deep-merged into a JSON body. With retries on too, each entry is retried
  first (the back-off restarts at k=0 per entry), then the next entry is tried when the entry's
  final status matches its `onCodes` (or no answer came at all). The last entry is returned
  whatever its status. The response carries `Helicone-Fallback-Index: <i>`.
- The final response goes back with its status, headers and raw body bytes (content-encoding
  untouched, `aiter_raw`) chunk by chunk as they arrive, so the addon's SSE tee still sees every
  chunk. Hop-by-hop headers are dropped; `Helicone-Retries: <n>` is added when retries were on.
- When no attempt got an answer, the relay answers a SPEC B.12 JSON 502 ("Network connection
  lost") or 504 ("Request timeout") naming the cause; the row gets that status and the error.
- The call's row records every attempt's status (`attempts`, None for no answer), `retries`
  (attempts - 1), `fallback_index` and the final `target_url`.

Upstream settings follow mitmproxy's: `ssl_insecure`, `ssl_verify_upstream_trusted_ca` /
`..._confdir`, an upstream proxy (the flow's `server_conn.via`, set in `upstream:` mode, plus
`upstream_auth`), and `helicone_upstream_timeout` (seconds, per connect / read / write; <= 0: none).
Once the relay has the request, the flow's URL is set back to the real target so mitmweb and
mitmdump show where the call went.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import ssl
import time
from typing import Any

import h11
import httpx

from helicone_addon.proxy import errorpages
from helicone_addon import headers as hh
from helicone_addon.retry import is_retryable_status
from helicone_addon.proxy.relayplan import (
    TOKEN_HEADER,
    JOB_TTL_S,
    DISCARD_LIMIT,
    HOP_BY_HOP,
    _DEFAULT_CLIENT_HEADERS,
    Target,
    Job,
    RelayError,
    origin_of,
    fallback_targets,
    parse_timeout,
    describe_failure,
)

logger = logging.getLogger(__name__)

class _Out:
    """The relay's answer to mitmproxy over one connection (HTTP/1.1 via h11)."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.writer = writer
        self.started = False

    async def _write(self, event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def start(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        event = h11.Response(status_code=status, reason=reason, headers=headers)  # validates first
        self.started = True
        await self._write(event)

    async def data(self, chunk: bytes) -> None:
        await self._write(h11.Data(data=chunk))

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())

    async def json(self, status: int, body: dict, extra: list[tuple[bytes, bytes]] = ()) -> None:
        data = json.dumps(body).encode()
        reason = {502: b"Bad Gateway", 504: b"Gateway Timeout"}.get(status, b"Error")
        hdrs = [
            (b"content-type", b"application/json;charset=UTF-8"),
            (b"content-length", str(len(data)).encode()),
            (b"helicone-error", b"true"),
            *extra,
            (b"connection", b"close"),
        ]
        await self.start(status, reason, hdrs)
        await self.data(data)
        await self.end()

    def abort(self) -> None:
        """Break the connection so mitmproxy sees an incomplete response (upstream broke mid-body)."""
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class Relay:
    """The loopback relay. One per addon; started on first use in the running loop."""

    def __init__(self, rng: Any = random) -> None:
        self.rng = rng
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._jobs: dict[str, Job] = {}
        self._clients: dict[tuple, httpx.AsyncClient] = {}
        self._tasks: set[asyncio.Task] = set()
        self._starting: asyncio.Lock | None = None

    @property
    def port(self) -> int | None:
        return self._port

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> int:
        if self._server is None:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                if self._server is None:
                    server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
                    self._port = server.sockets[0].getsockname()[1]
                    self._server = server
                    logger.info("helicone: retry/fallback relay listening on 127.0.0.1:%s", self._port)
        assert self._port is not None
        return self._port

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except Exception:
                pass
            self._server = None
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                await c.aclose()
            except Exception:
                pass
        self._jobs.clear()

    # -- the addon's side ------------------------------------------------------------------------
    async def route(self, flow, state) -> None:
        """Send this flow through the relay. On any failure here the call goes direct (no retries)."""
        try:
            port = await self.start()
            job = self._make_job(flow, state)
        except Exception:
            logger.exception("helicone: relay unavailable; sending the call without retries/fallbacks")
            return
        self._purge()
        token = secrets.token_urlsafe(24)
        self._jobs[token] = job
        req = flow.request
        if job.proxy is not None:
            # mitmproxy would send the relay hop through the upstream proxy too: go direct instead
            # (the relay itself uses the upstream proxy for the real attempts).
            from mitmproxy import connection

            flow.server_conn = connection.Server(address=("127.0.0.1", port))
        req.scheme = "http"
        req.host = "127.0.0.1"
        req.port = port
        req.headers[TOKEN_HEADER] = token

    def _make_job(self, flow, state) -> Job:
        from mitmproxy import ctx

        req = flow.request
        opts = state.options
        hdrs = [(k, v) for k, v in req.headers.fields
                if k.lower().decode("latin-1") not in HOP_BY_HOP and k.lower() != b"content-length"]
        proxy = None
        via = getattr(flow.server_conn, "via", None)
        if via is not None:
            scheme, (host, port) = via
            auth = ""
            try:
                ua = ctx.options.upstream_auth
            except Exception:
                ua = None
            if ua:
                user, _, pw = ua.partition(":")
                from urllib.parse import quote

                auth = f"{quote(user, safe='')}:{quote(pw, safe='')}@"
            proxy = f"{scheme}://{auth}{host}:{port}"
        return Job(
            flow=flow,
            state=state,
            method=req.method,
            url=req.url,
            headers=hdrs,
            body=req.raw_content or b"",
            policy=opts.retry if opts is not None else None,
            fallbacks=tuple(opts.fallbacks) if opts is not None else (),
            proxy=proxy,
            origin=(req.scheme, req.host, req.port),
        )

    def _purge(self) -> None:
        now = time.monotonic()
        for token in [t for t, j in self._jobs.items() if now - j.created > JOB_TTL_S]:
            self._jobs.pop(token, None)

    # -- upstream client -------------------------------------------------------------------------
    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        from mitmproxy import ctx

        def opt(name, default=None):
            try:
                return getattr(ctx.options, name)
            except Exception:
                return default

        insecure = bool(opt("ssl_insecure", False))
        ca = opt("ssl_verify_upstream_trusted_ca") or None
        cadir = opt("ssl_verify_upstream_trusted_confdir") or None
        timeout = parse_timeout(opt("helicone_upstream_timeout", ""))
        key = (proxy, insecure, ca, cadir, timeout)
        client = self._clients.get(key)
        if client is None:
            if insecure:
                verify: Any = False
            elif ca or cadir:
                verify = ssl.create_default_context(cafile=ca, capath=cadir)
            else:
                verify = True
            client = httpx.AsyncClient(
                http1=True,
                http2=False,
                trust_env=False,
                verify=verify,
                proxy=proxy,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
            self._clients[key] = client
        return client

    async def _send(self, job: Job, target: Target) -> httpx.Response:
        client = self._client(job.proxy)
        request = client.build_request(job.method, target.url, headers=target.headers,
                                       content=target.body if target.body else None)
        asked = {k.lower() for k, _ in target.headers}
        for name in _DEFAULT_CLIENT_HEADERS:  # only what the client asked for goes upstream
            if name.encode() not in asked and name in request.headers:
                del request.headers[name]
        return await client.send(request, stream=True)

    async def _wait(self, delay: float, resp: httpx.Response | None) -> None:
        """The back-off, counted from the failed answer's headers; its body is dropped meanwhile."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if resp is not None:
            try:
                await asyncio.wait_for(self._discard(resp), timeout=max(delay, 0.001))
            except TimeoutError:
                pass  # _discard closed the response when it was cancelled
        left = delay - (loop.time() - start)
        if left > 0:
            await asyncio.sleep(left)

    @staticmethod
    async def _discard(resp: httpx.Response) -> None:
        try:
            n = 0
            async for chunk in resp.aiter_raw():
                n += len(chunk)
                if n > DISCARD_LIMIT:
                    break
        except Exception:
            pass
        finally:
            await resp.aclose()

    # -- the relay's side ------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_connection(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("helicone: relay connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        request: h11.Request | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
        out = _Out(conn, writer)
        token = next((v.decode("latin-1") for k, v in request.headers if k == TOKEN_HEADER.encode()), None)
        job = self._jobs.pop(token, None) if token else None
        if job is None:
            await out.json(502, errorpages.error_body(502, "helicone relay: unknown or expired relay job"))
            return
        self._show_real_target(job)
        serve = asyncio.create_task(self._run_job(job, out))
        gone = asyncio.create_task(self._wait_closed(reader))
        try:
            done, _ = await asyncio.wait({serve, gone}, return_when=asyncio.FIRST_COMPLETED)
            if serve not in done:  # mitmproxy dropped the connection: the client went away
                logger.debug("helicone: relay: client gone, closing upstream for %s", job.state.id)
                serve.cancel()
            await asyncio.gather(serve, return_exceptions=True)
        finally:
            gone.cancel()
            serve.cancel()

    @staticmethod
    async def _wait_closed(reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(65536):
                pass
        except Exception:
            pass

    @staticmethod
    def _show_real_target(job: Job) -> None:
        """mitmproxy has sent the request: show the real target on the flow again (display only)."""
        try:
            req = job.flow.request
            if TOKEN_HEADER in req.headers:
                del req.headers[TOKEN_HEADER]
            req.scheme, req.host, req.port = job.origin
        except Exception:
            pass

    async def _run_job(self, job: Job, out: _Out) -> None:
        state = job.state
        try:
            await self._attempt_all(job, out)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("helicone: relay failed for %s", getattr(state, "id", "?"))
            if not out.started:
                cause = f"helicone relay error: {type(e).__name__}: {e}"
                state.error = cause
                try:
                    await out.json(502, errorpages.error_body(502, cause))
                except Exception:
                    out.abort()
            else:
                out.abort()

    async def _attempt_all(self, job: Job, out: _Out) -> None:
        state = job.state
        policy = job.policy
        targets = fallback_targets(job) if job.fallbacks else [Target(job.url, job.headers, job.body)]
        attempts: list[int | None] = []
        state.attempts = attempts
        per_target = policy.max_attempts if policy is not None else 1
        for ti, target in enumerate(targets):
            last_target = ti == len(targets) - 1
            for k in range(per_target):
                resp: httpx.Response | None = None
                exc: Exception | None = None
                try:
                    resp = await self._send(job, target)
                except httpx.TransportError as e:  # connection errors, time-outs, protocol errors
                    exc = e
                status = resp.status_code if resp is not None else None
                attempts.append(status)
                state.retries = len(attempts) - 1
                if policy is not None and k < per_target - 1 and (resp is None or is_retryable_status(status)):
                    retry_after = resp.headers.get("retry-after") if resp is not None else None
                    delay = policy.delay_s(k, retry_after, rng=self.rng)
                    logger.info(
                        "helicone: %s attempt %d -> %s; retrying in %.3fs",
                        getattr(state, "id", "?"), len(attempts),
                        status if status is not None else describe_failure(exc), delay,
                    )
                    await self._wait(delay, resp)
                    continue
                if not last_target and target.fallback is not None and target.fallback.matches(status):
                    if resp is not None:
                        await self._discard(resp)
                    logger.info("helicone: %s fallback %d -> %s; trying fallback %d",
                                getattr(state, "id", "?"), ti,
                                status if status is not None else describe_failure(exc), ti + 1)
                    break
                state.target_url = target.url
                if job.fallbacks:
                    state.fallback_index = ti
                extra = self._extra_headers(job, ti, len(attempts) - 1)
                if resp is None:
                    await self._answer_failure(job, out, exc, len(attempts), extra)
                else:
                    await self._answer(out, resp, extra)
                return
        raise RelayError("no target left")  # unreachable: the last target always answers

    @staticmethod
    def _extra_headers(job: Job, index: int, retries: int) -> list[tuple[bytes, bytes]]:
        extra = []
        if job.fallbacks:
            extra.append((hh.R_FALLBACK_INDEX.encode(), str(index).encode()))
        if job.policy is not None:
            extra.append((hh.R_RETRIES.encode(), str(retries).encode()))
        return extra

    async def _answer(self, out: _Out, resp: httpx.Response, extra: list[tuple[bytes, bytes]]) -> None:
        try:
            hdrs = [(k, v) for k, v in resp.headers.raw
                    if k.lower().decode("latin-1") not in HOP_BY_HOP
                    and k.lower() not in (b"helicone-fallback-index", b"helicone-retries")]
            hdrs += extra
            hdrs.append((b"connection", b"close"))
            reason = resp.extensions.get("reason_phrase") or b""
            await out.start(resp.status_code, reason, hdrs)
            try:
                async for chunk in resp.aiter_raw():
                    if chunk:
                        await out.data(chunk)
            except httpx.TransportError as e:  # the provider broke off mid-body: so do we
                logger.info("helicone: relay: upstream broke off mid-body: %s", describe_failure(e))
                out.abort()
                return
            await out.end()
        finally:
            await resp.aclose()

    async def _answer_failure(self, job: Job, out: _Out, exc: Exception | None, n: int,
                              extra: list[tuple[bytes, bytes]]) -> None:
        status = 504 if isinstance(exc, httpx.TimeoutException) else 502
        where = origin_of(job.state.target_url or job.url)
        cause = f"{describe_failure(exc)}; target {where}, {n} attempt{'s' if n != 1 else ''}"
        job.state.error = f"upstream failed: {cause} (client got a {status})"
        job.state.no_answer = True
        await out.json(status, errorpages.error_body(status, cause), extra)
