"""Google Gemini ``generateContent`` / ``streamGenerateContent`` (AI Studio and Vertex AI) and embeddings.

Every stream chunk (SSE with ``alt=sse``, else one JSON array) repeats a cumulative
``usageMetadata``; the last one wins. ``candidatesTokenCount`` EXCLUDES ``thoughtsTokenCount``, so
the normalised completion_tokens is their sum; ``toolUsePromptTokenCount`` is input and is added to
prompt_tokens (``totalTokenCount`` = prompt + candidates + thoughts + tool-use prompt).
"""

from __future__ import annotations

from typing import Any

from ._base import Accumulator, add, as_int, compact_json, total_of
from .types import Usage


def normalise_gemini_usage(u: dict) -> Usage:
    prompt = add(as_int(u.get("promptTokenCount")), as_int(u.get("toolUsePromptTokenCount")))
    thoughts = as_int(u.get("thoughtsTokenCount"))
    completion = add(as_int(u.get("candidatesTokenCount")), thoughts)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total_of(prompt, completion, u.get("totalTokenCount")),
        cached_tokens=as_int(u.get("cachedContentTokenCount")),
        cache_write_tokens=None,
        reasoning_tokens=thoughts,
        source="provider",
        raw=u,
    )


class GeminiAccumulator(Accumulator):
    family = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self.raw_usage: dict | None = None
        self.finish_reason: str | None = None
        self.block_reason: str | None = None

    def feed(self, obj: Any, event: str | None = None) -> None:
        if not isinstance(obj, dict):
            return
        self.objects += 1
        mv = obj.get("modelVersion")
        if mv:
            self.set_model(mv)
        u = obj.get("usageMetadata")
        if isinstance(u, dict) and u:
            self.raw_usage = u
        cands = obj.get("candidates")
        if isinstance(cands, list):
            for c in cands:
                if isinstance(c, dict):
                    self._candidate(c)
        pf = obj.get("promptFeedback")
        if isinstance(pf, dict) and isinstance(pf.get("blockReason"), str):
            self.block_reason = pf["blockReason"]
        if "error" in obj:
            self.check_error(obj)

    def _candidate(self, c: dict) -> None:
        fr = c.get("finishReason")
        if isinstance(fr, str):
            self.finish_reason = fr
        parts = c.get("content", {}).get("parts") if isinstance(c.get("content"), dict) else None
        if not isinstance(parts, list):
            return
        for p in parts:
            if not isinstance(p, dict):
                continue
            t = p.get("text")
            if isinstance(t, str) and t:
                (self.reasoning if p.get("thought") is True else self.text).append(t)
            fc = p.get("functionCall")
            if isinstance(fc, dict):
                name = fc.get("name")
                if isinstance(name, str) and name:
                    self.tools.append(name)
                if fc.get("args"):
                    self.tools.append(compact_json(fc["args"]))

    def usage(self) -> Usage | None:
        if self.raw_usage is None:
            return None
        return normalise_gemini_usage(self.raw_usage)

    def extra(self) -> dict[str, Any]:
        ex: dict[str, Any] = {}
        if self.finish_reason:
            ex["finish_reason"] = self.finish_reason
        if self.block_reason:
            ex["block_reason"] = self.block_reason
        return ex
