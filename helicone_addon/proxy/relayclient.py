"""The relay's upstream HTTP client: a pool of httpx clients, one per upstream setting (upstream
proxy, TLS verification, time-out), following mitmproxy's options."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx

from helicone_addon.proxy.relayplan import DISCARD_LIMIT, _DEFAULT_CLIENT_HEADERS, Job, Target, parse_timeout

logger = logging.getLogger(__name__)


class UpstreamClients:
    def __init__(self) -> None:
        self._clients: dict[tuple, httpx.AsyncClient] = {}

    def client(self, proxy: str | None) -> httpx.AsyncClient:
        """The client for the current options (`ssl_insecure`, `ssl_verify_upstream_trusted_ca` /
        `..._confdir`, `helicone_upstream_timeout`) and this upstream proxy, made on first use."""
        from mitmproxy import ctx

        def opt(name, default=None):
            try:
                return getattr(ctx.options, name)
            except AttributeError:  # no such option, or no mitmproxy options at all (tests)
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

    async def send(self, job: Job, target: Target) -> httpx.Response:
        """One attempt: the response with its body still to be read (or httpx.TransportError)."""
        client = self.client(job.proxy)
        request = client.build_request(job.method, target.url, headers=target.headers,
                                       content=target.body if target.body else None)
        asked = {k.lower() for k, _ in target.headers}
        for name in _DEFAULT_CLIENT_HEADERS:  # only what the client asked for goes upstream
            if name.encode() not in asked and name in request.headers:
                del request.headers[name]
        return await client.send(request, stream=True)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                await c.aclose()
            except Exception as e:
                logger.debug("helicone: relay: closing an upstream client: %s", e)


async def discard(resp: httpx.Response) -> None:
    """Read and drop a response not passed on (up to DISCARD_LIMIT bytes), then close it."""
    try:
        n = 0
        async for chunk in resp.aiter_raw():
            n += len(chunk)
            if n > DISCARD_LIMIT:
                break
    except Exception as e:
        logger.debug("helicone: relay: dropping a failed answer's body: %s", e)
    finally:
        await resp.aclose()
