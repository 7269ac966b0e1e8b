"""HeliconeRateLimit: `Helicone-RateLimit-Policy` sliding windows shared by every proxy on the
data dir. Over the quota: Helicone's 429. `u=cents` windows are charged once the call is priced."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, http

from helicone_addon import config, headers, ratelimit, usage
from helicone_addon.proxy.calls import SIGNED_PROVIDERS
from helicone_addon.proxy.flowrecord import error_response, json_response, record_of, short_circuit

logger = logging.getLogger("helicone_addon")


def fails_closed(exc: Exception) -> bool:
    if not ctx.options.helicone_redis:
        return False
    from helicone_addon.fleet.redis_ratelimit import RateLimitBackendUnavailable

    return isinstance(exc, RateLimitBackendUnavailable)


class HeliconeRateLimit:
    def __init__(self) -> None:
        self.limiter = None  # ratelimit.RateLimiter (diskcache) or fleet.redis_ratelimit.RedisRateLimiter
        self.errors = {"ratelimit_errors": 0}

    @property
    def counters(self) -> dict[str, int]:
        """Published in the log's `store_counters` table (and /metrics)."""
        backend = getattr(self.limiter, "counters", None)
        return {**self.errors, **backend} if isinstance(backend, dict) else dict(self.errors)

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_redis_fail", str, "open",
            "When helicone_redis cannot answer within 50 ms: 'open' lets rate-limited calls through, "
            "'closed' answers them 429 (X-Helicone-Error: rate limit backend unavailable).",
            choices=["open", "closed"],
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"helicone_data_dir", "helicone_redis", "helicone_redis_fail"}:
            self.done()

    def done(self) -> None:
        if self.limiter is not None:
            self.limiter.close()
            self.limiter = None

    def _limiter(self):
        if self.limiter is None and ctx.options.helicone_redis:
            from helicone_addon.fleet.redis_ratelimit import RedisRateLimiter

            self.limiter = RedisRateLimiter(ctx.options.helicone_redis, fail=ctx.options.helicone_redis_fail)
        if self.limiter is None:
            self.limiter = ratelimit.RateLimiter(str(config.ratelimit_dir(ctx.options.helicone_data_dir)))
        return self.limiter

    async def request(self, flow: http.HTTPFlow) -> None:
        rec = record_of(flow)
        if rec is None or rec.call.options is None or rec.call.options.rate_limit is None:
            return
        call = rec.call
        if call.provider in SIGNED_PROVIDERS:
            return
        opts = call.options
        policy = opts.rate_limit
        user = opts.user_id
        if user is None and policy.segment == "user":
            call.request_info = usage.parse_request(call.api, call.path, call.request_body)
            user = call.request_info.user
        try:
            key = ratelimit.segment_key(policy, user, opts.properties)
        except ValueError as e:
            if not ctx.options.helicone_strict:
                logger.warning("helicone: rate limit skipped: %s", e)
                return
            err = headers.HeaderError(headers.H_RATE_LIMIT, str(e))
            short_circuit(flow, rec, "header", error_response(400, err), str(err))
            return
        limiter = self._limiter()
        try:
            decision = await asyncio.to_thread(limiter.check_and_consume, key, policy)
        except Exception as e:
            if fails_closed(e):  # fleet mode, Redis down, helicone_redis_fail=closed
                call.rate_limited = True
                resp = json_response(e.status, {"error": {"type": "rate_limit_backend_unavailable", "message": str(e)}},
                                     [e.header])
                short_circuit(flow, rec, "ratelimit", resp, str(e))
                return
            self.errors["ratelimit_errors"] += 1
            logger.exception("helicone: rate limiter failed; letting the call through")
            return
        rec.rate_limit_key = key
        hdrs = ratelimit.headers_for(decision)
        if decision.allowed:
            rec.response_headers.extend(hdrs)
            if policy.unit == "cents":
                rec.on_row.append(self._charge(limiter, key, policy))
            return
        call.rate_limited = True
        resp = http.Response.make(
            429, ratelimit.rate_limited_body(),
            [(b"content-type", b"application/json;charset=UTF-8"), (b"X-Helicone-Error", b"rate_limited")]
            + [(k.encode(), v.encode()) for k, v in hdrs],
        )
        short_circuit(flow, rec, "ratelimit", resp, "rate limited by Helicone-RateLimit-Policy")

    def _charge(self, limiter, key: str, policy: ratelimit.Policy):
        """A row listener: charge a `u=cents` window with what the call cost (writer thread)."""

        def charge(row: dict, props: list) -> None:
            if row.get("cost_usd") and not row.get("cache_hit"):
                limiter.record(key, policy, row["cost_usd"] * 100)

        return charge
