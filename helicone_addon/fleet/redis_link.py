"""One Redis connection for the fleet's cache and rate limits: short time-outs, an outage breaker,
logging once per outage and once per recovery, and counters users can query.

Every command runs through `RedisLink.call`. A command that cannot complete within `timeout`
(50 ms by default: connect and each read) raises `RedisUnavailable`; so does any call during the
short cool-down (`probe_interval`) after a failure, without touching the network, so an outage
costs the proxy's calls nothing but the first failed attempt. After the cool-down the next call
is a probe; when it succeeds the outage is over. Reconnection is redis-py's: a pooled connection
that died (server restart) is replaced, and a command that fails on a stale connection is retried
once on a fresh one (redis-py `Retry`, no back-off).

The counters (`counters`, a plain dict of ints) are meant for the `store_counters` table:

- `redis_errors`: commands that failed (time-out, refused, reset, error reply);
- `redis_outages` / `redis_recoveries`: outages begun / ended;
- `cache_unavailable`: cache lookups answered as a miss because Redis was unavailable;
- `cache_store_skipped`: responses not cached because Redis was unavailable;
- `fail_open` / `fail_closed`: rate-limit checks let through / refused because Redis was unavailable;
- `record_skipped`: costs (u=cents) not recorded because Redis was unavailable.

A cache and a rate limiter built from the same URL (and time-out) in one process share one link
(`link_for`), so an outage is logged once and counted once; a RedisLink can also be passed in place
of the URL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 0.05
COUNTER_NAMES = (
    "redis_errors",
    "redis_outages",
    "redis_recoveries",
    "cache_unavailable",
    "cache_store_skipped",
    "fail_open",
    "fail_closed",
    "record_skipped",
)
# errors that mean "the server cannot serve us now" (rather than "this command was wrong")
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, OSError)


class RedisUnavailable(Exception):
    """Redis did not answer in time, is down, or refused the command; the caller degrades."""


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<redis url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisLink:
    """A redis-py client with short socket time-outs and an outage breaker (thread-safe)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        probe_interval: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        self.url = url
        self.display_url = safe_url(url)
        self.timeout = float(timeout)
        self.probe_interval = float(probe_interval)
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            max_connections=max_connections,
        )
        self.counters: dict[str, int] = {name: 0 for name in COUNTER_NAMES}
        self._lock = threading.Lock()
        self._down_since: float | None = None  # time.monotonic() of the first failure
        self._next_probe = 0.0
        self._closed = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    # -- calls -----------------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one redis-py call; raise RedisUnavailable when Redis cannot serve it (now)."""
        if self._down_since is not None and time.monotonic() < self._next_probe:
            raise RedisUnavailable(f"Redis at {self.display_url} is unavailable")
        try:
            result = fn(*args, **kwargs)
        except _OUTAGE_ERRORS as exc:
            self._failed(exc, outage=True)
            raise RedisUnavailable(f"Redis at {self.display_url} is unavailable: {exc}") from exc
        except RedisError as exc:  # an error reply (wrong type, script error): this call only
            self._failed(exc, outage=False)
            raise RedisUnavailable(f"Redis at {self.display_url} refused the command: {exc}") from exc
        if self._down_since is not None:
            self._recovered()
        return result

    def ping(self) -> bool:
        try:
            return bool(self.call(self.client.ping))
        except RedisUnavailable:
            return False

    def _failed(self, exc: BaseException, *, outage: bool) -> None:
        with self._lock:
            self.counters["redis_errors"] += 1
            if not outage:
                first = False
            else:
                first = self._down_since is None
                if first:
                    self._down_since = time.monotonic()
                    self.counters["redis_outages"] += 1
                self._next_probe = time.monotonic() + self.probe_interval
        if not outage:
            log.warning("helicone: Redis at %s refused a command: %s", self.display_url, exc)
        elif first:
            log.warning(
                "helicone: Redis at %s is unavailable (%s: %s); until it answers again the cache misses "
                "and rate limits use their fail mode",
                self.display_url, type(exc).__name__, exc,
            )  # fmt: skip

    def _recovered(self) -> None:
        with self._lock:
            since = self._down_since
            if since is None:
                return
            self._down_since = None
            self.counters["redis_recoveries"] += 1
        log.warning("helicone: Redis at %s answers again after %.1f s", self.display_url, time.monotonic() - since)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception as exc:  # pragma: no cover - closing never matters to a caller
            log.debug("helicone: closing Redis client: %r", exc)


_LINKS: dict[tuple[str, float], list] = {}  # (url, timeout) -> [link, users]
_LINKS_LOCK = threading.Lock()


def link_for(url: str | RedisLink, timeout: float) -> tuple[RedisLink, bool]:
    """(link, owned). A given RedisLink is used as is (its creator closes it). A URL gives the
    process-wide link for (url, timeout), shared with the other users of that URL so an outage is
    logged and counted once; `owned` means: call `release_link` when done."""
    if isinstance(url, RedisLink):
        return url, False
    with _LINKS_LOCK:
        entry = _LINKS.get((url, float(timeout)))
        if entry is None or entry[0]._closed:
            entry = _LINKS[(url, float(timeout))] = [RedisLink(url, timeout=timeout), 0]
        entry[1] += 1
        return entry[0], True


def release_link(link: RedisLink) -> None:
    """Drop one user of a shared link; the last one closes it."""
    with _LINKS_LOCK:
        key = (link.url, link.timeout)
        entry = _LINKS.get(key)
        if entry is None or entry[0] is not link:
            link.close()
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _LINKS[key]
    link.close()
