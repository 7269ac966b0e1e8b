"""The product brief's examples, run as a user would copy them, against the real proxy.

The brief holds three documents: Helicone's skill card (proxy integration for OpenAI and Anthropic,
custom properties and users, caching, rate limiting, retries, async logging, feedback), Helicone's
guide to LiteLLM through its proxy (OpenAI with `metadata`, a Gemini Router), and the page comparing
proxy and async integration (two Python examples). Every test below starts with the section it runs,
and the snippet is copied as written. The only changes, each marked `# <-`:

* where the call goes: `https://oai.helicone.ai/v1` and friends become the proxy's reverse listener, or
  the app keeps the provider's own URL and gets `HTTPS_PROXY` + the CA from `helicone-addon env`; the
  API host becomes the proxy's local Helicone API; `Helicone-Target-Url` names the fake provider;
* keys: each test has its own provider key (so its cache entries, upstream requests and log rows are
  its own: rows are found by the key's fingerprint); the Helicone key `sk-helicone-xxxx` stays, and
  the proxy is started with it as its accepted `helicone_auth_keys`.

Nothing waits between a user's calls. The log is read after the calls are done.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import openai
import pytest
from conftest import Proxy, free_port

from helicone_addon.cli import env_exports
from helicone_addon.redact import fingerprint

ROOT = Path(__file__).resolve().parents[2]
HELICONE_KEY = "sk-helicone-xxxx"  # the brief's placeholder Helicone key, accepted by the proxies below
REPLY = "Hello from the fake upstream!"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM: no price-map download at import


# -- the proxies -----------------------------------------------------------------------------------

class BriefProxy(Proxy):
    """A proxy with the local Helicone API on and the brief's Helicone key accepted."""

    def __init__(self, tmp: Path, upstream_url: str, data_dir: Path | None = None, api: bool = True) -> None:
        super().__init__(tmp, upstream_url, ["--set", f"helicone_auth_keys={HELICONE_KEY}"], data_dir,
                         api_port=free_port() if api else 0)

    start_timeout = 120.0  # two proxies start side by side on a busy machine

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_key(self) -> str:
        """What the local API wants in `Authorization: Bearer`: its token when it has one."""
        token = self.data_dir / "api-token"
        return token.read_text().strip() if token.exists() else HELICONE_KEY

    def rows_for(self, key: str, n: int) -> list[dict]:
        """The log rows of calls made with provider key `key`, oldest first (waits for n of them)."""
        return self.wait_rows("SELECT * FROM requests WHERE request_headers LIKE ? ORDER BY created_at, rowid",
                              (f"%{fingerprint(key)}%",), n)


@pytest.fixture(scope="module")
def proxies(fake, tmp_path_factory):
    """Two proxy processes on one data dir (started side by side): `a` serves, `b` is the second app's."""
    tmp = tmp_path_factory.mktemp("brief")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    a = BriefProxy(tmp / "a", fake.url, data_dir=tmp / "data")
    b = BriefProxy(tmp / "b", fake.url, data_dir=tmp / "data", api=False)
    errors: list[BaseException] = []

    def start(p):
        try:
            p.start()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(p,)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def proxy(proxies) -> BriefProxy:
    """This module's proxy (with its API and the Helicone key), not conftest's."""
    return proxies[0]


@pytest.fixture
def key(monkeypatch) -> str:
    """This test's own OpenAI key, in OPENAI_API_KEY as the snippets expect."""
    k = f"sk-brief-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", k)
    return k


def https_proxy_env(monkeypatch, p: Proxy) -> None:
    """What `eval "$(helicone-addon env)"` does for the app (README: HTTPS_PROXY mode)."""
    for line in env_exports(str(p.confdir), p.url, str(p.data_dir)).splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            monkeypatch.setenv(name, shlex.split(value)[0])


def base_url_for(mode: str, p: Proxy, monkeypatch) -> str:
    """Where the app's base_url points: the reverse listener, or the provider itself through HTTPS_PROXY."""
    if mode == "reverse":
        return p.reverse_url + "/v1"
    https_proxy_env(monkeypatch, p)
    return "https://api.openai.com/v1"


