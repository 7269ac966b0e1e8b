"""Helpers shared by the per-format accumulators.

An *accumulator* reads the JSON objects of one response, one at a time: the single object of a
non-streamed body, or each chunk / SSE event of a stream. It keeps only what it needs (model, last
usage object, output text), so a long stream costs no more memory than its text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .types import ParsedResponse, Usage


def as_int(v: Any) -> int | None:
    """A token count from a JSON value: ints (not bools), integral floats, digit strings."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        return int(v)
    if isinstance(v, str):
        s = v.strip()
        if s.isdigit():
            return int(s)
    return None


def dig(obj: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def add(*vals: int | None) -> int | None:
    """Sum of the known values; None when none is known."""
    known = [v for v in vals if v is not None]
    return sum(known) if known else None


def total_of(prompt: int | None, completion: int | None, reported: Any = None) -> int | None:
    if prompt is not None and completion is not None:
        return prompt + completion
    return as_int(reported)


def compact_json(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return ""


class Accumulator:
    """Base class: model / text / error bookkeeping common to every wire format."""

    family = "base"

    def __init__(self) -> None:
        self.model: str | None = None
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tools: list[str] = []
        self.error: str | None = None
        self.error_type: Any = None
        self.error_code: Any = None
        self.error_in_body = False
        self.objects = 0

    # subclasses implement feed() and usage()
    def feed(self, obj: Any, event: str | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def usage(self) -> Usage | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {}

    # -- helpers ----------------------------------------------------------------------------

    def set_model(self, m: Any) -> None:
        if isinstance(m, str) and m:
            self.model = m

    def check_error(self, obj: dict) -> None:
        """Record an ``{"error": {...}}`` / ``{"error": "..."}`` object (first one wins)."""
        e = obj.get("error")
        if e is None or self.error is not None:
            return
        if isinstance(e, dict):
            msg = e.get("message")
            if not isinstance(msg, str) or not msg:
                msg = e.get("msg") or e.get("detail") or e.get("status") or compact_json(e)
            self.set_error(msg, e.get("type") or e.get("status"), e.get("code"))
        elif isinstance(e, str) and e:
            # {"error": "Not Found"} or {"error": "invalid_request", "message": "details"}
            msg = obj.get("message")
            if isinstance(msg, str) and msg:
                self.set_error(msg, e, obj.get("code"))
            else:
                self.set_error(e, None, obj.get("code"))
        elif isinstance(e, list) and e and isinstance(e[0], dict):
            self.check_error({"error": e[0]})

    def set_error(self, msg: Any, etype: Any = None, code: Any = None) -> None:
        if self.error is not None:
            return
        if not isinstance(msg, str):
            msg = compact_json(msg) if msg is not None else ""
        msg = msg.strip()
        if not msg:
            return
        self.error = msg
        self.error_type = etype
        self.error_code = code
        self.error_in_body = True

    def fill(self, out: ParsedResponse) -> None:
        out.model = self.model
        out.text = "".join(self.text)
        out.reasoning_text = "".join(self.reasoning)
        out.tool_text = "".join(self.tools)
        try:
            out.usage = self.usage()
        except Exception:  # noqa: BLE001 - never let a strange usage object break parsing
            out.usage = None
        if self.error is not None:
            out.error = self.error
            out.extra["error_type"] = self.error_type
            out.extra["error_code"] = self.error_code
        out.extra.update(self.extra())


_REASONING_TYPES = frozenset(("thinking", "reasoning", "reasoning_text", "redacted_thinking"))
_TOOL_CALL_TYPES = frozenset(("tool_use", "server_tool_use", "mcp_tool_use", "function_call", "custom_tool_call"))
_TOOL_RESULT_TYPES = frozenset(
    ("tool_result", "function_call_output", "custom_tool_call_output", "mcp_tool_result", "web_search_tool_result")
)
_MEDIA = {
    "image_url": "image", "image": "image", "input_image": "image", "inlineData": "image",
    "input_audio": "audio", "audio": "audio",
    "file": "file", "input_file": "file", "document": "file", "fileData": "file",
}  # fmt: skip


def content_parts(content: Any) -> Iterator[tuple[str, str, str | None]]:
    """Each part of a message ``content`` value as ``(kind, text, name)``.

    This is the one walker over message content for every wire format: OpenAI's string or list of
    typed parts, Anthropic's content blocks, the Responses API's items, Gemini's ``parts``. kind is
    text | reasoning | tool_call (name = the tool, text = its arguments) | tool_result (name = the
    call it answers) | image | audio | file | other. The response accumulators and
    helicone_addon/render.py both read content through it.
    """
    if content is None:
        return
    if isinstance(content, str):
        yield "text", content, None
        return
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        yield "text", compact_json(content), None
        return
    for part in content:
        if isinstance(part, str):
            yield "text", part, None
        elif isinstance(part, dict):
            yield from _part(part)


def _part(part: dict) -> Iterator[tuple[str, str, str | None]]:
    ptype = part.get("type")
    text = part.get("text")
    if ptype in _REASONING_TYPES or part.get("thought") is True:
        t = text if isinstance(text, str) else part.get("thinking")
        if not isinstance(t, str):  # Responses reasoning items keep their text in summary parts
            t = "\n".join(s.get("text", "") for s in part.get("summary") or () if isinstance(s, dict))
        yield "reasoning", t, None
    elif isinstance(text, str):
        yield "text", text, None
    elif isinstance(part.get("thinking"), str):
        yield "reasoning", part["thinking"], None
    elif ptype in _TOOL_CALL_TYPES:
        args = part.get("input", part.get("arguments"))
        yield "tool_call", args if isinstance(args, str) else compact_json(args), _str_or_none(part.get("name"))
    elif ptype in _TOOL_RESULT_TYPES:
        inner = part.get("content", part.get("output"))
        yield "tool_result", inner if isinstance(inner, str) else _joined_text(inner), _str_or_none(
            part.get("tool_use_id") or part.get("call_id")
        )
    elif isinstance(part.get("functionCall"), dict):  # Gemini
        fc = part["functionCall"]
        yield "tool_call", compact_json(fc.get("args") or {}), _str_or_none(fc.get("name"))
    elif isinstance(part.get("functionResponse"), dict):
        fr = part["functionResponse"]
        yield "tool_result", compact_json(fr.get("response")), _str_or_none(fr.get("name"))
    elif isinstance(part.get("refusal"), str):
        yield "text", part["refusal"], None
    else:
        media = _MEDIA.get(ptype) or next((m for k, m in _MEDIA.items() if k in part), None)
        if media:
            yield media, f"[{media}]", None
        elif ptype:
            yield "other", f"[{ptype}]", None


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _joined_text(content: Any) -> str:
    """The readable text of a nested content value (a tool result's own content blocks)."""
    if isinstance(content, list) and not all(isinstance(p, (str, dict)) for p in content):
        return compact_json(content)
    return "\n".join(t for _, t, _ in content_parts(content) if t)


def content_text(content: Any, text_out: list[str], reasoning_out: list[str] | None = None) -> None:
    """Text of an OpenAI-style ``content`` value: a string or a list of typed parts."""
    if isinstance(content, str):  # the common case of a streamed delta: no walk
        if content:
            text_out.append(content)
        return
    for kind, text, _ in content_parts(content):
        if not text:
            continue
        if kind == "text":
            text_out.append(text)
        elif kind == "reasoning" and reasoning_out is not None:
            reasoning_out.append(text)
