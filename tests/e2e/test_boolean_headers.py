"""Boolean Helicone headers through the real proxy: `true`/`false` in any case, anything else a 400
naming the header in strict mode (the default), ignored in lenient mode."""

from __future__ import annotations

import uuid

import openai
import pytest


def ask(client, m: str, headers: dict):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": m}], extra_headers=headers)


def test_cache_enabled_yes_is_a_400_naming_the_header(proxy, fake):
    m = f"b-{uuid.uuid4().hex[:10]}"
    client = proxy.openai(via="reverse")
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, m, {"Helicone-Cache-Enabled": "yes"})
    assert e.value.status_code == 400
    err = e.value.response.json()["error"]
    assert err["type"] == "invalid_helicone_header" and err["header"] == "Helicone-Cache-Enabled"
    assert "'yes'" in err["message"] and "accepted: true or false" in err["message"]
    assert e.value.response.headers["helicone-error"] == "true"
    assert fake.received(m) == []  # nothing went upstream
    row = proxy.row(e.value.response.headers["helicone-id"])
    assert row["status"] == 400 and "Helicone-Cache-Enabled" in row["error"]


def test_true_in_any_case_turns_the_cache_on(proxy, fake):
    m = f"b-{uuid.uuid4().hex[:10]}"
    client = proxy.openai(via="reverse")
    first = ask(client, m, {"Helicone-Cache-Enabled": "TRUE"})
    assert first.headers["helicone-cache"] == "MISS"
    assert ask(client, m, {"Helicone-Cache-Enabled": "False"}).headers.get("helicone-cache") is None
    assert len(fake.received(m)) == 2


def test_lenient_mode_ignores_a_bad_boolean(make_proxy, fake):
    """(The warning it logs is checked in tests/unit/test_headers.py: the proxies here run with -q.)"""
    p = make_proxy(["--set", "helicone_strict=false"])
    m = f"b-{uuid.uuid4().hex[:10]}"
    raw = ask(p.openai(via="reverse"), m, {"Helicone-Cache-Enabled": "yes", "Helicone-Omit-Request": "TRUE"})
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream!"
    assert raw.headers.get("helicone-cache") is None  # ignored: the cache stays off
    assert len(fake.received(m)) == 1
    row = p.row(raw.headers["helicone-id"])
    assert row["status"] == 200 and row["request_body"] is None  # the good boolean beside it still counts
