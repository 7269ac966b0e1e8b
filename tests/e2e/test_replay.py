"""Record once, replay offline: calls recorded through the proxy answer again with the provider gone."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest
from fakes.upstream import FakeUpstream


def ask(client, text: str, stream: bool, **headers):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], stream=stream, extra_headers=headers)


def body_of(raw, stream: bool) -> bytes:
    return raw.http_response.read() if stream else raw.http_response.content


def arrival_gaps(proxy, text: str, **headers) -> tuple[bytes, list[float]]:
    """A streamed call read chunk by chunk: (body, gaps between SSE events in s)."""
    times, chunks = [], []
    with httpx.Client(base_url=proxy.reverse_url, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", headers={"Authorization": "Bearer sk-dummy", **headers},
                      json={"model": "gpt-4o-mini", "stream": True,
                            "messages": [{"role": "user", "content": text}]}) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_raw():
                chunks.append(chunk)
                times.append(time.monotonic())
    return b"".join(chunks), [b - a for a, b in zip(times, times[1:], strict=False)]


@pytest.fixture
def recorded(make_proxy, tmp_path):
    """A log recorded through the proxy from a fake provider that is then stopped."""
    live = FakeUpstream().start()
    data = tmp_path / "data"
    rec = make_proxy(data_dir=data, upstream=live.url)
    texts = {f"r-{uuid.uuid4().hex[:8]}-{i}": stream for i, stream in enumerate([False, True, False, True])}
    bodies = {}
    client = rec.openai("reverse", api_key="sk-real-recording-key-000")
    for text, stream in texts.items():
        bodies[text] = body_of(ask(client, text, stream, **{"x-fake-gzip": "1"} if stream else {}), stream)
    paced = f"paced-{uuid.uuid4().hex[:8]}"
    _, live_gaps = arrival_gaps(rec, paced, **{"x-fake-delay-ms": "60"})
    rows = {r["id"] for r in rec.wait_rows("SELECT id FROM requests", (), len(texts) + 1)}
    rec.stop()
    live.stop()
    return data, texts, bodies, paced, rows


def test_only_mode_replays_recorded_calls_with_the_provider_gone(recorded, make_proxy):
    data, texts, bodies, _, recorded_ids = recorded
    p = make_proxy(["--set", "helicone_replay=only"], data_dir=data, upstream="http://127.0.0.1:9")
    client = p.openai("reverse", api_key="sk-dummy-ci-key")  # another key: the match leaves it out
    for text, stream in texts.items():
        raw = ask(client, text, stream)
        assert raw.headers["helicone-replay"] == "HIT"
        assert raw.headers["helicone-replay-id"] in recorded_ids
        assert body_of(raw, stream) == bodies[text]
        row = p.row(raw.headers["helicone-id"])
        assert row["replayed_from"] == raw.headers["helicone-replay-id"] and row["status"] == 200


def test_anthropic_json_and_stream_replay_with_another_key(make_proxy, tmp_path):
    live = FakeUpstream().start()
    data = tmp_path / "anthropic-data"
    rec = make_proxy(data_dir=data, upstream=live.url)
    kw = {"model": "claude-3-5-sonnet-latest", "max_tokens": 50}
    recorded = {}
    for stream in (False, True):
        text = f"a-{uuid.uuid4().hex[:8]}"
        raw = rec.anthropic("reverse", api_key="sk-ant-real-000").messages.with_raw_response.create(
            messages=[{"role": "user", "content": text}], stream=stream, **kw)
        recorded[text] = (stream, raw.http_response.read())
    rec.wait_rows("SELECT id FROM requests", (), 2)
    rec.stop()
    live.stop()
    p = make_proxy(["--set", "helicone_replay=only"], data_dir=data, upstream="http://127.0.0.1:9")
    client = p.anthropic("reverse", api_key="sk-ant-dummy")
    for text, (stream, body) in recorded.items():
        raw = client.messages.with_raw_response.create(messages=[{"role": "user", "content": text}], stream=stream, **kw)
        assert raw.headers["helicone-replay"] == "HIT"
        assert raw.http_response.read() == body


def test_only_mode_answers_an_unrecorded_call_at_once(recorded, make_proxy):
    data = recorded[0]
    p = make_proxy(["--set", "helicone_replay=only"], data_dir=data, upstream="http://127.0.0.1:9")
    client = p.openai("reverse", api_key="sk-dummy-ci-key")
    t0 = time.monotonic()
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, f"never-recorded-{uuid.uuid4().hex}", False)
    elapsed = time.monotonic() - t0
    assert e.value.response.headers["helicone-replay"] == "MISS"
    err = e.value.response.json()["error"]
    assert err["type"] == "replay_miss" and err["model"] == "gpt-4o-mini" and "/v1/chat/completions" in err["url"]
    assert elapsed < 1.0, elapsed  # the SDK's round trip, answered at once (no retries, no upstream)
    row = p.row(e.value.response.headers["helicone-id"])
    assert row["status"] == 404 and row["latency_ms"] < 50, row  # the proxy's own time


def test_a_replayed_stream_keeps_its_recorded_pacing(recorded, make_proxy):
    data, _, _, paced, _ = recorded
    p = make_proxy(["--set", "helicone_replay=only"], data_dir=data, upstream="http://127.0.0.1:9")
    rows = p.query("SELECT stream_offsets FROM requests WHERE request_body LIKE ?", (f"%{paced}%",))
    offsets = [ms for ms, _ in json.loads(rows[0]["stream_offsets"])]
    recorded_gaps = [(b - a) / 1000 for a, b in zip(offsets, offsets[1:], strict=False)]
    body, gaps = arrival_gaps(p, paced)
    assert b"[DONE]" in body
    big = [g for g in recorded_gaps if g > 0.03]  # the 60 ms gaps of the fake provider
    assert len(big) >= 3
    replayed_big = sorted(gaps)[-len(big):]
    for want, got in zip(sorted(big), replayed_big, strict=True):
        assert abs(want - got) < 0.010 + 0.02, (recorded_gaps, gaps)


def test_prefer_mode_forwards_then_replays(make_proxy, fake):
    p = make_proxy(["--set", "helicone_replay=prefer"])
    client = p.openai("reverse")
    m = f"prefer-{uuid.uuid4().hex[:8]}"
    first = ask(client, m, False)
    assert "helicone-replay" not in first.headers
    p.row(first.headers["helicone-id"])  # recorded once its row is built
    second = ask(client, m, False)
    assert second.headers["helicone-replay"] == "HIT" and second.headers["helicone-replay-id"] == first.headers["helicone-id"]
    assert len(fake.received(m)) == 1