def text(response) -> str:
    """The answer's text, read the way the app reads it (a stream is consumed chunk by chunk)."""
    if isinstance(response, openai.Stream):
        return "".join(c.choices[0].delta.content or "" for c in response if c.choices)
    return response.choices[0].message.content


# -- skill card: "Proxy Integration (OpenAI Python)" ------------------------------------------------

@pytest.mark.parametrize("mode", ["reverse", "https_proxy"])
def test_proxy_integration_openai(proxy, fake, key, monkeypatch, mode, capsys):
    base_url = base_url_for(mode, proxy, monkeypatch)
    # helicone_proxy.py — Route OpenAI calls through Helicone proxy for logging
    from openai import OpenAI

    client = OpenAI(
        api_key=key,  # <- "sk-your-openai-key"
        base_url=base_url,  # <- "https://oai.helicone.ai/v1"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
        },
    )

    response = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Hello!"}],
    )
    print(response.choices[0].message.content)

    assert capsys.readouterr().out == REPLY + "\n"
    (up,) = fake.received(key)
    assert not [h for h in up.headers if h.startswith("helicone-")]  # Helicone-Auth stays with the proxy
    (row,) = proxy.rows_for(key, 1)
    assert (row["provider"], row["model"], row["status"]) == ("openai", "gpt-4", 200)
    assert row["prompt_tokens"] == 12 and row["completion_tokens"] == 6 and row["cost_usd"] > 0
    assert HELICONE_KEY not in row["request_headers"] and key not in row["request_headers"]


# -- skill card: "Proxy Integration (Anthropic)" ----------------------------------------------------

def test_proxy_integration_anthropic(proxy, fake):
    ant_key = f"sk-ant-brief-{uuid.uuid4().hex}"
    # helicone_anthropic.py — Route Anthropic calls through Helicone proxy
    from anthropic import Anthropic

    client = Anthropic(
        api_key=ant_key,  # <- "sk-ant-xxxx"
        base_url=f"http://127.0.0.1:{proxy.reverse_anthropic_port}",  # <- "https://anthropic.helicone.ai"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
        },
    )

    message = client.messages.create(
        model="claude-3-5-sonnet-20241022",
        max_tokens=1024,
        messages=[{"role": "user", "content": "Explain caching."}],
    )

    assert message.content[0].text == REPLY
    assert len(fake.received(ant_key)) == 1
    (row,) = proxy.rows_for(ant_key, 1)
    assert (row["provider"], row["model"], row["status"]) == ("anthropic", "claude-3-5-sonnet-20241022", 200)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (28, 6, 5)


# -- skill card: "Custom Properties and User Tracking" ----------------------------------------------

def test_custom_properties_user_and_session(proxy, fake, key):
    # custom_properties.py — Add metadata to requests for filtering in the dashboard
    from openai import OpenAI

    client = OpenAI(
        base_url=proxy.reverse_url + "/v1",  # <- "https://oai.helicone.ai/v1"
        default_headers={"Helicone-Auth": "Bearer sk-helicone-xxxx"},
    )

    response = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Help me with billing"}],
        extra_headers={
            "Helicone-User-Id": "user-123",
            "Helicone-Session-Id": "session-abc",
            "Helicone-Property-Feature": "support-chat",
            "Helicone-Property-Environment": "production",
            "Helicone-Property-Ticket-Id": "T-5678",
        },
    )

    assert text(response) == REPLY
    (row,) = proxy.rows_for(key, 1)
    assert (row["user_id"], row["session_id"]) == ("user-123", "session-abc")
    props = {"feature": "support-chat", "environment": "production", "ticket-id": "T-5678"}
    assert json.loads(row["properties"]) == props
    assert proxy.props(row["id"]) == props


