"""Pure mapping of a log row to OpenTelemetry GenAI semantic-convention values (no SDK import).

    operation_name(api)                 'openai-chat' -> 'chat', 'gemini' -> 'generate_content', ...
    provider_name(provider)             the conventions' well-known gen_ai.provider.name value
    system_name(provider)               the older gen_ai.system value
    finish_reasons(body, api)           ['stop'] from a JSON or SSE response body (any wire format)
    response_id(body)                   'chatcmpl-...' / 'msg_...' / Gemini's responseId
    error_type(row)                     '429', '500', 'timeout', 'cancelled', '_OTHER' or None
    input_messages(api, request_body)   (system_instructions, input_messages) in the conventions' JSON shape
    output_messages(text, reasons)      the conventions' output messages
    trace_id_for_session(session_id)    deterministic 128-bit trace id
    span_id_for(*parts)                 deterministic 64-bit span id
    session_nodes(path)                 '/a/b' -> ['/a', '/a/b']
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

OPERATIONS = {
    "openai-chat": "chat",
    "openai-responses": "chat",
    "anthropic-messages": "chat",
    "openai-completions": "text_completion",
    "openai-embeddings": "embeddings",
    "gemini-embeddings": "embeddings",
    "gemini": "generate_content",
}
PROVIDERS = {  # our provider id -> gen_ai.provider.name (others are passed through as they are)
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
}
SYSTEMS = dict(PROVIDERS, azure="az.ai.openai", **{"x-ai": "xai"})  # gen_ai.system's older spellings

MAX_SCAN = 1 << 20  # bodies up to this size are scanned whole for finish reasons; beyond, the tail
TAIL_SCAN = 256 * 1024
_FINISH = re.compile(rb'"(?:finish_reason|stop_reason|finishReason)"\s*:\s*"([^"\\]{1,64})"')
_RESP_ID = re.compile(rb'"(?:id|responseId)"\s*:\s*"([^"\\]{1,200})"')


def operation_name(api: str | None) -> str:
    return OPERATIONS.get(api or "", "chat")


def provider_name(provider: str | None) -> str:
    p = (provider or "").lower()
    return PROVIDERS.get(p, p or "unknown")


def system_name(provider: str | None) -> str:
    p = (provider or "").lower()
    return SYSTEMS.get(p, p or "unknown")


def _bytes(body: str | bytes | None) -> bytes:
    if body is None:
        return b""
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body


def finish_reasons(body: str | bytes | None, api: str | None = None) -> list[str]:
    """Finish reasons of every generation, in order, from a JSON body or an SSE stream.

    Reads the wire formats' own keys (`finish_reason` OpenAI, `stop_reason` Anthropic,
    `finishReason` Gemini); null values (Anthropic's message_start) are skipped, and quotes escaped
    inside generated text never match. The OpenAI Responses API reports a status, not a reason:
    nothing is returned for it. An Anthropic message has one reason, which a stream may repeat (the
    last one holds)."""
    data = _bytes(body)
    if len(data) > MAX_SCAN:
        data = data[-TAIL_SCAN:]
    found = [m.decode("utf-8", "replace") for m in _FINISH.findall(data)]
    return found[-1:] if api == "anthropic-messages" else found


def response_id(body: str | bytes | None) -> str | None:
    """The first `id` (or Gemini `responseId`) of the body: the provider's completion id."""
    m = _RESP_ID.search(_bytes(body)[:8192])
    return m.group(1).decode("utf-8", "replace") if m else None


def error_type(row: dict[str, Any]) -> str | None:
    """error.type of a failed call: the HTTP status when there was one, else a short class."""
    status = row.get("status")
    if isinstance(status, int) and status >= 400:
        return str(status)
    err = row.get("error")
    if not err:
        return None if isinstance(status, int) else "_OTHER"
    low = str(err).lower()
    if low.startswith("cancelled"):
        return "cancelled"
    if "timed out" in low or "timeout" in low:
        return "timeout"
    return "_OTHER"


# -- content (only exported with content=True) -------------------------------------------------
def _text_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content (a string, or a list of typed blocks of any wire format) -> parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
        elif isinstance(block, dict):
            text = block.get("text")
            if isinstance(text, str):
                parts.append({"type": "text", "content": text})
            elif block.get("type") in ("tool_use", "function_call") or "functionCall" in block:
                call = block.get("functionCall") or block
                parts.append({"type": "tool_call", "id": call.get("id") or call.get("call_id"),
                              "name": call.get("name"), "arguments": call.get("input") or call.get("args")
                              or call.get("arguments")})
            elif block.get("type") in ("tool_result", "function_call_output") or "functionResponse" in block:
                resp = block.get("functionResponse") or block
                result = resp.get("content") or resp.get("output") or resp.get("response")
                parts.append({"type": "tool_call_response", "id": resp.get("tool_use_id") or resp.get("call_id"),
                              "result": result})
            else:
                parts.append({"type": str(block.get("type") or "unknown")})  # images, audio: no bytes
    return parts


def _message(role: Any, content: Any, extra: dict | None = None) -> dict[str, Any]:
    msg = {"role": str(role or "user"), "parts": _text_parts(content)}
    for call in (extra or {}).get("tool_calls") or []:
        if isinstance(call, dict):
            fn = call.get("function") or {}
            msg["parts"].append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name"),
                                 "arguments": fn.get("arguments")})
    return msg


