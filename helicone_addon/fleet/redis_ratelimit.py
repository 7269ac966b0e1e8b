"""Sliding-window rate limits on Redis, shared and exact across replicas: the interface and the
decisions of `helicone_addon.ratelimit.RateLimiter` (same compact log, same rounding).

Each call is ONE script call (`register_script`: EVALSHA, falling back to EVAL once): the script
loads the segment's log, drops what left the longest window seen, sums the units in the policy's
window, decides, appends (u=request when allowed; `record` for u=cents), and writes the log back
with a TTL of that window (plus the age of the newest entry, plus 1 s). Redis runs a script alone,
so no two replicas can both take the last unit.

State: ``<prefix>{<segment key>}`` -> MessagePack ``[keep_s, [[ts, units], ...]]`` (Redis' built-in
cmsgpack: doubles kept exactly). Time: `now=None` uses the Redis server's clock (`TIME`), so replicas
whose clocks disagree still share one window; an explicit `now` (tests) is used as given.

Outages: with `fail="open"` (default) a check that Redis cannot answer in time is allowed and counted
(`fail_open`); with `fail="closed"` it raises `RateLimitBackendUnavailable`, which the proxy answers
with a 429 carrying `X-Helicone-Error: rate limit backend unavailable` (counted as `fail_closed`).
A `record` that cannot reach Redis is skipped and counted (`record_skipped`).
"""

from __future__ import annotations

import math
from typing import Literal

from ..ratelimit import BUCKETS_PER_WINDOW, Decision, Policy, RateLimiter
from .redis_link import DEFAULT_TIMEOUT_S, RedisLink, RedisUnavailable, link_for, release_link

__all__ = [
    "RedisRateLimiter",
    "RateLimitBackendUnavailable",
    "BACKEND_UNAVAILABLE_HEADER",
    "BACKEND_UNAVAILABLE_STATUS",
]

DEFAULT_PREFIX = "helicone:rl:"
BACKEND_UNAVAILABLE_STATUS = 429
BACKEND_UNAVAILABLE_HEADER = ("X-Helicone-Error", "rate limit backend unavailable")

FailMode = Literal["open", "closed"]


class RateLimitBackendUnavailable(Exception):
    """Raised by a `fail="closed"` limiter when Redis cannot answer: refuse the call with
    `status` (429) and the `header` X-Helicone-Error: rate limit backend unavailable."""

    status = BACKEND_UNAVAILABLE_STATUS
    header = BACKEND_UNAVAILABLE_HEADER

    def __init__(self, policy: Policy, reason: str = "") -> None:
        super().__init__(f"rate limit backend unavailable{': ' + reason if reason else ''}")
        self.policy = policy


# KEYS[1]: state key. ARGV: mode (consume | peek | record), window_s, quota, units, now ('' = server
# clock), buckets per window. Returns {allowed 0/1, used, oldest or false, now}; numbers as strings
# ('%.17g') because Redis would truncate Lua numbers to integers.
_WINDOW_LUA = """
local mode = ARGV[1]
local window = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local units = tonumber(ARGV[4])
local now
if ARGV[5] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[5])
end
local buckets = tonumber(ARGV[6])

local keep = window
local entries = {}
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, st = pcall(cmsgpack.unpack, raw)
  if ok and type(st) == 'table' and type(st[2]) == 'table' then
    keep = math.max(math.floor(tonumber(st[1]) or window), window)
    for _, e in ipairs(st[2]) do
      if type(e) == 'table' and type(e[1]) == 'number' and type(e[2]) == 'number' and e[1] > now - keep then
        entries[#entries + 1] = {e[1], e[2]}
      end
    end
  end
end

local function usage()
  local cutoff = now - window
  local used, oldest = 0, nil
  for _, e in ipairs(entries) do
    if e[1] > cutoff then
      used = used + e[2]
      if oldest == nil then oldest = e[1] end
    end
  end
  return used, oldest
end

local function append(u)
  local bucket = window / buckets
  local n = #entries
  if n > 0 and math.abs(now - entries[n][1]) < bucket then
    entries[n][2] = entries[n][2] + u
  else
    entries[n + 1] = {now, u}
    if n > 0 and entries[n][1] > now then
      table.sort(entries, function(a, b) return a[1] < b[1] end)
    end
  end
end

local function save()
  local n = #entries
  if n > 0 then
    local expire = math.max(1.0, entries[n][1] + keep - now + 1.0)
    redis.call('SET', KEYS[1], cmsgpack.pack({keep, entries}), 'PX', math.ceil(expire * 1000))
  else
    redis.call('DEL', KEYS[1])
  end
end

local used, oldest = usage()
local allowed = used < quota
if mode == 'consume' and allowed then
  append(1)
  used = used + 1
  save()
  local _
  _, oldest = usage()
elseif mode == 'record' then
  append(units)
  save()
end
local function num(x) return string.format('%.17g', x) end
return {allowed and 1 or 0, num(used), oldest and num(oldest) or false, num(now)}
"""

