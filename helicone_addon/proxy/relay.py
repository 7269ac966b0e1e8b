"""In-process relay for calls with Helicone retries or fallbacks.

Why a relay: mitmproxy can stream a response to the client only when it arrives over the flow's
own server connection, and a `response` hook that re-sends the request can only hand back a buffered
body (mitmproxy streams only `flow.response.stream` answers of the flow's own connection). So a call with `Helicone-Retry-Enabled: true` or `Helicone-Fallbacks`
is pointed at a small HTTP/1.1 server on 127.0.0.1 inside the proxy's own event loop:

    client -> mitmproxy -> relay (127.0.0.1:<port>) -> attempts with httpx -> provider

`Relay.route()` (called from the addon's `request` hook, after map_remote, gateway target, cache and
rate limit) registers a job under a random token and points `flow.request` at the relay with the
token in `x-helicone-relay-token`. The relay connection handler takes the job, makes the attempts,
and answers mitmproxy with the final response only:

- A retryable answer (429, 5xx) or a connection error / time-out is read and dropped, then the
  relay sleeps the back-off of retry.py (`asyncio.sleep`: other flows keep flowing) and tries again.
  Nothing reaches the client before the final attempt answers, so a streamed call is retried
  before its first byte; once the final response has started it is never retried.
- Fallbacks (`Helicone-Fallbacks`): the entries are the targets, in order (the original target is not used;
  its path and query are kept). Each entry's `headers` replace the request headers entirely (only
  `content-type` is carried over when the entry has none, so the body stays readable), and its
  `bodyKeyOverride` is deep-merged into a JSON body. With retries on too, each entry is retried
  first (the back-off restarts at k=0 per entry), then the next entry is tried when the entry's
  final status matches its `onCodes` (or no answer came at all). The last entry is returned
  whatever its status. The response carries `Helicone-Fallback-Index: <i>`.
- The final response goes back with its status, headers and raw body bytes (content-encoding
  untouched, `aiter_raw`) chunk by chunk as they arrive, so the addon's SSE tee still sees every
  chunk. Hop-by-hop headers are dropped; `Helicone-Retries: <n>` is added when retries were on.
- When no attempt got an answer, the relay answers a JSON 502 (errorpages.py) ("Network connection
  lost") or 504 ("Request timeout") naming the cause; the row gets that status and the error.
- The call's row records every attempt's status (`attempts`, None for no answer), `retries`
  (attempts - 1), `fallback_index` and the final `target_url`.

Upstream settings follow mitmproxy's: `ssl_insecure`, `ssl_verify_upstream_trusted_ca` /
`..._confdir`, an upstream proxy (the flow's `server_conn.via`, set in `upstream:` mode, plus
`upstream_auth`), and `helicone_upstream_timeout` (seconds, per connect / read / write; <= 0: none).
Once the relay has the request, the flow's URL is set back to the real target so mitmweb and
mitmdump show where the call went.

Beside this module: `relayplan.py` (what a call will try, no I/O), `relayattempts.py` (the attempt
loop), `relayclient.py` (the httpx clients), `relayout.py` (the answer streamed to mitmproxy).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from typing import Any

import h11

from helicone_addon.proxy import errorpages
from helicone_addon.proxy.relayattempts import Attempts
from helicone_addon.proxy.relayclient import UpstreamClients
from helicone_addon.proxy.relayout import RelayOut
from helicone_addon.proxy.relayplan import HOP_BY_HOP, JOB_TTL_S, TOKEN_HEADER, Job

logger = logging.getLogger(__name__)


class Relay:
    """The loopback relay. One per addon; started on first use in the running loop."""

    def __init__(self, rng: Any = random) -> None:
        self.clients = UpstreamClients()
        self.attempts = Attempts(self.clients, rng)
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._jobs: dict[str, Job] = {}
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
            except Exception as e:
                logger.debug("helicone: relay: closing the loopback server: %r", e)
            self._server = None
        await self.clients.aclose()
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
            except AttributeError:  # no mitmproxy options (tests)
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
            except Exception as e:
                logger.debug("helicone: relay: closing a connection: %s", e)

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
        out = RelayOut(conn, writer)
        token = next((v.decode("latin-1") for k, v in request.headers if k == TOKEN_HEADER.encode()), None)
        job = self._jobs.pop(token, None) if token else None
        if job is None:
            await out.json(502, errorpages.error_body(502, "helicone relay: unknown or expired relay job"))
            return
        self._show_real_target(job)
        serve = asyncio.create_task(self.attempts.run(job, out))
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
        except Exception as e:
            logger.debug("helicone: relay: connection from mitmproxy broke: %s", e)

    @staticmethod
    def _show_real_target(job: Job) -> None:
        """mitmproxy has sent the request: show the real target on the flow again (display only)."""
        try:
            req = job.flow.request
            if TOKEN_HEADER in req.headers:
                del req.headers[TOKEN_HEADER]
            req.scheme, req.host, req.port = job.origin
        except Exception as e:
            logger.debug("helicone: relay: could not show the real target on the flow: %s", e)
