"""A `Call` rebuilt as the provider's own request and response bodies, then as a `CallState`.

The log keeps calls as the provider saw them, so the usage parsers, the price lookup and every
view of a row read a traced call exactly like a proxied one: OpenAI chat completions (also for
OpenAI-compatible providers), Anthropic messages, Gemini generateContent, OpenAI embeddings.
Content the client did not trace is simply absent from the bodies.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from .. import providers
from ..headers import CallOptions
from ..record import CallState
from .genai import Call

SOURCE = "otlp"  # requests.source of traced calls
USAGE_SOURCE = "client"  # requests.usage_source when the client's instrumentation reported the tokens

_PATHS = {
    providers.API_OPENAI_CHAT: "/chat/completions",
    providers.API_ANTHROPIC: "/messages",
    providers.API_OPENAI_EMBEDDINGS: "/embeddings",
}


def api_of(call: Call) -> str:
    if (call.operation or "").lower() == "embeddings":
        return providers.API_OPENAI_EMBEDDINGS
    if call.provider == "anthropic":
        return providers.API_ANTHROPIC
    if call.provider in ("gemini", "vertex"):
        return providers.API_GEMINI
    return providers.API_OPENAI_CHAT


def _path(api: str, call: Call, model: str | None) -> tuple[str, str]:
    """(host, path) of the call: from the URL the span names when it fits the wire format."""
    parts = urlsplit(call.url) if call.url else None
    host = (parts.hostname or "") if parts else ""
    base = (parts.path or "").rstrip("/") if parts else ""
    if api == providers.API_GEMINI:
        return host, f"/v1beta/models/{model or 'unknown'}:generateContent"
    suffix = _PATHS[api]
    if base.endswith(suffix):
        return host, base
    if base and providers.api_for(call.provider, base) == providers.API_UNKNOWN:  # a base URL, e.g. /v1
        return host, base + suffix
    return host, "/v1" + suffix


def _args(s: Any) -> Any:
    if isinstance(s, str):
        try:
            return json.loads(s)
        except ValueError:
            return s
    return s if s is not None else {}


# -- OpenAI ------------------------------------------------------------------------------------


def _openai_message(m: dict) -> dict:
    out: dict[str, Any] = {"role": m.get("role") or "user"}
    if "content" in m or not m.get("tool_calls"):
        out["content"] = m.get("content")
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": t.get("id"), "type": "function",
             "function": {"name": t.get("name"), "arguments": t.get("arguments") or ""}}
            for t in m["tool_calls"]
        ]
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _openai(call: Call, model: str | None) -> tuple[dict, dict]:
    req: dict[str, Any] = {"model": call.request_model}
    if call.messages:
        req["messages"] = [_openai_message(m) for m in call.messages]
    req.update(call.params)
    if call.streamed:
        req["stream"] = True
    resp: dict[str, Any] = {"id": call.response_id, "object": "chat.completion", "model": model}
    if call.outputs:
        resp["choices"] = [
            {"index": i, "message": _openai_message({**m, "role": m.get("role") or "assistant"}),
             "finish_reason": m.get("finish_reason") or (call.finish_reasons[i] if i < len(call.finish_reasons) else None)}
            for i, m in enumerate(call.outputs)
        ]  # fmt: skip
    u = call.usage
    if "input" in u or "output" in u:
        usage: dict[str, Any] = {"prompt_tokens": u.get("input"), "completion_tokens": u.get("output")}
        if u.get("total") is not None:
            usage["total_tokens"] = u["total"]
        if "cache_read" in u or "cache_write" in u:
            usage["prompt_tokens_details"] = {
                "cached_tokens": u.get("cache_read"), "cache_write_tokens": u.get("cache_write")
            }
        if "reasoning" in u:
            usage["completion_tokens_details"] = {"reasoning_tokens": u["reasoning"]}
        resp["usage"] = usage
    return req, resp


def _embeddings(call: Call, model: str | None) -> tuple[dict, dict]:
    req: dict[str, Any] = {"model": call.request_model}
    texts = [m.get("content") for m in call.messages if isinstance(m.get("content"), str)]
    if texts:
        req["input"] = texts
    resp: dict[str, Any] = {"object": "list", "data": [], "model": model}
    if "input" in call.usage:
        resp["usage"] = {"prompt_tokens": call.usage["input"], "total_tokens": call.usage.get("total", call.usage["input"])}
    return req, resp


# -- Anthropic ---------------------------------------------------------------------------------


def _anthropic_blocks(m: dict) -> Any:
    content = m.get("content")
    blocks: list[dict] = []
    if isinstance(content, list):
        blocks += [b for b in content if isinstance(b, dict)]
    elif content not in (None, ""):
        blocks.append({"type": "text", "text": content if isinstance(content, str) else json.dumps(content)})
    for t in m.get("tool_calls") or []:
        blocks.append({"type": "tool_use", "id": t.get("id"), "name": t.get("name"), "input": _args(t.get("arguments"))})
    if m.get("role") == "tool":
        return [{"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": blocks}]
    if len(blocks) == 1 and blocks[0].get("type") == "text":
        return blocks[0]["text"]
    return blocks


def _anthropic(call: Call, model: str | None) -> tuple[dict, dict]:
    req: dict[str, Any] = {"model": call.request_model}
    system = [m for m in call.messages if m.get("role") == "system"]
    if system:
        req["system"] = "\n".join(str(m.get("content") or "") for m in system)
    rest = [m for m in call.messages if m.get("role") != "system"]
    if rest:
        req["messages"] = [
            {"role": "assistant" if m.get("role") == "assistant" else "user", "content": _anthropic_blocks(m)} for m in rest
        ]
    req.update(call.params)
    if call.streamed:
        req["stream"] = True
    resp: dict[str, Any] = {"id": call.response_id, "type": "message", "role": "assistant", "model": model}
    blocks: list[dict] = []
    for m in call.outputs:
        b = _anthropic_blocks({**m, "role": "assistant"})
        blocks += [{"type": "text", "text": b}] if isinstance(b, str) else b
    if call.outputs:
        resp["content"] = blocks
    stop = next((m.get("finish_reason") for m in call.outputs if m.get("finish_reason")), None)
    resp["stop_reason"] = stop or (call.finish_reasons[0] if call.finish_reasons else None)
    u = call.usage
    if "input" in u or "output" in u:
        read, write = u.get("cache_read"), u.get("cache_write")
        usage: dict[str, Any] = {"output_tokens": u.get("output")}
        if "input" in u:
            usage["input_tokens"] = max(0, u["input"] - (read or 0) - (write or 0))
        if read is not None:
            usage["cache_read_input_tokens"] = read
        if write is not None:
            usage["cache_creation_input_tokens"] = write
        resp["usage"] = usage
    return req, resp


# -- Gemini ------------------------------------------------------------------------------------


def _gemini_parts(m: dict) -> list[dict]:
    content = m.get("content")
    parts: list[dict] = []
    if isinstance(content, list):
        parts += [p if "text" in p else {"text": json.dumps(p)} for p in content if isinstance(p, dict)]
    elif content not in (None, ""):
        parts.append({"text": content if isinstance(content, str) else json.dumps(content)})
    for t in m.get("tool_calls") or []:
        parts.append({"functionCall": {"name": t.get("name"), "args": _args(t.get("arguments"))}})
    return parts


def _gemini(call: Call, model: str | None) -> tuple[dict, dict]:
    req: dict[str, Any] = {}
    system = [m for m in call.messages if m.get("role") == "system"]
    if system:
        req["systemInstruction"] = {"parts": [p for m in system for p in _gemini_parts(m)]}
    rest = [m for m in call.messages if m.get("role") != "system"]
    if rest:
        req["contents"] = [
            {"role": "model" if m.get("role") in ("assistant", "model") else "user", "parts": _gemini_parts(m)} for m in rest
        ]
    if call.params:
        req["generationConfig"] = {
            {"max_tokens": "maxOutputTokens", "top_p": "topP", "top_k": "topK", "stop": "stopSequences"}.get(k, k): v
            for k, v in call.params.items()
        }
    resp: dict[str, Any] = {"modelVersion": model, "responseId": call.response_id}
    if call.outputs:
        resp["candidates"] = [
            {"index": i, "content": {"role": "model", "parts": _gemini_parts(m)}, "finishReason": m.get("finish_reason")}
            for i, m in enumerate(call.outputs)
        ]
    u = call.usage
    if "input" in u or "output" in u:
        reasoning = u.get("reasoning")
        usage = {"promptTokenCount": u.get("input"), "candidatesTokenCount": (u.get("output") or 0) - (reasoning or 0)}
        if reasoning is not None:
            usage["thoughtsTokenCount"] = reasoning
        if "cache_read" in u:
            usage["cachedContentTokenCount"] = u["cache_read"]
        resp["usageMetadata"] = usage
    return req, resp


_BUILDERS = {
    providers.API_OPENAI_CHAT: _openai,
    providers.API_ANTHROPIC: _anthropic,
    providers.API_GEMINI: _gemini,
    providers.API_OPENAI_EMBEDDINGS: _embeddings,
}


def bodies(call: Call) -> tuple[str, dict, dict]:
    """(api, request body, response body) in the provider's wire format."""
    api = api_of(call)
    req, resp = _BUILDERS[api](call, call.response_model or call.request_model)
    if call.error:
        model = resp.get("model") or resp.get("modelVersion")
        resp = {"error": {"message": call.error, "type": "error"}, **({"model": model} if model else {})}
    return api, req, resp


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode()


