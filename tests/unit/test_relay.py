"""helicone_addon.relay in-process: pure helpers, and the relay driven without mitmproxy (a tflow is
routed, then its rewritten request is sent to the relay with httpx; the provider is a raw asyncio
server, so the tests see exactly when the relay opens and closes upstream connections)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from mitmproxy.test import tflow

from helicone_addon import headers as hh
from helicone_addon.record import CallState
from helicone_addon.proxy.relay import Relay
from helicone_addon.proxy.relayplan import (
    TOKEN_HEADER,
    deep_merge,
    describe_failure,
    fallback_targets,
    parse_timeout,
)
from helicone_addon.retry import RetryPolicy


class FixedRng:
    def random(self) -> float:
        return 0.0


# -- pure helpers ------------------------------------------------------------------------------------
def test_deep_merge_overwrites_leaves_and_merges_objects():
    base = {"model": "a", "opts": {"x": 1, "y": {"z": 2}}, "list": [1, 2]}
    out = deep_merge(base, {"model": "b", "opts": {"y": {"w": 3}}, "list": [9], "new": {"k": 1}})
    assert out == {"model": "b", "opts": {"x": 1, "y": {"z": 2, "w": 3}}, "list": [9], "new": {"k": 1}}
    assert base["opts"]["y"] == {"z": 2}  # not mutated


def test_fallback_targets_replace_headers_keep_path_and_merge_body():
    from helicone_addon.proxy.relayplan import Job

    fbs = (
        hh.Fallback("https://a.example:8443/ignored", {"Authorization": "Bearer A", "Connection": "x"}, ((500, 599),)),
        hh.Fallback("http://b.example", {"content-type": "text/plain"}, (), {"model": "m2", "o": {"k": 1}}),
    )
    job = Job(flow=None, state=None, method="POST", url="http://orig.example/v1/chat?x=1",
              headers=[(b"authorization", b"Bearer ORIG"), (b"content-type", b"application/json")],
              body=b'{"model": "m1", "o": {"j": 0}}', policy=None, fallbacks=fbs, proxy=None,
              origin=("http", "orig.example", 80))
    a, b = fallback_targets(job)
    assert a.url == "https://a.example:8443/v1/chat?x=1"
    assert a.headers == [(b"Authorization", b"Bearer A"), (b"content-type", b"application/json")]
    assert a.body == job.body
    assert b.url == "http://b.example/v1/chat?x=1"
    assert b.headers == [(b"content-type", b"text/plain")]  # the entry's own content-type wins
    assert json.loads(b.body) == {"model": "m2", "o": {"j": 0, "k": 1}}


def test_describe_failure_names_the_cause():
    async def refused():
        async with httpx.AsyncClient(trust_env=False) as c:
            try:
                await c.get("http://127.0.0.1:1/")
            except httpx.TransportError as e:
                return e

    e = asyncio.run(refused())
    assert describe_failure(e).startswith("connection refused")
    assert "timed out" in describe_failure(httpx.ReadTimeout("x"))


@pytest.mark.parametrize("value,expected", [("600", 600.0), ("0.5", 0.5), ("0", None), ("-1", None),
                                            ("abc", 600.0), ("", 600.0), (None, 600.0)])
def test_parse_timeout(value, expected):
    assert parse_timeout(value) == expected


# -- the relay in-process ------------------------------------------------------------------------------
class RawUpstream:
    """Answers each connection from a script: ("json", status) or ("sse", [chunks], gap_s).
    Records, per connection, when the request arrived and when the peer closed it."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.arrivals: list[float] = []
        self.closed: list[float] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        n = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
        if n:
            await reader.readexactly(n)
        self.arrivals.append(time.monotonic())
        step = self.script.pop(0)
        if step[0] == "json":
            body = json.dumps({"status": step[1]}).encode()
            writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (step[1], len(body), body))
            await writer.drain()
        else:
            _, chunks, gap = step
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            eof = asyncio.ensure_future(reader.read())
            try:
                for i, c in enumerate(chunks):
                    if i:
                        done, _ = await asyncio.wait({eof}, timeout=gap)
                        if done:
                            self.closed.append(time.monotonic())
                            return
                    writer.write(b"%x\r\n%s\r\n" % (len(c), c))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            finally:
                eof.cancel()
        writer.close()


