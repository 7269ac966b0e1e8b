"""helicone_addon.retry: back-off, Retry-After, retryable statuses."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from helicone_addon.retry import RetryPolicy, is_retryable_status, parse_retry_after


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_defaults():
    p = RetryPolicy()
    assert (p.num, p.factor, p.min_ms, p.max_ms) == (5, 2.0, 1000, 10000)
    assert p.max_attempts == 6  # num is the number of RETRIES after the first attempt (the meaning of Helicone's docs)


def test_backoff_formula_with_fixed_rand():
    p = RetryPolicy()
    # rand = 1 + 0 -> 1000 * 2^k, capped at 10000
    assert [p.delay_s(k, rng=FixedRng(0.0)) for k in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    # rand = 1.5
    assert [p.delay_s(k, rng=FixedRng(0.5)) for k in range(4)] == [1.5, 3.0, 6.0, 10.0]
    # rand just under 2
    assert p.delay_s(0, rng=FixedRng(0.9999)) == pytest.approx(2.0)


def test_backoff_formula_with_seeded_rng():
    p = RetryPolicy(num=3, factor=1.5, min_ms=200, max_ms=5000)
    a, b = random.Random(42), random.Random(42)
    for k in range(8):
        want = min(int((1 + b.random()) * 200 * 1.5**k + 0.5), 5000) / 1000
        assert p.delay_s(k, rng=a) == want
    # every delay lies in [min*f^k, 2*min*f^k] (rounded) and under max
    rng = random.Random(7)
    for k in range(6):
        for _ in range(50):
            d = p.delay_s(k, rng=rng) * 1000
            assert min(round(200 * 1.5**k), 5000) <= d <= min(round(400 * 1.5**k), 5000)


def test_min_timeout_zero_is_treated_as_one_ms():
    p = RetryPolicy(min_ms=0, max_ms=100)
    assert p.delay_s(0, rng=FixedRng(0.0)) == 0.001
    assert p.delay_s(3, rng=FixedRng(0.0)) == 0.008


def test_js_rounding_of_halves():
    # 1.25 * 2 * 1 = 2.5 ms -> JS Math.round gives 3 (Python's round would give 2)
    p = RetryPolicy(min_ms=2, max_ms=1000, factor=1)
    assert p.delay_s(0, rng=FixedRng(0.25)) == 0.003


def test_huge_k_does_not_overflow():
    assert RetryPolicy().delay_s(5000, rng=FixedRng(0.5)) == 10.0


def test_retry_after_seconds_longer_than_backoff_wins_but_capped():
    p = RetryPolicy()  # k=0 back-off with rand=1: 1 s
    r = FixedRng(0.0)
    assert p.delay_s(0, "3", rng=r) == 3.0
    assert p.delay_s(0, "0", rng=r) == 1.0  # shorter: the back-off wins
    assert p.delay_s(3, "5", rng=r) == 8.0  # back-off 8 s is longer than 5
    assert p.delay_s(0, "120", rng=r) == 10.0  # never beyond max
    assert p.delay_s(0, "2.5", rng=r) == 2.5
    assert p.delay_s(0, "garbage", rng=r) == 1.0
    assert p.delay_s(0, None, rng=r) == 1.0


def test_retry_after_http_date():
    now = 1_700_000_000.0
    p = RetryPolicy()
    date = formatdate(now + 4, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(4.0)
    assert p.delay_s(0, date, rng=FixedRng(0.0), now=now) == pytest.approx(4.0)
    past = formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert p.delay_s(0, past, rng=FixedRng(0.0), now=now) == 1.0


@pytest.mark.parametrize(
    "value, want",
    [("5", 5.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("", None), (None, None), ("-3", None), ("soon", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(value, want):
    assert parse_retry_after(value) == want


def test_parse_retry_after_date_in_future_is_positive():
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") > 1e9


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529, 599])
def test_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [None, 200, 201, 301, 400, 401, 403, 404, 408, 409, 422, 428, 430, 499, 600])
def test_not_retryable(status):
    assert not is_retryable_status(status)
