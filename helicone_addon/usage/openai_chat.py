"""OpenAI-style Chat Completions, legacy Completions and Embeddings.

Also every OpenAI-compatible host: Azure, Groq, Mistral, DeepSeek, OpenRouter, Cerebras, Together, ...

Usage sits on the JSON body (non-streamed) or on a stream chunk: the ``choices: []`` chunk sent
with ``stream_options.include_usage``, Mistral's last content chunk, Groq's older
``x_groq.usage``. Some servers repeat cumulative usage on every chunk; the last one wins.
"""

from __future__ import annotations

from typing import Any

from ._base import Accumulator, as_int, content_text, dig, total_of
from .types import Usage


def normalise_openai_usage(u: dict) -> Usage:
    """OpenAI-family usage object (chat/completions/embeddings, also Responses) -> Usage.

    prompt_tokens already includes cached tokens and completion_tokens already includes reasoning.
    """
    get = u.get
    prompt = get("prompt_tokens")
    if type(prompt) is not int:  # an int is kept as it is (as_int's common case, without the call)
        prompt = as_int(prompt)
        if prompt is None:
            prompt = as_int(get("input_tokens"))
    completion = get("completion_tokens")
    if type(completion) is not int:
        completion = as_int(completion)
        if completion is None:
            completion = as_int(get("output_tokens"))
    pdet = u.get("prompt_tokens_details")
    if not isinstance(pdet, dict):
        pdet = u.get("input_tokens_details")
    cdet = u.get("completion_tokens_details")
    if not isinstance(cdet, dict):
        cdet = u.get("output_tokens_details")
    cached = as_int(dig(pdet, "cached_tokens"))
    if cached is None:
        cached = as_int(u.get("prompt_cache_hit_tokens"))  # DeepSeek
    cache_write = as_int(dig(pdet, "cache_write_tokens"))  # OpenRouter (Anthropic/Gemini upstreams)
    if cache_write is None:
        cache_write = as_int(dig(pdet, "cache_creation_tokens"))
    reasoning = as_int(dig(cdet, "reasoning_tokens"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total_of(prompt, completion, u.get("total_tokens")),
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        source="provider",
        raw=u,
    )


class ChatAccumulator(Accumulator):
    family = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.raw_usage: dict | None = None

    def feed(self, obj: Any, event: str | None = None) -> None:
        if not isinstance(obj, dict):
            return
        self.objects += 1
        m = obj.get("model")
        if m and isinstance(m, str):  # set_model, without the call (every chunk of a stream names it)
            self.model = m
        u = obj.get("usage")
        if isinstance(u, dict) and u:
            self.raw_usage = u
        elif "x_groq" in obj:
            xu = dig(obj, "x_groq", "usage")
            if isinstance(xu, dict) and xu:
                self.raw_usage = xu
        choices = obj.get("choices")
        if isinstance(choices, list):
            for ch in choices:
                if isinstance(ch, dict):
                    self._choice(ch)
        if "error" in obj:
            self.check_error(obj)

    def _choice(self, ch: dict) -> None:
        d = ch.get("delta")
        if not isinstance(d, dict):
            d = ch.get("message")
        if isinstance(d, dict):
            c = d.get("content")
            if c:
                if type(c) is str:
                    self.text.append(c)
                else:
                    content_text(c, self.text, self.reasoning)
            if len(d) <= ("content" in d) + ("role" in d):  # a plain text delta: nothing else to read
                d = None
        if d is not None and isinstance(d, dict):
            r = d.get("reasoning_content")
            if not isinstance(r, str) or not r:
                r = d.get("reasoning")
            if isinstance(r, str) and r:
                self.reasoning.append(r)
            tcs = d.get("tool_calls")
            if isinstance(tcs, list):
                for tc in tcs:
                    fn = tc.get("function") if isinstance(tc, dict) else None
                    if isinstance(fn, dict):
                        self._function(fn)
            fc = d.get("function_call")  # legacy functions API
            if isinstance(fc, dict):
                self._function(fc)
            refusal = d.get("refusal")
            if isinstance(refusal, str) and refusal:
                self.text.append(refusal)
        t = ch.get("text")  # legacy completions
        if isinstance(t, str) and t:
            self.text.append(t)

    def _function(self, fn: dict) -> None:
        name = fn.get("name")
        if isinstance(name, str) and name:
            self.tools.append(name)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            self.tools.append(args)

    def usage(self) -> Usage | None:
        if self.raw_usage is None:
            return None
        return normalise_openai_usage(self.raw_usage)


__all__ = ["ChatAccumulator", "normalise_openai_usage"]