# -- skill card: "Caching" ----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
@pytest.mark.parametrize("mode", ["reverse", "https_proxy", "two_processes"])
def test_caching_second_identical_call_is_a_hit(proxies, fake, key, monkeypatch, mode, stream):
    """Back to back, as in the snippet: the second call is answered from the cache, the provider is
    called once. `two_processes`: the second call is another app's, through a second proxy process
    on the same data dir. A stream is read to its end before the next call, as an app does."""
    first_proxy, other = proxies
    base_url = base_url_for("reverse" if mode == "two_processes" else mode, first_proxy, monkeypatch)
    second_base_url = other.reverse_url + "/v1" if mode == "two_processes" else base_url
    streamed = {"stream": True} if stream else {}  # <- added for the streamed variant
    # caching.py — Enable response caching to reduce costs on repeated queries
    from openai import OpenAI

    client = OpenAI(
        base_url=base_url,  # <- "https://oai.helicone.ai/v1"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
            "Helicone-Cache-Enabled": "true",
        },
    )
    second_client = client if mode != "two_processes" else OpenAI(  # <- the other app, through the other proxy
        base_url=second_base_url,
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
            "Helicone-Cache-Enabled": "true",
        },
    )

    # First call hits the API
    response1 = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        **streamed,
    )
    text1 = text(response1)

    # Second identical call returns cached response (no API cost)
    response2 = second_client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        **streamed,
    )
    text2 = text(response2)

    assert text1 == text2 == REPLY
    assert len(fake.received(key)) == 1, "the second identical call went to the provider: the cache missed"
    first, second = first_proxy.rows_for(key, 2)
    assert (first["cache_hit"], second["cache_hit"]) == (0, 1)
    assert second["cache_reference_id"] == first["id"]
    assert second["cost_usd"] == 0 and first["cost_usd"] > 0
    assert second["cache_saved_usd"] == pytest.approx(first["cost_usd"])
    assert first["streamed"] == second["streamed"] == int(stream)


def test_cache_bucket_size_3_fills_then_replays(proxy, fake, key):
    """The bucket call of the Caching snippet, made six times in a row: the first three go to the
    provider and fill the bucket, the next three are answered from it."""
    # caching.py — Enable response caching to reduce costs on repeated queries
    from openai import OpenAI

    client = OpenAI(
        base_url=proxy.reverse_url + "/v1",  # <- "https://oai.helicone.ai/v1"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
            "Helicone-Cache-Enabled": "true",
        },
    )

    answers = []
    for _ in range(6):  # <- the snippet makes this call once
        # Custom cache bucket for grouping
        response3 = client.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=[{"role": "user", "content": "Summarize our FAQ"}],
            extra_headers={"Helicone-Cache-Bucket-Max-Size": "3"},
        )
        answers.append(text(response3))

    assert answers == [REPLY] * 6
    assert len(fake.received(key)) == 3
    rows = proxy.rows_for(key, 6)
    assert [r["cache_hit"] for r in rows] == [0, 0, 0, 1, 1, 1]
    fills = {r["id"] for r in rows[:3]}
    assert all(r["cache_reference_id"] in fills for r in rows[3:])


# -- skill card: "Rate Limiting" ---------------------------------------------------------------------

def test_rate_limit_10_per_60s_per_user(proxy, fake, key):
    # rate_limiting.py — Apply rate limits per user or globally via headers
    from openai import OpenAI

    client = OpenAI(
        base_url=proxy.reverse_url + "/v1",  # <- "https://oai.helicone.ai/v1"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
            "Helicone-RateLimit-Policy": "10;w=60;s=user",  # 10 req per 60s per user
        },
        max_retries=0,  # <- see the 429 now (the SDK would otherwise wait out Retry-After and try again)
    )

    def call(user="user-123"):  # <- the snippet's call, made 11 times (and once more for another user)
        return client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers={
                "Helicone-User-Id": user,
            },
        )

    for _ in range(10):
        assert text(call()) == REPLY
    with pytest.raises(openai.RateLimitError) as e:
        call()
    assert e.value.status_code == 429
    assert e.value.response.headers["helicone-ratelimit-limit"] == "10"
    assert e.value.response.headers["helicone-ratelimit-remaining"] == "0"
    assert 0 < int(e.value.response.headers["retry-after"]) <= 60
    assert len(fake.received(key)) == 10  # the 11th never reached the provider
    assert text(call("user-456")) == REPLY  # per user: another user still gets through
    rows = proxy.rows_for(key, 12)
    assert [r["rate_limited"] for r in rows] == [0] * 10 + [1, 0]
    assert [r["user_id"] for r in rows] == ["user-123"] * 11 + ["user-456"]


# -- skill card: "Retries and Fallbacks" --------------------------------------------------------------

