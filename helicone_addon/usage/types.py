"""Value types shared by every usage parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Usage:
    """Token usage with ONE meaning for every provider (see README, "Token columns").

    prompt_tokens      all input tokens: uncached + cache read + cache write
    completion_tokens  all output tokens, reasoning/thinking included
    total_tokens       prompt_tokens + completion_tokens
    cached_tokens      part of prompt_tokens read from the provider's prompt cache
    cache_write_tokens part of prompt_tokens written to the provider's prompt cache
    reasoning_tokens   part of completion_tokens spent on reasoning/thinking
    source             'provider' (read from the payload) or 'estimated' (tiktoken)
    raw                the provider's own usage object(s), unchanged
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    source: str | None = "provider"
    raw: Any = None


@dataclass
class RequestInfo:
    """What the request body/URL tells about a call (parsed once, in the request hook)."""

    api: str  # wire format, e.g. 'openai-chat', see providers.API_*
    model: str | None = None  # model asked for (body 'model', Gemini URL, Azure deployment)
    stream: bool = False  # the request asked for a stream
    user: str | None = None  # body 'user' (OpenAI) / metadata.user_id (Anthropic)
    json: Any = None  # the parsed JSON body, or None


@dataclass
class ParsedResponse:
    """What a response body tells about a call."""

    model: str | None = None  # model as reported in the response (last non-empty value for streams)
    usage: Usage | None = None  # None when the payload reports no usage
    error: str | None = None  # provider error message (HTTP error body, or error inside a 200 stream)
    text: str = ""  # concatenated assistant output text (for estimation and display)
    streamed: bool = False  # the body was a stream (SSE or Gemini JSON array)
    extra: dict[str, Any] = field(default_factory=dict)
    reasoning_text: str = ""  # reasoning / thinking text the payload showed (not part of `text`)
    tool_text: str = ""  # tool / function call names and argument JSON the model produced
