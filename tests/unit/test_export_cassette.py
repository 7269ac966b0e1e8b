"""Cassettes: logged calls -> YAML -> recordings, byte for byte; secrets never in clear; bad files
give a clear error naming the entry."""

from __future__ import annotations

import io
import json
import time
import uuid
import zlib

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helicone_addon import replay
from helicone_addon.export import export_log
from helicone_addon.export.cassette import CassetteError, load_recordings, read_cassette, write_cassette
from helicone_addon.headers import parse
from helicone_addon.record import CallState, build_row
from helicone_addon.store import migrations

KEY = "sk-proj-Zz9RealLookingSecretKey1234567890abcdefABCDEF"
GKEY = "AIzaSyD-RealLookingGoogleKey-0987654321"
REQ = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
SSE = [b'data: {"choices":[{"delta":{"content":"H"}}]}\n\n', b'data: {"choices":[{"delta":{"content":"i"}}]}\n\n',
       b"data: [DONE]\n\n"]


def row_for(*, headers=(), body=None, response=b'{"id": "x", "choices": []}', path="/v1/chat/completions",
            host="api.openai.com", stream: list[bytes] | None = None, gz=False, status=200) -> dict:
    t0 = time.time() - 2
    hdrs = [("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json"), *headers]
    state = CallState(
        id=str(uuid.uuid4()), started_at=t0, provider="openai", api="openai-chat", method="POST", host=host, path=path,
        request_headers=hdrs, request_body=json.dumps(body or REQ).encode(), status=status,
        options=parse(hdrs, strict=False),
    )
    if stream is not None:
        chunks = list(stream)
        if gz:
            comp = zlib.compressobj(wbits=31)
            chunks = [comp.compress(c) + comp.flush(zlib.Z_SYNC_FLUSH) for c in chunks]
            chunks[-1] += comp.flush()
        state.chunks, state.streamed, state.content_type = chunks, True, "text/event-stream"
        state.chunk_offsets_ms = [100 * i for i in range(len(chunks))]
        state.first_chunk_at = t0 + 0.1
        state.content_encoding = "gzip" if gz else None
        state.response_headers = [("Content-Type", "text/event-stream"), ("Set-Cookie", "__cf_bm=secretcookie"),
                                  *([("Content-Encoding", "gzip")] if gz else [])]
    else:
        state.response_body = response
        state.response_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(response))),
                                  ("openai-processing-ms", "120")]
    state.ended_at = t0 + 1
    row, _ = build_row(state, estimate=False)
    return row


def dump(rows: list[dict]) -> str:
    out = io.StringIO()
    assert write_cassette(rows, out) == len(rows)
    return out.getvalue()


def load(text: str, tmp_path) -> list[replay.Recording]:
    p = tmp_path / f"c-{uuid.uuid4().hex[:6]}.cassette.yaml"
    p.write_text(text, encoding="utf-8")
    return read_cassette(p)


def test_round_trip_matches_the_log(tmp_path):
    rows = [
        row_for(),
        row_for(stream=SSE, gz=True),
        row_for(stream=SSE),
        row_for(headers=[("Helicone-Cache-Enabled", "true"), ("Helicone-Cache-Seed", "s1")]),
        row_for(host="generativelanguage.googleapis.com", path=f"/v1beta/models/g:generateContent?key={GKEY}",
                response=b'{"candidates": []}\r\n\r\n  '),
    ]
    recs = load(dump(rows), tmp_path)
    direct = [replay.recording_from_row(r) for r in rows]
    assert [r.id for r in recs] == [r["id"] for r in rows]
    for got, want, row in zip(recs, direct, rows, strict=True):
        assert (got.key, got.status, got.body, got.streamed, got.headers) == (want.key, want.status, want.body,
                                                                             want.streamed, want.headers)
        assert got.chunks == want.chunks
        assert got.body == row["response_body"].encode()
    assert [c.offset_ms for c in recs[1].chunks] == [100.0, 200.0, 300.0]
    assert [c.data for c in recs[1].chunks] == SSE
    assert recs[3].key != recs[0].key  # the cache seed is part of the key, and survives the file
    assert recs[3].key == replay.replay_key("POST", "https://api.openai.com/v1/chat/completions",
                                            json.dumps(REQ).encode(),
                                            [("helicone-cache-enabled", "true"), ("helicone-cache-seed", "s1")], "s1")


def test_secrets_never_in_clear(tmp_path):
    text = dump([row_for(), row_for(stream=SSE, gz=True),
                 row_for(host="generativelanguage.googleapis.com", path=f"/v1beta/models/g:generateContent?key={GKEY}")])
    for secret in (KEY, GKEY, KEY[8:30], GKEY[6:25], "secretcookie"):
        assert secret not in text
    assert "authorization" not in text.lower()  # a cassette keeps no credential header at all
    assert "key=REDACTED-" in text


