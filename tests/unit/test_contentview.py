import json

from mitmproxy import contentviews
from mitmproxy.test import tflow

from helicone_addon.contentview import llm_view, render_request, render_response


def test_render_chat_request():
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]})
    text = render_request("openai-chat", "/v1/chat/completions", body.encode())
    assert "model: gpt-4o   (stream)" in text
    assert "[system]\nBe brief." in text and "[user]\nHi there" in text


def test_render_sse_response_as_conversation():
    events = [{"model": "gpt-4o", "choices": [{"delta": {"content": w}}]} for w in ("Hel", "lo", "!")]
    events.append({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    text = render_response("openai-chat", body.encode(), "text/event-stream", 200)
    assert "[assistant]\nHello!" in text
    assert "prompt 5, completion 3, total 8" in text


def test_view_is_chosen_for_llm_sse_only():
    f = tflow.tflow(resp=True)
    f.request.host = "api.openai.com"
    f.request.path = "/v1/chat/completions"
    body = b'data: {"model":"m","choices":[{"delta":{"content":"yo"}}]}\n\n'
    meta = contentviews.Metadata(flow=f, content_type="text/event-stream", http_message=f.response)
    assert llm_view.render_priority(body, meta) > 1
    assert "[assistant]\nyo" in llm_view.prettify(body, meta)
    other = tflow.tflow(resp=True)
    other.request.host = "example.com"
    other.request.path = "/index.html"
    assert llm_view.render_priority(b"<html>", contentviews.Metadata(flow=other, content_type="text/html",
                                                                      http_message=other.response)) < 0