def test_retries_survive_two_failures(proxy, fake, key):
    fake.fail_next(key, 2, 500)  # the provider fails twice, then answers
    # retries.py — Configure automatic retries on failures
    from openai import OpenAI

    client = OpenAI(
        base_url=proxy.reverse_url + "/v1",  # <- "https://oai.helicone.ai/v1"
        default_headers={
            "Helicone-Auth": "Bearer sk-helicone-xxxx",
            "Helicone-Retry-Enabled": "true",
            "Helicone-Retry-Num": "3",
            "Helicone-Retry-Factor": "2",  # Exponential backoff factor
        },
    )

    response = client.chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Analyze this data"}],
    )

    assert text(response) == REPLY
    assert len(fake.received(key)) == 3
    (row,) = proxy.rows_for(key, 1)  # one call from the app: the proxy retried, not the SDK
    assert (row["status"], row["retries"]) == (200, 2)
    assert json.loads(row["attempts"]) == [500, 500, 200]


# -- skill card: "Async Logging (Node.js)", its Python equivalent -----------------------------------

def test_async_logging_without_the_proxy(proxy, fake, key, monkeypatch, tmp_path):
    """No proxy on the path: the SDK talks to the provider, the logger writes the log afterwards.
    (The Node `logger.log(response, {userId, properties})` is `log.meta(...)` around the call here.)"""
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")  # <- the provider (here: the fake one)
    monkeypatch.setenv("HELICONE_ADDON_DATA_DIR", str(tmp_path / "app-data"))  # <- instead of ~/.helicone-addon
    import openai

    from helicone_addon.async_logger import HeliconeAsyncLogger

    log = HeliconeAsyncLogger()
    client = log.instrument(openai.OpenAI())

    with log.meta(user_id="user-123", properties={"feature": "chat"}):
        response = client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "Hello"}],
        )
    log.close()  # <- the app's exit: everything is written

    assert text(response) == REPLY
    (up,) = fake.received(key)
    assert not [h for h in up.headers if h.startswith("helicone-")]
    conn = sqlite3.connect(tmp_path / "app-data" / "helicone.db")
    conn.row_factory = sqlite3.Row
    (row,) = [dict(r) for r in conn.execute("SELECT * FROM requests")]
    conn.close()
    assert (row["source"], row["user_id"], row["model"], row["status"]) == ("logger", "user-123", "gpt-4", 200)
    assert json.loads(row["properties"]) == {"feature": "chat"}
    assert row["prompt_tokens"] == 12 and row["cost_usd"] > 0
    assert proxy.query("SELECT id FROM requests WHERE id = ?", (row["id"],)) == []  # the proxy saw nothing


# -- skill card: "Feedback and Scoring" ----------------------------------------------------------------

def _a_logged_call(proxy, key) -> str:
    client = openai.OpenAI(base_url=proxy.reverse_url + "/v1", default_headers={"Helicone-Auth": f"Bearer {HELICONE_KEY}"})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    return raw.headers["helicone-id"]  # every response carries its log id


def _feedback(proxy, rid: str) -> list[dict]:
    return proxy.query("SELECT rating FROM feedback WHERE request_id = ?", (rid,))


def test_feedback_with_requests(proxy, key):
    good, bad = _a_logged_call(proxy, key), _a_logged_call(proxy, key)
    api, api_key = proxy.api_url, proxy.api_key
    # scoring_api.py — Score requests programmatically
    import requests

    def score_request(request_id: str, rating: bool):
        requests.post(
            f"{api}/v1/request/{request_id}/feedback",  # <- "https://api.helicone.ai/v1/request/..."
            headers={"Authorization": f"Bearer {api_key}"},  # <- "Bearer sk-helicone-xxxx"
            json={"rating": rating},
        )

    score_request(good, True)
    score_request(bad, False)

    assert _feedback(proxy, good) == [{"rating": 1}]
    assert _feedback(proxy, bad) == [{"rating": 0}]


CURL_FEEDBACK = """\
# Score a request via the Helicone API for quality tracking
curl -X POST https://api.helicone.ai/v1/request/{request-id}/feedback \\
  -H "Authorization: Bearer sk-helicone-xxxx" \\
  -H "Content-Type: application/json" \\
  -d '{"rating": true}'
"""


