"""Anthropic Messages API (``/v1/messages``).

Non-streamed: ``{"type": "message", "usage": {...}}``. Streamed: ``message_start.message.usage``
holds the input and cache numbers and a provisional ``output_tokens``; each ``message_delta.usage``
holds cumulative counts. They are merged field by field, the last value of each field winning
(older streams only repeat ``output_tokens``; web search raises ``input_tokens`` in the delta).

Anthropic's ``input_tokens`` EXCLUDES cache reads and cache writes, so the normalised
prompt_tokens is ``input + cache_read + cache_creation``.

Compaction (beta): the final usage may carry ``iterations[]`` (one entry per sampling pass, e.g.
``compaction`` then ``message``) while the top-level fields describe only the last pass. Every
pass is billed, so the normalised usage is the SUM over the iterations; the top-level values are
kept in ``Usage.raw`` (and ``ParsedResponse.extra["anthropic_top_level_usage"]``).
"""

from __future__ import annotations

from typing import Any

from ._base import Accumulator, add, as_int, compact_json, total_of
from .types import Usage

_STREAM_TYPES = frozenset(
    ("message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta",
     "content_block_stop", "ping")
)


def normalise_anthropic_usage(merged: dict, raw: Any = None) -> Usage:
    iterations = merged.get("iterations")
    parts: list[dict] = [merged]
    if isinstance(iterations, list):
        its = [i for i in iterations if isinstance(i, dict)]
        if its:
            parts = its
    inp = add(*(as_int(p.get("input_tokens")) for p in parts))
    out = add(*(as_int(p.get("output_tokens")) for p in parts))
    read = add(*(as_int(p.get("cache_read_input_tokens")) for p in parts))
    write = add(*(as_int(p.get("cache_creation_input_tokens")) for p in parts))
    prompt = add(inp, read, write)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=out,
        total_tokens=total_of(prompt, out),
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=None,  # Anthropic bills thinking as output and does not report it apart
        source="provider",
        raw=merged if raw is None else raw,
    )


class AnthropicAccumulator(Accumulator):
    family = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self.merged: dict | None = None
        self.raw_list: list[dict] = []  # stream: [message_start usage, message_delta usage, ...]
        self.non_stream_usage: dict | None = None
        self.stop_reason: str | None = None

    def feed(self, obj: Any, event: str | None = None) -> None:
        if not isinstance(obj, dict):
            return
        self.objects += 1
        t = obj.get("type")
        if not isinstance(t, str):
            t = event
        if t == "content_block_delta":
            d = obj.get("delta")
            if isinstance(d, dict):
                dt = d.get("type")
                if dt == "text_delta":
                    self._str(d.get("text"), self.text)
                elif dt == "thinking_delta":
                    self._str(d.get("thinking"), self.reasoning)
                elif dt == "input_json_delta":
                    self._str(d.get("partial_json"), self.tools)
        elif t == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict):
                self._block(block)
        elif t == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                self.set_model(msg.get("model"))
                u = msg.get("usage")
                if isinstance(u, dict):
                    self.merged = dict(u)
                    self.raw_list = [u]
        elif t == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict):
                if self.merged is None:
                    self.merged = {}
                for k, v in u.items():
                    if v is not None:
                        self.merged[k] = v
                self.raw_list.append(u)
            sr = (obj.get("delta") or {}).get("stop_reason") if isinstance(obj.get("delta"), dict) else None
            if isinstance(sr, str):
                self.stop_reason = sr
        elif t == "message" or (t is None and isinstance(obj.get("content"), list) and "role" in obj):
            self.set_model(obj.get("model"))
            u = obj.get("usage")
            if isinstance(u, dict):
                self.non_stream_usage = u
            content = obj.get("content")
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict):
                        self._block(block)
            sr = obj.get("stop_reason")
            if isinstance(sr, str):
                self.stop_reason = sr
        if "error" in obj:
            self.check_error(obj)

    @staticmethod
    def _str(v: Any, out: list[str]) -> None:
        if isinstance(v, str) and v:
            out.append(v)

    def _block(self, block: dict) -> None:
        bt = block.get("type")
        if bt == "text":
            self._str(block.get("text"), self.text)
        elif bt == "thinking":
            self._str(block.get("thinking"), self.reasoning)
        elif bt in ("tool_use", "server_tool_use", "mcp_tool_use"):
            self._str(block.get("name"), self.tools)
            inp = block.get("input")
            # streamed blocks start with "input": {} and send the JSON as input_json_delta
            if inp:
                self.tools.append(compact_json(inp))

    def usage(self) -> Usage | None:
        if self.non_stream_usage is not None and self.merged is None:
            return normalise_anthropic_usage(self.non_stream_usage)
        if self.merged is None:
            return None
        return normalise_anthropic_usage(self.merged, raw=list(self.raw_list))

    def extra(self) -> dict[str, Any]:
        ex: dict[str, Any] = {}
        if self.stop_reason:
            ex["stop_reason"] = self.stop_reason
        final = self.merged if self.merged is not None else self.non_stream_usage
        if isinstance(final, dict) and isinstance(final.get("iterations"), list) and final["iterations"]:
            ex["anthropic_top_level_usage"] = {
                k: final.get(k)
                for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            }
            ex["anthropic_iterations"] = len(final["iterations"])
        return ex