def input_messages(api: str | None, request_body: str | bytes | None) -> tuple[list, list]:
    """(system_instructions, input_messages) of a request body, in the conventions' shapes."""
    try:
        body = json.loads(_bytes(request_body) or b"null")
    except ValueError:
        return [], []
    if not isinstance(body, dict):
        return [], []
    system: list = []
    messages: list = []
    if api == "anthropic-messages":
        system = _text_parts(body.get("system"))
        msgs = body.get("messages")
    elif api in ("gemini", "gemini-embeddings"):
        si = body.get("systemInstruction") or body.get("system_instruction")
        system = _text_parts(si.get("parts")) if isinstance(si, dict) else []
        msgs = [{"role": c.get("role") or "user", "content": c.get("parts")}
                for c in body.get("contents") or [] if isinstance(c, dict)]
    elif api == "openai-responses":
        system = _text_parts(body.get("instructions"))
        inp = body.get("input")
        msgs = [{"role": "user", "content": inp}] if isinstance(inp, str) else inp
    elif api in ("openai-completions", "openai-embeddings"):
        inp = body.get("prompt", body.get("input"))
        msgs = [{"role": "user", "content": inp}]
    else:
        msgs = body.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        if isinstance(m, dict):
            messages.append(_message(m.get("role"), m.get("content"), m))
    return system, messages


def output_messages(text: str, reasons: list[str]) -> list[dict[str, Any]]:
    msg: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": text}] if text else []}
    msg["finish_reason"] = reasons[0] if reasons else "unknown"
    return [msg]


# -- deterministic ids --------------------------------------------------------------------------
def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()


def trace_id_for_session(session_id: str) -> int:
    """A Helicone session -> one trace id, the same in every process and every run."""
    return int.from_bytes(_digest("helicone.session", session_id)[:16], "big") or 1


def trace_id_for_request(request_id: str) -> int:
    """A lone call's trace id: its Helicone-Id UUID itself, so the id finds the trace."""
    try:
        return uuid.UUID(request_id).int or 1
    except (ValueError, AttributeError, TypeError):
        return int.from_bytes(_digest("helicone.request", str(request_id))[:16], "big") or 1


def span_id_for(*parts: str) -> int:
    return int.from_bytes(_digest("helicone.span", *parts)[:8], "big") or 1


def session_nodes(path: str | None, max_depth: int = 32) -> list[str]:
    """'/plan/search/' -> ['/plan', '/plan/search'] (empty segments dropped, depth capped)."""
    segs = [s for s in (path or "").split("/") if s][:max_depth]
    return ["/" + "/".join(segs[: i + 1]) for i in range(len(segs))]