def call_state(call: Call, request_id: str, opts: CallOptions, headers: list[tuple[str, str]]) -> CallState:
    """The CallState of a traced call (`opts` carries its id, properties, user and session)."""
    api, req, resp = bodies(call)
    host, path = _path(api, call, call.request_model or call.response_model)
    scheme_host = f"{urlsplit(call.url).scheme}://{urlsplit(call.url).netloc}" if call.url else ""
    return CallState(
        id=request_id,
        started_at=call.start,
        source=SOURCE,
        provider=call.provider,
        api=api,
        method="POST",
        host=host,
        path=path,
        url=scheme_host + path if scheme_host else path,
        target_url=scheme_host + path if scheme_host else None,
        options=opts,
        request_headers=headers,
        request_body=_dump(req),
        status=call.status,
        response_headers=[("content-type", "application/json")],
        response_body=_dump(resp),
        content_type="application/json",
        first_chunk_at=call.first_chunk_at,
        ended_at=call.end,
        streamed=call.streamed,
        error=call.error,
    )


def finish_row(row: dict[str, Any], call: Call) -> dict[str, Any]:
    """Mark tokens the client reported as such, and keep the span's own usage attributes."""
    if call.usage and row.get("usage_source") == "provider":
        row["usage_source"] = USAGE_SOURCE
        row["usage_raw"] = json.dumps(call.usage_attrs) if call.usage_attrs else row.get("usage_raw")
    return row
