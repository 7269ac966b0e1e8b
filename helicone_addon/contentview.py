"""An "LLM" content view for mitmweb / mitmproxy: chat requests and (SSE) responses as conversation text.

Rendering is pure (`render_request`, `render_response`); `LLMContentview` adapts it to
mitmproxy 12's contentview API and is registered by the addon.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import contentviews, http

from helicone_addon import providers, usage


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                if isinstance(p.get("text"), str):
                    parts.append(p["text"])
                elif p.get("type") in ("image_url", "image", "input_image"):
                    parts.append("[image]")
                elif p.get("type") in ("tool_use", "tool_result", "function_call"):
                    parts.append(f"[{p.get('type')}] {json.dumps(p.get('input') or p.get('content') or '')[:500]}")
            elif isinstance(p, str):
                parts.append(p)
        return "\n".join(parts)
    if content is None:
        return ""
    return json.dumps(content)[:2000]


def render_request(api: str, path: str, body: bytes) -> str:
    info = usage.parse_request(api, path, body)
    data = info.json if isinstance(info.json, dict) else {}
    lines = [f"model: {info.model or '?'}{'   (stream)' if info.stream else ''}", ""]
    if isinstance(data.get("system"), (str, list)):
        lines += ["[system]", _content_text(data["system"]), ""]
    msgs = data.get("messages")
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict):
                lines += [f"[{m.get('role', '?')}]", _content_text(m.get("content")), ""]
    elif "input" in data:
        inp = data["input"]
        if isinstance(inp, list):
            for m in inp:
                if isinstance(m, dict):
                    lines += [f"[{m.get('role', m.get('type', '?'))}]", _content_text(m.get("content")), ""]
                else:
                    lines += [str(m), ""]
        else:
            lines += ["[input]", _content_text(inp), ""]
    elif isinstance(data.get("contents"), list):  # Gemini
        for c in data["contents"]:
            if isinstance(c, dict):
                text = "\n".join(p.get("text", "") for p in c.get("parts", []) if isinstance(p, dict))
                lines += [f"[{c.get('role', 'user')}]", text, ""]
    elif isinstance(data.get("prompt"), str):
        lines += ["[prompt]", data["prompt"], ""]
    return "\n".join(lines).rstrip() + "\n"


def render_response(api: str, body: bytes, content_type: str | None, status: int | None) -> str:
    parsed = usage.parse_response(api, body, content_type, status)
    lines = [f"model: {parsed.model or '?'}{'   (streamed)' if parsed.streamed else ''}"]
    u = parsed.usage
    if u is not None:
        lines.append(
            f"tokens: prompt {u.prompt_tokens}, completion {u.completion_tokens}, total {u.total_tokens}"
            + (f", cached {u.cached_tokens}" if u.cached_tokens else "")
            + (f", reasoning {u.reasoning_tokens}" if u.reasoning_tokens else "")
        )
    if parsed.error:
        lines += ["", f"[error] {parsed.error}"]
    reasoning = getattr(parsed, "reasoning_text", "")
    if reasoning:
        lines += ["", "[reasoning]", reasoning]
    lines += ["", "[assistant]", parsed.text or ""]
    tools = getattr(parsed, "tool_text", "")
    if tools:
        lines += ["", "[tool calls]", tools]
    return "\n".join(lines).rstrip() + "\n"


def _api_of(metadata: contentviews.Metadata) -> str | None:
    flow = metadata.flow
    if not isinstance(flow, http.HTTPFlow):
        return None
    state = flow.metadata.get("helicone")
    if state is not None:
        return state.call.api
    provider = providers.detect(flow.request.pretty_host, flow.request.path)
    return providers.api_for(provider, flow.request.path) if provider else None


class LLMContentview(contentviews.Contentview):
    name = "LLM"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        api = _api_of(metadata) or providers.API_UNKNOWN
        msg = metadata.http_message
        flow = metadata.flow
        if isinstance(msg, http.Request):
            return render_request(api, msg.path, data)
        status = msg.status_code if isinstance(msg, http.Response) else None
        if isinstance(flow, http.HTTPFlow) and api == providers.API_UNKNOWN:
            api = providers.api_for(None, flow.request.path)
        return render_response(api, data, metadata.content_type, status)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        if not data or _api_of(metadata) in (None, providers.API_UNKNOWN):
            return -1
        if "event-stream" in (metadata.content_type or ""):
            return 2  # no stock view renders SSE as text
        return 0.5  # JSON stays the default; "LLM" is one click away


llm_view = LLMContentview()
