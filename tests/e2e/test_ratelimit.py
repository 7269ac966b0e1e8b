"""Helicone-RateLimit-Policy through the real proxy."""

from __future__ import annotations


import threading
import uuid

import pytest


def marker() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


def post(client, m: str, headers: dict, model: str = "gpt-4o-mini"):
    return client.post("https://api.openai.com/v1/chat/completions", headers=headers,
                       json={"model": model, "messages": [{"role": "user", "content": m}]})


def test_fourth_call_is_limited_with_headers(make_proxy, fake):
    import openai

    p = make_proxy()
    m = marker()
    client = p.openai()
    h = {"Helicone-RateLimit-Policy": "3;w=60"}
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": m}], extra_headers=h)
        assert raw.headers["helicone-ratelimit-limit"] == "3"
        assert raw.headers["helicone-ratelimit-remaining"] == str(2 - i)
        assert raw.headers["helicone-ratelimit-policy"] == "3;w=60"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": m}], extra_headers=h)
    r = e.value.response
    assert r.status_code == 429
    assert r.json() == {"message": "Helicone user was rate limit via Helicone-RateLimit-Policy header. Please wait "
                        "before making more requests. See https://docs.helicone.ai/features/advanced-usage/custom-rate-limits for more details."}
    assert r.headers["helicone-ratelimit-remaining"] == "0"
    assert 0 < int(r.headers["helicone-ratelimit-reset"]) <= 60
    assert 0 < int(r.headers["retry-after"]) <= 60
    assert len(fake.received(m)) == 3
    row = p.row(r.headers["helicone-id"])
    assert row["rate_limited"] == 1 and row["status"] == 429


def test_user_and_property_segments_are_independent(proxy, fake):
    m = marker()
    with proxy.httpx() as c:
        for user in ("u1", "u2"):
            hs = {"Helicone-RateLimit-Policy": "2;w=60;s=user", "Helicone-User-Id": f"{m}-{user}"}
            assert [post(c, m, hs).status_code for _ in range(3)] == [200, 200, 429]
        for team in ("a", "b"):
            hs = {"Helicone-RateLimit-Policy": "1;w=60;s=team", "Helicone-Property-Team": f"{m}-{team}"}
            assert [post(c, m, hs).status_code for _ in range(2)] == [200, 429]


def test_missing_segment_is_400(proxy):
    with proxy.httpx() as c:
        r = post(c, marker(), {"Helicone-RateLimit-Policy": "2;w=60;s=user"})
    assert r.status_code == 400
    assert r.json()["error"]["header"] == "Helicone-RateLimit-Policy"


@pytest.mark.parametrize("policy", ["10;w=10", "0;w=60", "10;w=60;u=dollars", "abc"])
def test_bad_policy_is_400(proxy, fake, policy):
    m = marker()
    with proxy.httpx() as c:
        r = post(c, m, {"Helicone-RateLimit-Policy": policy})
    assert r.status_code == 400
    assert "[quota];w=[seconds]" in r.json()["error"]["message"]
    assert fake.received(m) == []


def test_lenient_mode_ignores_bad_policy(make_proxy, fake):
    p = make_proxy(["--set", "helicone_strict=false"])
    with p.httpx() as c:
        assert post(c, marker(), {"Helicone-RateLimit-Policy": "10;w=10"}).status_code == 200


def test_cents_limit_blocks_after_spend_crosses_quota(proxy, fake):
    """gpt-4o costs ~0.008 cents per fake call: a 1-cent quota lets calls through until the spend
    crosses 1 cent, and limits the next one."""
    m = marker()
    hs = {"Helicone-RateLimit-Policy": "1;w=60;u=cents;s=user", "Helicone-User-Id": m}
    statuses = []
    with proxy.httpx() as c:
        for _ in range(400):
            r = post(c, m, hs, model="gpt-4o")
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
            proxy.row(r.headers["helicone-id"])  # the spend is recorded with the row
    assert statuses[-1] == 429
    spent = proxy.query("SELECT sum(cost_usd) AS s FROM requests WHERE user_id = ? AND status = 200", (m,))[0]["s"]
    assert spent * 100 >= 1.0  # the call that crossed went through
    assert (spent - proxy.query("SELECT max(cost_usd) AS c FROM requests WHERE user_id = ?", (m,))[0]["c"]) * 100 < 1.0


def test_cache_hits_are_not_counted(proxy, fake):
    m = marker()
    hs = {"Helicone-RateLimit-Policy": "1;w=60;s=user", "Helicone-User-Id": m, "Helicone-Cache-Enabled": "true"}
    with proxy.httpx() as c:
        r = post(c, m, hs)
        assert r.status_code == 200
        proxy.row(r.headers["helicone-id"])
        for _ in range(3):
            r = post(c, m, hs)
            assert r.status_code == 200 and r.headers["helicone-cache"] == "HIT"


def test_two_proxies_share_the_limit_exactly(make_proxy, fake, tmp_path):
    data = tmp_path / "shared"
    a, b = make_proxy(data_dir=data), make_proxy(data_dir=data)
    m = marker()
    statuses = []
    lock = threading.Lock()

    def worker(p):
        with p.httpx() as c:
            r = post(c, m, {"Helicone-RateLimit-Policy": "10;w=60"})
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(a if i % 2 else b,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 10 + [429] * 10
    assert len(fake.received(m)) == 10
    rows = a.wait_rows("SELECT rate_limited FROM requests WHERE request_body LIKE ?", (f"%{m}%",), n=20)
    assert sum(r["rate_limited"] for r in rows) == 10

