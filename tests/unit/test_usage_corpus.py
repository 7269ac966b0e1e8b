"""Every recorded provider payload of the corpus (tests/data/corpus), through the parsing core.

The normalised numbers are derived here, independently of helicone_addon.usage, from the
provider-reported numbers in each case's expected.json:

* prompt     = all input: OpenAI-style/Responses/Gemini prompt counts already include cached
               tokens; Anthropic input_tokens excludes cache read and cache write, so they are
               added; Gemini toolUsePromptTokenCount is added when reported.
* completion = all output: Gemini candidatesTokenCount excludes thoughtsTokenCount, so it is added.
* total      = prompt + completion when both are known, else what the provider reported.
* Anthropic compaction (usage.iterations[] in the final message_delta, case 033): every iteration
  is billed, so the numbers are the sums over the iterations (decision recorded in the report).
"""

from __future__ import annotations

import gzip
import random

import pytest

from corpus import CASES, api_of, expected_normalised, load, request_bytes
from helicone_addon.usage import StreamParser, decode_body, parse_request, parse_response

_load, _api, _request_bytes = load, api_of, request_bytes


def _numbers(parsed) -> tuple | None:
    u = parsed.usage
    if u is None:
        return None
    return (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.cache_write_tokens,
            u.reasoning_tokens)


def _summary(parsed) -> tuple:
    return (parsed.model, _numbers(parsed), parsed.error, parsed.text, parsed.reasoning_text, parsed.tool_text,
            parsed.streamed)


def _chunks(data: bytes, rng: random.Random, max_size: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_size)
        out.append(data[i:i + n])
        i += n
    return out


def test_corpus_has_all_cases():
    assert len(CASES) == 62


@pytest.mark.parametrize("name", CASES)
def test_case(name):
    req, hdr, exp, body = _load(name)
    api = _api(req)
    assert api == exp["api"]

    info = parse_request(api, req["path"], _request_bytes(req))
    assert info.model == exp["model_requested"]
    assert info.stream == exp["stream_requested"]

    parsed = parse_response(api, body, hdr["content_type"], hdr["status_code"])
    assert parsed.model == exp["model"]
    assert parsed.streamed == exp["streamed"]
    assert _numbers(parsed) == expected_normalised(exp)
    if parsed.usage is not None:
        assert parsed.usage.source == "provider"
        assert parsed.usage.raw is not None
    if exp["is_error"]:
        assert parsed.error
        assert exp["error"]["message"] in parsed.error
    else:
        assert parsed.error is None


@pytest.mark.parametrize("name", CASES)
def test_case_rechunked(name):
    """Random byte boundaries (1-byte chunks included) give exactly the same result."""
    req, hdr, exp, body = _load(name)
    api = _api(req)
    want = _summary(parse_response(api, body, hdr["content_type"], hdr["status_code"]))
    rng = random.Random(name)
    for max_size in (1, 3, 17, 256, 4096):
        p = StreamParser(api, hdr["content_type"], hdr["status_code"])
        for c in _chunks(body, rng, max_size):
            p.feed(c)
        got = p.finish()
        assert _summary(got) == want, f"max chunk {max_size}"
        assert got.model == exp["model"]
        assert _numbers(got) == expected_normalised(exp)


@pytest.mark.parametrize("name", CASES)
def test_case_gzip(name):
    """gzip-encoded: decode_body restores the bytes; encoded chunks through StreamParser agree."""
    req, hdr, exp, body = _load(name)
    api = _api(req)
    want = _summary(parse_response(api, body, hdr["content_type"], hdr["status_code"]))
    encoded = gzip.compress(body)
    assert decode_body(encoded, "gzip") == body
    decoded = decode_body(encoded, "gzip")
    assert _summary(parse_response(api, decoded, hdr["content_type"], hdr["status_code"])) == want
    rng = random.Random("gz" + name)
    p = StreamParser(api, hdr["content_type"], hdr["status_code"], content_encoding="gzip")
    for c in _chunks(encoded, rng, 64):
        p.feed(c)
    got = p.finish()
    assert _summary(got) == want
    assert got.model == exp["model"]
    assert _numbers(got) == expected_normalised(exp)
    if exp["is_error"]:
        assert exp["error"]["message"] in (got.error or "")
