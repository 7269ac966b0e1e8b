"""Upstream and client faults: the client gets the upstream's bytes as they were (or a clear JSON
error), the call is logged with its status and error, and the proxy keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx
import pytest

URL = "https://api.openai.com/v1/chat/completions"


def body(m: str, stream: bool = False) -> dict:
    b = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": m}]}
    if stream:
        b["stream"] = True
    return b


def still_serving(proxy) -> None:
    with proxy.httpx() as c:
        r = c.post(URL, json=body("still alive"))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_upstream_reset_mid_stream(proxy):
    rid = str(uuid.uuid4())
    got = b""
    with proxy.httpx() as c, pytest.raises(httpx.HTTPError):
        with c.stream("POST", URL, json=body("reset", True),
                      headers={"x-fake-fault": "reset-mid-stream", "Helicone-Request-Id": rid}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                got += chunk
    assert b"data: " in got  # the chunks sent before the reset reached the client
    row = proxy.row(rid)
    assert row["status"] == 200 and row["streamed"] == 1
    assert row["error"] and "cancelled" not in row["error"]
    assert row["response_body"] and "data: " in row["response_body"]
    still_serving(proxy)


@pytest.mark.parametrize("kind,status", [("truncated-json", 200), ("not-json", 502)])
def test_bad_bodies_pass_through_unchanged(proxy, kind, status):
    rid = str(uuid.uuid4())
    with proxy.httpx() as c:
        r = c.post(URL, json=body(kind), headers={"x-fake-fault": kind, "Helicone-Request-Id": rid})
    assert r.status_code == status
    if kind == "not-json":
        assert r.text == "<html>upstream proxy error</html>"
    else:
        assert len(r.content) == 40
        with pytest.raises(ValueError):
            json.loads(r.content)
    row = proxy.row(rid)
    assert row["status"] == status
    if status >= 400:
        assert "upstream proxy error" in row["error"]
    still_serving(proxy)


def test_truncated_sse_is_logged_with_an_estimate(proxy):
    rid = str(uuid.uuid4())
    with proxy.httpx() as c:
        r = c.post(URL, json=body("trunc", True), headers={"x-fake-fault": "truncated-sse", "Helicone-Request-Id": rid})
    assert r.status_code == 200 and r.text.count("data: ") == 5
    row = proxy.row(rid)
    assert row["streamed"] == 1 and row["usage_source"] == "estimated" and row["completion_tokens"] > 0


def test_fifty_megabyte_body(proxy):
    rid = str(uuid.uuid4())
    size = 50 * 1024 * 1024
    t0 = time.monotonic()
    with proxy.httpx() as c:
        r = c.post(URL, json=body("big"), headers={"x-fake-fault": "big", "x-fake-size": str(size),
                                                   "Helicone-Request-Id": rid})
    assert r.status_code == 200 and len(r.content) == size
    assert r.json()["usage"]["prompt_tokens"] == 12
    row = proxy.row(rid, timeout=60)
    assert row["prompt_tokens"] == 12 and row["status"] == 200
    assert time.monotonic() - t0 < 60
    still_serving(proxy)


def test_client_disconnect_mid_stream_is_logged_as_cancelled(proxy):
    rid = str(uuid.uuid4())
    client = proxy.openai()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "bye"}], stream=True,
        extra_headers={"Helicone-Request-Id": rid, "x-fake-delay-ms": "200"})
    seen = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += chunk.choices[0].delta.content
        if len(seen) >= len("Hello from"):
            break
    stream.close()
    row = proxy.row(rid)
    assert row["error"] and row["error"].startswith("cancelled")
    assert row["status"] == 200
    assert "Hello" in row["response_body"] and "upstream!" not in row["response_body"]
    assert row["usage_source"] == "estimated" and 0 < row["completion_tokens"] < 6  # usage seen so far
    still_serving(proxy)


def test_slow_client_does_not_slow_others(proxy):
    """One client reads a stream very slowly (tiny socket buffer, long pauses) while others run."""
    ready = threading.Event()
    stop = threading.Event()

    def slow_reader():
        s = socket.create_connection(("127.0.0.1", proxy.reverse_port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payload = json.dumps({**body("slow", True), "stream_options": {"include_usage": True}}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"x-fake-delay-ms: 20\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        s.recv(64)
        ready.set()
        while not stop.wait(0.5):
            try:
                s.recv(16)
            except OSError:
                break
        s.close()

    t = threading.Thread(target=slow_reader, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        times = []
        with httpx.Client(base_url=proxy.reverse_url) as c:
            for _ in range(10):
                t0 = time.monotonic()
                assert c.post("/v1/chat/completions", json=body("fast")).status_code == 200
                times.append(time.monotonic() - t0)
        assert max(times) < 0.5, times
    finally:
        stop.set()


def test_upstream_timeout_option_applies_to_every_call(make_proxy, fake):
    """`--set helicone_upstream_timeout=0.5`: a provider that hangs gets the client a JSON 504 after
    ~0.5 s (no retry headers needed), and the proxy keeps serving."""
    p = make_proxy(["--set", "helicone_upstream_timeout=0.5"])
    rid = str(uuid.uuid4())
    t0 = time.monotonic()
    with p.httpx() as c:
        r = c.post(URL, json=body("hang"), headers={"x-fake-fault": "hang", "x-fake-hang-s": "5",
                                                    "Helicone-Request-Id": rid})
    elapsed = time.monotonic() - t0
    assert r.status_code == 504 and r.json()["error"] == "Request timeout"
    assert 0.4 < elapsed < 2.5, elapsed
    row = p.row(rid)
    assert row["status"] is None and "timed out" in row["error"] and "504" in row["error"]
    still_serving(p)
    # streams still stream through the timeout relay
    rid2 = str(uuid.uuid4())
    with p.httpx() as c, c.stream("POST", URL, json=body("s", True), headers={"x-fake-delay-ms": "100",
                                                                             "Helicone-Request-Id": rid2}) as r:
        t0 = time.monotonic()
        chunks = r.iter_raw()
        first = next(chunks)
        assert first and time.monotonic() - t0 < 0.5
        rest = b"".join(chunks)
    assert b"[DONE]" in first + rest
    assert p.row(rid2)["ttft_ms"] < p.row(rid2)["latency_ms"]


def test_bad_upstream_timeout_is_refused_at_start(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "helicone_addon", "run", "-q", "-p", "0", "--set", f"confdir={tmp_path}",
                        "--set", f"helicone_data_dir={tmp_path / 'd'}", "--set", "helicone_upstream_timeout=soon"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "helicone_upstream_timeout" in r.stdout + r.stderr
