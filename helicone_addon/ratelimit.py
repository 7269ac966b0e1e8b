"""``Helicone-RateLimit-Policy``: grammar, segment keys and a sliding-window limiter (README: "Caching, rate limits, retries").

Pure module (no mitmproxy). State lives in a ``diskcache.Cache`` directory so several mitmproxy
processes on one machine share the limits; every read-modify-write runs inside ``cache.transact()``
(SQLite ``BEGIN IMMEDIATE``), so no count is lost between processes or threads.

Semantics (Helicone's sliding-window log, "deduct after the response" for cents):

- ``u=request``: ``check_and_consume`` allows the call when ``used < quota`` (used = units in the last
  ``w`` seconds) and, in the same transaction, adds 1 unit.
- ``u=cents``: ``check_and_consume`` only checks; the caller adds the call's cost with ``record`` after
  the response (cents = USD * 100). The call that crosses the quota goes through; the next is limited.
- A limited call adds nothing. An entry counts while ``now < ts + w`` and is gone at ``ts + w``.

State key (``segment_key``) follows Helicone's ``rl_<segment>``: ``rl_global``, ``rl_user=<id>``,
``rl_<property>=<value>``, plus the unit (``_request`` / ``_cents``) so request counts and cents never
mix (Helicone's KV key mixed them). Quota and window are NOT in the key: two policies on the same
segment and unit share one log (like Helicone; and a client that changes its quota keeps its history).
The log keeps entries for the longest window seen on that key, so a short-window policy cannot prune
what a long-window policy on the same key still needs.

Compact log: entries are ``(ts, units)``; a new entry within ``w/100`` seconds of the newest one is
merged into it (keeping the newest entry's earlier timestamp). So the log holds about 100 entries per
window however large the quota (e.g. ``500000;w=86400``). Approximation: a merged unit expires up to
``w/100`` seconds early (at most 1% of the window; 0.6 s for ``w=60``); entries further apart than
that are exact. Expired keys disappear by themselves (diskcache ``expire``).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "POLICY_FORM",
    "MIN_WINDOW_S",
    "MAX_WINDOW_S",
    "Policy",
    "parse_policy",
    "MissingSegment",
    "segment_key",
    "Decision",
    "RateLimiter",
    "rate_limited_body",
    "RATE_LIMITED_CONTENT_TYPE",
    "headers_for",
]

POLICY_FORM = "[quota];w=[seconds];u=[request|cents];s=[user|<property name>]"
_POLICY_EXAMPLES = '"1000;w=3600", "10;w=1000;u=cents;s=user", "300;w=1800;s=organization"'
MIN_WINDOW_S = 60
MAX_WINDOW_S = 31_536_000
BUCKETS_PER_WINDOW = 100

_POLICY_RE = re.compile(r"^(\d+);w=(\d+)(?:;u=(request|cents))?(?:;s=([\w-]+))?$", re.IGNORECASE | re.ASCII)
_SEGMENT_RE = re.compile(r"^[\w-]+$", re.ASCII)

Unit = Literal["request", "cents"]


@dataclass(frozen=True)
class Policy:
    quota: int
    window_s: int
    unit: Unit = "request"
    segment: str | None = None  # None (global), 'user', or a lower-cased property name

    def header_value(self) -> str:
        """Normalised policy string for Helicone-RateLimit-Policy (u= only when cents, s= kept)."""
        s = f"{self.quota};w={self.window_s}"
        if self.unit == "cents":
            s += ";u=cents"
        if self.segment:
            s += f";s={self.segment}"
        return s


def _policy_error(value: str, what: str) -> ValueError:
    return ValueError(
        f"invalid Helicone-RateLimit-Policy {value!r}: {what}; accepted form: {POLICY_FORM} "
        f"(u= and s= optional, parts in this order, {MIN_WINDOW_S} <= w <= {MAX_WINDOW_S}), "
        f"e.g. {_POLICY_EXAMPLES}"
    )


def parse_policy(value: str) -> Policy:
    """Parse a Helicone-RateLimit-Policy header value (trimmed, case-insensitive). Raises ValueError."""
    if value is None:
        raise _policy_error("", "the value is empty")
    v = value.strip()
    m = _POLICY_RE.match(v)
    if not m:
        raise _policy_error(value, _diagnose(v))
    quota, window = int(m.group(1)), int(m.group(2))
    if quota <= 0:
        raise _policy_error(value, "quota must be a positive integer, got 0")
    if window < MIN_WINDOW_S:
        raise _policy_error(value, f"w={window} is below the minimum window of {MIN_WINDOW_S} seconds")
    if window > MAX_WINDOW_S:
        raise _policy_error(value, f"w={window} is above the maximum window of {MAX_WINDOW_S} seconds (one year)")
    unit: Unit = "cents" if (m.group(3) or "request").lower() == "cents" else "request"
    segment = m.group(4).lower() if m.group(4) else None
    return Policy(quota, window, unit, segment)


def _diagnose(v: str) -> str:
    """Say what is wrong with a policy string that does not match the grammar."""
    if not v:
        return "the value is empty"
    parts = v.split(";")
    head = parts[0].strip()
    if "=" in head:
        return f"it must start with the quota (a positive integer), got {head!r}"
    if not head.isdigit() or not head.isascii():
        return f"quota must be a positive integer, got {head!r}"
    order = ["w", "u", "s"]
    seen: list[str] = []
    for part in parts[1:]:
        key, eq, val = part.partition("=")
        key_l = key.strip().lower()
        if not eq:
            return f"{part!r} is not a key=value part"
        if key_l not in order:
            return f"unknown part {key.strip()!r}= (only w=, u=, s= are accepted)"
        if key_l in seen:
            return f"{key_l}= is given twice"
        if seen and order.index(key_l) < order.index(seen[-1]):
            return f"{key_l}= must come before {seen[-1]}= (order is quota;w=;u=;s=)"
        if part != part.strip() or key != key.strip() or val != val.strip():
            return f"no spaces are allowed inside the value ({part!r})"
        if key_l == "w" and not (val.isdigit() and val.isascii()):
            return f"w must be a whole number of seconds, got {val!r}"
        if key_l == "u" and val.lower() not in ("request", "cents"):
            return f"u must be 'request' or 'cents', got {val!r}"
        if key_l == "s" and not _SEGMENT_RE.match(val):
            return f"s must be 'user' or a property name (letters, digits, '_' or '-'), got {val!r}"
        seen.append(key_l)
    if "w" not in seen:
        return "the window w=[seconds] is missing"
    return "it does not match the grammar"


class MissingSegment(ValueError):
    """The policy segments by user or property but the request does not carry that value."""


def segment_key(policy: Policy, user_id: str | None, properties: dict[str, str]) -> str:
    """State key for a policy and a request: rl_global_<unit>, rl_user=<id>_<unit>, rl_<prop>=<value>_<unit>.

    ``properties`` are the Helicone-Property-* values with lower-cased names. Raises MissingSegment.
    """
    seg = policy.segment
    if seg is None:
        ident = "global"
    elif seg == "user":
        if user_id is None or not str(user_id).strip():
            raise MissingSegment(
                f"Helicone-RateLimit-Policy {policy.header_value()!r} limits per user (s=user) but the request "
                "has no user id; send Helicone-User-Id (or the body 'user' field)"
            )
        ident = f"user={user_id}"
    else:
        val = properties.get(seg)
        if val is None:
            # accept keys that were not lower-cased by the caller
            val = next((v for k, v in properties.items() if k.lower() == seg), None)
        if val is None or not str(val).strip():
            raise MissingSegment(
                f"Helicone-RateLimit-Policy {policy.header_value()!r} limits per property {seg!r} (s={seg}) but "
                f"the request has no Helicone-Property-{seg} header"
            )
        ident = f"{seg}={val}"
    return f"rl_{ident}_{policy.unit}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the quota
    remaining: int  # max(0, floor(quota - used)) after this call's own unit (u=request)
    reset_s: int | None  # ceil seconds until the oldest in-window entry expires; None when the window is empty
    policy: Policy


class RateLimiter:
    """Sliding-window log limiter on a diskcache directory, safe across processes and threads."""

    def __init__(self, directory: str, *, timeout: float = 60.0) -> None:
        import diskcache  # imported here so that parsing policies needs no diskcache

        from .config import private_diskcache_dir, restrict_files

        self.directory = private_diskcache_dir(directory)
        self.cache = diskcache.Cache(self.directory, timeout=timeout)
        restrict_files(self.directory)

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state: {"k": retention seconds, "e": [[ts, units], ...]} oldest first ------------------

    def _load(self, key: str, now: float, window_s: int) -> tuple[int, list[list[float]]]:
        state = self.cache.get(key)
        if not isinstance(state, dict):
            return window_s, []
        keep = max(int(state.get("k", window_s)), window_s)
        entries = [e for e in state.get("e", []) if e[0] > now - keep]
        return keep, entries

    def _store(self, key: str, keep: int, entries: list[list[float]], now: float) -> None:
        if entries:
            # live until the newest entry leaves the longest window (+1 s slack)
            expire = max(1.0, entries[-1][0] + keep - now + 1.0)
            self.cache.set(key, {"k": keep, "e": entries}, expire=expire)
        else:
            self.cache.delete(key)

    @staticmethod
    def _used(entries: list[list[float]], now: float, window_s: int) -> tuple[float, float | None]:
        cutoff = now - window_s
        used = 0.0
        oldest: float | None = None
        for ts, units in entries:
            if ts > cutoff:
                used += units
                if oldest is None:
                    oldest = ts
        return used, oldest

    @staticmethod
    def _append(entries: list[list[float]], now: float, units: float, window_s: int) -> None:
        bucket = window_s / BUCKETS_PER_WINDOW
        if entries and abs(now - entries[-1][0]) < bucket:
            entries[-1][1] += units
        else:
            entries.append([now, units])
            if len(entries) > 1 and entries[-2][0] > now:  # clocks of two processes disagree
                entries.sort(key=lambda e: e[0])

    @staticmethod
    def _decision(allowed: bool, policy: Policy, used: float, oldest: float | None, now: float) -> Decision:
        remaining = max(0, math.floor(policy.quota - used + 1e-9))
        reset = None if oldest is None else max(0, math.ceil(oldest + policy.window_s - now - 1e-9))
        return Decision(allowed, policy.quota, remaining, reset, policy)

    def check_and_consume(self, key: str, policy: Policy, now: float | None = None) -> Decision:
        """Check the policy; for u=request also count this call (atomically) when it is allowed."""
        now = time.time() if now is None else float(now)
        if policy.unit != "request":  # cents: check only; the cost is added by record() later
            return self.peek(key, policy, now)
        with self.cache.transact(retry=True):
            keep, entries = self._load(key, now, policy.window_s)
            used, oldest = self._used(entries, now, policy.window_s)
            allowed = used < policy.quota
            if allowed:
                self._append(entries, now, 1.0, policy.window_s)
                used += 1
                self._store(key, keep, entries, now)
                oldest = self._used(entries, now, policy.window_s)[1]
        return self._decision(allowed, policy, used, oldest, now)

    def record(self, key: str, policy: Policy, units: float, now: float | None = None) -> None:
        """Add units (cents for u=cents, after the response). Zero or negative units are ignored."""
        units = float(units)
        if not math.isfinite(units):
            raise ValueError(f"rate-limit units must be a finite number, got {units!r}")
        if units <= 0:
            return
        now = time.time() if now is None else float(now)
        with self.cache.transact(retry=True):
            keep, entries = self._load(key, now, policy.window_s)
            self._append(entries, now, units, policy.window_s)
            self._store(key, keep, entries, now)

    def peek(self, key: str, policy: Policy, now: float | None = None) -> Decision:
        """The current state without changing it (allowed = used < quota)."""
        now = time.time() if now is None else float(now)
        keep, entries = self._load(key, now, policy.window_s)
        used, oldest = self._used(entries, now, policy.window_s)
        return self._decision(used < policy.quota, policy, used, oldest, now)


RATE_LIMITED_CONTENT_TYPE = "application/json;charset=UTF-8"
_RATE_LIMITED_MESSAGE = (
    "Helicone user was rate limit via Helicone-RateLimit-Policy header. Please wait before making more "
    "requests. See https://docs.helicone.ai/features/advanced-usage/custom-rate-limits for more details."
)
_RATE_LIMITED_BODY = json.dumps({"message": _RATE_LIMITED_MESSAGE}, separators=(",", ":")).encode()


def rate_limited_body() -> bytes:
    """The exact body of Helicone's 429 ("was rate limit" is in Helicone's own text)."""
    return _RATE_LIMITED_BODY


def headers_for(decision: Decision) -> list[tuple[str, str]]:
    """Helicone-RateLimit-* response headers; Reset and Retry-After only when the call is limited."""
    h = [
        ("Helicone-RateLimit-Limit", str(decision.limit)),
        ("Helicone-RateLimit-Remaining", str(decision.remaining)),
        ("Helicone-RateLimit-Policy", decision.policy.header_value()),
    ]
    if not decision.allowed and decision.reset_s is not None:
        reset = str(max(1, decision.reset_s))
        h.append(("Helicone-RateLimit-Reset", reset))
        h.append(("Retry-After", reset))
    return h
