"""The response cache on Redis, shared by every replica: the interface and semantics of
`helicone_addon.cache.ResponseCache` (N-slot buckets, per-entry TTL, an occupied slot never
overwritten, a damaged entry read as a miss and deleted).

Keys: ``<prefix>{<base key>}:<slot>``. The braces are a Redis Cluster hash tag, so the slots of one
bucket live on one node and a lookup is one MGET, a store one script call. The base key already holds
the seed, the URL, the body (minus ignored keys) and hashed credentials (see `cache.cache_key`); no
secret reaches Redis. Values are `CachedResponse.to_bytes()`, opaque here apart from the header
check that `cache` itself does. Every entry has a TTL (``SET ... NX PX``), so nothing outlives it.

Read-your-writes: `store` returns after the primary acknowledged the write, and every replica reads
the same primary, so a `lookup` started after `store` returned sees the entry, on any replica.

Outages (see `redis_link`): a lookup that Redis cannot answer within the time-out is a miss, a store
is skipped; neither raises.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ..cache import CachedResponse, CacheFormatError, _check_header, _RNG
from .redis_link import DEFAULT_TIMEOUT_S, RedisLink, RedisUnavailable, link_for, release_link

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "helicone:cache:"

# KEYS: the bucket's slots in order; ARGV: value, ttl in ms -> index of the slot filled, or -1
_STORE_LUA = """
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then return i - 1 end
end
return -1
"""

# delete KEYS[1] only while it still holds ARGV[1] (a damaged value we read)
_DISCARD_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisResponseCache:
    """N-slot response buckets in Redis. `lookup` and `store` never raise and never block longer
    than about the time-out (50 ms by default) per call; thread-safe."""

    def __init__(
        self,
        url: str | RedisLink,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.link, self._owns_link = link_for(url, timeout)
        self.prefix = prefix
        self._client = self.link.client
        self._store_script = self._client.register_script(_STORE_LUA)
        self._discard_script = self._client.register_script(_DISCARD_LUA)

    @property
    def counters(self) -> dict[str, int]:
        return self.link.counters

    def key(self, base: str, i: int) -> str:
        """The Redis key of slot `i` of bucket `base`."""
        if i < 0:
            raise ValueError("slot index must be >= 0")
        return f"{self.prefix}{{{base}}}:{i}"

    # -- reading ---------------------------------------------------------------------------------

    def lookup(
        self, base: str, bucket_size: int = 1, rng: _RNG = random
    ) -> tuple[CachedResponse, int] | None:
        """HIT only when all `bucket_size` slots are filled: (a uniformly picked entry, index).

        An empty, expired or damaged slot, or Redis unavailable -> None (MISS); a damaged slot is
        deleted."""
        n = max(1, int(bucket_size))
        keys = [self.key(base, i) for i in range(n)]
        try:
            raws: list[Any] = self.link.call(self._client.mget, keys)
        except RedisUnavailable:
            self.link.count("cache_unavailable")
            return None
        for k, raw in zip(keys, raws):
            if raw is None:
                return None
            try:
                _check_header(raw)
            except CacheFormatError as exc:
                log.warning("helicone cache: dropping corrupt entry %s: %s", k[len(self.prefix) :][:18], exc)
                self._discard(k, raw)
                return None
        idx = rng.randrange(n) if n > 1 else 0
        try:
            entry = CachedResponse.from_bytes(raws[idx])
        except CacheFormatError as exc:
            log.warning("helicone cache: dropping corrupt entry %s: %s", keys[idx][len(self.prefix) :][:18], exc)
            self._discard(keys[idx], raws[idx])
            return None
        return entry, idx

    def _discard(self, key: str, seen: bytes) -> None:
        try:
            self.link.call(self._discard_script, keys=[key], args=[seen])
        except RedisUnavailable as exc:
            log.warning("helicone cache: could not delete a bad entry: %s", exc)

    # -- writing ---------------------------------------------------------------------------------

    def store(self, base: str, bucket_size: int, entry: CachedResponse, ttl_s: int) -> int | None:
        """Put `entry` into the first empty slot (atomic across replicas: an occupied slot is never
        overwritten). Returns the slot index, or None if all full / ttl <= 0 / Redis unavailable."""
        if ttl_s is None or ttl_s <= 0:
            return None
        try:
            data = entry.to_bytes()
        except Exception:
            log.exception("helicone cache: cannot serialise response for %s", base[:16])
            return None
        n = max(1, int(bucket_size))
        keys = [self.key(base, i) for i in range(n)]
        ttl_ms = max(1, int(round(float(ttl_s) * 1000)))
        try:
            got = self.link.call(self._store_script, keys=keys, args=[data, ttl_ms])
        except RedisUnavailable:
            self.link.count("cache_store_skipped")
            return None
        got = int(got)
        return None if got < 0 else got

    # -- misc --------------------------------------------------------------------------------------

    def _scan(self) -> list[bytes]:
        return list(self._client.scan_iter(match=self.prefix + "*", count=1000))

    def __len__(self) -> int:
        """Entries under this cache's prefix (a SCAN: for tests and diagnostics, not hot paths)."""
        return len(self._scan())

    def clear(self) -> int:
        keys = self._scan()
        for i in range(0, len(keys), 500):
            self._client.delete(*keys[i : i + 500])
        return len(keys)

    def close(self) -> None:
        if self._owns_link:
            self._owns_link = False
            release_link(self.link)

    def __enter__(self) -> RedisResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
