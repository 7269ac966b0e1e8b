"""Fleet mode through real proxy replicas: one Redis shared by 3 `helicone-addon run` processes
(exact rate limits, cache hits across replicas, outage and recovery, fail closed), and replicas
shipping their logs to one PostgreSQL that `report --db postgresql://` reads.

Needs the proxy options helicone_redis, helicone_redis_fail and helicone_postgres; until the addon
declares them these tests are skipped."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("redis")
pytest.importorskip("psycopg")

from servers import pg_server, pg_template, pg_url, redis_server  # noqa: E402,F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
_SOURCES = "".join(p.read_text() for p in (ROOT / "helicone_addon").rglob("*.py") if "fleet" not in p.parts)
pytestmark = pytest.mark.skipif(
    "helicone_redis" not in _SOURCES or "helicone_postgres" not in _SOURCES,
    reason="the addon does not declare helicone_redis / helicone_postgres yet",
)


def marker() -> str:
    return f"f-{uuid.uuid4().hex[:10]}"


def post(client, m: str, headers: dict):
    return client.post("https://api.openai.com/v1/chat/completions", headers=headers,
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": m}]})  # fmt: skip


def replicas(make_proxy, n: int, *extra: str) -> list:
    return [make_proxy(list(extra)) for _ in range(n)]


def spread(proxies: list, m: str, headers_for, n: int = 60) -> list[int]:
    """n concurrent calls, round-robin over the replicas; returns the statuses."""
    clients = [p.httpx() for p in proxies]
    statuses: list[int] = [0] * n
    barrier = threading.Barrier(n)

    def go(i: int) -> None:
        barrier.wait()
        statuses[i] = post(clients[i % len(clients)], m, headers_for(i)).status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return statuses


@pytest.mark.timeout(180)
def test_rate_limit_is_exact_across_three_replicas(make_proxy, fake, redis_server):
    ps = replicas(make_proxy, 3, "--set", f"helicone_redis={redis_server.url}")
    m = marker()
    statuses = spread(ps, m, lambda i: {"Helicone-RateLimit-Policy": "20;w=60"})
    assert statuses.count(200) == 20 and statuses.count(429) == 40
    assert len(fake.received(m)) == 20
    # per user: two users alternate, each gets exactly 20
    m2 = marker()
    users = [f"{m2}-a", f"{m2}-b"]
    statuses = spread(ps, m2, lambda i: {"Helicone-RateLimit-Policy": "20;w=60;s=user",
                                         "Helicone-User-Id": users[i % 2]}, n=80)  # fmt: skip
    assert statuses.count(200) == 40 and len(fake.received(m2)) == 40


def test_cached_on_one_replica_is_a_hit_on_another(make_proxy, fake, redis_server):
    a, b = replicas(make_proxy, 2, "--set", f"helicone_redis={redis_server.url}")
    m = marker()
    h = {"Helicone-Cache-Enabled": "true"}
    with a.httpx() as ca, b.httpx() as cb:
        first = post(ca, m, h)
        second = post(cb, m, h)  # right after the first call ended
    assert first.headers["helicone-cache"] == "MISS"
    assert second.headers["helicone-cache"] == "HIT"
    assert second.json() == first.json()
    assert len(fake.received(m)) == 1


def test_redis_killed_calls_served_then_sharing_resumes(make_proxy, fake, redis_server):
    a, b = replicas(make_proxy, 2, "--set", f"helicone_redis={redis_server.url}")
    redis_server.kill()
    m = marker()
    with a.httpx() as ca, b.httpx() as cb:
        statuses = [post(c, m, {"Helicone-RateLimit-Policy": "1;w=60", "Helicone-Cache-Enabled": "true"}).status_code
                    for c in (ca, cb, ca, cb)]  # fmt: skip
        assert statuses == [200] * 4  # fail open: served, not limited
        assert len(fake.received(m)) == 4  # and not cached
        redis_server.start()
        m2 = marker()
        h = {"Helicone-Cache-Enabled": "true"}
        deadline = time.monotonic() + 10
        hit = None
        while time.monotonic() < deadline:  # the replicas probe Redis again within a second
            post(ca, m2, h)
            hit = post(cb, m2, h)
            if hit.headers.get("helicone-cache") == "HIT":
                break
        assert hit is not None and hit.headers["helicone-cache"] == "HIT"
    # (logged once per outage: tests/unit/test_fleet_redis.py; the proxies here run with -q) and
    # counted where users query them: the log's store_counters table
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        counters = {r["name"]: r["value"] for r in a.query("SELECT name, value FROM store_counters")}
        if counters.get("redis_outages", 0) >= 1 and counters.get("fail_open", 0) >= 1:
            break
        time.sleep(0.2)
    assert counters.get("redis_outages", 0) >= 1 and counters.get("fail_open", 0) >= 1, counters


def test_fail_closed_answers_429_with_a_clear_error(make_proxy, fake, redis_server):
    (p,) = replicas(make_proxy, 1, "--set", f"helicone_redis={redis_server.url}", "--set", "helicone_redis_fail=closed")
    redis_server.kill()
    m = marker()
    with p.httpx() as c:
        r = post(c, m, {"Helicone-RateLimit-Policy": "100;w=60"})
        assert r.status_code == 429
        assert r.headers["x-helicone-error"] == "rate limit backend unavailable"
        assert post(c, m, {}).status_code == 200  # calls without a policy are served
    assert len(fake.received(m)) == 1


@pytest.mark.timeout(180)
def test_replicas_ship_to_one_postgres_and_report_reads_it(make_proxy, fake, pg_url):
    ps = replicas(make_proxy, 3, "--set", f"helicone_postgres={pg_url}")
    m = marker()
    for i in range(30):
        with ps[i % 3].httpx() as c:
            assert post(c, m, {"Helicone-Property-Replica": str(i % 3)}).status_code == 200
    for p in ps:
        p.wait_rows("SELECT id FROM requests WHERE request_body LIKE ?", (f"%{m}%",), n=10)

    def report(db: str) -> dict:
        res = subprocess.run([sys.executable, "-m", "helicone_addon", "report", "--by", "none",
                              "--json", "--db", db], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)[0]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and report(pg_url)["calls"] < 30:
        time.sleep(0.2)
    fleet = report(pg_url)
    local = [report(str(p.db_path)) for p in ps]
    assert fleet["calls"] == sum(x["calls"] for x in local) == 30
    assert fleet["total_tokens"] == sum(x["total_tokens"] for x in local)


def test_the_api_query_route_reads_the_whole_fleet(make_proxy, fake, pg_url):
    """With helicone_postgres set, POST /v1/request/query answers over every replica's calls."""
    import httpx

    from conftest import free_port

    a = make_proxy(["--set", f"helicone_postgres={pg_url}"], api_port=free_port())
    b = make_proxy(["--set", f"helicone_postgres={pg_url}"])
    m = marker()
    ids = []
    for p in (a, b, b):
        with p.httpx() as c:
            ids.append(post(c, m, {"Helicone-User-Id": "fleet-user"}).headers["helicone-id"])
    token = (a.data_dir / "api-token").read_text().strip()
    deadline, got = time.monotonic() + 30, set()
    while time.monotonic() < deadline and not set(ids) <= got:
        r = httpx.post(f"http://127.0.0.1:{a.api_port}/v1/request/query", timeout=30,
                       headers={"Authorization": f"Bearer {token}"},
                       json={"filter": {"request": {"user_id": {"equals": "fleet-user"}}}, "limit": 50})
        assert r.status_code == 201, r.text
        got = {rec["request_id"] for rec in r.json()["data"]}
        time.sleep(0.2)
    assert set(ids) <= got  # b's calls too, which a's own SQLite log never saw
