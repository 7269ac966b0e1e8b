"""The fast paths of record.build_row give exactly what the plain code gives."""

from __future__ import annotations

import json
import math

import pytest

from helicone_addon import record

JSON_VALUES = [
    {},
    [],
    {"host": "api.openai.com", "authorization": "Bearer [REDACTED sha256:0123456789ab]"},
    {"x-note": "caf\u00e9 \u2713 \U0001f600 \"quoted\" back\\slash \n\t\x00\x1f \ud800"},
    {"prompt_tokens": 12, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}, "x": None,
     "ok": True, "no": False, "big": 2**70, "neg": -3, "f": 0.1, "e": 1e300, "tiny": 5e-324},
    [{"input_tokens": 3}, {"output_tokens": 4, "nested": [1, [2, [3, {}]]]}],
    [500, 200, None],
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    "just a string \u00e9",
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=range(len(JSON_VALUES)))
def test_json_columns_are_json_dumps(value):
    assert record._dumps(value) == json.dumps(value)


def test_json_columns_refuse_what_json_dumps_refuses():
    with pytest.raises(TypeError) as ours:
        record._dumps({"a": object()})
    with pytest.raises(TypeError) as theirs:
        json.dumps({"a": object()})
    assert str(ours.value) == str(theirs.value)
    # and a failure leaves nothing behind that changes the next call
    assert record._dumps({"a": 1}) == '{"a": 1}'


@pytest.mark.parametrize("ts", [0, 0.0004, 0.0005, 0.9995, 0.99999949, 0.9999995, 1_700_000_123.4567,
                                1_700_000_123.9999996, 1_700_000_000, 2_000_000_000.123, 1e9 + 0.5e-6, 253402300799.999])
def test_iso_is_isoformat_in_milliseconds(ts):
    from datetime import UTC, datetime

    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert record.iso(ts) == expected


PATHS = [
    "/v1/chat/completions",
    "/v1beta/models/gemini-2.0-flash:generateContent?key=AIzaSECRET",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIza",
    "/v1/projects/p/locations/us/publishers/google/models/gemini-1.5-pro:streamGenerateContent",
    "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01",
    "/x&API_KEY=abc#frag",
    "/v1/models/m:embedContent",
    "",
]


@pytest.mark.parametrize("path", PATHS)
def test_redact_url_is_the_pattern_substitution(path):
    from helicone_addon import redact

    plain = redact._KEY_QUERY.sub(lambda m: f"{m.group(1)}REDACTED-{redact.fingerprint(m.group(2))}", path)
    assert redact.redact_url(path) == plain


@pytest.mark.parametrize("path", PATHS)
def test_request_facts_from_the_path_are_those_of_providers(path):
    from helicone_addon import providers
    from helicone_addon.usage import parse_request

    for _ in range(2):  # the second time from the kept answer
        info = parse_request("gemini", path, b'{"messages": []}')
        want_model = (providers.gemini_model_from_path(path) or providers.azure_deployment_from_path(path)) if path else None
        assert info.model == want_model
        assert info.stream == (bool(path) and providers.gemini_stream_from_path(path))


def test_a_redacted_value_is_the_same_from_the_cache():
    from helicone_addon.redact import fingerprint, redact_value

    for _ in range(2):
        assert redact_value("Bearer sk-abc ") == f"Bearer [REDACTED sha256:{fingerprint('sk-abc')}]"
        assert redact_value("sk-abc") == f"[REDACTED sha256:{fingerprint('sk-abc')}]"


def test_iso_matches_datetime_on_many_times_and_rounding_edges():
    import random
    from datetime import UTC, datetime

    rng = random.Random(7)
    times = [rng.uniform(0, 4e9) for _ in range(20000)] + [rng.randrange(0, 2**40) / 1e6 for _ in range(20000)]
    times += [math.nextafter(k + 0.9999995, d) for k in range(0, 2_000_000_000, 77_777_777) for d in (0, 1e10)]
    times += [k + f for k in (0, 1_700_000_000) for f in (0.0004995, 0.0005, 0.9995, 0.9999995, 2.5e-6)]
    for ts in times:
        assert record.iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z", ts
    with pytest.raises(ValueError):  # rounds up into the year 10000, as datetime refuses
        record.iso(253402300799.9999997)
    assert record.iso(1_700_000_000) == "2023-11-14T22:13:20.000Z"  # an int


