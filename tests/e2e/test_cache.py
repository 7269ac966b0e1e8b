"""Header-driven response cache through the real proxy, with the real SDKs."""

from __future__ import annotations

import json
import time
import uuid

import pytest


def marker() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def call(client, text: str, headers: dict, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], extra_headers=headers, **kw)
    return raw


def test_second_identical_call_is_a_hit(proxy, fake):
    m = marker()
    client = proxy.openai()
    h = {"Helicone-Cache-Enabled": "true"}
    first = call(client, m, h)
    assert first.headers["helicone-cache"] == "MISS"
    proxy.row(first.headers["helicone-id"])  # the cache is written before the row
    second = call(client, m, h)
    assert second.headers["helicone-cache"] == "HIT"
    assert second.headers["helicone-cache-bucket-idx"] == "0"
    assert int(second.headers["helicone-cache-latency"]) >= 0
    assert second.headers["helicone-id"] != first.headers["helicone-id"]
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(fake.received(m)) == 1
    orig = proxy.row(first.headers["helicone-id"])
    hit = proxy.row(second.headers["helicone-id"])
    assert hit["cache_hit"] == 1 and orig["cache_hit"] == 0
    assert hit["cache_reference_id"] == orig["id"]
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (orig["prompt_tokens"], orig["completion_tokens"])
    assert hit["cost_usd"] == 0
    assert orig["cost_usd"] > 0 and hit["cache_saved_usd"] == pytest.approx(orig["cost_usd"])


def test_anthropic_hit(proxy, fake):
    m = marker()
    client = proxy.anthropic()
    kw = dict(model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": m}],
              extra_headers={"Helicone-Cache-Enabled": "true"})
    r1 = client.messages.with_raw_response.create(**kw)
    proxy.row(r1.headers["helicone-id"])
    r2 = client.messages.with_raw_response.create(**kw)
    assert r2.headers["helicone-cache"] == "HIT"
    assert r2.parse().content[0].text == "Hello from the fake upstream!"
    assert len(fake.received(m)) == 1


def test_different_api_key_or_seed_is_a_miss(proxy, fake):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true"}
    r = call(proxy.openai(api_key="sk-key-one-aaaaaaaa"), m, h)
    proxy.row(r.headers["helicone-id"])
    assert call(proxy.openai(api_key="sk-key-two-bbbbbbbb"), m, h).headers["helicone-cache"] == "MISS"
    r = call(proxy.openai(api_key="sk-key-one-aaaaaaaa"), m, dict(h, **{"Helicone-Cache-Seed": "other"}))
    assert r.headers["helicone-cache"] == "MISS"
    assert len(fake.received(m)) == 3


def test_ignore_keys_share_an_entry(proxy, fake):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true", "Helicone-Cache-Ignore-Keys": "user,metadata"}
    client = proxy.openai()
    r = call(client, m, h, user="u1")
    proxy.row(r.headers["helicone-id"])
    assert call(client, m, h, user="u2").headers["helicone-cache"] == "HIT"
    assert call(client, m, h, user="u2", temperature=0.5).headers["helicone-cache"] == "MISS"


def test_bucket_of_three(proxy, fake):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true", "Helicone-Cache-Bucket-Max-Size": "3"}
    client = proxy.openai()
    for _ in range(3):
        r = call(client, m, h)
        assert r.headers["helicone-cache"] == "MISS"
        proxy.row(r.headers["helicone-id"])
    idx = set()
    refs = set()
    for _ in range(24):
        r = call(client, m, h)
        assert r.headers["helicone-cache"] == "HIT"
        idx.add(r.headers["helicone-cache-bucket-idx"])
        refs.add(proxy.row(r.headers["helicone-id"])["cache_reference_id"])
    assert len(fake.received(m)) == 3
    assert idx == {"0", "1", "2"}
    assert len(refs) == 3


def test_ttl_expiry(proxy, fake):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true", "Cache-Control": "max-age=1"}
    client = proxy.openai()
    proxy.row(call(client, m, h).headers["helicone-id"])
    assert call(client, m, h).headers["helicone-cache"] == "HIT"
    time.sleep(1.3)
    assert call(client, m, h).headers["helicone-cache"] == "MISS"
    assert len(fake.received(m)) == 2


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_cached_stream_replays_as_a_valid_stream(proxy, fake, sdk):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true"}

    def run():
        if sdk == "openai":
            raw = proxy.openai().chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": m}], stream=True,
                stream_options={"include_usage": True}, extra_headers=h)
            text, usage = "", None
            for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if chunk.usage:
                    usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            return raw.headers, text, usage
        client = proxy.anthropic()
        with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=20,
                                    messages=[{"role": "user", "content": m}], extra_headers=h) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
            hdrs = s.response.headers
        return hdrs, text, (final.usage.input_tokens, final.usage.output_tokens)

    h1, t1, u1 = run()
    assert h1["helicone-cache"] == "MISS"
    proxy.row(h1["helicone-id"])
    h2, t2, u2 = run()
    assert h2["helicone-cache"] == "HIT"
    assert h2["content-type"].startswith("text/event-stream")
    assert (t2, u2) == (t1, u1) and t1 == "Hello from the fake upstream!"
    assert len(fake.received(m)) == 1
    hit = proxy.row(h2["helicone-id"])
    assert hit["streamed"] == 1 and hit["cache_hit"] == 1 and hit["completion_tokens"] == 6


