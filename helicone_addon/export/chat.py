"""`openai-chat` export: successful chat calls of any provider as fine-tuning / eval lines.

One line per call: ``{"messages": [...prompt..., {"role": "assistant", ...}], "tools": [...]}``,
the prompt normalised to OpenAI chat messages whatever the wire format was:

* roles: system (also OpenAI `developer`, Anthropic `system`, Responses `instructions`, Gemini
  `systemInstruction`), user, assistant (Gemini `model`), tool (tool results, with tool_call_id);
* content: a string; a user message with images becomes a list of text / image_url parts;
* tool calls: ``{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}``;
* reasoning / thinking, audio and files are left out.

The answer comes from the response body, streamed answers joined into their text (see
chat_answer.py). Calls that are not chat calls, failed, or have no answer are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from .chat_answer import assistant_message
from .rows import body_json, header_dict

CHAT_APIS = ("openai-chat", "openai-responses", "anthropic-messages", "gemini")

Msg = dict[str, Any]


def _text(parts: Any, text_types: tuple[str, ...] = ("text", "input_text", "output_text")) -> str:
    """Text of a content value: a string, or the text parts of a list."""
    if isinstance(parts, str):
        return parts
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list):
        return ""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict) and p.get("type", "text") in text_types and isinstance(p.get("text"), str):
            out.append(p["text"])
    return "\n".join(out)


def _user(parts: list[Msg]) -> Msg | None:
    """A user message from text / image_url parts: a plain string when there is no image."""
    parts = [p for p in parts if p.get("type") != "text" or p.get("text")]
    if not parts:
        return None
    if all(p["type"] == "text" for p in parts):
        return {"role": "user", "content": "\n".join(p["text"] for p in parts)}
    return {"role": "user", "content": parts}


def _tool_call(call_id: Any, name: Any, arguments: Any) -> Msg:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {"id": str(call_id or ""), "type": "function", "function": {"name": str(name or ""), "arguments": args}}


def _assistant(text: str, calls: list[Msg]) -> Msg | None:
    if not text and not calls:
        return None
    m: Msg = {"role": "assistant", "content": text or None}
    if calls:
        m["tool_calls"] = calls
    return m


def _push_call(out: list[Msg], call: Msg) -> None:
    """Consecutive tool calls share one assistant message."""
    if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
        out[-1]["tool_calls"].append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


# -- prompts, per wire format ---------------------------------------------------------------


def _openai_parts(content: Any) -> list[Msg]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out: list[Msg] = []
    for p in content if isinstance(content, list) else []:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text" and isinstance(p.get("text"), str):
            out.append({"type": "text", "text": p["text"]})
        elif p.get("type") == "image_url" and isinstance(p.get("image_url"), dict):
            out.append({"type": "image_url", "image_url": p["image_url"]})
    return out


def prompt_openai_chat(req: dict) -> list[Msg]:
    out: list[Msg] = []
    for m in req.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text(content)})
        elif role == "user":
            if (u := _user(_openai_parts(content))) is not None:
                out.append(u)
        elif role == "assistant":
            calls = [
                _tool_call(c.get("id"), (c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments"))
                for c in m.get("tool_calls") or [] if isinstance(c, dict)
            ]
            if (a := _assistant(_text(content), calls)) is not None:
                out.append(a)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": str(m.get("tool_call_id") or ""), "content": _text(content)})
    return out


def _anthropic_image(block: dict) -> Msg | None:
    src = block.get("source") or {}
    if src.get("type") == "base64" and src.get("data"):
        return {"type": "image_url", "image_url": {"url": f"data:{src.get('media_type', 'image/png')};base64,{src['data']}"}}
    if src.get("type") == "url" and src.get("url"):
        return {"type": "image_url", "image_url": {"url": src["url"]}}
    return None


def prompt_anthropic(req: dict) -> list[Msg]:
    out: list[Msg] = []
    system = _text(req.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for m in req.get("messages") or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [b for b in content or [] if isinstance(b, dict)]
        if m.get("role") == "assistant":
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = [_tool_call(b.get("id"), b.get("name"), b.get("input")) for b in blocks if b.get("type") == "tool_use"]
            if (a := _assistant(text, calls)) is not None:
                out.append(a)
            continue
        parts: list[Msg] = []
        for b in blocks:
            t = b.get("type")
            if t == "tool_result":  # answers the previous assistant's tool call: its own message
                out.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id") or ""), "content": _text(b.get("content"))})
            elif t == "text" and isinstance(b.get("text"), str):
                parts.append({"type": "text", "text": b["text"]})
            elif t == "image" and (img := _anthropic_image(b)) is not None:
                parts.append(img)
        if (u := _user(parts)) is not None:
            out.append(u)
    return out


def prompt_responses(req: dict) -> list[Msg]:
    out: list[Msg] = []
    if isinstance(req.get("instructions"), str) and req["instructions"]:
        out.append({"role": "system", "content": req["instructions"]})
    inp = req.get("input")
    if isinstance(inp, str):
        out.append({"role": "user", "content": inp})
        return out
    for item in inp if isinstance(inp, list) else []:
        if not isinstance(item, dict):
            continue
        t = item.get("type", "message")
        if t == "function_call":
            _push_call(out, _tool_call(item.get("call_id"), item.get("name"), item.get("arguments")))
        elif t == "function_call_output":
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": _text(item.get("output"))})
        elif t == "message":
            role, content = item.get("role"), item.get("content")
            if role in ("system", "developer"):
                out.append({"role": "system", "content": _text(content)})
            elif role == "assistant":
                if (a := _assistant(_text(content), [])) is not None:
                    out.append(a)
            elif role == "user":
                parts: list[Msg] = [{"type": "text", "text": content}] if isinstance(content, str) else []
                for p in content if isinstance(content, list) else []:
                    if isinstance(p, dict) and p.get("type") in ("input_text", "text") and isinstance(p.get("text"), str):
                        parts.append({"type": "text", "text": p["text"]})
                    elif isinstance(p, dict) and p.get("type") == "input_image" and isinstance(p.get("image_url"), str):
                        parts.append({"type": "image_url", "image_url": {"url": p["image_url"]}})
                if (u := _user(parts)) is not None:
                    out.append(u)
    return out


def prompt_gemini(req: dict) -> list[Msg]:
    out: list[Msg] = []
    sys_inst = req.get("systemInstruction") or req.get("system_instruction")
    if isinstance(sys_inst, dict) and (text := _text(sys_inst.get("parts"))):
        out.append({"role": "system", "content": text})
    ids: dict[str, str] = {}  # Gemini has no call ids: make them, and pair responses by name
    for c in req.get("contents") or []:
        if not isinstance(c, dict):
            continue
        parts = [p for p in c.get("parts") or [] if isinstance(p, dict)]
        if c.get("role") == "model":
            text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
            calls = []
            for p in parts:
                if isinstance(p.get("functionCall"), dict):
                    fc = p["functionCall"]
                    ids[str(fc.get("name"))] = cid = f"call_{len(ids) + 1}"
                    calls.append(_tool_call(cid, fc.get("name"), fc.get("args")))
            if (a := _assistant(text, calls)) is not None:
                out.append(a)
            continue
        user_parts: list[Msg] = []
        for p in parts:
            if isinstance(p.get("functionResponse"), dict):
                fr = p["functionResponse"]
                out.append({"role": "tool", "tool_call_id": ids.get(str(fr.get("name")), ""),
                            "content": json.dumps(fr.get("response"), ensure_ascii=False)})
            elif isinstance(p.get("text"), str):
                user_parts.append({"type": "text", "text": p["text"]})
            elif isinstance(p.get("inlineData"), dict) and str(p["inlineData"].get("mimeType", "")).startswith("image/"):
                d = p["inlineData"]
                user_parts.append({"type": "image_url", "image_url": {"url": f"data:{d['mimeType']};base64,{d.get('data', '')}"}})
        if (u := _user(user_parts)) is not None:
            out.append(u)
    return out


PROMPTS = {
    "openai-chat": prompt_openai_chat,
    "anthropic-messages": prompt_anthropic,
    "openai-responses": prompt_responses,
    "gemini": prompt_gemini,
}


def tools_of(api: str, req: dict) -> list[Msg]:
    """The request's function tools in OpenAI chat form (other tool kinds are left out)."""
    out: list[Msg] = []
    for t in req.get("tools") or []:
        if not isinstance(t, dict):
            continue
        if api == "openai-chat" and t.get("type") == "function" and isinstance(t.get("function"), dict):
            out.append({"type": "function", "function": t["function"]})
        elif api == "openai-responses" and t.get("type") == "function" and t.get("name"):
            out.append(_function(t.get("name"), t.get("description"), t.get("parameters")))
        elif api == "anthropic-messages" and t.get("name") and "input_schema" in t:
            out.append(_function(t.get("name"), t.get("description"), t.get("input_schema")))
        elif api == "gemini":
            for fd in t.get("functionDeclarations") or t.get("function_declarations") or []:
                if isinstance(fd, dict) and fd.get("name"):
                    out.append(_function(fd["name"], fd.get("description"), fd.get("parameters")))
    return out


def _function(name: Any, description: Any, parameters: Any) -> Msg:
    fn: Msg = {"name": str(name)}
    if description:
        fn["description"] = str(description)
    if isinstance(parameters, dict):
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def chat_example(row: dict[str, Any]) -> dict[str, Any] | None:
    """A training / eval line for one logged call, or None when it does not make one."""
    api = row.get("api")
    status = row.get("status")
    if api not in PROMPTS or status is None or not 200 <= status < 300 or row.get("error") or row.get("replayed_from"):
        return None
    req = body_json(row.get("request_body"))
    if not isinstance(req, dict):
        return None
    messages = PROMPTS[api](req)
    if not any(m["role"] in ("user", "tool") for m in messages):
        return None
    ctype = header_dict(row.get("response_headers")).get("content-type")
    answer = assistant_message(api, row.get("response_body"), ctype, status)
    if answer is None:
        return None
    example: dict[str, Any] = {"messages": [*messages, answer]}
    tools = tools_of(api, req)
    if tools:
        example["tools"] = tools
    return example
