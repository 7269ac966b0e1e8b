"""replay.py: the match key (credentials left out), recordings by key (order, cycling), stream
pacing, SSE event splitting and the stream_offsets column."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
import zlib

import pytest
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from helicone_addon import cache, replay
from helicone_addon.export.cassette import load_recordings
from helicone_addon.headers import CallOptions
from helicone_addon.record import CallState, build_row
from helicone_addon.replay import Chunk, Recording, Recordings, replay_key, schedule, split_events
from helicone_addon.store import migrations

BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
URL = "https://api.openai.com/v1/chat/completions"


# -- the key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ([("Authorization", "Bearer sk-developer-real-key")], [("Authorization", "Bearer sk-dummy")]),
        ([("Authorization", "Bearer sk-developer-real-key")], []),
        ([("x-api-key", "sk-ant-real")], [("X-Api-Key", "dummy")]),
        ([("api-key", "azure-real")], [("api-key", "azure-dummy")]),
        ([("x-goog-api-key", "AIza-real")], []),
        ([("Helicone-Auth", "Bearer sk-helicone-1")], [("helicone-auth", "Bearer sk-helicone-2")]),
    ],
)
def test_key_ignores_credentials(a, b):
    base = [("content-type", "application/json"), ("user-agent", "OpenAI/Python 1.0")]
    assert replay_key("POST", URL, BODY, base + a) == replay_key("POST", URL, BODY, base + b)
    # ... while the response cache keeps callers apart
    assert cache.cache_key(seed=None, url=URL, body=BODY, headers=base + a) != cache.cache_key(
        seed=None, url=URL, body=BODY, headers=base + b
    )


def test_key_ignores_url_credentials_scheme_and_port():
    u = "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent"
    k = replay_key("POST", u + "?key=AIza-real&alt=sse", BODY)
    assert k == replay_key("POST", u + "?alt=sse&key=REDACTED-0123456789ab", BODY)
    assert k == replay_key("POST", u.replace("https", "http") + "?alt=sse&api_key=x", BODY)
    assert k == replay_key("POST", "https://GenerativeLanguage.googleapis.com:443/v1beta/models/g:generateContent?alt=sse", BODY)
    assert k != replay_key("POST", u + "?alt=json", BODY)
    assert k != replay_key("POST", u, BODY)


def test_key_follows_the_cache_recipe_for_everything_else():
    k = replay_key("POST", URL, BODY)
    pretty = json.dumps(json.loads(BODY), indent=2).encode()
    assert replay_key("POST", URL, pretty) == k  # JSON normalised as the cache does
    assert replay_key("POST", URL, BODY.replace(b"hi", b"ho")) != k
    assert replay_key("GET", URL, BODY) != k
    assert replay_key("POST", URL.replace("chat/completions", "responses"), BODY) != k
    assert replay_key("POST", URL, BODY, seed="s1") != k
    assert replay_key("POST", URL, BODY, [("Helicone-Cache-Seed", "s1")]) != k  # helicone-cache-* count
    with_user = json.dumps({**json.loads(BODY), "user": "u-123"}).encode()
    assert replay_key("POST", URL, with_user, ignore_keys=("user",)) == k
    # it IS the cache key (credentials left out) of the reduced URL: no second recipe
    assert k == cache.cache_key(seed=None, url="POST //api.openai.com/v1/chat/completions", body=BODY, headers=[],
                                credentials=False)


def _logged_row(headers: list[tuple[str, str]], url_path: str = "/v1/chat/completions", **kw) -> dict:
    """A row exactly as the proxy logs it (record.build_row redacts the secrets)."""
    state = CallState(
        id=str(uuid.uuid4()), started_at=time.time() - 1, provider="openai", api="openai-chat", method="POST",
        host="api.openai.com", path=url_path, request_headers=headers, request_body=kw.pop("request_body", BODY),
        status=kw.pop("status", 200), response_headers=[("content-type", "application/json")],
        response_body=kw.pop("response_body", b'{"choices": []}'), options=CallOptions(request_id=""), **kw,
    )
    state.ended_at = time.time()
    row, _ = build_row(state, estimate=False)
    return row


def test_a_logged_call_matches_the_same_call_with_another_key():
    live = [("Authorization", "Bearer sk-dummy-in-ci"), ("Helicone-Cache-Enabled", "true"),
            ("Helicone-Cache-Seed", "v2"), ("Helicone-Cache-Ignore-Keys", "user")]
    recorded = [("authorization", "Bearer sk-proj-developer-key-1234567890"), ("helicone-cache-enabled", "true"),
                ("helicone-cache-seed", "v2"), ("helicone-cache-ignore-keys", "user")]
    row = _logged_row(recorded, request_body=json.dumps({**json.loads(BODY), "user": "dev"}).encode())
    assert "sk-proj-developer" not in row["request_headers"]
    from helicone_addon import headers as h

    opts = h.parse(live)
    live_body = json.dumps({**json.loads(BODY), "user": "ci"}).encode()
    assert replay.key_of_row(row) == replay_key("POST", URL, live_body, live, opts.cache.seed, opts.cache.ignore_keys)
    assert replay.key_of_row(row) != replay_key("POST", URL, live_body, live)  # the seed counts


# -- recordings ----------------------------------------------------------------------------


def _rec(key: str, i: int) -> Recording:
    return Recording(id=f"{key}-{i}", key=key, status=200, headers=[], body=f"{key}{i}".encode())


def test_next_returns_recorded_order_then_cycles():
    recs = Recordings([_rec("a", 1), _rec("b", 1), _rec("a", 2), _rec("a", 3)])
    assert len(recs) == 4 and "a" in recs and "c" not in recs
    assert [recs.next("a").id for _ in range(7)] == ["a-1", "a-2", "a-3", "a-1", "a-2", "a-3", "a-1"]
    assert [recs.next("b").id for _ in range(3)] == ["b-1"] * 3
    assert recs.next("c") is None
    assert [r.id for r in recs.get("a")] == ["a-1", "a-2", "a-3"]
    recs.reset()
    assert recs.next("a").id == "a-1"


def test_next_is_fair_across_threads():
    recs = Recordings([_rec("k", i) for i in range(5)])
    got: list[str] = []
    lock = threading.Lock()

    def work():
        for _ in range(200):
            r = recs.next("k")
            with lock:
                got.append(r.id)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: got.count(f"k-{i}") for i in range(5)} == {i: 160 for i in range(5)}


def _db(tmp_path, rows: list[dict]) -> sqlite_utils.Database:
    db = sqlite_utils.Database(tmp_path / "h.db")
    migrations.migrate(db)
    db["requests"].insert_all(rows)
    return db


def test_from_log_takes_successful_recordings_in_order(tmp_path):
    ok1 = _logged_row([("authorization", "Bearer sk-1")], response_body=b'{"n": 1}')
    ok2 = _logged_row([], response_body=b'{"n": 2}')
    ok2["created_at"] = "2099-01-01T00:00:00.000Z"
    ok1["created_at"] = "2098-01-01T00:00:00.000Z"
    failed = _logged_row([], status=500, response_body=b'{"error": {"message": "boom"}}')
    errored = dict(_logged_row([]), error="cancelled: client disconnected")
    omitted = dict(_logged_row([]), response_body=None)
    replayed = dict(_logged_row([]), replayed_from=ok1["id"])
    db = _db(tmp_path, [ok2, failed, errored, omitted, replayed, ok1])
    recs = Recordings.from_log(db)
    assert [r.id for r in recs] == [ok1["id"], ok2["id"]]
    key = replay_key("POST", URL, BODY)
    assert recs.next(key).body == b'{"n": 1}' and recs.next(key).body == b'{"n": 2}'
    db.close()
    assert len(load_recordings(tmp_path / "h.db")) == 2  # by path, SQLite detected
    with pytest.raises(FileNotFoundError):
        Recordings.from_log(tmp_path / "missing.db")


def test_recording_headers_are_replayable():
    row = _logged_row([])
    row["response_headers"] = json.dumps({"content-type": "text/event-stream", "content-encoding": "gzip",
                                          "transfer-encoding": "chunked", "content-length": "9", "set-cookie": "a=b",
                                          "helicone-cache": "MISS", "x-request-id": "req_1"})
    rec = replay.recording_from_row(row)
    assert rec.headers == [("content-type", "text/event-stream"), ("x-request-id", "req_1")]


# -- streams ---------------------------------------------------------------------------------

OPENAI_EVENTS = [b'data: {"choices":[{"delta":{"content":"' + w + b'"}}]}\n\n' for w in (b"Hel", b"lo", b"!")] + [b"data: [DONE]\n\n"]
ANTHROPIC = (b"event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n: keep-alive\r\n\r\n"
             b"event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\"}\r\n\r\n"
             b"event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n")


def test_split_events():
    body = b"".join(OPENAI_EVENTS)
    assert split_events(body) == OPENAI_EVENTS
    parts = split_events(ANTHROPIC)
    assert len(parts) == 3 and b"".join(parts) == ANTHROPIC
    assert parts[1].startswith(b": keep-alive")  # a comment travels with the next event
    assert split_events(body + b"data: partial") == [*OPENAI_EVENTS, b"data: partial"]  # cut stream: its own piece
    assert split_events(body + b"\n\n") == [*OPENAI_EVENTS[:-1], OPENAI_EVENTS[-1] + b"\n\n"]
    assert split_events(b'[{"candidates": []},\r\n{"candidates": []}]') == [b'[{"candidates": []},\r\n{"candidates": []}]']
    assert split_events(b"") == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.lists(st.sampled_from([b"data: x", b"\n", b"\r", b"\r\n", b":c", b"event: e"])).map(b"".join))
def test_split_events_keeps_every_byte_and_cuts_at_each_event(body):
    from helicone_addon.sse import SSEDecoder

    pieces = split_events(body)
    assert b"".join(pieces) == body
    whole = SSEDecoder()
    want = whole.feed(body) + whole.close()
    dec = SSEDecoder()
    per_piece = [len(dec.feed(p)) for p in pieces]
    per_piece[-1:] = [per_piece[-1] + len(dec.close())] if pieces else []
    assert sum(per_piece) == len(want)
    if want:
        assert all(n == 1 for n in per_piece)  # one event per piece


def _gzip_stream(events: list[bytes]) -> list[bytes]:
    comp = zlib.compressobj(wbits=31)
    out = [comp.compress(e) + comp.flush(zlib.Z_SYNC_FLUSH) for e in events]
    out[-1] += comp.flush()
    return out


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_stream_offsets_pair_events_with_arrival(encoding):
    chunks = _gzip_stream(OPENAI_EVENTS) if encoding else list(OPENAI_EVENTS)
    text = replay.encode_stream_offsets(chunks, [0, 30, 190, 280], encoding, first_ms=120.2)
    offsets = replay.decode_stream_offsets(text)
    ends = [sum(len(e) for e in OPENAI_EVENTS[: i + 1]) for i in range(4)]
    assert offsets == [(120.0, ends[0]), (150.0, ends[1]), (310.0, ends[2]), (400.0, ends[3])]
    body = b"".join(OPENAI_EVENTS)
    got = replay.timed_chunks(body, offsets)
    assert got == [Chunk(120.0, OPENAI_EVENTS[0]), Chunk(150.0, OPENAI_EVENTS[1]), Chunk(310.0, OPENAI_EVENTS[2]),
                   Chunk(400.0, OPENAI_EVENTS[3])]


def test_events_split_across_network_chunks_take_the_time_of_their_last_byte():
    body = b"".join(OPENAI_EVENTS)
    cut = len(OPENAI_EVENTS[0]) + 5  # the second event arrives in two pieces; 3rd and 4th together
    offsets = [(100.0, cut), (180.0, len(OPENAI_EVENTS[0]) + len(OPENAI_EVENTS[1])), (250.0, len(body))]
    assert [c.offset_ms for c in replay.timed_chunks(body, offsets)] == [100.0, 180.0, 250.0, 250.0]


def test_streams_without_offsets_are_spread_between_ttft_and_latency():
    body = b"".join(OPENAI_EVENTS)
    assert [c.offset_ms for c in replay.timed_chunks(body, [], 100.0, 400.0)] == [100.0, 200.0, 300.0, 400.0]
    assert [c.offset_ms for c in replay.timed_chunks(body, [])] == [0.0] * 4
    gemini_array = b'[{"a": 1},\n{"a": 2}]'
    got = replay.timed_chunks(gemini_array, [(50.0, 10), (90.0, len(gemini_array))])  # no SSE: cut where the network cut
    assert [(c.offset_ms, c.data) for c in got] == [(50.0, gemini_array[:10]), (90.0, gemini_array[10:])]


def test_bad_stream_offsets_read_as_none():
    for bad in ("", "nope", "{}", "[[1]]", "[[-1, 2]]", '[["a", 1]]', "[[true, 1]]"):
        assert replay.decode_stream_offsets(bad) == []
    assert replay.encode_stream_offsets([], []) is None
    assert replay.encode_stream_offsets([b"a"], []) is None


def test_build_row_records_stream_offsets_and_rerun_of():
    t0 = time.time() - 1
    chunks = _gzip_stream(OPENAI_EVENTS)
    state = CallState(
        id=str(uuid.uuid4()), started_at=t0, provider="openai", api="openai-chat", method="POST", host="api.openai.com",
        path="/v1/chat/completions", request_headers=[("Helicone-Rerun-Of", "orig-id")], request_body=BODY, status=200,
        response_headers=[("content-type", "text/event-stream"), ("content-encoding", "gzip")],
        chunks=chunks, chunk_offsets_ms=[0, 100, 200, 300], first_chunk_at=t0 + 0.1, content_encoding="gzip",
        content_type="text/event-stream", streamed=True, options=CallOptions(request_id=""),
    )
    row, _ = build_row(state, estimate=False)
    assert row["rerun_of"] == "orig-id"
    rec = replay.recording_from_row(row)
    assert [c.offset_ms for c in rec.chunks] == [100.0, 200.0, 300.0, 400.0]
    assert [c.data for c in rec.chunks] == OPENAI_EVENTS
    assert gzip.decompress(b"".join(chunks)) == rec.body


def test_schedule_follows_recorded_gaps_scaled_by_speed():
    rec = Recording(id="x", key="k", status=200, headers=[], body=b"abcd", streamed=True,
                    chunks=[Chunk(100, b"a"), Chunk(150, b"b"), Chunk(150, b"c"), Chunk(400, b"d")])
    assert list(schedule(rec)) == [(0.1, b"a"), (0.05, b"b"), (0.0, b"c"), (0.25, b"d")]
    assert [d for d, _ in schedule(rec, 2)] == [0.05, 0.025, 0.0, 0.125]
    assert list(schedule(rec, 0)) == [(0.0, b"a"), (0.0, b"b"), (0.0, b"c"), (0.0, b"d")]
    plain = Recording(id="y", key="k", status=200, headers=[], body=b"{}")
    assert list(schedule(plain, 5)) == [(0.0, b"{}")]
    with pytest.raises(ValueError):
        list(schedule(rec, -1))


def test_pure_modules_import_no_proxy_or_web_stack():
    import subprocess
    import sys

    code = ("import sys, helicone_addon.replay, helicone_addon.export, helicone_addon.export.cassette, "
            "helicone_addon.export.chat, helicone_addon.export.har, helicone_addon.export.jsonl, helicone_addon.pytest_plugin; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mitmproxy', 'starlette') or m == 'helicone_addon.store']; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
