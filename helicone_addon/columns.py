"""The one table of the log's columns: name, SQL type, meaning, and where each is shown.

Everything that lists the columns of `requests` derives from `COLUMNS`: the migrations (a column
joins the table in the migration numbered `since`), the `logs` column list, the web view's column notes,
the API's record mapping and the PostgreSQL schema. Column names are a public interface: users
query them by hand, so a column is added, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: type  # str | int | float (SQLite affinity through sqlite-utils)
    description: str
    since: int = 1  # the migration that adds it (1 = the table's first version)
    in_logs: bool = True  # shown by `helicone-addon logs --json` and the default column lists


COLUMNS: tuple[Column, ...] = (
    Column("id", str, "Helicone-Id of the call (UUID)"),
    Column("created_at", str, "when the proxy received the request (ISO-8601, UTC)"),
    Column("source", str, "how the call was logged: proxy, async (log API), logger or otlp (traces)"),
    Column("provider", str, "LLM provider (openai, anthropic, gemini, ...)"),
    Column("api", str, "wire format: openai-chat, openai-responses, anthropic-messages, gemini, ..."),
    Column("method", str, "HTTP method"),
    Column("host", str, "host the client asked for"),
    Column("path", str, "path and query (secrets redacted)"),
    Column("target_url", str, "where the call really went (secrets redacted)", in_logs=False),
    Column("model", str, "model reported by the response, else the requested one"),
    Column("model_requested", str, "model named in the request"),
    Column("status", int, "HTTP status; empty when there was no response (connection error, time-out)"),
    Column("streamed", int, "1 when the response was a stream"),
    Column("latency_ms", float, "total time from request to the end of the response, in milliseconds"),
    Column("ttft_ms", float, "time to first token (first streamed chunk), in milliseconds"),
    Column("prompt_tokens", int, "all input tokens: uncached + cache read + cache write"),
    Column("completion_tokens", int, "all output tokens, reasoning included"),
    Column("total_tokens", int, "prompt_tokens + completion_tokens"),
    Column("cached_tokens", int, "part of prompt_tokens read from the provider's prompt cache"),
    Column("cache_write_tokens", int, "part of prompt_tokens written to the provider's prompt cache"),
    Column("reasoning_tokens", int, "part of completion_tokens spent on reasoning/thinking"),
    Column("usage_source", str, "provider (reported), client (reported by the client's tracing) or estimated (counted locally)"),
    Column("usage_raw", str, "the provider's own usage object(s), JSON", in_logs=False),
    Column("cost_usd", float, "cost in US dollars (0 on a proxy cache hit; empty when the price is unknown)"),
    Column("cost_note", str, "why cost_usd is empty, or which override priced it"),
    Column("prices_version", str, "version of the price data used", in_logs=False),
    Column("cache_saved_usd", float, "on a proxy cache hit: what the original call cost"),
    Column("user_id", str, "Helicone-User-Id (or the body's user field)"),
    Column("session_id", str, "Helicone-Session-Id"),
    Column("session_path", str, "Helicone-Session-Path, e.g. /plan/search"),
    Column("session_name", str, "Helicone-Session-Name"),
    Column("properties", str, "custom properties (Helicone-Property-*), JSON object"),
    Column("cache_hit", int, "1 when the proxy answered from its cache"),
    Column("cache_reference_id", str, "on a cache hit: id of the call that filled the cache"),
    Column("retries", int, "how many times the proxy retried upstream"),
    Column("attempts", str, "statuses of every upstream attempt, JSON list", in_logs=False),
    Column("fallback_index", int, "which fallback target answered (0 = the first)"),
    Column("rate_limited", int, "1 when the proxy's rate limit refused the call"),
    Column("error", str, "error message (transport error, provider error, cancelled stream)"),
    Column("client_request_id", str, "Helicone-Request-Id when it was not a UUID", in_logs=False),
    Column("request_headers", str, "request headers, JSON, secrets redacted", in_logs=False),
    Column("request_body", str, "request body as sent"),
    Column("response_headers", str, "response headers, JSON", in_logs=False),
    Column("response_body", str, "response body as received, streams as raw events"),
    Column("prompt_text", str, "the prompt as text: system, user, assistant and tool turns (full-text searched)",
           since=7, in_logs=False),
    Column("response_text", str, "the answer as text, a stream joined; the error when there is none (full-text searched)",
           since=7, in_logs=False),
    Column(
        "stream_offsets", str,
        "arrival of a streamed response: JSON list of [ms since the request, bytes of the decoded "
        "body received by then], one pair per network chunk",
        since=8, in_logs=False,
    ),
    Column("replayed_from", str, "when answered from a recording (replay mode): id of the recorded call", since=8),
    Column("rerun_of", str, "when sent by `helicone-addon rerun` (Helicone-Rerun-Of): id of the original call", since=8),
)

BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
LOG_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.in_logs)
USAGE_COLUMNS: tuple[str, ...] = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
DESCRIPTIONS: dict[str, str] = {c.name: c.description for c in COLUMNS}


def added_in(migration: int) -> dict[str, type]:
    """{name: type} of the columns a migration adds, in table order."""
    return {c.name: c.type for c in COLUMNS if c.since == migration}
