"""Header-driven retries with back-off, and fallbacks, through the real proxy.

Calls with `Helicone-Retry-Enabled: true` or `Helicone-Fallbacks` go through the addon's loopback
relay (helicone_addon/relay.py). The SDK clients run with max_retries=0, so every retry seen here is
the proxy's. Timings are checked against the back-off formula
`min(round(rand[1,2) * min * factor**k), max)` ms, from the fake upstream's arrival times.
"""

from __future__ import annotations

import itertools
import json
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

URL = "https://api.openai.com/v1/chat/completions"
EPS = 0.01  # clock slack below a computed lower bound
SLACK = 0.15  # time allowed above a computed upper bound (relay hop, reconnect, a loaded machine)


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def retry_headers(num: int = 3, min_ms: int = 100, max_ms: int = 400, factor: float = 2) -> dict[str, str]:
    return {
        "Helicone-Retry-Enabled": "true",
        "Helicone-Retry-Num": str(num),
        "Helicone-Retry-Factor": str(factor),
        "Helicone-Retry-Min-Timeout": str(min_ms),
        "Helicone-Retry-Max-Timeout": str(max_ms),
    }


def bounds(k: int, min_ms: int, max_ms: int, factor: float = 2) -> tuple[float, float]:
    """Seconds: the shortest and longest back-off before retry k."""
    return min(round(min_ms * factor**k), max_ms) / 1000, min(round(2 * min_ms * factor**k), max_ms) / 1000


def body(m: str, stream: bool = False, **extra) -> dict:
    b = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": m}], **extra}
    if stream:
        b["stream"] = True
    return b


def chat_raw(client, m: str, headers: dict, **kw):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": m}], extra_headers=headers, **kw)


def gaps(reqs) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(reqs)]


def no_internal_headers(reqs) -> None:
    for r in reqs:
        assert not [h for h in r.headers if h.startswith("helicone-") or h == "x-helicone-relay-token"], r.headers


def still_serving(proxy) -> None:
    with proxy.httpx() as c:
        r = c.post(URL, json=body("still alive"))
    assert r.status_code == 200


# -- retries ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("via", ["proxy", "reverse"])
def test_500_twice_then_ok(proxy, fake, via):
    """The client sees only the final 200; the fake (reached only through map_remote: no internet)
    saw three attempts spaced by the back-off; the row has retries=2 and every attempt's status."""
    m = marker()
    rid = str(uuid.uuid4())
    t0 = time.monotonic()
    raw = chat_raw(proxy.openai(via), m, {"Helicone-Request-Id": rid, **retry_headers(3, 100, 400),
                                          "x-fake-fail": "2:500", "x-fake-fail-key": m})
    elapsed = time.monotonic() - t0
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream!"
    assert raw.headers["helicone-id"] == rid
    assert raw.headers["helicone-retries"] == "2"
    reqs = fake.received(m)
    assert len(reqs) == 3  # every attempt went where map_remote sends api.openai.com
    assert all(r.path == "/v1/chat/completions" for r in reqs)
    assert all(r.headers["authorization"] == "Bearer sk-test-openai-key-123456" for r in reqs)
    assert len({r.body for r in reqs}) == 1
    no_internal_headers(reqs)
    (lo0, hi0), (lo1, hi1) = bounds(0, 100, 400), bounds(1, 100, 400)  # [0.1, 0.2], [0.2, 0.4]
    g = gaps(reqs)
    assert lo0 - EPS <= g[0] <= hi0 + SLACK, g
    assert lo1 - EPS <= g[1] <= hi1 + SLACK, g
    assert lo0 + lo1 - EPS <= elapsed <= hi0 + hi1 + 1.0, elapsed
    row = proxy.row(rid)
    assert row["status"] == 200
    assert row["retries"] == 2
    assert json.loads(row["attempts"]) == [500, 500, 200]
    assert row["error"] is None
    assert row["target_url"].endswith("/v1/chat/completions") and "127.0.0.1" in row["target_url"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 6)


def test_400_is_never_retried(proxy, fake):
    m = marker()
    rid = str(uuid.uuid4())
    with pytest.raises(openai.BadRequestError):
        chat_raw(proxy.openai(), m, {"Helicone-Request-Id": rid, **retry_headers(3, 10, 20), "x-fake-status": "400"})
    assert len(fake.received(m)) == 1
    row = proxy.row(rid)
    assert row["status"] == 400 and row["retries"] == 0
    assert json.loads(row["attempts"]) == [400]
    assert "fake error 400" in row["error"]


