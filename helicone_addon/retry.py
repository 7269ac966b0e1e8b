"""Retries: back-off schedule, retryable statuses, ``Retry-After`` (README: "Caching, rate limits, retries").

Pure module (no mitmproxy).

- ``RetryPolicy.num`` is the number of RETRIES after the first attempt (the meaning of Helicone's docs),
  so a call makes at most ``num + 1`` upstream attempts (``max_attempts``).
- The wait before retry ``k`` (k = 0, 1, ...) is node-retry's randomised exponential back-off:
  ``min(round(rand[1,2) * max(min_ms, 1) * factor**k), max_ms)`` milliseconds.
- A provider ``Retry-After`` (seconds or HTTP-date) is honoured when it is longer than that back-off,
  but never beyond ``max_ms``.
- The ``Helicone-Retry-*`` headers are parsed and validated in ``headers.py``.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "RetryPolicy",
    "is_retryable_status",
    "parse_retry_after",
]


@dataclass(frozen=True)
class RetryPolicy:
    num: int = 5  # retries after the first attempt
    factor: float = 2.0
    min_ms: int = 1000
    max_ms: int = 10000

    @property
    def max_attempts(self) -> int:
        return self.num + 1

    def backoff_ms(self, k: int, rng=random) -> int:
        """node-retry's randomised back-off before retry k (k = 0 for the first retry), in ms."""
        rand = 1.0 + rng.random()  # [1, 2)
        try:
            raw = rand * max(self.min_ms, 1) * (self.factor**k)
        except OverflowError:
            raw = math.inf
        if math.isinf(raw) or math.isnan(raw):
            return int(self.max_ms)
        return int(min(_js_round(raw), self.max_ms))

    def delay_s(self, k: int, retry_after: str | None = None, rng=random, now: float | None = None) -> float:
        """Seconds to wait before retry k; a longer Retry-After wins, capped at max_ms."""
        ms = float(self.backoff_ms(k, rng))
        ra = parse_retry_after(retry_after, now=now) if retry_after is not None else None
        if ra is not None and ra * 1000.0 > ms:
            ms = min(ra * 1000.0, float(self.max_ms))
        return ms / 1000.0


def _js_round(x: float) -> int:
    """JavaScript Math.round (halves go up), not Python's banker's rounding."""
    return int(math.floor(x + 0.5))


def is_retryable_status(status: int | None) -> bool:
    """429 and 500-599 are retried (network errors and timeouts are retried by the caller too)."""
    return status is not None and (status == 429 or 500 <= status <= 599)


_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (>= 0): delay-seconds or an HTTP-date; None if absent/invalid."""
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    if _SECONDS.match(v):
        s = float(v)
        return s if math.isfinite(s) else None
    try:
        dt = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:  # HTTP-dates are GMT
        dt = dt.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, dt.timestamp() - now)