def routed_flow(url: str, policy=None, fallbacks=()) -> tuple:
    f = tflow.tflow()
    f.request.url = url + "/v1/chat/completions"
    f.request.method = "POST"
    f.request.content = b'{"model": "gpt-4o-mini"}'
    f.request.headers["content-type"] = "application/json"
    state = CallState(id="rid-1", started_at=time.time())
    state.options = hh.CallOptions(request_id="rid-1", retry=policy, fallbacks=fallbacks)
    state.target_url = f.request.url
    return f, state


async def send_to_relay(client: httpx.AsyncClient, f) -> httpx.Response:
    req = f.request
    return await client.post(req.url, content=req.content,
                             headers=[(k, v) for k, v in req.headers.fields if k.lower() != b"host"])


def test_retries_then_streams_the_final_answer():
    async def main():
        up = RawUpstream([("json", 503), ("json", 500), ("sse", [b"data: 1\n\n", b"data: 2\n\n"], 0.05)])
        url = await up.start()
        relay = Relay(rng=FixedRng())
        f, state = routed_flow(url, RetryPolicy(num=3, factor=2, min_ms=50, max_ms=1000))
        await relay.route(f, state)
        assert f.request.host == "127.0.0.1" and f.request.port == relay.port and TOKEN_HEADER in f.request.headers
        async with httpx.AsyncClient(trust_env=False) as c:
            r = await send_to_relay(c, f)
        await relay.aclose()
        up.server.close()
        return up, r, state, f

    up, r, state, f = asyncio.run(main())
    assert r.status_code == 200 and r.text == "data: 1\n\ndata: 2\n\n"
    assert r.headers["helicone-retries"] == "2" and "helicone-fallback-index" not in r.headers
    assert state.attempts == [503, 500, 200] and state.retries == 2
    # FixedRng: exactly min * factor**k -> 50 ms then 100 ms
    g = [b - a for a, b in zip(up.arrivals, up.arrivals[1:])]
    assert 0.05 <= g[0] < 0.15 and 0.1 <= g[1] < 0.2, g
    # the flow shows the real target again once the relay has the request
    assert f.request.url == state.target_url and TOKEN_HEADER not in f.request.headers


def test_client_gone_closes_the_upstream_at_once():
    """mitmproxy drops the relay connection (client went away) during a long gap between chunks:
    the relay closes the provider connection then, not at the provider's next chunk."""

    async def main():
        up = RawUpstream([("sse", [b"data: 1\n\n", b"data: 2\n\n"], 5.0)])
        url = await up.start()
        relay = Relay()
        f, state = routed_flow(url, RetryPolicy(num=1, min_ms=10, max_ms=20))
        await relay.route(f, state)
        async with httpx.AsyncClient(trust_env=False) as c:
            req = c.build_request("POST", f.request.url, content=f.request.content,
                                  headers=[(k, v) for k, v in f.request.headers.fields if k.lower() != b"host"])
            r = await c.send(req, stream=True)
            first = await r.aiter_raw().__anext__()
            t_close = time.monotonic()
            await r.aclose()
        for _ in range(100):
            if up.closed:
                break
            await asyncio.sleep(0.02)
        await relay.aclose()
        up.server.close()
        return first, t_close, up

    first, t_close, up = asyncio.run(main())
    assert first == b"data: 1\n\n"
    assert up.closed and up.closed[0] - t_close < 1.0


def test_a_relay_bug_is_a_json_502_and_the_proxy_survives(monkeypatch):
    async def main():
        relay = Relay()
        f, state = routed_flow("http://127.0.0.1:9", RetryPolicy(num=1, min_ms=10, max_ms=20))
        await relay.route(f, state)

        async def boom(*a, **kw):
            raise RuntimeError("kaputt")

        monkeypatch.setattr(relay.clients, "send", boom)
        async with httpx.AsyncClient(trust_env=False) as c:
            r = await send_to_relay(c, f)
            stray = await c.post(f"http://127.0.0.1:{relay.port}/x", headers={TOKEN_HEADER: "nope"})
        await relay.aclose()
        return r, stray, state

    r, stray, state = asyncio.run(main())
    assert r.status_code == 502 and r.headers["helicone-error"] == "true"
    assert "kaputt" in r.json()["helicone-message"] and "kaputt" in state.error
    assert stray.status_code == 502 and "unknown or expired" in stray.json()["helicone-message"]