def test_feedback_with_curl(proxy, key):
    rid = _a_logged_call(proxy, key)
    script = (CURL_FEEDBACK.replace("https://api.helicone.ai", proxy.api_url)  # <- the local API
              .replace("{request-id}", rid).replace("sk-helicone-xxxx", proxy.api_key))
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"data": None, "error": None}
    assert _feedback(proxy, rid) == [{"rating": 1}]


# -- LiteLLM guide: "OpenAI and Azure Integration" -----------------------------------------------------

@pytest.fixture
def litellm_module(monkeypatch):
    """LiteLLM, with the module settings the snippets change put back afterwards."""
    import litellm

    for name in ("api_base", "headers", "success_callback", "_async_success_callback", "callbacks"):
        monkeypatch.setattr(litellm, name, getattr(litellm, name))
    monkeypatch.setenv("HELICONE_API_KEY", HELICONE_KEY)  # the guide reads it from the environment
    return litellm


@pytest.mark.parametrize("mode", ["reverse", "https_proxy"])
def test_litellm_completion_with_metadata(proxy, fake, key, litellm_module, monkeypatch, capsys, mode):
    """LiteLLM sends `metadata` to its own logging callbacks only: through the proxy the call is logged,
    but `Helicone-Property-Hello` reaches neither the proxy (no header, nothing in the body) nor the log."""
    base_url = base_url_for(mode, proxy, monkeypatch)
    # Configure LiteLLM to use the Helicone proxy
    import os

    import litellm
    from litellm import completion  # noqa: F401 - as in the guide

    litellm.api_base = base_url  # <- "https://oai.helicone.ai/v1"
    litellm.headers = {"Helicone-Auth": f"Bearer {os.getenv('HELICONE_API_KEY')}"}

    # Make API calls as usual
    response = litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "how does a court case get to the Supreme Court?"}],
        metadata={
            "Helicone-Property-Hello": "World"
        }
    )
    print(response)

    assert REPLY in capsys.readouterr().out
    (row,) = proxy.rows_for(key, 1)
    assert (row["status"], row["model"], row["provider"]) == (200, "gpt-3.5-turbo", "openai")
    sent = {k.lower() for k in json.loads(row["request_headers"])}
    assert "helicone-auth" in sent and "helicone-property-hello" not in sent
    assert "metadata" not in json.loads(row["request_body"]) and "World" not in row["request_body"]
    assert row["properties"] in (None, "{}") and proxy.props(row["id"]) == {}


def test_litellm_property_as_a_header_is_logged(proxy, fake, key, litellm_module):
    """The forms that work through the proxy (README, "LiteLLM and Helicone-* metadata"): the property
    as a header, in `litellm.headers` or in a call's `extra_headers` that also repeats Helicone-Auth:
    a call's `headers` / `extra_headers` replace `litellm.headers` rather than adding to them."""
    import os

    import litellm

    litellm.api_base = proxy.reverse_url + "/v1"
    litellm.headers = {"Helicone-Auth": f"Bearer {os.getenv('HELICONE_API_KEY')}", "Helicone-Property-Hello": "World"}
    messages = [{"role": "user", "content": "how does a court case get to the Supreme Court?"}]
    litellm.completion(model="gpt-3.5-turbo", messages=messages)
    litellm.headers = {"Helicone-Auth": f"Bearer {os.getenv('HELICONE_API_KEY')}"}
    litellm.completion(model="gpt-3.5-turbo", messages=messages,
                       extra_headers={**litellm.headers, "Helicone-Property-Hello": "Per call"})
    with pytest.raises(litellm.AuthenticationError):  # extra_headers alone: litellm.headers is dropped
        litellm.completion(model="gpt-3.5-turbo", messages=messages, extra_headers={"Helicone-Property-Hello": "x"},
                           num_retries=0)
    first, second, refused = proxy.rows_for(key, 3)
    assert proxy.props(first["id"]) == {"hello": "World"} and proxy.props(second["id"]) == {"hello": "Per call"}
    assert refused["status"] == 401 and "helicone-auth" not in json.loads(refused["request_headers"])
    assert len(fake.received(key)) == 2