def test_errors_are_not_cached(proxy, fake):
    import openai

    m = marker()
    h = {"Helicone-Cache-Enabled": "true", "x-fake-status": "500"}
    client = proxy.openai()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as e:
            call(client, m, h)
        proxy.row(e.value.response.headers["helicone-id"])
    assert len(fake.received(m)) == 2


@pytest.mark.parametrize("value", ["0", "21", "abc"])
def test_bad_bucket_is_400(proxy, fake, value):
    m = marker()
    with proxy.httpx() as c:
        r = c.post("https://api.openai.com/v1/chat/completions",
                   headers={"Helicone-Cache-Enabled": "true", "Helicone-Cache-Bucket-Max-Size": value},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": m}]})
    assert r.status_code == 400
    assert r.json()["error"]["header"] == "Helicone-Cache-Bucket-Max-Size"
    assert fake.received(m) == []


def test_negative_max_age_is_400(proxy):
    with proxy.httpx() as c:
        r = c.post("https://api.openai.com/v1/chat/completions",
                   headers={"Helicone-Cache-Enabled": "true", "Cache-Control": "max-age=-1"},
                   json={"model": "gpt-4o-mini", "messages": []})
    assert r.status_code == 400
    assert "max-age" in json.dumps(r.json()).lower()


def test_cache_holds_no_secret_in_clear(proxy):
    secret = "sk-cache-secret-" + uuid.uuid4().hex
    m = marker()
    r = call(proxy.openai(api_key=secret), m, {"Helicone-Cache-Enabled": "true"})
    proxy.row(r.headers["helicone-id"])
    for path in (proxy.data_dir / "cache").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_hit_does_not_replay_our_own_headers(proxy, fake):
    m = marker()
    h = {"Helicone-Cache-Enabled": "true", "Helicone-Retry-Enabled": "true", "Helicone-RateLimit-Policy": "100;w=60"}
    client = proxy.openai()
    first = call(client, m, h)
    assert first.headers["helicone-retries"] == "0"
    proxy.row(first.headers["helicone-id"])
    second = call(client, m, h)
    assert second.headers["helicone-cache"] == "HIT"
    assert "helicone-retries" not in second.headers and "helicone-ratelimit-limit" not in second.headers


# -- read-your-writes: users repeat a call at once ------------------------------------------------
@pytest.mark.parametrize("via", ["proxy", "reverse"], ids=["https_proxy", "base_url"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_back_to_back_identical_calls_miss_then_hit(proxy, fake, via, stream):
    """No pause, no waiting for a row: the entry is saved before the client has the first answer."""
    client = proxy.openai(via)
    h = {"Helicone-Cache-Enabled": "true"}
    for _ in range(3):  # three fresh prompts, each called twice back to back
        m = marker()
        first = call(client, m, h, stream=stream)
        first_text = first.http_response.read().decode() if stream else first.parse().choices[0].message.content
        second = call(client, m, h, stream=stream)
        second_text = second.http_response.read().decode() if stream else second.parse().choices[0].message.content
        assert (first.headers["helicone-cache"], second.headers["helicone-cache"]) == ("MISS", "HIT")
        assert second_text == first_text
        assert len(fake.received(m)) == 1
    if stream:  # a streamed hit has a time to first token, like any stream
        hit = proxy.row(second.headers["helicone-id"])
        assert hit["streamed"] == 1 and hit["ttft_ms"] is not None and hit["ttft_ms"] >= 0


def test_back_to_back_across_two_proxies_on_one_data_dir(make_proxy, fake, tmp_path):
    """Two proxy processes on one data dir: a call filled through A is a HIT through B at once."""
    shared = tmp_path / "shared-data"
    a, b = make_proxy(data_dir=shared), make_proxy(data_dir=shared)
    h = {"Helicone-Cache-Enabled": "true"}
    for stream in (False, True, False):
        m = marker()
        first = call(a.openai("reverse"), m, h, stream=stream)
        second = call(b.openai("reverse"), m, h, stream=stream)
        assert (first.headers["helicone-cache"], second.headers["helicone-cache"]) == ("MISS", "HIT")
        assert len(fake.received(m)) == 1
