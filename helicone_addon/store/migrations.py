"""Schema of the log, as small ordered migration functions (in the style of simonw/llm).

Each function runs once per database, in order; applied names are kept in `_migrations`.
The column names of `requests` are a public interface: users query them by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_requests(db: sqlite_utils.Database) -> None:
    db["requests"].create(
        {
            "id": str,  # Helicone-Id (UUID)
            "created_at": str,  # ISO-8601 UTC, when the proxy received the request
            "source": str,  # 'proxy' | 'async' | 'logger'
            "provider": str,
            "api": str,  # wire format: openai-chat, anthropic-messages, gemini, ...
            "method": str,
            "host": str,  # host the client asked for
            "path": str,  # path + query, secrets redacted
            "target_url": str,  # where the call really went, secrets redacted
            "model": str,  # model reported by the response, else the requested one
            "model_requested": str,
            "status": int,  # HTTP status; NULL when no response (connection error, time-out)
            "streamed": int,
            "latency_ms": float,
            "ttft_ms": float,
            "prompt_tokens": int,
            "completion_tokens": int,
            "total_tokens": int,
            "cached_tokens": int,
            "cache_write_tokens": int,
            "reasoning_tokens": int,
            "usage_source": str,  # 'provider' | 'estimated' | NULL
            "usage_raw": str,  # JSON: the provider's usage object(s)
            "cost_usd": float,
            "cost_note": str,  # why cost_usd is NULL, or which override priced it
            "prices_version": str,  # genai-prices version used
            "cache_saved_usd": float,  # on a cache hit: what the original call cost
            "user_id": str,
            "session_id": str,
            "session_path": str,
            "session_name": str,
            "properties": str,  # JSON object
            "cache_hit": int,
            "cache_reference_id": str,  # on a hit: id of the row that filled the cache
            "retries": int,
            "attempts": str,  # JSON list of statuses of every upstream attempt
            "fallback_index": int,
            "rate_limited": int,
            "error": str,
            "client_request_id": str,  # Helicone-Request-Id when it was not a UUID
            "request_headers": str,  # JSON object, secrets redacted
            "request_body": str,
            "response_headers": str,
            "response_body": str,
        },
        pk="id",
    )
    db["requests"].create_index(["created_at"])
    db["requests"].create_index(["model"])
    db["requests"].create_index(["user_id"])
    db["requests"].create_index(["session_id"])
    db["requests"].create_index(["provider"])


@migration
def m002_properties(db: sqlite_utils.Database) -> None:
    db["properties"].create(
        {"request_id": str, "key": str, "value": str},
        pk=("request_id", "key"),
        foreign_keys=[("request_id", "requests", "id")],
    )
    db["properties"].create_index(["key", "value"])


@migration
def m003_feedback_scores(db: sqlite_utils.Database) -> None:
    db["feedback"].create(
        {"request_id": str, "rating": int, "created_at": str},
        pk="request_id",
        foreign_keys=[("request_id", "requests", "id")],
    )
    db["scores"].create(
        {"request_id": str, "name": str, "value": int, "created_at": str},
        pk=("request_id", "name"),
        foreign_keys=[("request_id", "requests", "id")],
    )


@migration
def m004_counters(db: sqlite_utils.Database) -> None:
    """Store health counters users can query (rows spilled, dropped, reloaded)."""
    db["store_counters"].create({"name": str, "value": int}, pk="name")


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration; returns the names applied now."""
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
    done = {row["name"] for row in db["_migrations"].rows}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.conn:
            fn(db)
            db["_migrations"].insert(
                {"name": fn.__name__, "applied_at": _now()}, replace=True
            )
        applied.append(fn.__name__)
    return applied


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@migration
def m005_fts(db: sqlite_utils.Database) -> None:
    """Full-text search over prompts and responses (`helicone-addon logs -q`, Datasette's search box).

    An external-content FTS5 table `requests_fts` kept in sync by triggers on `requests`.
    `replace=True` makes a re-run after an interrupted first run safe (sqlite-utils runs DDL with
    executescript, which commits as it goes).
    """
    db["requests"].enable_fts(["request_body", "response_body"], create_triggers=True, replace=True)