def test_cassette_is_diff_friendly(tmp_path):
    text = dump([row_for(stream=SSE)])
    lines = text.splitlines()
    assert any(ln.strip() == '"model": "gpt-4o-mini",' for ln in lines)  # request JSON pretty-printed, a field a line
    ends = [len(SSE[0]), len(SSE[0]) + len(SSE[1]), len(b"".join(SSE))]
    assert f"    stream_offsets: '[[100,{ends[0]}],[200,{ends[1]}],[300,{ends[2]}]]'" in lines  # one line
    i = lines.index("    body: |+")
    assert lines[i + 1 : i + 3] == ["      " + SSE[0].decode().strip(), ""]  # the stream as it came, event by event


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), st.booleans())
def test_any_text_body_survives(tmp_path, text, streamed):
    data = text.encode("utf-8")
    row = row_for(stream=[data] if data else [b"x"]) if streamed else row_for(response=data)
    got = load(dump([row]), tmp_path)[0]
    assert got.body == row["response_body"].encode()
    if streamed:
        assert b"".join(c.data for c in got.chunks) == got.body


def test_a_hand_written_stream(tmp_path):
    text = """version: 1
calls:
- request: {method: POST, url: 'https://api.openai.com/v1/chat/completions', body: '{}'}
  response:
    status: 200
    streamed: true
    stream_offsets: [[50, 9], [75.5, 18]]
    body: |+
      data: a

      data: b

"""
    (rec,) = load(text, tmp_path)
    assert [(c.offset_ms, c.data) for c in rec.chunks] == [(50.0, b"data: a\n\n"), (75.5, b"data: b\n\n")]
    assert rec.id == "" and rec.streamed


def test_binary_bodies_in_base64_and_hand_edits(tmp_path):
    text = """version: 1
calls:
- id: r1
  request:
    method: POST
    url: https://api.openai.com/v1/audio/speech
    body: |
      {
        "model": "tts-1",   "input": "hi"
      }
  response:
    status: 200
    headers: {content-type: audio/mpeg}
    body_base64: //uQxAAAAAA=
"""
    (rec,) = load(text, tmp_path)
    assert rec.body == b"\xff\xfb\x90\xc4\x00\x00\x00\x00"
    assert rec.key == replay.replay_key("POST", "https://api.openai.com/v1/audio/speech", b'{"model":"tts-1","input":"hi"}')
    assert rec.headers == [("content-type", "audio/mpeg")] and not rec.streamed


@pytest.mark.parametrize(
    "text, message",
    [
        ("calls: [", "not a valid YAML cassette"),
        ("just text", "not a helicone-addon cassette"),
        ("version: 9\ncalls: []\n", "unsupported cassette version 9"),
        ("version: 1\ncalls: {}\n", "'calls' must be a list"),
        ("version: 1\ncalls:\n- id: a\n", "calls[0]: field 'request' must be dict"),
        ("version: 1\ncalls:\n- request: {method: POST, url: u}\n  response: {status: '200'}\n",
         "calls[0].response: field 'status' must be int"),
        ("version: 1\ncalls:\n- request: {method: POST, url: u}\n  response: {status: 200, body_base64: '***'}\n",
         "calls[0].response: bad body"),
        ("version: 1\ncalls:\n- request: {method: POST, url: u}\n  response: {status: 200, stream_offsets: [[-1, 2]]}\n",
         "calls[0].response.stream_offsets: must be a list of [ms, bytes] pairs"),
        ("version: 1\ncalls:\n- request: {method: POST, url: u}\n  response: {status: 200, stream_offsets: [[1, 2.5]]}\n",
         "calls[0].response.stream_offsets: must be a list"),
        ("version: 1\ncalls:\n- request: {method: POST, url: u}\n  response: {status: 200, stream_offsets: '[[1,'}\n",
         "calls[0].response.stream_offsets: not JSON"),
    ],
)
def test_bad_cassettes_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(CassetteError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load(text, tmp_path)


def test_empty_cassette_and_export_from_a_log(tmp_path):
    assert load(dump([]), tmp_path) == []
    db = sqlite_utils.Database(tmp_path / "h.db")
    migrations.migrate(db)
    db["requests"].insert_all([row_for(), row_for(status=500, response=b'{"error": {"message": "x"}}'), row_for(stream=SSE)])
    out = io.StringIO()
    res = export_log(db, "cassette", out)
    assert (res.written, res.skipped) == (2, 1)
    recs = load(out.getvalue(), tmp_path)
    assert [r.streamed for r in recs] == [False, True]
    assert load_recordings(tmp_path / "h.db").keys() == replay.Recordings(recs).keys()