def test_litellm_metadata_reaches_the_log_through_its_helicone_callback(proxy, fake, key, litellm_module, monkeypatch):
    """Where LiteLLM does read `Helicone-*` metadata keys: its `helicone` success callback posts them as
    the `meta` of an async log to HELICONE_API_BASE, here the proxy's local Helicone API."""
    monkeypatch.setenv("HELICONE_API_BASE", proxy.api_url)
    monkeypatch.setenv("HELICONE_API_KEY", proxy.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")  # the call itself goes straight to the provider
    import litellm

    litellm.success_callback = ["helicone"]
    litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "how does a court case get to the Supreme Court?"}],
        metadata={"Helicone-Property-Hello": "World"},
    )
    assert len(fake.received(key)) == 1
    (row,) = proxy.wait_rows("SELECT r.* FROM requests r JOIN properties p ON p.request_id = r.id "
                             "WHERE r.source = 'async' AND p.key = 'hello' AND p.value = 'World'")
    assert row["model"] == "gpt-3.5-turbo" and row["status"] == 200


# -- LiteLLM guide: "Gemini Integration" ---------------------------------------------------------------

GEMINI_KEY = "AIza-brief-gemini-key-0123456789"


def _gemini_router(api_base: str | None, target_url: str | None):
    """The guide's Router, as configured there. Its monkey patch of `VertexBase._check_custom_proxy` is
    left out: the proxy needs none, and the patch no longer fits LiteLLM (which now also passes
    `model=...`, so the patched function raises TypeError). Unpatched, LiteLLM appends
    `/models/{model}:generateContent` to this api_base, i.e. after its `?key=` (so into the key's value)
    and sends the key again as `x-goog-api-key`; the proxy forwards the URL as it is and redacts both."""
    import litellm  # noqa: F401 - as in the guide
    from litellm.router import Router

    HELICONE_API_KEY = os.getenv("HELICONE_API_KEY")
    GEMINI_API_KEY = os.getenv("GEMINI_API_KEY")
    MODEL_NAME = "gemini-1.5-flash-latest"
    litellm_params = {
        "model": f"gemini/{MODEL_NAME}",
        "api_base": f"{api_base}/v1beta/models/{MODEL_NAME}:generateContent?key={GEMINI_API_KEY}",  # <- gateway.helicone.ai
        "extra_headers": {
            "Content-Type": "application/json",
            "Helicone-Auth": f"Bearer {HELICONE_API_KEY}",
            "Helicone-Target-Url": target_url,  # <- "https://generativelanguage.googleapis.com"
        },
        "custom_llm_provider": "gemini",
    }
    if api_base is None:  # <- HTTPS_PROXY: the app calls Google itself, no gateway URL, no target
        del litellm_params["api_base"], litellm_params["extra_headers"]["Helicone-Target-Url"]
    return Router(model_list=[{"model_name": "gemini-hconeai", "litellm_params": litellm_params}])


def _run_gemini_example(router, capsys) -> None:
    async def main():
        response = await router.acompletion(
            model="gemini-hconeai",
            messages=[{"role": "user", "content": "Say 'Hello World'"}]
        )
        print(f"Response: {response.choices[0].message.content}")

    asyncio.run(main())
    assert capsys.readouterr().out == f"Response: {REPLY}\n"


@pytest.mark.parametrize("mode", ["gateway", "https_proxy"])
def test_litellm_gemini_router(proxy, fake, litellm_module, monkeypatch, capsys, mode):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY + mode)
    if mode == "gateway":
        router = _gemini_router(proxy.reverse_url, fake.url)  # any proxy listener is a gateway
    else:
        https_proxy_env(monkeypatch, proxy)
        router = _gemini_router(None, None)
    _run_gemini_example(router, capsys)

    (up,) = fake.received(GEMINI_KEY + mode)
    assert up.path.startswith("/v1beta/models/gemini-1.5-flash-latest:generateContent")
    assert not [h for h in up.headers if h.startswith("helicone-")]
    (row,) = proxy.rows_for(GEMINI_KEY + mode, 1)
    assert (row["provider"], row["model"], row["status"]) == ("gemini", "gemini-1.5-flash-latest", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 6)
    assert GEMINI_KEY not in json.dumps(row)  # the key (header or ?key=) is redacted