def _plain_insert(conn, table, rows):
    """The reference: every value bound, one statement per row."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    sql = f"INSERT OR REPLACE INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.executemany(sql, [[r.get(c) for c in cols] for r in rows])


def test_insert_rows_writes_null_for_columns_empty_in_every_row(tmp_path):
    """Columns empty in the whole batch are written as NULL literals (not bound): the stored rows are
    those of binding every value, NULL and not the column's default included."""
    import sqlite3

    from helicone_addon.store import insert_rows

    rows = [
        {"a": "1", "b": None, "c": 5, "d": None, "e": 1.5},
        {"a": "2", "b": None, "c": None, "d": None, "e": None},
        {"a": "3", "b": None, "c": 7, "d": "dee", "e": None},
    ]
    results = []
    for how in (insert_rows, _plain_insert):
        conn = sqlite3.connect(tmp_path / f"{how.__name__}.db")
        conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT DEFAULT 'dflt', c INTEGER DEFAULT 9, d TEXT, e REAL)")
        with conn:
            how(conn, "t", rows)
            how(conn, "t", [dict(rows[0], c=None)])  # one row, all but the key and e empty: replaces
            how(conn, "t", [{"a": "4", "b": None}, {"b": None, "a": "5"}])  # keys in another order
            how(conn, "t", [{"a": "6"}])  # one column
        results.append(conn.execute("SELECT a, b, c, d, e, typeof(b), typeof(c) FROM t ORDER BY a").fetchall())
        conn.close()
    assert results[0] == results[1]
    assert results[0][0] == ("1", None, None, None, 1.5, "null", "null")


def test_insert_rows_stores_built_rows_as_binding_every_value(tmp_path):
    """Rows as build_row makes them (many columns empty in every row), through the log's own schema."""
    import sys
    from pathlib import Path

    from helicone_addon.store import insert_rows, open_db

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from _bench_writer import _states
    from _util import MODEL
    from fakes.upstream import REPLY_WORDS, openai_completion, openai_sse_events

    from helicone_addon.record import build_row

    body = json.dumps(openai_completion(MODEL, "".join(REPLY_WORDS))).encode()
    built = [build_row(st) for st in _states(40, openai_sse_events(MODEL, include_usage=True), body)]
    built[5][0]["error"] = "boom"  # one row with a column the others leave empty
    dumps = []
    for how in (insert_rows, _plain_insert):
        db = open_db(tmp_path / f"{how.__name__}.db")
        with db.conn:
            how(db.conn, "requests", [r for r, _ in built])
            how(db.conn, "properties", [p for _, ps in built for p in ps])
        dumps.append((db.execute("SELECT * FROM requests ORDER BY rowid").fetchall(),
                      db.execute("SELECT * FROM properties ORDER BY rowid").fetchall(),
                      db.execute("SELECT rowid FROM requests_fts WHERE requests_fts MATCH 'hello' ORDER BY rowid").fetchall()))
        db.execute("INSERT INTO requests_fts(requests_fts) VALUES('integrity-check')")
        db.conn.close()
    assert dumps[0] == dumps[1]
    assert len(dumps[0][0]) == 40 and len(dumps[0][2]) == 40


SSE_BODIES = [
    # an error object first (format still open), then chat chunks, one with NaN (json.loads takes it,
    # msgspec does not), a plain-text error event, an empty data line, [DONE]
    b'data: {"error": {"message": "first"}}\n\n'
    b'data: {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    b'data: {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-2024", "x": NaN, "choices": [{"index": 0, "delta": {"content": " there"}}]}\n\n'
    b"event: error\ndata: upstream went away\n\n"
    b"data:\n\n"
    b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
    b"data: [DONE]\n\n",
    # an array of chunks in one event, then Anthropic events on a chat path (the format switches)
    b'data: [{"object": "chat.completion.chunk", "model": "m", "choices": []}]\n\n'
    b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude", "content": [], "usage": {"input_tokens": 4}}}\n\n'
    b'data: {"bad json\n\n',
]


@pytest.mark.parametrize("body", SSE_BODIES)
def test_a_whole_sse_body_parses_as_the_same_body_fed_byte_by_byte(body):
    from helicone_addon.usage import StreamParser, parse_response

    whole = parse_response("openai-chat", body, "text/event-stream", 200)
    p = StreamParser("openai-chat", "text/event-stream", 200)
    for i in range(len(body)):
        p.feed(body[i:i + 1])
    fed = p.finish()
    assert whole == fed
    assert whole.streamed


JSON_BODIES = [
    b'{"id": "c", "object": "chat.completion", "model": "gpt-4o", "choices": [{"message": {"content": "Hi"}}],'
    b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}',
    b'[{"candidates": [{"content": {"parts": [{"text": "a"}]}}], "modelVersion": "gemini-2"}, {"usageMetadata": {"promptTokenCount": 2}}',
    b'{"model": "m", "choices": []}\n{"model": "m2", "choices": [], "usage": {"prompt_tokens": 1}}\n',
    b'{"error": {"message": "bad \xff byte"}}',
    b'{"x": NaN, "model": "m", "choices": []}',
]


@pytest.mark.parametrize("body", JSON_BODIES)
@pytest.mark.parametrize("status", [200, 400, None])
def test_a_whole_json_body_parses_as_the_same_body_fed_byte_by_byte(body, status):
    from helicone_addon.usage import StreamParser, parse_response

    whole = parse_response("openai-chat", body, "application/json", status)
    p = StreamParser("openai-chat", "application/json", status)
    for i in range(len(body)):
        p.feed(body[i:i + 1])
    assert whole == p.finish()
    assert whole.model or whole.error or whole.usage
