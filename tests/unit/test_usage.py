"""helicone_addon.usage: request facts, response parsing per wire format, body decoding, fuzzing."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import brotli
import pytest
import zstandard
from corpus import CASES_DIR as CORPUS_CASES  # tests/data/corpus/cases (tests/ is on sys.path, see conftest.py)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helicone_addon import providers
from helicone_addon.usage import (
    BodyDecoder,
    ParsedResponse,
    RequestInfo,
    StreamParser,
    decode_body,
    parse_request,
    parse_response,
)

APIS = [
    providers.API_OPENAI_CHAT,
    providers.API_OPENAI_RESPONSES,
    providers.API_OPENAI_COMPLETIONS,
    providers.API_OPENAI_EMBEDDINGS,
    providers.API_ANTHROPIC,
    providers.API_GEMINI,
    providers.API_GEMINI_EMBEDDINGS,
    providers.API_UNKNOWN,
]
SSE = "text/event-stream"


def sse(*objs, named: bool = False, done: bool = False, eol: str = "\n") -> bytes:
    parts = []
    for o in objs:
        if named:
            parts.append(f"event: {o['type']}{eol}")
        parts.append(f"data: {json.dumps(o)}{eol}{eol}")
    if done:
        parts.append(f"data: [DONE]{eol}{eol}")
    return "".join(parts).encode()


def nums(p: ParsedResponse):
    u = p.usage
    return None if u is None else (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens,
                                   u.cache_write_tokens, u.reasoning_tokens)


# -- decode_body ---------------------------------------------------------------------------------

PLAIN = b'{"model": "gpt-4o", "text": "' + b"hello world " * 500 + b'"}'


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    "encoding,encoded",
    [
        ("gzip", gzip.compress(PLAIN)),
        ("x-gzip", gzip.compress(PLAIN)),
        ("GZIP", gzip.compress(PLAIN)),
        ("deflate", zlib.compress(PLAIN)),
        ("deflate", raw_deflate(PLAIN)),
        ("br", brotli.compress(PLAIN)),
        ("zstd", zstandard.ZstdCompressor().compress(PLAIN)),
        ("identity", PLAIN),
        (None, PLAIN),
        ("", PLAIN),
        ("gzip, br", brotli.compress(gzip.compress(PLAIN))),
        ("br,gzip", gzip.compress(brotli.compress(PLAIN))),
        ("gzip, identity, zstd", zstandard.ZstdCompressor().compress(gzip.compress(PLAIN))),
    ],
)
def test_decode_body(encoding, encoded):
    assert decode_body(encoded, encoding) == PLAIN


@pytest.mark.parametrize("encoding,encoded", [
    ("gzip", gzip.compress(PLAIN)),
    ("deflate", zlib.compress(PLAIN)),
    ("deflate", raw_deflate(PLAIN)),
    ("br", brotli.compress(PLAIN)),
    ("zstd", zstandard.ZstdCompressor().compress(PLAIN)),
    ("gzip, br", brotli.compress(gzip.compress(PLAIN))),
])
@pytest.mark.parametrize("size", [1, 2, 7, 100])
def test_body_decoder_incremental(encoding, encoded, size):
    d = BodyDecoder(encoding)
    out = b"".join(d.feed(encoded[i:i + size]) for i in range(0, len(encoded), size)) + d.flush()
    assert out == PLAIN


def test_decode_multi_member_gzip_and_multi_frame_zstd():
    assert decode_body(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip") == b"abcdef"
    z = zstandard.ZstdCompressor()
    assert decode_body(z.compress(b"abc") + z.compress(b"def"), "zstd") == b"abcdef"


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("br", brotli.compress),
    ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_decode_truncated_gives_a_prefix(encoding, compress):
    data = random.Random(0).randbytes(100_000)  # incompressible, so output flows as input arrives
    enc = compress(data)
    for cut in (len(enc) // 3, len(enc) // 2, len(enc) - 1):
        out = decode_body(enc[:cut], encoding)
        assert data.startswith(out)
    assert len(decode_body(enc[: len(enc) // 2], encoding)) > len(data) // 4  # what decodes comes out


def test_decode_not_actually_encoded_returns_raw():
    # case 011 style: a content-encoding header next to a body that is stored decoded
    assert decode_body(PLAIN, "gzip") == PLAIN
    assert decode_body(PLAIN, "br") == PLAIN
    assert decode_body(PLAIN, "zstd") == PLAIN
    assert decode_body(PLAIN, "deflate") == PLAIN
    assert decode_body(PLAIN, "compress") == PLAIN  # unsupported coding
    assert decode_body(b"", "gzip") == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["gzip", "deflate", "br", "zstd", "gzip, br", "x", None, "identity"]))
def test_decode_body_never_raises(data, encoding):
    out = decode_body(data, encoding)
    assert isinstance(out, bytes)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_decode_body_truncated_compressed_never_raises(data):
    enc_name = data.draw(st.sampled_from(["gzip", "deflate", "br", "zstd"]))
    payload = data.draw(st.binary(max_size=600))
    enc = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
           "zstd": lambda b: zstandard.ZstdCompressor().compress(b)}[enc_name](payload)
    cut = data.draw(st.integers(0, len(enc)))
    out = decode_body(enc[:cut], enc_name)
    assert isinstance(out, bytes)
    if cut == len(enc):
        assert out == payload


# -- parse_request -------------------------------------------------------------------------------

def test_parse_request_openai():
    body = json.dumps({"model": "gpt-4o", "stream": True, "user": "u-1", "messages": []}).encode()
    info = parse_request(providers.API_OPENAI_CHAT, "/v1/chat/completions", body)
    assert (info.model, info.stream, info.user) == ("gpt-4o", True, "u-1")
    assert info.json["model"] == "gpt-4o"


def test_parse_request_anthropic_user_and_stream_must_be_true():
    body = json.dumps({"model": "claude-x", "stream": "true", "metadata": {"user_id": "abc"}}).encode()
    info = parse_request(providers.API_ANTHROPIC, "/v1/messages", body)
    assert (info.model, info.stream, info.user) == ("claude-x", False, "abc")


def test_parse_request_gemini_model_and_stream_from_url():
    p = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    info = parse_request(providers.API_GEMINI, p, b'{"contents": []}')
    assert (info.model, info.stream) == ("gemini-2.5-flash", True)
    info = parse_request(providers.API_GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", None)
    assert (info.model, info.stream, info.json) == ("gemini-2.5-flash", False, None)


def test_parse_request_azure_deployment_only_without_body_model():
    p = "/openai/deployments/my-dep/chat/completions?api-version=2024-02-01"
    assert parse_request(providers.API_OPENAI_CHAT, p, b'{"messages": []}').model == "my-dep"
    assert parse_request(providers.API_OPENAI_CHAT, p, b'{"model": "gpt-4o"}').model == "gpt-4o"


@pytest.mark.parametrize("body", [None, b"", b"   ", b"not json", b"\xff\xfe", b"[1,2]", b'"str"', b"{", b"null",
                                  b'{"model": 5, "user": [], "metadata": "x", "stream": 1}'])
def test_parse_request_garbage(body):
    info = parse_request(providers.API_OPENAI_CHAT, "/v1/chat/completions", body)
    assert isinstance(info, RequestInfo)
    assert (info.model, info.stream, info.user) == (None, False, None)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(APIS), st.text(max_size=80), st.one_of(st.none(), st.binary(max_size=200)))
def test_parse_request_never_raises(api, path, body):
    assert isinstance(parse_request(api, path, body), RequestInfo)


# -- parse_response: per format ------------------------------------------------------------------

def test_anthropic_stream_field_by_field_merge():
    body = sse(
        {"type": "message_start", "message": {"model": "claude-3-5-sonnet", "usage": {
            "input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1165, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 221}},
        {"type": "message_stop"},
        named=True,
    )
    p = parse_response(providers.API_ANTHROPIC, body, SSE, 200)
    assert p.model == "claude-3-5-sonnet"
    assert nums(p) == (4 + 1165, 221, 4 + 1165 + 221, 1165, 0, None)
    assert (p.text, p.reasoning_text, p.streamed) == ("Hi", "hmm", True)
    assert isinstance(p.usage.raw, list) and len(p.usage.raw) == 2
    assert p.extra["stop_reason"] == "end_turn"


def test_anthropic_delta_overrides_start_and_null_does_not():
    body = sse(
        {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 2039, "output_tokens": 1,
                                                                      "cache_read_input_tokens": 7}}},
        {"type": "message_delta", "usage": {"input_tokens": 10423, "output_tokens": 341,
                                            "cache_read_input_tokens": None}},
    )
    p = parse_response(providers.API_ANTHROPIC, body, SSE, 200)
    assert nums(p) == (10423 + 7, 341, 10423 + 7 + 341, 7, None, None)


def test_anthropic_error_event_in_200_stream():
    body = sse(
        {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        named=True,
    )
    p = parse_response(providers.API_ANTHROPIC, body, SSE, 200)
    assert p.error == "Overloaded"
    assert p.extra["error_type"] == "overloaded_error"
    assert p.extra["error_in_stream"] is True


def test_openai_usage_chunk_and_deepseek_cache_hit():
    body = sse(
        {"model": "", "choices": [], "prompt_filter_results": []},
        {"model": "deepseek-chat", "choices": [{"delta": {"content": "Hel"}}]},
        {"model": "deepseek-chat", "choices": [{"delta": {"content": "lo", "reasoning_content": "r"}}], "usage": None},
        {"model": "deepseek-chat", "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 5,
                                                            "total_tokens": 105, "prompt_cache_hit_tokens": 64,
                                                            "prompt_cache_miss_tokens": 36}},
        done=True,
    )
    p = parse_response(providers.API_OPENAI_CHAT, body, SSE, 200)
    assert p.model == "deepseek-chat"
    assert nums(p) == (100, 5, 105, 64, None, None)
    assert (p.text, p.reasoning_text) == ("Hello", "r")


def test_openai_tool_call_deltas_and_openrouter_cache_write():
    body = sse(
        {"model": "x", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "get", "arguments": ""}}]}}]},
        {"model": "x", "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}}]},
        {"model": "x", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 3, "prompt_tokens_details": {
            "cached_tokens": 10, "cache_write_tokens": 30}}},
    )
    p = parse_response(providers.API_OPENAI_CHAT, body, SSE, 200)
    assert p.tool_text == 'get{"a":1}'
    assert nums(p) == (50, 3, 53, 10, 30, None)


def test_legacy_completions_text():
    body = json.dumps({"model": "gpt-3.5-turbo-instruct", "choices": [{"text": "abc"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
    p = parse_response(providers.API_OPENAI_COMPLETIONS, body, "application/json", 200)
    assert (p.model, p.text, nums(p)) == ("gpt-3.5-turbo-instruct", "abc", (5, 1, 6, None, None, None))


def test_responses_error_event_and_failed_response():
    body = sse({"type": "response.created", "response": {"model": "gpt-5", "usage": None, "status": "in_progress"}},
               {"type": "error", "code": "server_error", "message": "boom"}, named=True)
    p = parse_response(providers.API_OPENAI_RESPONSES, body, SSE, 200)
    assert (p.model, p.error, p.usage) == ("gpt-5", "boom", None)
    body = sse({"type": "response.failed", "response": {"model": "gpt-5", "status": "failed", "usage": None,
                                                        "error": {"code": "rate_limit", "message": "slow down"}}})
    assert parse_response(providers.API_OPENAI_RESPONSES, body, SSE, 200).error == "slow down"


def test_responses_incomplete_has_usage():
    body = sse({"type": "response.output_text.delta", "delta": "ab"},
               {"type": "response.incomplete", "response": {"model": "gpt-5", "status": "incomplete", "usage": {
                   "input_tokens": 9, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 16,
                   "output_tokens_details": {"reasoning_tokens": 14}, "total_tokens": 25}}})
    p = parse_response(providers.API_OPENAI_RESPONSES, body, SSE, 200)
    assert nums(p) == (9, 16, 25, 2, None, 14)
    assert p.text == "ab" and p.extra["status"] == "incomplete"


def test_gemini_thoughts_and_tool_use_prompt():
    body = json.dumps({"modelVersion": "gemini-2.5-pro", "candidates": [{"content": {"parts": [
        {"text": "think", "thought": True}, {"text": "answer"}, {"functionCall": {"name": "f", "args": {"x": 1}}}]}}],
        "usageMetadata": {"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 7,
                          "thoughtsTokenCount": 20, "cachedContentTokenCount": 4, "totalTokenCount": 42}}).encode()
    p = parse_response(providers.API_GEMINI, body, "application/json", 200)
    assert nums(p) == (15, 27, 42, 4, None, 20)
    assert (p.text, p.reasoning_text, p.tool_text) == ("answer", "think", 'f{"x":1}')


def test_gemini_truncated_json_array_stream_keeps_complete_chunks():
    chunks = [{"candidates": [{"content": {"parts": [{"text": t}]}}], "modelVersion": "gemini-2.5-flash",
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": i + 1, "totalTokenCount": 4 + i}}
              for i, t in enumerate(["a", "b", "c"])]
    full = json.dumps(chunks, indent=2).encode()
    cut = full[: full.rindex(b'"c"') + 2]
    p = parse_response(providers.API_GEMINI, cut, "application/json", 200)
    assert p.streamed and p.text == "ab" and nums(p) == (3, 2, 5, None, None, None)


def test_gemini_error_array():
    body = b'[{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}]'
    p = parse_response(providers.API_GEMINI, body, "application/json", 429)
    assert p.error == "Resource exhausted" and p.extra["error_type"] == "RESOURCE_EXHAUSTED"


def test_sse_detected_by_shape_without_content_type():
    body = sse({"model": "m", "choices": [{"delta": {"content": "x"}}]}, done=True, eol="\r\n")
    for ct in (None, "application/json", "text/plain"):
        p = parse_response(providers.API_OPENAI_CHAT, body, ct, 200)
        assert (p.streamed, p.model, p.text) == (True, "m", "x")
    p = parse_response(providers.API_OPENAI_CHAT, b": keepalive\n\n" + body, None, 200)
    assert p.text == "x"


def test_truncated_sse_stream():
    body = sse({"model": "gpt-4o", "choices": [{"delta": {"content": "Hello"}}]},
               {"model": "gpt-4o", "choices": [{"delta": {"content": " world"}}]})
    for cut in range(len(body) + 1):
        p = parse_response(providers.API_OPENAI_CHAT, body[:cut], SSE, 200)
        assert p.text in ("", "Hello", "Hello world")
    assert parse_response(providers.API_OPENAI_CHAT, body[:-2], SSE, 200).text == "Hello world"


def test_http_error_with_non_json_body():
    p = parse_response(providers.API_OPENAI_CHAT, b"<html>502 Bad Gateway</html>", "text/html", 502)
    assert p.error == "<html>502 Bad Gateway</html>" and p.usage is None and not p.streamed
    assert parse_response(providers.API_OPENAI_CHAT, b"", None, 503).error == "HTTP 503"
    p = parse_response(providers.API_OPENAI_CHAT, b'{"error": "Not Found"}', "application/json", 404)
    assert p.error == "Not Found"


def test_ok_response_has_no_error():
    body = b'{"object": "response", "model": "gpt-5", "error": null, "output": [], "usage": null}'
    p = parse_response(providers.API_OPENAI_RESPONSES, body, "application/json", 200)
    assert (p.error, p.model, p.usage) == (None, "gpt-5", None)


def test_payload_format_wins_over_path_guess():
    """An Anthropic body on a path that was classified otherwise (e.g. Vertex :streamRawPredict)."""
    body = sse(
        {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 7,
                                                                                      "output_tokens": 1}}},
        {"type": "message_delta", "usage": {"output_tokens": 9}}, named=True)
    for api in (providers.API_GEMINI, providers.API_UNKNOWN, providers.API_OPENAI_CHAT):
        p = parse_response(api, body, SSE, 200)
        assert (p.model, nums(p)) == ("claude-sonnet-4-5", (7, 9, 16, None, None, None)), api


def test_stream_parser_with_content_encoding():
    body = sse({"model": "m", "choices": [{"delta": {"content": "zipped"}}]},
               {"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    for enc, data in (("br", brotli.compress(body)), ("gzip", gzip.compress(body)), ("identity", body)):
        sp = StreamParser(providers.API_OPENAI_CHAT, SSE, 200, content_encoding=enc)
        for i in range(0, len(data), 5):
            sp.feed(data[i:i + 5])
        p = sp.finish()
        assert (p.text, nums(p)) == ("zipped", (1, 2, 3, None, None, None)), enc
        assert sp.finish() is p  # idempotent


# -- fuzz: never raise ---------------------------------------------------------------------------

_BODIES = sorted(CORPUS_CASES.glob("*/response.body"))
_SAMPLE_BODIES = [p.read_bytes() for p in _BODIES[::3]]
_CTS = st.sampled_from([None, SSE, "application/json", "text/plain", "", "text/event-stream; charset=utf-8"])
_STATUS = st.sampled_from([None, 200, 204, 400, 429, 500])


def _check(p):
    assert isinstance(p, ParsedResponse)
    assert isinstance(p.text, str)
    if p.usage is not None:
        for v in (p.usage.prompt_tokens, p.usage.completion_tokens, p.usage.total_tokens):
            assert v is None or isinstance(v, int)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(APIS), st.binary(max_size=500), _CTS, _STATUS)
def test_fuzz_random_bytes(api, data, ct, status):
    _check(parse_response(api, data, ct, status))


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "usage", "choices", "delta", "content", "type", "message", "error", "response",
                         "usageMetadata", "candidates", "parts", "text", "prompt_tokens", "input_tokens",
                         "iterations", "x_groq", "modelVersion", "output", "object", "tool_calls", "function"]),
        c, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(APIS), st.lists(_JSONISH, max_size=6), st.booleans(), _STATUS)
def test_fuzz_wrong_shaped_json(api, objs, as_sse, status):
    """Valid JSON of the wrong shape anywhere: nulls, lists, strings where objects are expected."""
    if as_sse:
        body = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs)
    else:
        body = json.dumps(objs).encode()
    _check(parse_response(api, body, SSE if as_sse else "application/json", status))
    for o in objs:
        _check(parse_response(api, json.dumps(o).encode(), "application/json", status))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_corpus_bodies_truncated_mutated_rechunked(data):
    body = data.draw(st.sampled_from(_SAMPLE_BODIES))
    api = data.draw(st.sampled_from(APIS))
    cut = data.draw(st.integers(0, len(body)))
    body = bytearray(body[:cut])
    for _ in range(data.draw(st.integers(0, 3))):
        if body:
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] = data.draw(st.integers(0, 255))
    body = bytes(body)
    splits = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    sp = StreamParser(api, data.draw(_CTS), data.draw(_STATUS))
    prev = 0
    for s in splits + [len(body)]:
        sp.feed(body[prev:s])
        prev = s
    _check(sp.finish())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6),
       st.sampled_from(["gzip", "br", "zstd", "deflate", "gzip, br"]))
def test_fuzz_stream_parser_with_bad_encoding(data, splits, enc):
    sp = StreamParser(providers.API_OPENAI_CHAT, SSE, 200, content_encoding=enc)
    prev = 0
    for s in sorted(x for x in splits if x <= len(data)) + [len(data)]:
        sp.feed(data[prev:s])
        prev = s
    _check(sp.finish())