# -- proxy vs async: the two Python examples ------------------------------------------------------------
# Written for openai < 1 (`openai.api_base`, `openai.ChatCompletion.create(headers=...)`), which the
# installed openai removed; here in its spelling of the same module-level calls.

@pytest.fixture
def openai_module(monkeypatch):
    """openai's module-level client, fresh (it reads OPENAI_API_KEY when first used, and keeps it in
    `openai.api_key`) and put back after."""
    for name in ("base_url", "api_key", "api_type"):
        monkeypatch.setattr(openai, name, None)
    openai._reset_client()
    yield openai
    openai._reset_client()


def test_proxy_vs_async_dedicated_domain(proxy, key, openai_module, capsys):
    import openai

    # Set the API base URL to Helicone's proxy
    openai.base_url = proxy.reverse_url + "/v1/"  # <- openai.api_base = "https://oai.helicone.ai/v1" (openai >= 1 wants the "/")

    # Generate a chat completion request
    response = openai.chat.completions.create(  # <- openai.ChatCompletion.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hi!"}],
        extra_headers={  # <- headers=
            "Helicone-Auth": "Bearer sk-helicone-xxxx"  # <- "Bearer [HELICONE_API_KEY]"
        }
    )

    print(response)
    assert REPLY in capsys.readouterr().out
    (row,) = proxy.rows_for(key, 1)
    assert (row["provider"], row["model"], row["status"]) == ("openai", "gpt-4o-mini", 200)


def test_proxy_vs_async_gateway(proxy, fake, key, openai_module, capsys):
    import openai

    openai.base_url = proxy.reverse_url + "/"  # <- openai.api_base = "https://gateway.helicone.ai"
    response = openai.chat.completions.create(  # <- openai.ChatCompletion.create(
        model="[DEPLOYMENT]",
        messages=[{"role": "user", "content": "Say hi!"}],
        extra_headers={  # <- headers=
            "Helicone-Auth": "Bearer sk-helicone-xxxx",  # <- "Bearer [HELICONE_API_KEY]"
            "Helicone-Target-Url": fake.url,  # <- "https://api.lemonfox.ai"
            "Helicone-Target-Provider": "LemonFox",  # The provider name
        }
    )
    print(response)

    assert REPLY in capsys.readouterr().out
    (up,) = fake.received(key)
    assert up.path == "/chat/completions"  # the gateway keeps the path it was given
    (row,) = proxy.rows_for(key, 1)
    assert (row["provider"], row["model"], row["status"]) == ("lemonfox", "[DEPLOYMENT]", 200)


# -- README: "Query the log" -----------------------------------------------------------------------------

def readme_sqlite_utils_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Query the log", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in section.splitlines() if "sqlite-utils " in ln and not ln.lstrip().startswith("#")]


def test_readme_sqlite_utils_lines_run_as_typed(proxy, key, tmp_path):
    """README's lines, typed in the checkout after the install command, against a log the proxy wrote."""
    lines = readme_sqlite_utils_lines()
    assert lines and all(ln.startswith(".venv/bin/sqlite-utils ") for ln in lines), lines
    client = openai.OpenAI(base_url=proxy.reverse_url + "/v1", default_headers={"Helicone-Auth": f"Bearer {HELICONE_KEY}"})
    for feature in ("search", "search", "chat"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"Helicone-Property-Feature": feature})
    text(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
    proxy.rows_for(key, 4)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".helicone-addon").symlink_to(proxy.data_dir)  # the proxy's log where README expects it
    venv_bin = Path(sys.executable).parent  # README's .venv/bin, wherever this test's venv is
    outs = []
    for line in lines:
        cmd = line if (ROOT / ".venv" / "bin").is_dir() else line.replace(".venv/bin/", f"{venv_bin}/", 1)
        r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "HOME": str(home)})
        assert r.returncode == 0, f"{line}\n{r.stderr}"
        table = [ln for ln in r.stdout.splitlines() if ln.strip()]
        assert len(table) >= 3, f"{line}\n{r.stdout}"  # header, rule, at least one row
        outs.append(r.stdout)
    everything = "\n".join(outs)
    for expected in ("gpt-4o-mini", "search", "chat"):  # models, a streamed call, property values
        assert expected in everything, everything
