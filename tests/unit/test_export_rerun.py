"""rerun: the request re-sent for a logged call (key from the environment, never the log)."""

from __future__ import annotations

import json

import pytest

from helicone_addon.export.rerun import RerunError, build_rerun
from helicone_addon.redact import redact_headers, redact_url


def logged(provider="openai", path="/v1/chat/completions", host="api.openai.com", headers=None, body=None, **kw):
    hdrs = headers if headers is not None else [
        ("Authorization", "Bearer sk-original-secret"), ("Content-Type", "application/json"),
        ("Accept-Encoding", "gzip"), ("Content-Length", "99"), ("Helicone-Request-Id", "old"),
        ("Helicone-Cache-Enabled", "true"), ("Helicone-Property-Env", "dev"), ("Helicone-Auth", "Bearer hk-x"),
    ]
    return {"id": "orig-1", "provider": provider, "api": "openai-chat", "method": "POST", "host": host,
            "path": redact_url(path), "request_headers": json.dumps(redact_headers(hdrs)),
            "request_body": json.dumps(body or {"model": "gpt-4o-mini", "messages": []}), "model": "gpt-4o-mini", **kw}


def test_key_from_environment_and_headers_cleaned():
    req = build_rerun(logged(), env={"OPENAI_API_KEY": "sk-from-env"}, new_id="new-1")
    h = dict(req.headers)
    assert h["authorization"] == "Bearer sk-from-env"
    assert req.key_source == "OPENAI_API_KEY"
    assert h["Helicone-Rerun-Of"] == "orig-1" and h["Helicone-Request-Id"] == "new-1"
    assert h["helicone-property-env"] == "dev"
    for gone in ("accept-encoding", "content-length", "helicone-cache-enabled", "helicone-request-id", "helicone-auth"):
        assert gone not in h
    assert "sk-original-secret" not in json.dumps(req.headers)
    assert req.url == "https://api.openai.com/v1/chat/completions"


def test_missing_key_is_a_clear_error():
    with pytest.raises(RerunError, match="set ANTHROPIC_API_KEY"):
        build_rerun(logged(provider="anthropic", headers=[("x-api-key", "sk-ant-x")]), env={})
    with pytest.raises(RerunError, match="set MY_KEY"):
        build_rerun(logged(), env={"OPENAI_API_KEY": "k"}, key_env="MY_KEY")
    # a call that sent no key needs none
    req = build_rerun(logged(provider="openai-compatible", host="localhost", headers=[("content-type", "application/json")]), env={})
    assert "authorization" not in dict(req.headers)


def test_gemini_key_goes_back_into_the_url_and_model_into_the_path():
    row = logged(provider="gemini", host="generativelanguage.googleapis.com", headers=[("content-type", "application/json")],
                 path="/v1beta/models/gemini-2.5-flash:generateContent?key=AIza-original&alt=sse",
                 body={"contents": []})
    req = build_rerun(row, env={"GOOGLE_API_KEY": "AIza-env"}, model="gemini-2.5-pro")
    assert req.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=AIza-env&alt=sse"
    assert req.key_source == "GOOGLE_API_KEY"


def test_model_and_header_overrides():
    req = build_rerun(logged(), env={"OPENAI_API_KEY": "k"}, model="gpt-4o",
                      set_headers=[("Helicone-Property-Env", "ci"), ("content-type", "")])
    assert json.loads(req.body)["model"] == "gpt-4o" and req.model == "gpt-4o"
    h = [(k.lower(), v) for k, v in req.headers]
    assert ("helicone-property-env", "ci") in h and not any(k == "content-type" for k, _ in h)
    with pytest.raises(RerunError, match="names no model"):
        build_rerun(logged(body={"messages": []}), env={"OPENAI_API_KEY": "k"}, model="x")


def test_unrepeatable_calls():
    with pytest.raises(RerunError, match="not logged"):
        build_rerun({**logged(), "request_body": None}, env={"OPENAI_API_KEY": "k"})
    with pytest.raises(RerunError, match="SigV4"):
        build_rerun(logged(provider="bedrock"), env={})
