"""OpenAI Responses API (``/v1/responses``).

Non-streamed: the body is the response object (``"object": "response"``). Streamed: named events
``response.*``; ``response.created`` / ``in_progress`` carry ``usage: null``, ``response.completed``
(or ``response.incomplete`` / ``response.failed``) carries the final ``response.usage``.
"""

from __future__ import annotations

from typing import Any

from ._base import Accumulator
from .openai_chat import normalise_openai_usage
from .types import Usage

_TEXT_DELTAS = ("response.output_text.delta", "response.refusal.delta")
_REASONING_DELTAS = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")
_TOOL_DELTAS = ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta")


def output_items(output: Any, text: list[str], reasoning: list[str], tools: list[str]) -> None:
    """Collect text from a response's ``output`` list (non-streamed body, or the final event)."""
    if not isinstance(output, list):
        return
    for item in output:
        if not isinstance(item, dict):
            continue
        itype = item.get("type")
        if itype == "message":
            content = item.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        t = part.get("text")
                        if not isinstance(t, str):
                            t = part.get("refusal")
                        if isinstance(t, str) and t:
                            text.append(t)
        elif itype == "reasoning":
            for key in ("summary", "content"):
                parts = item.get(key)
                if isinstance(parts, list):
                    for part in parts:
                        t = part.get("text") if isinstance(part, dict) else None
                        if isinstance(t, str) and t:
                            reasoning.append(t)
        elif itype in ("function_call", "custom_tool_call"):
            for key in ("name", "arguments", "input"):
                v = item.get(key)
                if isinstance(v, str) and v:
                    tools.append(v)


class ResponsesAccumulator(Accumulator):
    family = "responses"

    def __init__(self) -> None:
        super().__init__()
        self.raw_usage: dict | None = None
        self.final: dict | None = None  # last full response object seen (for text fallback)
        self.saw_deltas = False
        self.status: str | None = None

    def feed(self, obj: Any, event: str | None = None) -> None:
        if not isinstance(obj, dict):
            return
        self.objects += 1
        etype = obj.get("type")
        if not isinstance(etype, str):
            etype = event or ""
        resp = obj.get("response")
        if isinstance(resp, dict):
            self._response(resp)
        elif obj.get("object") == "response" or (not etype and "output" in obj):
            self._response(obj)  # non-streamed body
        if etype:
            if etype in _TEXT_DELTAS:
                self._delta(obj, self.text)
            elif etype in _REASONING_DELTAS:
                self._delta(obj, self.reasoning)
            elif etype in _TOOL_DELTAS:
                self._delta(obj, self.tools)
            elif etype == "response.output_item.added":
                item = obj.get("item")
                if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call"):
                    name = item.get("name")
                    if isinstance(name, str) and name:
                        self.tools.append(name)
            elif etype == "error":
                msg = obj.get("message")
                if isinstance(msg, str) and msg:
                    self.set_error(msg, obj.get("type"), obj.get("code"))
                else:
                    self.check_error(obj)
        if self.error is None and isinstance(obj.get("error"), dict):
            self.check_error(obj)

    def _delta(self, obj: dict, out: list[str]) -> None:
        d = obj.get("delta")
        if isinstance(d, str) and d:
            out.append(d)
            self.saw_deltas = True

    def _response(self, resp: dict) -> None:
        self.set_model(resp.get("model"))
        u = resp.get("usage")
        if isinstance(u, dict) and u:
            self.raw_usage = u
        st = resp.get("status")
        if isinstance(st, str):
            self.status = st
        if isinstance(resp.get("output"), list) and resp["output"]:
            self.final = resp
        if resp.get("status") == "failed" or isinstance(resp.get("error"), dict):
            self._response_error(resp)

    def _response_error(self, resp: dict) -> None:
        e = resp.get("error")
        if isinstance(e, dict):
            self.set_error(e.get("message") or e.get("code"), e.get("type"), e.get("code"))

    def usage(self) -> Usage | None:
        if self.raw_usage is None:
            return None
        return normalise_openai_usage(self.raw_usage)

    def fill(self, out) -> None:  # type: ignore[override]
        if not self.saw_deltas and self.final is not None:
            text: list[str] = []
            reasoning: list[str] = []
            tools: list[str] = []
            output_items(self.final.get("output"), text, reasoning, tools)
            self.text, self.reasoning, self.tools = text, reasoning, tools
        super().fill(out)
        if self.status:
            out.extra["status"] = self.status