@pytest.mark.parametrize("retry_after,max_ms,expected", [("1", 3000, 1.0), ("5", 700, 0.7)])
def test_429_retry_after_honoured_up_to_max(proxy, fake, retry_after, max_ms, expected):
    """Retry-After longer than the back-off wins (1 s), but never beyond the max timeout (5 s -> 0.7 s)."""
    m = marker()
    rid = str(uuid.uuid4())
    raw = chat_raw(proxy.openai(), m, {"Helicone-Request-Id": rid, **retry_headers(2, 100, max_ms),
                                       "x-fake-fail": "1:429", "x-fake-fail-key": m,
                                       "x-fake-retry-after": retry_after})
    assert raw.http_response.status_code == 200
    reqs = fake.received(m)
    assert len(reqs) == 2
    assert expected - EPS <= gaps(reqs)[0] <= expected + SLACK, gaps(reqs)
    assert json.loads(proxy.row(rid)["attempts"]) == [429, 200]


def test_retries_exhausted_returns_the_last_503(proxy, fake):
    m = marker()
    rid = str(uuid.uuid4())
    with pytest.raises(openai.InternalServerError) as ei:
        chat_raw(proxy.openai(), m, {"Helicone-Request-Id": rid, **retry_headers(2, 10, 20), "x-fake-status": "503"})
    assert ei.value.status_code == 503
    assert ei.value.response.headers["helicone-retries"] == "2"
    assert ei.value.body["message"] == "fake error 503"  # the provider's own body, not ours
    assert len(fake.received(m)) == 3
    row = proxy.row(rid)
    assert row["status"] == 503 and row["retries"] == 2
    assert json.loads(row["attempts"]) == [503, 503, 503]


def test_streamed_call_retried_before_the_first_byte(proxy, fake):
    """First attempt 500, second OK: the SDK stream is clean and complete, still arrives chunk by
    chunk, and the row has the provider's usage."""
    m = marker()
    rid = str(uuid.uuid4())
    t0 = time.monotonic()
    stream = proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": m}], stream=True,
        stream_options={"include_usage": True},
        extra_headers={"Helicone-Request-Id": rid, **retry_headers(2, 100, 200),
                       "x-fake-fail": "1:500", "x-fake-fail-key": m, "x-fake-delay-ms": "150"},
    )
    arrivals, text, usage = [], "", None
    for chunk in stream:
        arrivals.append(time.monotonic() - t0)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from the fake upstream!"
    assert usage is not None and usage.completion_tokens == 6
    # 9 events 150 ms apart after a back-off of at most 0.2 s: the first chunk long before the last
    assert arrivals[0] < bounds(0, 100, 200)[1] + 0.6, arrivals
    assert arrivals[-1] - arrivals[0] > 0.8, arrivals
    assert len(fake.received(m)) == 2
    row = proxy.row(rid)
    assert row["status"] == 200 and row["streamed"] == 1
    assert json.loads(row["attempts"]) == [500, 200] and row["retries"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 6)
    assert row["usage_source"] == "provider"
    assert row["ttft_ms"] >= 100  # counted from the client's request: includes the failed attempt and back-off
    # The SDK closes the response as soon as it parses `[DONE]`; when the chunked terminator is a
    # few ms behind (the fake's small writes) mitmproxy logs that as a client disconnect. That race
    # is the SDK's and exists without the relay too: only the failed attempt must leave no trace.
    assert row["error"] is None, row["error"]  # a client hanging up after [DONE] is not a cancel
    assert "fake failure" not in row["response_body"]


