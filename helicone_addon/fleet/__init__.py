"""Fleet mode: several proxy replicas share one response cache and exact rate limits through Redis,
and ship their logs to one PostgreSQL.

Pieces (each optional; they need the `fleet` extra: redis-py and psycopg 3):

- `redis_link.RedisLink`: one Redis connection pool with short time-outs, an outage breaker and the
  health counters (`counters`), shared by the cache and the rate limiter;
- `redis_cache.RedisResponseCache`: the same interface and semantics as `cache.ResponseCache`;
- `redis_ratelimit.RedisRateLimiter`: the same interface and decisions as `ratelimit.RateLimiter`,
  the sliding window updated atomically by one Lua script per call;
- `postgres.Shipper`: copies rows, properties, feedback and scores from the local SQLite log (the
  write-ahead outbox) to PostgreSQL, at least once and idempotently;
- `pgread.open_report_db`: a read-only SQLite copy of (a filtered part of) the fleet's PostgreSQL
  log that the existing reports run on.

This package never imports mitmproxy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["is_postgres_url", "is_redis_url", "pg_target"]


def is_postgres_url(spec: str | None) -> bool:
    return bool(spec) and str(spec).lower().startswith(("postgresql://", "postgres://"))


def is_redis_url(spec: str | None) -> bool:
    return bool(spec) and str(spec).lower().startswith(("redis://", "rediss://", "unix://"))


def pg_target(pg_url: str) -> str:
    """A PostgreSQL URL without its password (for logs and the shipper's state)."""
    try:
        p = urlsplit(pg_url)
        return f"{p.scheme}://{p.username or ''}@{p.hostname or ''}:{p.port or 5432}{p.path or '/'}"
    except ValueError:
        return pg_url.split("@")[-1]
