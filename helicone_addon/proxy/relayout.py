"""The relay's answer to mitmproxy over one loopback connection (HTTP/1.1 via h11): the provider's
final response streamed through chunk by chunk as it arrives, or a JSON error page."""

from __future__ import annotations

import asyncio
import json
import logging

import h11
import httpx

from helicone_addon.proxy.relayplan import HOP_BY_HOP, describe_failure

logger = logging.getLogger(__name__)


class RelayOut:
    """One answer on one connection: `start` (status line and headers), `data`..., `end`."""

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

    async def relay(self, resp: httpx.Response, extra: list[tuple[bytes, bytes]]) -> None:
        """Pass the provider's response on: its status, headers (hop-by-hop ones dropped, `extra`
        added) and raw body bytes (content-encoding untouched) chunk by chunk as they arrive."""
        try:
            hdrs = [(k, v) for k, v in resp.headers.raw
                    if k.lower().decode("latin-1") not in HOP_BY_HOP
                    and k.lower() not in (b"helicone-fallback-index", b"helicone-retries")]
            hdrs += extra
            hdrs.append((b"connection", b"close"))
            reason = resp.extensions.get("reason_phrase") or b""
            await self.start(resp.status_code, reason, hdrs)
            try:
                async for chunk in resp.aiter_raw():
                    if chunk:
                        await self.data(chunk)
            except httpx.TransportError as e:  # the provider broke off mid-body: so do we
                logger.info("helicone: relay: upstream broke off mid-body: %s", describe_failure(e))
                self.abort()
                return
            await self.end()
        finally:
            await resp.aclose()

    def abort(self) -> None:
        """Break the connection so mitmproxy sees an incomplete response (upstream broke mid-body)."""
        try:
            self.writer.transport.abort()
        except Exception as e:
            logger.debug("helicone: relay: aborting the connection to mitmproxy: %s", e)
