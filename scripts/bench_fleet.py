#!/usr/bin/env python3
"""Benchmark of the fleet pieces on a real Redis and PostgreSQL (started here, on loopback).

    .venv/bin/python scripts/bench_fleet.py                  # ~1 minute (10 s outage)
    .venv/bin/python scripts/bench_fleet.py --outage 60      # the 60 s outage of issue 14
    .venv/bin/python scripts/bench_fleet.py --json out.json

Measures, in this process (the proxy calls these pieces the same way):
  * rate limit: p50/p99 of `check_and_consume` on diskcache (RateLimiter) and on Redis
    (RedisRateLimiter, one Lua script per call);
  * cache hit: p50/p99 of `lookup` of a stored entry (a 2 KB JSON answer and a 300-chunk SSE
    answer) on Redis, and on diskcache for comparison;
  * shipper: rows/s it sustains from a local SQLite log into PostgreSQL (backlog of N rows with
    ~1.5 KB of bodies each, batch 500);
  * outage: while a LogStore keeps writing (default 200 rows/s), PostgreSQL is stopped for
    --outage seconds; time from PostgreSQL accepting connections again until the shipper's lag is 0.

Needs the `fleet` and `test` extras and the Debian packages redis-server and postgresql (it reuses
tests/servers.py). Stops every server it started.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from servers import PostgresServer, RedisServer  # noqa: E402

from helicone_addon.cache import CachedResponse, ResponseCache  # noqa: E402
from helicone_addon.fleet.postgres import Shipper  # noqa: E402
from helicone_addon.fleet.redis_cache import RedisResponseCache  # noqa: E402
from helicone_addon.fleet.redis_ratelimit import RedisRateLimiter  # noqa: E402
from helicone_addon.ratelimit import RateLimiter, parse_policy  # noqa: E402
from helicone_addon.store import LogStore  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


def timed(fn, n: int) -> dict[str, float]:
    for _ in range(min(200, n // 10)):  # warm-up
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(pct(samples, 50), 4), "p99_ms": round(pct(samples, 99), 4),
            "mean_ms": round(statistics.fmean(samples), 4), "n": n}  # fmt: skip


def bench_ratelimit(redis_url: str, tmp: Path, n: int) -> dict:
    pol = parse_policy("100000000;w=60")
    disk = RateLimiter(str(tmp / "rl"))
    red = RedisRateLimiter(redis_url)
    out = {
        "diskcache": timed(lambda: disk.check_and_consume("rl_global_request", pol), n),
        "redis": timed(lambda: red.check_and_consume("rl_global_request", pol), n),
    }
    disk.close()
    red.close()
    return out


def entries() -> dict[str, CachedResponse]:
    body = json.dumps({"id": "chatcmpl-1", "choices": [{"message": {"content": "x" * 1800}}]}).encode()
    chunks = [f'data: {{"choices":[{{"delta":{{"content":"tok{i} "}}}}]}}\n\n'.encode() for i in range(300)]
    return {
        "json_2kb": CachedResponse(200, [("content-type", "application/json")], body, request_id="a"),
        "sse_300_chunks": CachedResponse(200, [("content-type", "text/event-stream")], b"".join(chunks),
                                         streamed=True, request_id="b"),
    }


def bench_cache(redis_url: str, tmp: Path, n: int) -> dict:
    out: dict = {}
    for name, cache in (("redis", RedisResponseCache(redis_url)), ("diskcache", ResponseCache(str(tmp / "c")))):
        for kind, e in entries().items():
            base = uuid.uuid4().hex * 2
            assert cache.store(base, 1, e, 600) == 0
            assert cache.lookup(base) is not None
            out[f"{name}_{kind}"] = timed(lambda: cache.lookup(base), n)
        cache.close()
    return out


def row(i: int) -> tuple[dict, list[dict]]:
    rid = str(uuid.uuid4())
    return (
        {
            "id": rid, "created_at": f"2025-05-01T00:00:{i % 60:02d}.000Z", "provider": "openai",
            "model": "gpt-4o-mini", "status": 200, "latency_ms": 123.4, "prompt_tokens": 100,
            "completion_tokens": 50, "total_tokens": 150, "cost_usd": 0.0001, "user_id": "u",
            "properties": '{"team":"blue"}',
            "request_body": json.dumps({"messages": [{"role": "user", "content": "q" * 600}]}),
            "response_body": json.dumps({"choices": [{"message": {"content": "a" * 800}}]}),
        },
        [{"request_id": rid, "key": "team", "value": "blue"}],
    )  # fmt: skip


def bench_shipper(pg: PostgresServer, tmp: Path, n: int) -> dict:
    url = pg.create_database("ship_rate")
    db = tmp / "ship.db"
    store = LogStore(db).start()
    for i in range(n):
        store.submit(row(i))
    store.flush(120)
    sh = Shipper(db, url, batch=500)
    sh.register()
    sh.ship_once()  # connect and create the schema outside the measurement
    t0 = time.perf_counter()
    assert sh.flush(300)
    dt = time.perf_counter() - t0
    sh.stop()
    store.close()
    return {"rows": n, "seconds": round(dt, 3), "rows_per_s": round((n - 500) / dt)}


def bench_outage(pg: PostgresServer, tmp: Path, outage_s: float, rate: float) -> dict:
    url = pg.create_database("outage")
    db = tmp / "outage.db"
    store = LogStore(db).start()
    sh = Shipper(db, url, batch=500, interval=0.2, max_backoff=2.0).start()
    stop = threading.Event()
    written = [0]

    def load() -> None:
        next_t = time.monotonic()
        while not stop.is_set():
            store.submit(row(written[0]))
            written[0] += 1
            next_t += 1 / rate
            time.sleep(max(0.0, next_t - time.monotonic()))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    time.sleep(2)
    pg.stop()
    time.sleep(outage_s)
    backlog = sh.lag()
    pg.start()
    t_back = time.monotonic()
    while sh.lag().rows > rate * 1.0:  # drained: what waits is no more than 1 s of new calls
        time.sleep(0.05)
    drain = time.monotonic() - t_back
    stop.set()
    t.join()
    store.flush(60)
    assert sh.flush(120)
    sh.stop()
    store.close()
    import psycopg

    with psycopg.connect(url) as c:
        count, distinct = c.execute("SELECT count(*), count(DISTINCT id) FROM requests").fetchone()
    return {"outage_s": outage_s, "write_rate_rows_per_s": rate, "backlog_rows": backlog.rows,
            "backlog_age_s": round(backlog.seconds, 1), "drain_s": round(drain, 2),
            "rows_written": written[0], "rows_in_postgres": count, "distinct_ids": distinct,
            "pg_outages": sh.counters["pg_outages"]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="calls per latency measurement (default 3000)")
    ap.add_argument("--rows", type=int, default=10000, help="backlog for the shipper rate (default 10000)")
    ap.add_argument("--outage", type=float, default=10.0, help="PostgreSQL outage in seconds (default 10)")
    ap.add_argument("--rate", type=float, default=200.0, help="rows/s written during the outage run (default 200)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    random.seed(1)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as d:
        tmp = Path(d)
        redis = RedisServer(tmp / "redis").start()
        pg = PostgresServer.create().start()
        try:
            results["check_and_consume"] = bench_ratelimit(redis.url, tmp, args.n)
            print("check_and_consume:", json.dumps(results["check_and_consume"]), flush=True)
            results["cache_hit_lookup"] = bench_cache(redis.url, tmp, args.n)
            print("cache hit lookup:", json.dumps(results["cache_hit_lookup"]), flush=True)
            results["shipper"] = bench_shipper(pg, tmp, args.rows)
            print("shipper:", json.dumps(results["shipper"]), flush=True)
            results["outage"] = bench_outage(pg, tmp, args.outage, args.rate)
            print("outage:", json.dumps(results["outage"]), flush=True)
        finally:
            redis.stop()
            pg.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
