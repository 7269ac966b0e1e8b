"""HeliconeCache: `Helicone-Cache-*` on a local diskcache shared by every proxy on the data dir.

    request    key recipe (cache.py) -> lookup -> a HIT answers at once, a miss goes on
    response   a 200 that may be cached is stored here, before the client gets the end of the
               response: an immediately repeated call is a HIT (read-your-writes), in this process
               and in any other proxy on the same data dir
"""

from __future__ import annotations

import logging
import time

from mitmproxy import ctx, exceptions, http

from helicone_addon import config, headers
from helicone_addon.cache import CachedResponse, ResponseCache, cache_key
from helicone_addon.proxy.calls import SIGNED_PROVIDERS
from helicone_addon.proxy.flowrecord import META, FlowRecord, record_of, short_circuit
from helicone_addon.record import response_bytes

logger = logging.getLogger("helicone_addon")

# response headers a hit does not replay: hop-by-hop and encoding ones (the body is stored decoded)
NOT_REPLAYED = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date"})
# SQLite lock contention the event loop waits out before a read counts as a miss / a write is skipped
LOCK_TIMEOUT_S = 0.05


def replayable(name: str) -> bool:
    """Response headers a cache hit replays: not hop-by-hop/encoding ones, not our own Helicone-*."""
    return name.lower() not in NOT_REPLAYED and not headers.is_helicone(name)


class HeliconeCache:
    def __init__(self) -> None:
        self.cache = None  # ResponseCache (diskcache) or fleet.redis_cache.RedisResponseCache
        self.errors = {"cache_read_errors": 0, "cache_write_errors": 0}

    @property
    def counters(self) -> dict[str, int]:
        """Published in the log's `store_counters` table (and /metrics)."""
        backend = getattr(self.cache, "counters", None)
        return {**self.errors, **backend} if isinstance(backend, dict) else dict(self.errors)

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_cache_dir", str, "", "Directory of the response cache (default: <helicone_data_dir>/cache).",
        )
        loader.add_option(
            "helicone_cache_size_limit", int, 1 << 30, "Size limit of the response cache in bytes (evicts beyond).",
        )
        loader.add_option(
            "helicone_redis", str, "",
            "Fleet mode: redis://host:port/db holding the response cache and the rate-limit windows, shared "
            "by every replica (needs the 'fleet' extra). Empty: both live in the data dir.",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_cache_size_limit" in updated and ctx.options.helicone_cache_size_limit < 0:
            raise exceptions.OptionsError("helicone_cache_size_limit must be >= 0")
        if "helicone_redis" in updated and ctx.options.helicone_redis:
            from helicone_addon.fleet import is_redis_url

            if not is_redis_url(ctx.options.helicone_redis):
                raise exceptions.OptionsError(
                    f"helicone_redis must be a redis:// (or rediss://, unix://) URL, not {ctx.options.helicone_redis!r}")
        if updated & {"helicone_data_dir", "helicone_cache_dir", "helicone_cache_size_limit", "helicone_redis"}:
            self.done()  # reopened on next use

    def done(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def _cache(self):
        if self.cache is None and ctx.options.helicone_redis:
            from helicone_addon.fleet.redis_cache import RedisResponseCache

            self.cache = RedisResponseCache(ctx.options.helicone_redis)
        if self.cache is None:
            directory = config.cache_dir(ctx.options.helicone_data_dir, ctx.options.helicone_cache_dir)
            self.cache = ResponseCache(
                str(directory), size_limit=ctx.options.helicone_cache_size_limit, timeout=LOCK_TIMEOUT_S
            )
        return self.cache

    def request(self, flow: http.HTTPFlow) -> None:
        rec = record_of(flow)
        if rec is None or rec.call.options is None or rec.call.provider in SIGNED_PROVIDERS:
            return
        opts = rec.call.options.cache
        if not (opts.read or opts.write):
            return
        try:
            rec.cache_key = cache_key(
                seed=opts.seed,
                url=rec.incoming_url(),
                body=rec.call.request_body or b"",
                headers=rec.call.request_headers,
                ignore_keys=opts.ignore_keys,
            )
            if not opts.read:
                return
            # inline: a WAL read costs tens of microseconds, less than a thread hop
            hit = self._cache().lookup(rec.cache_key, opts.bucket_size)
        except Exception:
            self.errors["cache_read_errors"] += 1
            logger.exception("helicone: cache lookup failed; treating as a miss")
            hit = None
        if hit is None or not self._answer(flow, rec, *hit):
            rec.response_headers.append((headers.R_CACHE, "MISS"))

    def _answer(self, flow: http.HTTPFlow, rec: FlowRecord, entry: CachedResponse, idx: int) -> bool:
        hdrs = [(k, v) for k, v in entry.headers if replayable(k)]
        hdrs += [
            (headers.R_CACHE, "HIT"),
            (headers.R_CACHE_BUCKET_IDX, str(idx)),
            (headers.R_CACHE_LATENCY, str(int(round(entry.latency_ms or 0)))),
            (headers.R_STATUS, "success"),
        ]
        try:
            resp = http.Response.make(
                200, entry.body,
                [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in hdrs],
            )
        except Exception:
            self.errors["cache_read_errors"] += 1
            logger.exception("helicone: unusable cache entry; treating as a miss")
            return False
        call = rec.call
        call.cache_hit = True
        call.cache_reference_id = entry.request_id
        call.streamed = bool(entry.streamed)
        call.content_type = resp.headers.get("content-type")
        call.response_body = entry.body
        short_circuit(flow, rec, "cache", resp, None)
        if call.streamed:
            call.first_chunk_at = call.ended_at  # the whole stream is there at once
        return True

    def response(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)
        if rec is None or rec.short_circuit or not rec.cache_key or rec.finished:
            return
        call = rec.call
        opts = call.options.cache if call.options else None
        if opts is None or not opts.write or call.status != 200 or call.error or call.cancelled:
            return
        try:
            entry = CachedResponse(
                status=200,
                headers=[(k, v) for k, v in call.response_headers if replayable(k)],
                body=response_bytes(call),
                streamed=call.streamed,
                latency_ms=((call.ended_at or time.time()) - call.started_at) * 1000,
                request_id=call.id,
            )
            self._cache().store(rec.cache_key, opts.bucket_size, entry, opts.ttl_s)
        except Exception:
            self.errors["cache_write_errors"] += 1
            logger.exception("helicone: cache save failed")