# KEYS[1] -> {keep, ts1, units1, ts2, units2, ...} as strings (tests and diagnostics)
_STATE_LUA = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local st = cmsgpack.unpack(raw)
local out = {string.format('%.17g', st[1])}
for _, e in ipairs(st[2]) do
  out[#out + 1] = string.format('%.17g', e[1])
  out[#out + 1] = string.format('%.17g', e[2])
end
return out
"""


class RedisRateLimiter:
    """Sliding-window log limiter in Redis, exact across replicas, processes and threads."""

    def __init__(
        self,
        url: str | RedisLink,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        fail: FailMode = "open",
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if fail not in ("open", "closed"):
            raise ValueError(f"fail must be 'open' or 'closed', got {fail!r}")
        self.fail: FailMode = fail
        self.link, self._owns_link = link_for(url, timeout)
        self.prefix = prefix
        self._window = self.link.client.register_script(_WINDOW_LUA)
        self._state = self.link.client.register_script(_STATE_LUA)

    @property
    def counters(self) -> dict[str, int]:
        return self.link.counters

    def key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def close(self) -> None:
        if self._owns_link:
            self._owns_link = False
            release_link(self.link)

    def __enter__(self) -> RedisRateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the interface of RateLimiter ---------------------------------------------------------------

    def check_and_consume(self, key: str, policy: Policy, now: float | None = None) -> Decision:
        """Check the policy; for u=request also count this call (atomically) when it is allowed.
        Redis unavailable: allowed (fail="open") or RateLimitBackendUnavailable (fail="closed")."""
        mode = "consume" if policy.unit == "request" else "peek"
        return self._decide(mode, key, policy, now)

    def peek(self, key: str, policy: Policy, now: float | None = None) -> Decision:
        """The current state without changing it (allowed = used < quota)."""
        return self._decide("peek", key, policy, now)

    def record(self, key: str, policy: Policy, units: float, now: float | None = None) -> None:
        """Add units (cents for u=cents, after the response). Zero or negative units are ignored;
        Redis unavailable: skipped and counted (`record_skipped`)."""
        units = float(units)
        if not math.isfinite(units):
            raise ValueError(f"rate-limit units must be a finite number, got {units!r}")
        if units <= 0:
            return
        try:
            self._run("record", key, policy, units, now)
        except RedisUnavailable:
            self.link.count("record_skipped")

    # -- internals --------------------------------------------------------------------------------

    def _run(self, mode: str, key: str, policy: Policy, units: float, now: float | None) -> list:
        args = [
            mode,
            policy.window_s,
            policy.quota,
            repr(float(units)),
            "" if now is None else repr(float(now)),
            BUCKETS_PER_WINDOW,
        ]
        return self.link.call(self._window, keys=[self.key(key)], args=args)

    def _decide(self, mode: str, key: str, policy: Policy, now: float | None) -> Decision:
        try:
            allowed, used, oldest, server_now = self._run(mode, key, policy, 0.0, now)
        except RedisUnavailable as exc:
            if self.fail == "closed":
                self.link.count("fail_closed")
                raise RateLimitBackendUnavailable(policy, str(exc)) from exc
            self.link.count("fail_open")
            return Decision(True, policy.quota, policy.quota, None, policy)
        return RateLimiter._decision(
            bool(allowed), policy, float(used), None if oldest is None else float(oldest), float(server_now)
        )

    def state(self, key: str) -> dict | None:
        """The stored log of a segment key: {"k": keep_s, "e": [[ts, units], ...]} (or None)."""
        raw = self.link.call(self._state, keys=[self.key(key)])
        if not raw:
            return None
        nums = [float(x) for x in raw]
        return {"k": int(nums[0]), "e": [[nums[i], nums[i + 1]] for i in range(1, len(nums), 2)]}
