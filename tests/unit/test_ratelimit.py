"""helicone_addon.ratelimit: policy grammar, segment keys, sliding window on diskcache and on Redis
(helicone_addon.fleet.redis_ratelimit: the window tests run on both backends)."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest

from helicone_addon.ratelimit import (
    MissingSegment,
    Policy,
    RateLimiter,
    headers_for,
    parse_policy,
    rate_limited_body,
    segment_key,
)
from servers import redis_server  # noqa: F401 - fixture

BACKENDS = ["diskcache", "redis"]


def open_limiter(spec: tuple[str, str]):
    """A limiter on a backend named by (kind, directory or URL); picklable for subprocesses."""
    kind, where = spec
    if kind == "redis":
        from helicone_addon.fleet.redis_ratelimit import RedisRateLimiter

        return RedisRateLimiter(where, timeout=2.0)  # semantics here; outages in test_fleet_redis.py
    return RateLimiter(where)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> tuple[str, str]:
    """(kind, directory or URL) of an empty limiter store."""
    if request.param == "redis":
        pytest.importorskip("redis")
        return ("redis", request.getfixturevalue("redis_server").url)
    return ("diskcache", str(tmp_path / "rl"))


def stored_log(limiter, key: str) -> dict:
    """The stored {"k": keep, "e": [[ts, units], ...]} of a key, whatever the backend."""
    return limiter.cache.get(key) if isinstance(limiter, RateLimiter) else limiter.state(key)

# ------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    "value, policy, normalised",
    [
        ("1000;w=3600", Policy(1000, 3600, "request", None), "1000;w=3600"),
        ("10;w=1000;u=cents;s=user", Policy(10, 1000, "cents", "user"), "10;w=1000;u=cents;s=user"),
        ("500000;w=86400;s=user", Policy(500000, 86400, "request", "user"), "500000;w=86400;s=user"),
        ("300;w=1800;s=organization", Policy(300, 1800, "request", "organization"), "300;w=1800;s=organization"),
        ("5;w=60;u=request", Policy(5, 60, "request", None), "5;w=60"),
        ("  7;W=60;U=CENTS;S=Team-Name  ", Policy(7, 60, "cents", "team-name"), "7;w=60;u=cents;s=team-name"),
        ("1;w=31536000", Policy(1, 31536000, "request", None), "1;w=31536000"),
        ("3;w=60;s=User", Policy(3, 60, "request", "user"), "3;w=60;s=user"),
        ("3;w=60;s=my_prop", Policy(3, 60, "request", "my_prop"), "3;w=60;s=my_prop"),
    ],
)
def test_valid_policies(value, policy, normalised):
    p = parse_policy(value)
    assert p == policy
    assert p.header_value() == normalised
    assert parse_policy(p.header_value()) == p


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("10;w=59", "below the minimum window of 60"),
        ("10;w=31536001", "above the maximum window"),
        ("0;w=60", "quota must be a positive integer"),
        ("10;w=60;u=tokens", "u must be 'request' or 'cents'"),
        ("10;w=60;s=user;u=cents", "u= must come before s="),
        ("10;u=cents;w=60", "w= must come before u="),
        ("w=60;10", "must start with the quota"),
        ("-5;w=60", "quota must be a positive integer"),
        ("1.5;w=60", "quota must be a positive integer"),
        ("10", "window w=[seconds] is missing"),
        ("10;u=cents", "window w=[seconds] is missing"),
        ("10;w=1h", "w must be a whole number of seconds"),
        ("10;w=60;x=1", "unknown part 'x'="),
        ("10;w=60;w=120", "w= is given twice"),
        ("10;w=60;s=a.b", "s must be 'user' or a property name"),
        ("10;w=60;s=", "s must be 'user' or a property name"),
        ("10; w=60", "no spaces"),
        ("10;w=60;", "is not a key=value part"),
        ("", "empty"),
        ("10;w=٦٠", "w must be a whole number"),
    ],
)
def test_invalid_policies(value, fragment):
    with pytest.raises(ValueError) as e:
        parse_policy(value)
    msg = str(e.value)
    assert fragment in msg
    assert "[quota];w=[seconds];u=[request|cents];s=[user|<property name>]" in msg
    assert repr(value) in msg


# ------------------------------------------------------------------------------- segments


def test_segment_keys():
    g = parse_policy("10;w=60")
    u = parse_policy("10;w=60;s=user")
    c = parse_policy("10;w=60;u=cents;s=user")
    p = parse_policy("10;w=60;s=Team")
    assert segment_key(g, None, {}) == "rl_global_request"
    assert segment_key(u, "alice", {}) == "rl_user=alice_request"
    assert segment_key(c, "alice", {}) == "rl_user=alice_cents"
    assert segment_key(p, None, {"team": "blue"}) == "rl_team=blue_request"
    assert segment_key(p, None, {"TEAM": "blue"}) == "rl_team=blue_request"
    # quota/window are not in the key: same segment and unit share the log
    assert segment_key(parse_policy("99;w=3600;s=user"), "alice", {}) == segment_key(u, "alice", {})


def test_missing_segment():
    with pytest.raises(MissingSegment, match="Helicone-User-Id"):
        segment_key(parse_policy("10;w=60;s=user"), None, {})
    with pytest.raises(MissingSegment):
        segment_key(parse_policy("10;w=60;s=user"), "  ", {})
    with pytest.raises(MissingSegment, match="Helicone-Property-team"):
        segment_key(parse_policy("10;w=60;s=team"), "alice", {"other": "x"})
    assert issubclass(MissingSegment, ValueError)


# ------------------------------------------------------------------------------- sliding window


@pytest.fixture
def limiter(backend):
    rl = open_limiter(backend)
    yield rl
    rl.close()


def test_sliding_window_request(limiter):
    pol = parse_policy("3;w=60")
    key = segment_key(pol, None, {})
    t0 = 1_000_000.0
    d = limiter.check_and_consume(key, pol, now=t0)
    assert (d.allowed, d.limit, d.remaining, d.reset_s) == (True, 3, 2, 60)
    d = limiter.check_and_consume(key, pol, now=t0 + 10)
    assert (d.allowed, d.remaining, d.reset_s) == (True, 1, 50)
    d = limiter.check_and_consume(key, pol, now=t0 + 20)
    assert (d.allowed, d.remaining, d.reset_s) == (True, 0, 40)
    d = limiter.check_and_consume(key, pol, now=t0 + 30)
    assert (d.allowed, d.remaining, d.reset_s) == (False, 0, 30)
    # the limited call added nothing; the first entry is still in the window just before t0+60
    d = limiter.check_and_consume(key, pol, now=t0 + 59.999)
    assert not d.allowed and d.reset_s == 1
    # ... and has expired exactly at t0+60
    d = limiter.check_and_consume(key, pol, now=t0 + 60)
    assert (d.allowed, d.remaining, d.reset_s) == (True, 0, 10)  # oldest now t0+10
    assert not limiter.check_and_consume(key, pol, now=t0 + 69.5).allowed
    assert limiter.check_and_consume(key, pol, now=t0 + 70).allowed
    # after a whole quiet window everything is gone
    d = limiter.check_and_consume(key, pol, now=t0 + 1000)
    assert (d.allowed, d.remaining, d.reset_s) == (True, 2, 60)


def test_cents_cross_goes_through_next_is_limited(limiter):
    pol = parse_policy("10;w=3600;u=cents;s=user")
    key = segment_key(pol, "bob", {})
    t = 5_000_000.0
    d = limiter.check_and_consume(key, pol, now=t)
    assert d.allowed and d.remaining == 10 and d.reset_s is None
    # check-only: checking many times does not use anything
    for _ in range(20):
        assert limiter.check_and_consume(key, pol, now=t).allowed
    limiter.record(key, pol, 4.5, now=t + 1)  # $0.045
    d = limiter.check_and_consume(key, pol, now=t + 100)
    assert d.allowed and d.remaining == 5
    # the call that crosses the quota is allowed (its cost is only known afterwards)
    d = limiter.check_and_consume(key, pol, now=t + 200)
    assert d.allowed
    limiter.record(key, pol, 7.25, now=t + 201)  # total 11.75 cents
    d = limiter.check_and_consume(key, pol, now=t + 300)
    assert not d.allowed and d.remaining == 0 and d.reset_s == 3600 - 299
    # the first cost leaves the window: 7.25 < 10 -> allowed again
    d = limiter.check_and_consume(key, pol, now=t + 1 + 3600)
    assert d.allowed and d.remaining == 2
    limiter.record(key, pol, 0, now=t + 3700)  # zero cost: nothing
    limiter.record(key, pol, -3, now=t + 3700)
    assert limiter.peek(key, pol, now=t + 3700).remaining == 2
    with pytest.raises(ValueError):
        limiter.record(key, pol, float("nan"))


def test_segments_are_independent(limiter):
    pol = parse_policy("2;w=60;s=user")
    t = 100.0
    ka, kb = segment_key(pol, "a", {}), segment_key(pol, "b", {})
    assert limiter.check_and_consume(ka, pol, now=t).allowed
    assert limiter.check_and_consume(ka, pol, now=t).allowed
    assert not limiter.check_and_consume(ka, pol, now=t).allowed
    assert limiter.check_and_consume(kb, pol, now=t).allowed
    g = parse_policy("2;w=60")
    assert limiter.check_and_consume(segment_key(g, None, {}), g, now=t).remaining == 1
    # request and cents on the same segment do not mix
    c = parse_policy("2;w=60;u=cents;s=user")
    assert limiter.check_and_consume(segment_key(c, "a", {}), c, now=t).allowed


def test_longer_window_on_same_key_keeps_history(limiter):
    short, long_ = parse_policy("100;w=60"), parse_policy("3;w=3600")
    key = segment_key(short, None, {})
    assert key == segment_key(long_, None, {})
    t = 0.0
    for i in range(3):
        assert limiter.check_and_consume(key, long_, now=t + i).allowed
    # a short-window policy on the same key writes later; must not prune what the 1 h window needs
    assert limiter.check_and_consume(key, short, now=t + 600).allowed
    d = limiter.check_and_consume(key, long_, now=t + 700)
    assert not d.allowed and d.reset_s == 3600 - 700


def test_compact_log_for_large_quota(limiter):
    pol = parse_policy("500000;w=86400")
    key = segment_key(pol, None, {})
    t = 0.0
    for i in range(5000):
        assert limiter.check_and_consume(key, pol, now=t + i * 3.0).allowed  # one call every 3 s for ~4 h
    state = stored_log(limiter, key)
    assert len(state["e"]) <= 86400 / 864 + 2  # about one entry per 1/100 of the window
    assert sum(u for _, u in state["e"]) == 5000
    d = limiter.peek(key, pol, now=t + 15000)
    assert d.remaining == 500000 - 5000


def test_state_persists_across_instances(backend):
    pol = parse_policy("1;w=60")
    with open_limiter(backend) as a:
        assert a.check_and_consume("k", pol, now=10).allowed
    with open_limiter(backend) as b:
        assert not b.check_and_consume("k", pol, now=20).allowed


def test_threads_share_one_limiter(limiter):
    pol = parse_policy("25;w=60")
    results: list[bool] = []
    lock = threading.Lock()

    def go():
        for _ in range(10):
            ok = limiter.check_and_consume("threads", pol).allowed
            with lock:
                results.append(ok)

    ts = [threading.Thread(target=go) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(results) == 25 and len(results) == 80


def _mp_worker(spec: tuple[str, str], n_threads: int, quota: int, barrier, out) -> None:
    rl = open_limiter(spec)
    pol = Policy(quota, 60)
    allowed = []
    tb = threading.Barrier(n_threads)

    def go():
        tb.wait()
        allowed.append(rl.check_and_consume("rl_global_request", pol).allowed)

    threads = [threading.Thread(target=go) for _ in range(n_threads)]
    barrier.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rl.close()
    out.put(sum(allowed))


@pytest.mark.timeout(120)
def test_multiprocess_exact_quota(backend):
    ctx = multiprocessing.get_context("spawn")
    open_limiter(backend).close()  # create the database once
    n_procs, n_threads, quota = 4, 10, 10
    barrier = ctx.Barrier(n_procs)
    out = ctx.Queue()
    procs = [ctx.Process(target=_mp_worker, args=(backend, n_threads, quota, barrier, out)) for _ in range(n_procs)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=100) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(counts) == quota
    with open_limiter(backend) as rl:
        state = stored_log(rl, "rl_global_request")
        assert sum(u for _, u in state["e"]) == quota


# ------------------------------------------------------------------------------- responses


def test_rate_limited_body_is_helicones():
    body = rate_limited_body()
    assert body == (
        b'{"message":"Helicone user was rate limit via Helicone-RateLimit-Policy header. Please wait before '
        b'making more requests. See https://docs.helicone.ai/features/advanced-usage/custom-rate-limits for '
        b'more details."}'
    )
    assert json.loads(body)["message"].startswith("Helicone user was rate limit")


def test_headers_for(limiter):
    pol = parse_policy("1;w=60;u=request;s=user")
    d = limiter.check_and_consume("k", pol, now=0)
    assert headers_for(d) == [
        ("Helicone-RateLimit-Limit", "1"),
        ("Helicone-RateLimit-Remaining", "0"),
        ("Helicone-RateLimit-Policy", "1;w=60;s=user"),
    ]
    d = limiter.check_and_consume("k", pol, now=15.5)
    assert headers_for(d) == [
        ("Helicone-RateLimit-Limit", "1"),
        ("Helicone-RateLimit-Remaining", "0"),
        ("Helicone-RateLimit-Policy", "1;w=60;s=user"),
        ("Helicone-RateLimit-Reset", "45"),
        ("Retry-After", "45"),
    ]