def test_gzip_stream_passes_through_the_relay_unchanged(proxy, fake):
    """The relay forwards the provider's bytes as received (content-encoding kept)."""
    m = marker()
    rid = str(uuid.uuid4())
    with proxy.httpx() as c, c.stream("POST", URL, json=body(m, True), headers={
            "Helicone-Request-Id": rid, **retry_headers(1, 10, 20), "x-fake-gzip": "1",
            "x-fake-fail": "1:500", "x-fake-fail-key": m, "Accept-Encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    import gzip

    assert raw[:2] == b"\x1f\x8b"
    assert b"data: [DONE]" in gzip.decompress(raw)
    row = proxy.row(rid)
    assert json.loads(row["attempts"]) == [500, 200]
    assert row["completion_tokens"] and row["completion_tokens"] > 0


def test_backoff_does_not_delay_other_flows(proxy, fake):
    """While one call sleeps a 1 s back-off in the relay, other calls (direct and relayed) go through."""
    ma = marker()
    out: dict = {}

    def slow():
        t = time.monotonic()
        try:
            out["raw"] = chat_raw(proxy.openai(), ma, {**retry_headers(1, 1000, 1000),
                                                       "x-fake-fail": "1:500", "x-fake-fail-key": ma})
        except Exception as e:  # pragma: no cover - reported below
            out["error"] = e
        out["elapsed"] = time.monotonic() - t

    th = threading.Thread(target=slow)
    th.start()
    deadline = time.monotonic() + 10
    while not fake.received(ma) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.received(ma), "the retried call never reached the fake"
    time.sleep(0.05)  # now inside the 1 s back-off
    fast = proxy.openai()
    for headers in ({}, retry_headers(2, 1000, 1000)):  # a plain call, then a relayed one
        t = time.monotonic()
        raw = chat_raw(fast, marker(), headers)
        took = time.monotonic() - t
        assert raw.http_response.status_code == 200
        assert took < 0.5, took
    assert th.is_alive(), "the slow call should still be waiting"
    th.join(15)
    assert "error" not in out, out.get("error")
    assert out["raw"].http_response.status_code == 200
    assert 1.0 - EPS <= out["elapsed"] <= 1.0 + 1.0, out["elapsed"]
    assert 1.0 - EPS <= gaps(fake.received(ma))[0] <= 1.0 + SLACK


def test_connection_refused_on_every_attempt(make_proxy):
    """No answer at all: a JSON 502 naming the cause; the row has status NULL (the provider
    never answered, as for calls without retries), the error naming what the client got, and one None
    per attempt."""
    from conftest import free_port

    dead = free_port()
    p = make_proxy(upstream=f"http://127.0.0.1:{dead}")
    rid = str(uuid.uuid4())
    with p.httpx() as c:
        r = c.post(URL, json=body("refused"), headers={"Helicone-Request-Id": rid, **retry_headers(2, 10, 20)})
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["helicone-error"] == "true"
    assert r.headers["helicone-id"] == rid
    b = r.json()
    assert b["error"] == "Network connection lost" and b["message"] == "Unable to connect to the provider"
    assert "connection refused" in b["helicone-message"].lower()
    assert f"127.0.0.1:{dead}" in b["helicone-message"] and "3 attempts" in b["helicone-message"]
    row = p.row(rid)
    assert row["status"] is None
    assert "connection refused" in row["error"].lower() and "upstream failed" in row["error"]
    assert "client got a 502" in row["error"]
    assert json.loads(row["attempts"]) == [None, None, None] and row["retries"] == 2


def test_timeout_on_every_attempt(make_proxy, fake):
    p = make_proxy(["--set", "helicone_upstream_timeout=0.5"])
    rid = str(uuid.uuid4())
    m = marker()
    t0 = time.monotonic()
    with p.httpx() as c:
        r = c.post(URL, json=body(m), headers={"Helicone-Request-Id": rid, **retry_headers(1, 10, 20),
                                               "x-fake-fault": "hang", "x-fake-hang-s": "3"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    b = r.json()
    assert b["error"] == "Request timeout" and b["message"] == "The request to the provider timed out"
    assert "timed out" in b["helicone-message"]
    assert 1.0 - EPS <= elapsed < 2.5, elapsed  # two 0.5 s time-outs, not the 3 s hang
    assert len(fake.received(m)) == 2
    row = p.row(rid)
    assert row["status"] is None and "timed out" in row["error"] and "client got a 504" in row["error"]
    assert json.loads(row["attempts"]) == [None, None]


def test_client_disconnect_mid_stream_closes_the_upstream(proxy, fake):
    m = marker()
    rid = str(uuid.uuid4())
    with proxy.httpx() as c, c.stream("POST", URL, json=body(m, True), headers={
            "Helicone-Request-Id": rid, **retry_headers(1, 10, 20), "x-fake-delay-ms": "300"}) as r:
        first = next(r.iter_raw())
        assert b"data: " in first
        closed_at = time.time()
    # the fake would write its last event ~2.4 s later; it must see the connection go long before
    deadline = time.monotonic() + 5
    while not [a for a in fake.aborted if m.encode() in a.body] and time.monotonic() < deadline:
        time.sleep(0.02)
    aborted = [a for a in fake.aborted if m.encode() in a.body]
    assert aborted, "the upstream connection was not closed"
    assert time.time() - closed_at < 1.5
    row = proxy.row(rid)
    assert row["error"] and "cancel" in row["error"]
    still_serving(proxy)


# -- fallbacks ------------------------------------------------------------------------------------------
def fallbacks(fake_url: str, m: str, first_status: str, on_codes=({"from": 500, "to": 599},), second_status=None):
    second = {"authorization": "Bearer sk-fallback-1", "x-fb": f"{m}-1"}
    if second_status:
        second["x-fake-status"] = second_status
    return json.dumps([
        {"target-url": fake_url, "headers": {"authorization": "Bearer sk-fallback-0", "x-fake-status": first_status,
                                             "x-fb": f"{m}-0"}, "onCodes": list(on_codes)},
        {"target-url": fake_url + "/this/path/is/ignored", "headers": second, "onCodes": [],
         "bodyKeyOverride": {"model": "gpt-4o", "metadata": {"b": "2"}}},
    ])


def test_fallback_on_a_listed_code(proxy, fake):
    m = marker()
    rid = str(uuid.uuid4())
    with proxy.httpx() as c:
        r = c.post(URL + "?q=1", json=body(m, metadata={"a": "1"}),
                   headers={"Authorization": "Bearer sk-original", "X-Original": "1", "Helicone-Request-Id": rid,
                            "Helicone-Fallbacks": fallbacks(fake.url, m, "503")})
    assert r.status_code == 200
    assert r.headers["helicone-fallback-index"] == "1"
    assert "helicone-retries" not in r.headers
    assert r.json()["model"] == "gpt-4o"
    first, second = fake.received(f"{m}-0"), fake.received(f"{m}-1")
    assert len(first) == 1 and len(second) == 1
    # the entry's headers replace the request's entirely (content-type kept for the body)
    assert first[0].headers["authorization"] == "Bearer sk-fallback-0"
    assert second[0].headers["authorization"] == "Bearer sk-fallback-1"
    assert "x-fake-status" not in second[0].headers
    assert "x-original" not in first[0].headers and "x-original" not in second[0].headers
    assert second[0].headers["content-type"] == "application/json"
    no_internal_headers(first + second)
    # origin of target-url + the original path and query; bodyKeyOverride deep-merged
    assert first[0].path == second[0].path == "/v1/chat/completions?q=1"
    assert json.loads(first[0].body)["model"] == "gpt-4o-mini"
    sent = json.loads(second[0].body)
    assert sent["model"] == "gpt-4o" and sent["metadata"] == {"a": "1", "b": "2"}
    assert sent["messages"][0]["content"] == m
    row = proxy.row(rid)
    assert row["status"] == 200 and row["fallback_index"] == 1
    assert json.loads(row["attempts"]) == [503, 200] and row["retries"] == 1
    assert row["target_url"] == f"{fake.url}/v1/chat/completions?q=1"


def test_fallback_not_on_an_unlisted_code(proxy, fake):
    m = marker()
    rid = str(uuid.uuid4())
    with proxy.httpx() as c:
        r = c.post(URL, json=body(m), headers={"Helicone-Request-Id": rid,
                                               "Helicone-Fallbacks": fallbacks(fake.url, m, "400", on_codes=(503,))})
    assert r.status_code == 400 and r.headers["helicone-fallback-index"] == "0"
    assert len(fake.received(f"{m}-0")) == 1 and fake.received(f"{m}-1") == []
    row = proxy.row(rid)
    assert row["fallback_index"] == 0 and json.loads(row["attempts"]) == [400]


def test_last_fallback_is_returned_whatever_its_status(proxy, fake):
    m = marker()
    with proxy.httpx() as c:
        r = c.post(URL, json=body(m), headers={"Helicone-Fallbacks": fallbacks(fake.url, m, "503", second_status="502")})
    assert r.status_code == 502 and r.headers["helicone-fallback-index"] == "1"
    assert r.json()["error"]["message"] == "fake error 502"


def test_fallback_with_retries_and_a_dead_first_target(proxy, fake):
    """Each entry is retried first; no answer at all moves on to the next entry."""
    from conftest import free_port

    m = marker()
    rid = str(uuid.uuid4())
    fb = json.dumps([
        {"target-url": f"http://127.0.0.1:{free_port()}", "headers": {"x-fb": f"{m}-0"}, "onCodes": [503]},
        {"target-url": fake.url, "headers": {"x-fb": f"{m}-1", "x-fake-fail": "1:500", "x-fake-fail-key": m},
         "onCodes": []},
    ])
    with proxy.httpx() as c:
        r = c.post(URL, json=body(m), headers={"Helicone-Request-Id": rid, "Helicone-Fallbacks": fb,
                                               **retry_headers(1, 10, 20)})
    assert r.status_code == 200
    assert r.headers["helicone-fallback-index"] == "1" and r.headers["helicone-retries"] == "3"
    assert len(fake.received(f"{m}-1")) == 2
    row = proxy.row(rid)
    assert json.loads(row["attempts"]) == [None, None, 500, 200]
    assert row["fallback_index"] == 1 and row["retries"] == 3


# -- upstream settings ------------------------------------------------------------------------------------
class _ForwardProxy:
    """A minimal plain-HTTP forward proxy (absolute-form requests) that records what it forwarded."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                import http.client
                from urllib.parse import urlsplit

                n = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(n) if n else b""
                outer.seen.append(self.path)
                u = urlsplit(self.path)
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                hdrs = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
                conn.request(self.command, (u.path or "/") + (f"?{u.query}" if u.query else ""), data, hdrs)
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                conn.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_upstream_proxy_mode_is_used_for_every_attempt(make_proxy, fake):
    from conftest import free_port, wait_port

    fwd = _ForwardProxy()
    try:
        port = free_port()
        p = make_proxy(["--mode", f"upstream:http://127.0.0.1:{fwd.port}@{port}"])
        wait_port(port)
        m = marker()
        rid = str(uuid.uuid4())
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = c.post(f"{fake.url}/v1/chat/completions", json=body(m), headers={
                "Helicone-Target-Url": fake.url, "Helicone-Request-Id": rid, **retry_headers(2, 10, 20),
                "x-fake-fail": "1:500", "x-fake-fail-key": m})
        assert r.status_code == 200, r.text
        assert len(fake.received(m)) == 2
        # both attempts went through the upstream proxy; the relay hop itself did not
        assert fwd.seen == [f"{fake.url}/v1/chat/completions"] * 2
        assert json.loads(p.row(rid)["attempts"]) == [500, 200]
    finally:
        fwd.stop()


@pytest.fixture
def tls_fake(tmp_path):
    from fakes.upstream import FakeUpstream

    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    f = FakeUpstream()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(crt, key)
    f.server.socket = sctx.wrap_socket(f.server.socket, server_side=True)
    f.url = f.url.replace("http://", "https://")
    f.start()
    yield f, crt
    f.stop()


def test_upstream_tls_options_apply_to_every_attempt(make_proxy, tls_fake):
    """The relay verifies the provider's certificate as mitmproxy would: the trusted CA option and
    ssl_insecure are honoured; without them the self-signed upstream is refused with a clear cause."""
    f, crt = tls_fake

    def call(p, m):
        rid = str(uuid.uuid4())
        with p.httpx() as c:
            r = c.post(URL, json=body(m), headers={"Helicone-Target-Url": f.url, "Helicone-Request-Id": rid,
                                                   **retry_headers(1, 10, 20), "x-fake-fail": "1:500",
                                                   "x-fake-fail-key": m})
        return r, rid

    for extra in (["--set", f"ssl_verify_upstream_trusted_ca={crt}"], ["--set", "ssl_insecure=true"]):
        p = make_proxy(extra)
        m = marker()
        r, rid = call(p, m)
        assert r.status_code == 200, r.text
        assert len(f.received(m)) == 2
        assert json.loads(p.row(rid)["attempts"]) == [500, 200]
    p = make_proxy()
    m = marker()
    r, rid = call(p, m)
    assert r.status_code == 502
    assert "certificate" in r.json()["helicone-message"].lower()
    assert f.received(m) == []
    assert json.loads(p.row(rid)["attempts"]) == [None, None]


def test_retry_off_and_false_do_not_use_the_relay(proxy, fake):
    """Without the headers a 500 comes straight back, once."""
    m = marker()
    with proxy.httpx() as c:
        r = c.post(URL, json=body(m), headers={"Helicone-Retry-Enabled": "false", "x-fake-status": "500"})
    assert r.status_code == 500 and "helicone-retries" not in r.headers
    assert len(fake.received(m)) == 1
