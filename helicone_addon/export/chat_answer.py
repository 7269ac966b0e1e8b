"""The assistant message of a logged response, for the `openai-chat` export.

Text comes from the usage parsers (helicone_addon/usage: the same reading of JSON bodies and
streams the proxy uses for token counts); tool calls are collected here, from a whole JSON body
or from the objects of a stream (SSE events, or a Gemini JSON array).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .. import usage
from ..sse import SSEDecoder


def response_objects(body: str) -> Iterator[Any]:
    """The JSON objects of a response body: the object itself, the elements of a JSON-array
    stream, or the data of each SSE event (non-JSON events are skipped)."""
    stripped = body.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, list):
            yield from data
            return
        if data is not None:
            yield data
            return
    dec = SSEDecoder()
    events = dec.feed(body.encode("utf-8", "surrogatepass")) + dec.close()
    for ev in events:
        try:
            yield json.loads(ev.data)
        except ValueError:
            continue


class _Calls:
    """Tool calls by position, filled in whole or in pieces."""

    def __init__(self) -> None:
        self.calls: dict[Any, dict[str, Any]] = {}

    def put(self, idx: Any, call_id: Any = None, name: Any = None, args: Any = None) -> None:
        c = self.calls.setdefault(idx, {"id": "", "name": "", "arguments": ""})
        if call_id:
            c["id"] = str(call_id)
        if name:
            c["name"] = str(name)
        if args is not None:
            c["arguments"] += args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)

    def result(self) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(self.calls.values()):
            out.append({
                "id": c["id"] or f"call_{i + 1}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"] or "{}"},
            })  # fmt: skip
        return out


def _openai_chat(obj: dict, calls: _Calls) -> None:
    for ch in obj.get("choices") or []:
        if not isinstance(ch, dict) or ch.get("index", 0) != 0:
            continue
        msg = ch.get("message") or ch.get("delta") or {}
        for i, tc in enumerate(msg.get("tool_calls") or []):
            if isinstance(tc, dict):
                fn = tc.get("function") or {}
                calls.put(tc.get("index", i), tc.get("id"), fn.get("name"), fn.get("arguments"))


def _anthropic(obj: dict, calls: _Calls) -> None:
    t = obj.get("type")
    if t == "message":
        for i, b in enumerate(obj.get("content") or []):
            if isinstance(b, dict) and b.get("type") == "tool_use":
                calls.put(i, b.get("id"), b.get("name"), b.get("input"))
    elif t == "content_block_start":
        b = obj.get("content_block") or {}
        if b.get("type") == "tool_use":
            calls.put(obj.get("index"), b.get("id"), b.get("name"), None if b.get("input") == {} else b.get("input"))
    elif t == "content_block_delta":
        d = obj.get("delta") or {}
        if d.get("type") == "input_json_delta" and obj.get("index") in calls.calls:
            calls.put(obj.get("index"), args=d.get("partial_json") or "")


def _responses(obj: dict, calls: _Calls) -> None:
    if obj.get("type") == "response.completed":
        obj = obj.get("response") or {}
    if obj.get("object") != "response":
        return
    for i, item in enumerate(obj.get("output") or []):
        if isinstance(item, dict) and item.get("type") == "function_call":
            calls.put(i, item.get("call_id"), item.get("name"), item.get("arguments"))


def _gemini(obj: dict, calls: _Calls) -> None:
    cands = obj.get("candidates") or []
    if not cands or not isinstance(cands[0], dict):
        return
    for p in (cands[0].get("content") or {}).get("parts") or []:
        if isinstance(p, dict) and isinstance(p.get("functionCall"), dict):
            fc = p["functionCall"]
            calls.put(len(calls.calls), fc.get("id"), fc.get("name"), fc.get("args"))


_TOOL_READERS = {
    "openai-chat": _openai_chat,
    "anthropic-messages": _anthropic,
    "openai-responses": _responses,
    "gemini": _gemini,
}


def assistant_message(api: str, body: str | None, content_type: str | None, status: int) -> dict[str, Any] | None:
    """{"role": "assistant", "content": text, ["tool_calls": [...]]}; None when the response
    holds neither text nor a tool call."""
    if not body:
        return None
    parsed = usage.parse_response(api, body.encode("utf-8", "surrogatepass"), content_type, status)
    calls = _Calls()
    reader = _TOOL_READERS.get(api)
    if reader is not None:
        for obj in response_objects(body):
            if isinstance(obj, dict):
                reader(obj, calls)
    tool_calls = calls.result()
    text = parsed.text or ""
    if not text and not tool_calls:
        return None
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg
