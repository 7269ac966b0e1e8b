"""HeliconeAsyncLogger: real openai / anthropic SDK calls straight to the fake upstream, logged after the fact."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anthropic
import conftest
import openai
import pytest

from helicone_addon.api import ApiServer
from helicone_addon.async_logger import HeliconeAsyncLogger
from helicone_addon.store import LogStore

ROOT = Path(__file__).resolve().parents[2]


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def oai(fake, **kw):
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test-logger-key-1234", max_retries=0, **kw)


def ant(fake):
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test-logger-key", max_retries=0)


def chat(client, text: str, **kw):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw)


def rows(db: Path, sql: str = "SELECT * FROM requests", params=()) -> list[dict]:
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def row(db: Path, rid: str) -> dict:
    (r,) = rows(db, "SELECT * FROM requests WHERE id = ?", (rid,))
    return r


@pytest.fixture
def hlog(tmp_path):
    log = HeliconeAsyncLogger(tmp_path / "h.db")
    yield log
    log.close()


def test_json_call_is_logged_with_usage_and_cost(fake, hlog, tmp_path):
    m = marker()
    client = hlog.instrument(oai(fake))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": m}],
        extra_headers={"Helicone-User-Id": "alice", "Helicone-Property-Feature": "search",
                       "Helicone-Session-Id": "sess-9", "Helicone-Session-Path": "/a", "Helicone-Session-Name": "S"},
    )
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream!"
    rid = raw.headers["helicone-id"]
    assert rid == hlog.last_request_id
    # no Helicone-* header reached the provider
    (got,) = fake.received(m)
    assert not [h for h in got.headers if h.startswith("helicone-")]
    assert got.headers["authorization"] == "Bearer sk-test-logger-key-1234"
    assert hlog.flush()
    r = row(tmp_path / "h.db", rid)
    assert r["source"] == "logger"
    assert (r["provider"], r["api"], r["model"], r["status"], r["streamed"]) == ("openai", "openai-chat", "gpt-4o-mini", 200, 0)
    assert (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) == (12, 6, 18)
    assert r["usage_source"] == "provider" and r["cost_usd"] > 0
    assert r["user_id"] == "alice" and json.loads(r["properties"]) == {"feature": "search"}
    assert (r["session_id"], r["session_path"], r["session_name"]) == ("sess-9", "/a", "S")
    assert r["latency_ms"] > 0 and r["ttft_ms"] is None
    assert m in r["request_body"] and "fake upstream" in r["response_body"]
    assert "sk-test-logger-key-1234" not in r["request_headers"]  # redacted like the proxy's rows
    assert hlog.counters["logged"] == 1 and hlog.counters["internal_errors"] == 0


def test_stream_is_teed_not_buffered_and_logged(fake, hlog, tmp_path):
    client = hlog.instrument(oai(fake))
    t0 = time.monotonic()
    stream = chat(client, marker(), stream=True, stream_options={"include_usage": True},
                  extra_headers={"x-fake-delay-ms": "120", "Helicone-Property-Kind": "stream"})
    arrivals, text = [], ""
    for chunk in stream:
        arrivals.append(time.monotonic() - t0)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "Hello from the fake upstream!"
    # chunks reached the app one by one, as the upstream sent them (9 events x 120 ms)
    assert arrivals[0] < arrivals[-1] - 0.6
    rid = hlog.last_request_id
    assert hlog.flush()
    r = row(tmp_path / "h.db", rid)
    assert r["streamed"] == 1 and r["status"] == 200 and r["error"] is None
    assert (r["prompt_tokens"], r["completion_tokens"]) == (12, 6) and r["usage_source"] == "provider"
    assert r["cost_usd"] > 0
    assert 50 < r["ttft_ms"] < r["latency_ms"] and r["latency_ms"] >= 900
    assert json.loads(r["properties"]) == {"kind": "stream"}


def test_stream_without_usage_is_estimated(fake, hlog, tmp_path):
    client = hlog.instrument(oai(fake))
    for _ in chat(client, "count my tokens please", stream=True):
        pass
    assert hlog.flush()
    r = row(tmp_path / "h.db", hlog.last_request_id)
    assert r["usage_source"] == "estimated" and r["completion_tokens"] > 0 and r["cost_usd"] > 0


def test_meta_context_manager_and_defaults(fake, tmp_path):
    log = HeliconeAsyncLogger(tmp_path / "h.db", user_id="default-user", properties={"app": "demo"})
    try:
        client = log.instrument(oai(fake))
        with log.meta(user_id="ctx-user", session_id="s-1", properties={"feature": "outer"}):
            with log.meta(properties={"feature": "inner", "step": 2}):
                chat(client, marker())
                inner = log.last_request_id
            chat(client, marker(), extra_headers={"Helicone-Property-Feature": "per-call"})
            per_call = log.last_request_id
        chat(client, marker())
        plain = log.last_request_id
        assert len({inner, per_call, plain}) == 3
        assert log.flush()
        db = tmp_path / "h.db"
        r = row(db, inner)
        assert r["user_id"] == "ctx-user" and r["session_id"] == "s-1"
        assert json.loads(r["properties"]) == {"app": "demo", "feature": "inner", "step": "2"}
        r = row(db, per_call)
        assert json.loads(r["properties"]) == {"app": "demo", "feature": "per-call"}
        r = row(db, plain)
        assert r["user_id"] == "default-user" and r["session_id"] is None
        assert json.loads(r["properties"]) == {"app": "demo"}
    finally:
        log.close()


def test_own_request_id_is_kept(fake, hlog, tmp_path):
    client = hlog.instrument(oai(fake))
    rid = str(uuid.uuid4())
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], extra_headers={"Helicone-Request-Id": rid})
    assert raw.headers["helicone-id"] == rid == hlog.last_request_id
    assert hlog.flush()
    assert row(tmp_path / "h.db", rid)["status"] == 200


def test_anthropic_json_and_stream(fake, hlog, tmp_path):
    client = hlog.instrument(ant(fake))
    msg = client.messages.create(model="claude-sonnet-4-0", max_tokens=20,
                                 messages=[{"role": "user", "content": marker()}])
    assert msg.content[0].text == "Hello from the fake upstream!"
    first = hlog.last_request_id
    with client.messages.stream(model="claude-sonnet-4-0", max_tokens=20,
                                messages=[{"role": "user", "content": marker()}]) as s:
        assert "".join(s.text_stream) == "Hello from the fake upstream!"
    second = hlog.last_request_id
    assert hlog.flush()
    for rid, streamed in ((first, 0), (second, 1)):
        r = row(tmp_path / "h.db", rid)
        assert (r["provider"], r["api"], r["streamed"]) == ("anthropic", "anthropic-messages", streamed)
        assert (r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"], r["cache_write_tokens"]) == (28, 6, 5, 3)
        assert r["cost_usd"] > 0 and r["error"] is None


def test_async_openai_client(fake, hlog, tmp_path):
    async def go():
        client = hlog.instrument(openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="sk-x", max_retries=0))
        with hlog.meta(user_id="async-user"):
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
            first = hlog.last_request_id
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], stream=True,
                stream_options={"include_usage": True})
            async for _ in stream:
                pass
            second = hlog.last_request_id
        await client.close()
        return first, second

    first, second = asyncio.run(go())
    assert hlog.flush()
    for rid, streamed in ((first, 0), (second, 1)):
        r = row(tmp_path / "h.db", rid)
        assert r["streamed"] == streamed and r["total_tokens"] == 18 and r["user_id"] == "async-user"


def test_connection_error_is_logged_and_raised_as_usual(hlog, tmp_path):
    dead = f"http://127.0.0.1:{conftest.free_port()}/v1"
    client = hlog.instrument(openai.OpenAI(base_url=dead, api_key="sk-x", max_retries=0))
    with pytest.raises(openai.APIConnectionError):
        chat(client, "x")
    assert hlog.flush()
    r = row(tmp_path / "h.db", hlog.last_request_id)
    assert r["status"] is None and "ConnectError" in r["error"]


def test_endpoint_mode_posts_helicone_payloads(fake, tmp_path):
    store = LogStore(tmp_path / "h.db").start()
    server = ApiServer(tmp_path / "h.db", "127.0.0.1", 0, {"k-1"}, store.submit).start()
    log = HeliconeAsyncLogger(endpoint=server.url, api_key="k-1")
    try:
        client = log.instrument(oai(fake))
        chat(client, marker(), extra_headers={"Helicone-User-Id": "ep-user", "Helicone-Property-P": "1"})
        json_id = log.last_request_id
        for _ in chat(client, marker(), stream=True, stream_options={"include_usage": True}):
            pass
        stream_id = log.last_request_id
        aclient = log.instrument(ant(fake))
        aclient.messages.create(model="claude-sonnet-4-0", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        ant_id = log.last_request_id
        assert log.flush()
        assert log.counters["sent"] == 3 and log.counters["failed"] == 0
        assert store.flush()
        db = tmp_path / "h.db"
        r = row(db, json_id)
        assert r["source"] == "async" and r["user_id"] == "ep-user" and json.loads(r["properties"]) == {"p": "1"}
        assert (r["provider"], r["total_tokens"]) == ("openai", 18) and r["cost_usd"] > 0
        r = row(db, stream_id)
        assert r["streamed"] == 1 and r["total_tokens"] == 18 and r["ttft_ms"] is not None
        r = row(db, ant_id)
        assert (r["provider"], r["api"], r["prompt_tokens"]) == ("anthropic", "anthropic-messages", 28)
    finally:
        log.close()
        server.stop()
        store.close()


# -- a failing log destination never fails the call -----------------------------------------------------------


def test_dead_endpoint_does_not_fail_calls(fake):
    log = HeliconeAsyncLogger(endpoint=f"http://127.0.0.1:{conftest.free_port()}", timeout=1)
    try:
        client = log.instrument(oai(fake))
        assert chat(client, "x").choices[0].message.content == "Hello from the fake upstream!"
        text = "".join(c.choices[0].delta.content or "" for c in chat(client, "y", stream=True) if c.choices)
        assert text == "Hello from the fake upstream!"
        assert log.flush(15)
        assert log.counters["failed"] == 2 and log.counters["sent"] == 0
    finally:
        log.close()


def test_endpoint_refusing_logs_does_not_fail_calls(fake, tmp_path):
    store = LogStore(tmp_path / "h.db").start()
    server = ApiServer(tmp_path / "h.db", "127.0.0.1", 0, {"right"}, store.submit).start()
    log = HeliconeAsyncLogger(endpoint=server.url, api_key="wrong")
    try:
        client = log.instrument(oai(fake))
        assert chat(client, "x").choices[0].message.content == "Hello from the fake upstream!"
        assert log.flush() and log.counters["failed"] == 1
    finally:
        log.close()
        server.stop()
        store.close()


def test_unopenable_database_does_not_fail_calls(fake, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    log = HeliconeAsyncLogger(blocker / "sub" / "h.db")
    try:
        client = log.instrument(oai(fake))
        assert chat(client, "x").choices[0].message.content == "Hello from the fake upstream!"
        for _ in chat(client, "y", stream=True):
            pass
        assert log.flush(60)
        stats = log.stats()
        assert stats["dropped"] + stats.get("store_dropped", 0) == 2, stats  # counted, not silent
    finally:
        log.close()


def test_a_crashing_logger_does_not_fail_calls(fake, hlog, monkeypatch):
    client = hlog.instrument(oai(fake))

    def boom(*a, **kw):
        raise RuntimeError("logging exploded")

    monkeypatch.setattr(hlog, "_emit", boom)  # the tee's hand-over blows up: JSON and stream
    assert chat(client, "x").choices[0].message.content == "Hello from the fake upstream!"
    assert "".join(c.choices[0].delta.content or "" for c in chat(client, "s", stream=True) if c.choices) \
        == "Hello from the fake upstream!"
    assert hlog.counters["internal_errors"] == 2
    monkeypatch.undo()
    monkeypatch.setattr("helicone_addon.async_logger.tee.tee_class", boom)  # attaching to the response fails
    assert chat(client, "y").choices[0].message.content == "Hello from the fake upstream!"
    assert hlog.counters["internal_errors"] == 3
    monkeypatch.undo()
    monkeypatch.setattr(hlog._sink, "row", boom)  # and the writer-side row building
    assert chat(client, "z").choices[0].message.content == "Hello from the fake upstream!"
    assert hlog.flush()
    assert hlog._sink.store.counters["build_errors"] == 1


def test_importable_without_mitmproxy():
    code = ("import sys; import helicone_addon.async_logger, helicone_addon.api; "
            "assert 'mitmproxy' not in sys.modules, sorted(m for m in sys.modules if 'mitm' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- overhead figures (printed, not asserted) -------------------------------------------------------------------


def measure_overhead(fake, n: int = 200, db: Path | None = None) -> dict[str, float]:
    """Time n chat calls (JSON, then streamed) to the fake upstream with and without the logger.

    The fake writes headers and body separately; with Nagle on, every JSON reply would wait for the
    client's delayed ACK (~40 ms) whatever the logger does, so TCP_NODELAY is set for the measurement.
    """
    import tempfile

    db = db or Path(tempfile.mkdtemp()) / "bench.db"
    log = HeliconeAsyncLogger(db)
    handler = fake.server.RequestHandlerClass
    nagle = handler.disable_nagle_algorithm
    handler.disable_nagle_algorithm = True

    def client(instrumented: bool):
        c = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-bench", max_retries=0)
        return log.instrument(c) if instrumented else c

    def run(c, stream: bool) -> float:
        chat(c, "warm up")
        t0 = time.perf_counter()
        for i in range(n):
            if stream:
                for _ in chat(c, f"bench {i}", stream=True, stream_options={"include_usage": True}):
                    pass
            else:
                chat(c, f"bench {i}")
        return (time.perf_counter() - t0) / n * 1000

    plain, logged = client(False), client(True)
    out: dict[str, float] = {}
    try:
        for stream in (False, True):
            kind = "stream" if stream else "json"
            # interleave to spread noise: plain, logged, plain, logged; keep the better of each pair
            a1, b1, a2, b2 = run(plain, stream), run(logged, stream), run(plain, stream), run(logged, stream)
            out[f"{kind}_plain_ms"] = round(min(a1, a2), 3)
            out[f"{kind}_logged_ms"] = round(min(b1, b2), 3)
            out[f"{kind}_overhead_ms"] = round(out[f"{kind}_logged_ms"] - out[f"{kind}_plain_ms"], 3)
        t0 = time.perf_counter()
        log.flush(60)
        out["flush_after_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out["rows"] = len(rows(db))
    finally:
        handler.disable_nagle_algorithm = nagle
        log.close()
    return out


def test_overhead_figures(fake, tmp_path, capsys):
    figures = measure_overhead(fake, n=200, db=tmp_path / "bench.db")
    with capsys.disabled():
        print(f"\nasync logger overhead, mean per call over 200 calls: {figures}")
    assert figures["rows"] == 2 * 2 * (200 + 1)  # every logged call (warm-ups included) became a row
