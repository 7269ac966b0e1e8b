import json

from mitmproxy import contentviews
from mitmproxy.test import tflow

from helicone_addon import render
from helicone_addon.proxy.contentview import llm_view, render_request, render_response
from helicone_addon.proxy.flowrecord import FlowRecord
from helicone_addon.record import CallState


def test_render_chat_request():
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]})
    text = render_request("openai-chat", "/v1/chat/completions", body.encode())
    assert "model: gpt-4o   (stream)" in text
    # a blank line (one space: mitmweb gives an empty line no height) between blocks
    assert "[system]\nBe brief.\n \n[user]\nHi there\n" in text


def test_render_request_wraps_long_lines_and_shows_helicone_headers():
    long = "word " * 60
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": long}]}).encode()
    headers = [("Authorization", "Bearer sk-secret"), ("Helicone-Property-Team", "search"),
               ("Helicone-Auth", "Bearer sk-helicone-key"), ("Helicone-User-Id", "alice")]
    text = render_request("openai-chat", "/v1/chat/completions", body, headers)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert " ".join(text.split("[user]\n", 1)[1].split()) == long.strip()
    lines = text.splitlines()
    assert lines.index("  Helicone-User-Id: alice") < lines.index("  Helicone-Property-Team: search")
    assert "sk-helicone-key" not in text and "Helicone-Auth: (set)" in text and "sk-secret" not in text


def test_render_gemini_request_takes_the_model_from_the_url():
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "bonjour"}]}]}).encode()
    text = render_request("gemini", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", body)
    assert "model: gemini-2.0-flash   (stream)" in text and "[user]\nbonjour" in text


def test_render_sse_response_as_conversation():
    events = [{"model": "gpt-4o", "choices": [{"delta": {"content": w}}]} for w in ("Hel", "lo", "!")]
    events.append({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    text = render_response("openai-chat", body.encode(), "text/event-stream", 200, {"cost_usd": 0.0000123})
    assert "[assistant]\nHello!" in text
    assert "prompt 5, completion 3, total 8" in text
    assert "cost: $0.000012" in text


def test_an_error_body_is_rendered_as_an_error():
    body = json.dumps({"error": {"message": "Rate limit reached for gpt-4o", "type": "requests"}}).encode()
    text = render_response("openai-chat", body, "application/json", 429)
    assert text.startswith("error: HTTP 429\n")
    assert "[error]\nRate limit reached for gpt-4o" in text
    assert "model: ?" not in text and "[assistant]" not in text
    html = render_response("openai-chat", b"<html>Bad gateway</html>", "text/html", 502)
    assert "[error]\n<html>Bad gateway</html>" in html


def test_view_is_the_default_for_llm_calls_only():
    f = tflow.tflow(resp=True)
    f.request.host = "api.openai.com"
    f.request.path = "/v1/chat/completions"
    body = b'data: {"model":"m","choices":[{"delta":{"content":"yo"}}]}\n\n'
    meta = contentviews.Metadata(flow=f, content_type="text/event-stream", http_message=f.response)
    assert llm_view.render_priority(body, meta) > 1
    assert "[assistant]\nyo" in llm_view.prettify(body, meta)
    json_meta = contentviews.Metadata(flow=f, content_type="application/json", http_message=f.request)
    assert llm_view.render_priority(b'{"model": "m", "messages": []}', json_meta) > 1  # above JSON's 1
    other = tflow.tflow(resp=True)
    other.request.host = "example.com"
    other.request.path = "/index.html"
    assert llm_view.render_priority(b"<html>", contentviews.Metadata(flow=other, content_type="text/html",
                                                                      http_message=other.response)) < 0


def test_view_shows_the_headers_the_client_sent_before_they_were_stripped():
    f = tflow.tflow(resp=True)
    f.request.host = "api.openai.com"
    f.request.path = "/v1/chat/completions"
    f.request.headers.clear()  # the proxy stripped them before the provider saw the request
    state = CallState(id="x", started_at=0.0, api="openai-chat",
                      request_headers=[("Helicone-User-Id", "alice"), ("Helicone-Session-Id", "s1"),
                                       ("Helicone-Property-Feature", "search")])
    f.metadata["helicone"] = FlowRecord(call=state, url_parts=("https", "api.openai.com", 443))
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    text = llm_view.prettify(body, contentviews.Metadata(flow=f, content_type="application/json", http_message=f.request))
    assert "Helicone-User-Id: alice" in text and "Helicone-Property-Feature: search" in text
    f.metadata["helicone_row"] = {"cost_usd": 0.25}  # the logged row, once built
    resp = llm_view.prettify(b'{"choices": [{"message": {"content": "ok"}}]}',
                             contentviews.Metadata(flow=f, content_type="application/json", http_message=f.response))
    assert "cost: $0.25" in resp and "[assistant]\nok" in resp
    f.metadata["helicone_client_headers"] = [("Helicone-User-Id", "bob")]
    text = llm_view.prettify(body, contentviews.Metadata(flow=f, content_type="application/json", http_message=f.request))
    assert "Helicone-User-Id: bob" in text and "alice" not in text


def test_blocks_are_the_renderers():
    turns = render.request_turns(json.dumps({"messages": [{"role": "user", "content": "a"}]}))
    assert render.blocks(turns) == ["[user]", "a"]
