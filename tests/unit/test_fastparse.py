"""The log writer's fast paths give exactly what the reference paths give.

* ``usage.stream.sse_events`` (a whole SSE body split in one go) == ``SSEDecoder`` fed then closed;
* ``usage._base.loads`` (msgspec, falling back to json) == ``json.loads``, errors included;
* ``parse_response`` (whole body) == ``StreamParser`` fed chunk by chunk, for any split;
* ``pricing.price`` (memoised resolution) == genai-prices' own computation.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helicone_addon import pricing
from helicone_addon.sse import SSEDecoder
from helicone_addon.usage import StreamParser, parse_response
from helicone_addon.usage._base import loads
from helicone_addon.usage.stream import sse_events
from helicone_addon.usage.types import Usage

_LINE = st.one_of(
    st.builds(lambda v: b"data:" + v, st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)),
    st.builds(lambda v: b"data: " + v.encode(), st.text(max_size=8).filter(lambda s: "\r" not in s and "\n" not in s)),
    st.sampled_from([b"", b"event: x", b"event: error", b": comment", b"id: 3", b"data", b"retry: 5", b"event:",
                     b'data: {"a": 1}', b"data: [DONE]", b"\xef\xbb\xbfdata: bom"]),
)
_EOL = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\n\n\n"])


@st.composite
def sse_bodies(draw):
    lines = draw(st.lists(st.tuples(_LINE, _EOL), max_size=25))
    body = b"".join(line + eol for line, eol in lines)
    if draw(st.booleans()) and body:
        body = body[: draw(st.integers(0, len(body)))]  # cut anywhere, as a broken stream would be
    return body


def reference_events(body: bytes) -> list[tuple[str | None, str]]:
    d = SSEDecoder()
    evs = d.feed(body) + d.close()
    return [(e.event, e.data) for e in evs]


@settings(max_examples=600, deadline=None)
@given(sse_bodies())
def test_sse_events_equals_the_decoder(body):
    assert sse_events(body.decode("utf-8", "replace")) == reference_events(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_sse_events_random_bytes(body):
    assert sse_events(body.decode("utf-8", "replace")) == reference_events(body)


def test_sse_events_common_shapes():
    assert sse_events("data: {}\n\ndata: [DONE]\n\n") == [(None, "{}"), (None, "[DONE]")]
    assert sse_events("event: message_start\ndata: a\n\n\n\ndata:b") == [("message_start", "a"), (None, "b")]
    assert sse_events("\ufeffdata: x\r\ndata: y\r\n\r\n") == [(None, "x\ny")]


# -------------------------------------------------------------------------------------------------
def _same(a, b) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def _outcome(fn, data):
    try:
        return "ok", fn(data)
    except Exception as e:  # noqa: BLE001 - the exception type is what is compared
        return "error", type(e)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.booleans())
def test_loads_equals_json_loads_on_valid_json(value, as_bytes):
    text = json.dumps(value)
    data = text.encode() if as_bytes else text
    got, want = _outcome(loads, data), _outcome(json.loads, data)
    assert got[0] == want[0] and _same(got[1], want[1]), (text, got, want)


@pytest.mark.parametrize("text", [
    "NaN", "[Infinity, -Infinity]", '{"a": 1e400}', '"\\ud800"', "1" * 5000, "[" * 5000 + "]" * 5000,
    '"a\tb"', "[1,2,]", '{"a":1}x', "\ufeff{}", "01", "", "  ", '{"a": 1, "a": 2}', "-0", "1E5", '"\\u00e9"',
    "123456789012345678901234567890", b"\xef\xbb\xbf{\"a\": 1}", b"\xff", '{"a": 1}'.encode("utf-16"),
])
def test_loads_equals_json_loads_on_odd_input(text):
    got, want = _outcome(loads, text), _outcome(json.loads, text)
    assert got[0] == want[0], (got, want)
    if got[0] == "ok":
        assert _same(got[1], want[1]) or (got[1] != got[1] and want[1] != want[1]), (got, want)
    else:
        assert got[1] is want[1]


# -------------------------------------------------------------------------------------------------
def _openai_stream(n: int) -> bytes:
    ev = [{"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
           "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]} for i in range(n)]
    ev.append({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
               "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in ev) + b"data: [DONE]\n\n"


def _by_chunks(api, body, ct, status, splits):
    p = StreamParser(api, ct, status)
    prev = 0
    for s in sorted(set(splits)):
        p.feed(body[prev:s])
        prev = s
    p.feed(body[prev:])
    return p.finish()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 30), st.lists(st.integers(0, 4000), max_size=8), st.sampled_from([200, 500]),
       st.sampled_from(["text/event-stream", None]), st.integers(0, 4000))
def test_parse_response_whole_equals_chunked(n, splits, status, ct, cut):
    body = _openai_stream(n)
    body = body[: min(cut, len(body))] if cut % 3 == 0 else body
    splits = [s for s in splits if s <= len(body)]
    whole = parse_response("openai-chat", body, ct, status)
    assert whole == _by_chunks("openai-chat", body, ct, status, splits)


def test_price_memo_matches_genai_prices():
    u = Usage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500, cached_tokens=200, reasoning_tokens=100)
    for provider, model in [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022"),
                            ("gemini", "models/gemini-2.5-flash"), (None, "gpt-4o"), ("openai", "no-such-model")]:
        fast = [pricing.price(provider, model, u) for _ in range(3)]  # resolved once, then memoised
        slow = pricing.price(provider, model, u, fast=False)
        assert fast[0] == fast[1] == fast[2]
        assert fast[0].note == slow.note
        if slow.cost_usd is None:
            assert fast[0].cost_usd is None
        else:
            assert fast[0].cost_usd == pytest.approx(slow.cost_usd, rel=1e-9, abs=1e-12)
