"""helicone_addon.sse.SSEDecoder: WHATWG event-stream parsing, independent of chunking."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from helicone_addon.sse import SSEDecoder, SSEEvent


def decode(data: bytes, splits: list[int] | None = None) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    prev = 0
    for s in sorted(set(splits or [])):
        out += d.feed(data[prev:s])
        prev = s
    out += d.feed(data[prev:])
    out += d.close()
    return out


def reference(data: bytes) -> list[SSEEvent]:
    """Straightforward whole-body reading of the WHATWG rules, to compare the decoder with."""
    text = data.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events, buf, name, last_id = [], [], None, None
    for line in re.split(r"\r\n|\r|\n", text) + [""]:
        if line == "":
            if buf:
                events.append(SSEEvent(name or None, "\n".join(buf), last_id))
            buf, name = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            buf.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\0" not in value:
            last_id = value
    return events


def test_basic_event_and_data():
    assert decode(b"data: hello\n\n") == [SSEEvent(None, "hello", None)]


def test_space_after_colon_is_optional_and_only_one_is_stripped():
    assert decode(b"data:x\n\ndata: x\n\ndata:  x\n\n") == [
        SSEEvent(None, "x"), SSEEvent(None, "x"), SSEEvent(None, " x")]


def test_named_event_and_id_persist():
    evs = decode(b"event: ping\nid: 7\ndata: {}\n\ndata: 2\n\n")
    assert evs == [SSEEvent("ping", "{}", "7"), SSEEvent(None, "2", "7")]


def test_multiline_data_joined_with_newline():
    assert decode(b"data: a\ndata: b\ndata:\ndata: c\n\n") == [SSEEvent(None, "a\nb\n\nc")]


def test_comments_and_unknown_fields_ignored():
    data = b": OPENROUTER PROCESSING\n\nretry: 100\nfoo: bar\ndata: x\n:comment\n\n"
    assert decode(data) == [SSEEvent(None, "x")]


def test_event_without_data_is_not_dispatched():
    assert decode(b"event: ping\n\ndata: 1\n\n") == [SSEEvent(None, "1")]


def test_field_without_colon():
    # "data" alone is a data line with an empty value
    assert decode(b"data\n\n") == [SSEEvent(None, "")]


def test_line_endings_crlf_lf_cr_mixed():
    want = [SSEEvent("e", "1"), SSEEvent(None, "2\n3")]
    assert decode(b"event: e\r\ndata: 1\r\n\r\ndata: 2\r\ndata: 3\r\n\r\n") == want
    assert decode(b"event: e\rdata: 1\r\rdata: 2\rdata: 3\r\r") == want
    assert decode(b"event: e\ndata: 1\r\n\rdata: 2\r\ndata: 3\n\n") == want


def test_cr_at_chunk_end_then_lf_is_one_line_ending():
    data = b"data: 1\r\n\r\ndata: 2\r\n\r\n"
    for i in range(len(data) + 1):
        assert decode(data, [i]) == [SSEEvent(None, "1"), SSEEvent(None, "2")], i


def test_cr_then_cr_is_two_line_endings_across_chunks():
    d = SSEDecoder()
    assert d.feed(b"data: 1\r") == []
    assert d.feed(b"\r") == [SSEEvent(None, "1")]


def test_utf8_split_across_chunks():
    data = "data: héllo 👋 wörld\n\n".encode()
    for i in range(len(data) + 1):
        assert decode(data, [i]) == [SSEEvent(None, "héllo 👋 wörld")]


def test_bom_at_start_is_dropped():
    assert decode(b"\xef\xbb\xbfdata: 1\n\n") == [SSEEvent(None, "1")]


def test_close_flushes_unterminated_event():
    d = SSEDecoder()
    assert d.feed(b"data: {\"a\": 1}") == []
    assert d.close() == [SSEEvent(None, '{"a": 1}')]
    assert d.close() == []
    assert d.feed(b"data: more\n\n") == []


def test_close_after_single_newline():
    assert decode(b"data: x\n") == [SSEEvent(None, "x")]


def test_invalid_utf8_does_not_raise():
    assert decode(b"data: \xff\xfe\n\n") == [SSEEvent(None, "\ufffd\ufffd")]


def test_id_with_nul_is_ignored():
    assert decode(b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n") == [SSEEvent(None, "a", "1"), SSEEvent(None, "b", "1")]


_LINE = st.one_of(
    st.builds(lambda v: b"data:" + v, st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)),
    st.builds(lambda v: b"data: " + v.encode(), st.text(max_size=8).filter(lambda s: "\r" not in s and "\n" not in s)),
    st.sampled_from([b"", b"event: x", b": comment", b"id: 3", b"data", b"retry: 5", b"event:"]),
)
_EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_streams(draw):
    lines = draw(st.lists(st.tuples(_LINE, _EOL), max_size=25))
    data = b"".join(line + eol for line, eol in lines)
    splits = draw(st.lists(st.integers(0, max(len(data), 0)), max_size=12))
    return data, splits


@settings(max_examples=400, deadline=None)
@given(sse_streams())
def test_any_split_gives_the_same_events(case):
    data, splits = case
    assert decode(data, splits) == reference(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_random_bytes_any_split_never_raises_and_is_consistent(data, splits):
    splits = [s for s in splits if s <= len(data)]
    assert decode(data, splits) == reference(data)


def test_one_byte_at_a_time_equals_whole():
    data = (b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n: ping\r\n"
            b"data: a\r\ndata: b\r\n\r\nevent: x\rdata: \xc3\xa9\r\r")
    d = SSEDecoder()
    evs = []
    for i in range(len(data)):
        evs += d.feed(data[i:i + 1])
    evs += d.close()
    assert evs == decode(data)
    assert [e.data for e in evs] == ['{"type":"message_start"}', "a\nb", "é"]
