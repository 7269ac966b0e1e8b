"""The local Helicone API, started by the real proxy: feedback, scores, properties, query, async logs."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import conftest
import httpx
import pytest
from conftest import Proxy

from helicone_addon.security import read_token


def _unit_module():
    """tests/unit/test_api_filters.py: its bad async-log payloads are replayed here over HTTP."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "unit" / "test_api_filters.py"
    spec = importlib.util.spec_from_file_location("_api_filter_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_cases = _unit_module()
VALIDATION_CASES, good = _cases.VALIDATION_CASES, _cases.good


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


class Api:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)

    def __getattr__(self, name):
        return getattr(self.client, name)

    def query(self, flt, **kw) -> list[dict]:
        r = self.client.post("/v1/request/query", json={"filter": flt, "limit": 100, **kw})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["error"] is None
        return body["data"]

    def ids(self, flt, **kw) -> set[str]:
        return {r["request_id"] for r in self.query(flt, **kw)}

    def get(self, rid: str, **kw) -> dict:
        r = self.client.get(f"/v1/request/{rid}", **kw)
        assert r.status_code == 200, r.text
        return r.json()["data"]


class ApiProxy(Proxy):
    """The conftest proxy with its local API on a free port."""

    def __init__(self, tmp, upstream_url, extra=None) -> None:
        super().__init__(tmp, upstream_url, extra, api_port=conftest.free_port())

    def start(self) -> ApiProxy:
        super().start()
        conftest.wait_port(self.api_port, proc=self.proc)
        self.token = read_token(self.data_dir)
        self.api = Api(self.api_port, self.token)
        return self


@pytest.fixture(scope="module")
def api_proxy(fake, tmp_path_factory):
    p = ApiProxy(tmp_path_factory.mktemp("apiproxy"), fake.url).start()
    yield p
    p.stop()


def chat(client, text: str, headers: dict | None = None, model: str = "gpt-4o-mini"):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers or {},
    )
    return raw.headers["helicone-id"], raw


def test_feedback_and_scores_on_a_proxied_call(api_proxy):
    p, api = api_proxy, api_proxy.api
    client = p.openai("proxy")
    rid, _ = chat(client, marker(), {"Helicone-User-Id": "fb-user", "Helicone-Property-Feature": "fb"})

    # right after the call (the row may still be in the writer's queue): the API waits for it
    r = api.post(f"/v1/request/{rid}/feedback", json={"rating": True})
    assert (r.status_code, r.json()) == (201, {"data": None, "error": None})
    r = api.post(f"/v1/request/{rid}/score", json={"scores": {"accuracy": 9, "helpful": True, "toxic": False}})
    assert (r.status_code, r.json()) == (201, {"data": None, "error": None})

    rec = api.get(rid)
    assert rec["request_id"] == rid
    assert rec["feedback_rating"] is True
    assert rec["scores"] == {"accuracy": 9, "helpful": 1, "toxic": 0}
    assert rec["request_user_id"] == "fb-user"
    assert rec["properties"] == {"feature": "fb"}
    assert rec["model"] == "gpt-4o-mini" and rec["response_status"] == 200 and rec["provider"] == "openai"
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"]) == (12, 6, 18)
    assert rec["cost"] > 0 and rec["delay_ms"] > 0
    assert rec["request_body"]["model"] == "gpt-4o-mini"
    assert rec["response_body"]["choices"][0]["message"]["content"] == "Hello from the fake upstream!"
    assert rec["source"] == "proxy"

    # the same through the query API, and feedback can be changed
    (q,) = api.query({"request": {"id": {"equals": rid}}})
    assert q["feedback_rating"] is True and q["scores"]["accuracy"] == 9
    assert api.post(f"/v1/request/{rid}/feedback", json={"rating": False}).status_code == 201
    assert api.post(f"/v1/request/{rid}/score", json={"scores": {"accuracy": 3}}).status_code == 201
    rec = api.get(rid)
    assert rec["feedback_rating"] is False and rec["scores"]["accuracy"] == 3
    assert rid in api.ids({"feedback": {"rating": {"equals": False}}})
    assert rid in api.ids({"request_response_rmt": {"scores": {"accuracy": {"lte": 3}}}})
    assert rid not in api.ids({"request_response_rmt": {"scores": {"accuracy": {"gt": 3}}}})
    # without the body
    slim = api.get(rid, params={"includeBody": "false"})
    assert slim["request_body"] is None and slim["response_body"] is None and slim["feedback_rating"] is False


def test_query_filters_user_property_model_status_time(api_proxy):
    p, api = api_proxy, api_proxy.api
    client = p.openai("proxy")
    tag = marker()
    t_before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    a1, _ = chat(client, tag, {"Helicone-User-Id": f"{tag}-alice", "Helicone-Property-Run": tag,
                               "Helicone-Property-Kind": "a"})
    a2, _ = chat(client, tag, {"Helicone-User-Id": f"{tag}-alice", "Helicone-Property-Run": tag,
                               "Helicone-Property-Kind": "b"}, model="gpt-4o")
    b1, _ = chat(client, tag, {"Helicone-User-Id": f"{tag}-bob", "Helicone-Property-Run": tag,
                               "Helicone-Property-Kind": "a"})
    import openai

    with pytest.raises(openai.RateLimitError):
        chat(client, tag, {"Helicone-User-Id": f"{tag}-bob", "Helicone-Property-Run": tag,
                           "Helicone-Property-Kind": "c", "Helicone-Request-Id": (e1 := str(uuid.uuid4())),
                           "x-fake-status": "429"})
    time.sleep(0.05)
    t_mid = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    c1, _ = chat(client, tag, {"Helicone-User-Id": f"{tag}-carol", "Helicone-Property-Run": tag})
    everything = {a1, a2, b1, e1, c1}
    run = {"properties": {"run": {"equals": tag}}}
    deadline = time.monotonic() + 10
    while api.ids(run) != everything and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.ids(run) == everything

    def both(leaf):
        return api.ids({"left": run, "operator": "and", "right": leaf})

    assert api.ids({"request": {"user_id": {"equals": f"{tag}-alice"}}}) == {a1, a2}
    assert api.ids({"properties": {"kind": {"equals": "a"}, "run": {"equals": tag}}}) == {a1, b1}
    assert both({"properties": {"kind": {"not-equals": "a"}}}) == {a2, e1, c1}
    assert both({"request_response_rmt": {"model": {"equals": "gpt-4o"}}}) == {a2}
    assert both({"request": {"model": {"equals": "gpt-4o-mini"}}}) == {a1, b1, e1, c1}
    assert both({"response": {"status": {"equals": 429}}}) == {e1}
    assert both({"response": {"status": {"lt": 400}}}) == {a1, a2, b1, c1}
    assert both({"request": {"created_at": {"gte": t_mid}}}) == {c1}
    assert both({"request": {"created_at": {"lt": t_mid}}}) == {a1, a2, b1, e1}
    assert both({"request_response_rmt": {"request_created_at": {"gte": t_before}}}) == everything
    assert both({"left": {"request": {"user_id": {"equals": f"{tag}-bob"}}}, "operator": "or",
                 "right": {"request_response_rmt": {"model": {"equals": "gpt-4o"}}}}) == {a2, b1, e1}
    # sort, limit, offset
    ordered = [r["request_id"] for r in api.query(run, sort={"created_at": "asc"})]
    assert ordered == [a1, a2, b1, e1, c1]
    page = [r["request_id"] for r in api.query(run, sort={"created_at": "asc"}, limit=2, offset=1)]
    assert page == [a2, b1]
    err = api.get(e1)
    assert err["response_status"] == 429 and err["error"]
    # query-ids keeps the order asked for and skips unknown ids
    r = api.post("/v1/request/query-ids", json={"requestIds": [c1, str(uuid.uuid4()), a1]})
    assert r.status_code == 200 and [x["request_id"] for x in r.json()["data"]] == [c1, a1]


def test_put_property(api_proxy):
    p, api = api_proxy, api_proxy.api
    rid, _ = chat(p.openai("proxy"), marker(), {"Helicone-Property-Keep": "1"})
    r = api.put(f"/v1/request/{rid}/property", json={"key": "Outcome", "value": "accepted"})
    assert (r.status_code, r.json()) == (200, {"data": None, "error": None})
    assert api.get(rid)["properties"] == {"keep": "1", "Outcome": "accepted"}
    assert rid in api.ids({"properties": {"outcome": {"equals": "accepted"}}})
    assert p.props(rid) == {"keep": "1", "Outcome": "accepted"}


def test_unknown_ids_and_invalid_bodies(api_proxy):
    api = api_proxy.api
    unknown = str(uuid.uuid4())
    probes = [("POST", f"/v1/request/{unknown}/feedback", {"rating": True}),
              ("POST", f"/v1/request/{unknown}/score", {"scores": {"a": 1}}),
              ("PUT", f"/v1/request/{unknown}/property", {"key": "k", "value": "v"}),
              ("GET", f"/v1/request/{unknown}", None)]
    # each waits up to row_wait (2 s) for a row still in the writer's queue: ask in parallel
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda m: api.request(m[0], m[1], json=m[2]), probes))
    for (_, path, _), r in zip(probes, replies, strict=True):
        assert (r.status_code, r.json()) == (404, {"data": None, "error": "Request not found"}), path
    r = api.post("/v1/request/not-a-uuid/feedback", json={"rating": True})
    assert (r.status_code, r.json()["error"]) == (400, "Invalid requestId: must be a valid UUID")

    rid, _ = chat(api_proxy.openai("proxy"), marker())
    cases = [
        (f"/v1/request/{rid}/feedback", {"rating": "yes"}, "'rating' must be true or false"),
        (f"/v1/request/{rid}/feedback", {}, "'rating' must be true or false"),
        (f"/v1/request/{rid}/score", {"scores": {"a": 0.5}}, "Score value for key 'a' must be an integer"),
        (f"/v1/request/{rid}/score", {"scores": {"a": "1"}}, "Score value for key 'a' must be an integer"),
        (f"/v1/request/{rid}/score", {"scores": {}}, "'scores' must be a non-empty object"),
        (f"/v1/request/{rid}/score", {"rating": 1}, "'scores' must be a non-empty object"),
        ("/v1/request/query", {"filter": {"request": {"colour": {"equals": "x"}}}}, "unknown column 'colour'"),
        ("/v1/request/query", {"filter": {"request": {"user_id": {"gt": "x"}}}}, "operator 'gt' is not allowed"),
        ("/v1/request/query", {"filter": "all", "limit": -1}, "limit"),
        ("/v1/request/query", {"filter": "all", "sort": {"id; drop": "asc"}}, "sort: unknown key"),
    ]
    for path, body, message in cases:
        r = api.post(path, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert message in r.json()["error"], (path, body, r.text)
        assert r.json()["data"] is None
    r = api.post("/v1/request/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("Invalid JSON body")
    r = api.put(f"/v1/request/{rid}/property", json={"key": "", "value": "v"})
    assert r.status_code == 400 and "'key'" in r.json()["error"]
    assert api.client.get(f"/v1/request/{rid}/feedback").status_code == 405
    assert api.client.get("/v1/nothing-here").status_code == 404


def test_legacy_feedback_route(api_proxy):
    api = api_proxy.api
    rid, _ = chat(api_proxy.openai("proxy"), marker())
    r = api.post("/v1/feedback", json={"helicone-id": rid, "rating": True})
    assert r.status_code == 200
    assert r.json() == {"message": "Feedback added successfully.", "helicone_id": rid}
    assert api.get(rid)["feedback_rating"] is True


# -- async log ingestion -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "message"), VALIDATION_CASES)
def test_async_log_validation_messages(api_proxy, payload, message):
    r = api_proxy.api.post("/custom/v1/log", content=json.dumps(payload).encode(),
                           headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"error": message}


def test_async_log_payload_too_large(api_proxy):
    d = good()
    d["providerRequest"]["json"] = {"model": "gpt-4o-mini", "prompt": "x" * (10 * 1024 * 1024)}
    r = api_proxy.api.post("/oai/v1/log", json=d)
    assert (r.status_code, r.text) == (400, "Payload too large")
    d["providerRequest"]["json"]["prompt"] = "x" * (9 * 1024 * 1024)  # just under: accepted
    r = api_proxy.api.post("/oai/v1/log", json=d)
    assert (r.status_code, r.text) == (200, "ok")


def openai_log_payload(tag: str, **resp) -> dict:
    import fakes.upstream as up

    return {
        "providerRequest": {
            "url": "https://api.openai.com/v1/chat/completions",
            "json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": tag}]},
            "meta": {"Helicone-User-Id": "meta-user", "Helicone-Property-Source": "meta",
                     "Helicone-Property-Only-Meta": "yes", "Helicone-Session-Id": f"{tag}-session",
                     "Helicone-Session-Path": "/a/b", "Helicone-Session-Name": "Trip"},
        },
        "providerResponse": {"json": up.openai_completion("gpt-4o-mini", "hi there"), "status": 200,
                             "headers": {"x-request-id": "req_1"}, **resp},
        "timing": {"startTime": {"seconds": 1700000000, "milliseconds": 100},
                   "endTime": {"seconds": 1700000001, "milliseconds": 600}},
    }


def test_async_log_is_logged_like_a_proxied_call(api_proxy):
    p, api = api_proxy, api_proxy.api
    tag = marker()
    rid = str(uuid.uuid4())
    r = api.post("/oai/v1/log", json=openai_log_payload(tag), headers={
        "Helicone-User-Id": "header-user", "Helicone-Property-Source": "header", "Helicone-Request-Id": rid,
    })
    assert (r.status_code, r.text, r.headers["helicone-id"]) == (200, "ok", rid)
    row = p.row(rid)
    assert row["source"] == "async"
    assert (row["provider"], row["api"], row["model"], row["status"]) == ("openai", "openai-chat", "gpt-4o-mini", 200)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (12, 6, 18)
    assert row["usage_source"] == "provider" and row["cost_usd"] > 0
    assert row["user_id"] == "header-user"  # HTTP headers win over meta
    assert json.loads(row["properties"]) == {"source": "header", "only-meta": "yes"}
    assert (row["session_id"], row["session_path"], row["session_name"]) == (f"{tag}-session", "/a/b", "Trip")
    assert row["created_at"] == "2023-11-14T22:13:20.100Z" and row["latency_ms"] == 1500.0
    assert tag in row["request_body"] and "hi there" in row["response_body"]
    # and it takes feedback and shows up in queries like any other row
    assert api.post(f"/v1/request/{rid}/feedback", json={"rating": True}).status_code == 201
    (rec,) = api.query({"left": {"request": {"user_id": {"equals": "header-user"}}}, "operator": "and",
                        "right": {"properties": {"Helicone-Session-Id": {"equals": f"{tag}-session"}}}})
    assert rec["request_id"] == rid and rec["feedback_rating"] is True and rec["source"] == "async"


def test_async_log_streams_and_other_providers(api_proxy):
    import fakes.upstream as up

    p, api = api_proxy, api_proxy.api
    # an OpenAI stream given as textBody (SSE), with TTFT
    sse = b"".join(up.openai_sse_events("gpt-4o-mini", include_usage=True)).decode()
    d = openai_log_payload(marker(), textBody=sse)
    d["providerRequest"]["json"]["stream"] = True
    d["timing"]["timeToFirstToken"] = 250
    r = api.post("/oai/v1/log", json=d)
    row = p.row(r.headers["helicone-id"])
    assert row["streamed"] == 1 and row["ttft_ms"] == pytest.approx(250)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 6) and row["usage_source"] == "provider"
    # streamed_data (the Python manual logger's form), no usage: estimated
    chunks = [json.loads(line[6:]) for line in sse.split("\n\n") if line.startswith("data: {")]
    chunks = [c for c in chunks if c.get("choices")]
    d = openai_log_payload(marker())
    d["providerRequest"]["json"]["stream"] = True
    d["providerResponse"]["json"] = {"streamed_data": chunks}
    row = p.row(api.post("/oai/v1/log", json=d).headers["helicone-id"])
    assert row["streamed"] == 1 and row["usage_source"] == "estimated" and row["completion_tokens"] > 0
    assert "Hello from the fake upstream!" in "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks)
    # Anthropic, no timing (defaults to now)
    d = {"providerRequest": {"url": "custom-model-nopath", "json": {"model": "claude-sonnet-4-0"}, "meta": {}},
         "providerResponse": {"json": up.anthropic_message("claude-sonnet-4-0", "hey"), "status": 200, "headers": {}}}
    r = api.post("/anthropic/v1/log", json=d)
    row = p.row(r.headers["helicone-id"])
    assert (row["provider"], row["api"]) == ("anthropic", "anthropic-messages")
    assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (28, 5, 3)
    assert row["cost_usd"] > 0
    assert abs(datetime.fromisoformat(row["created_at"]).timestamp() - time.time()) < 30
    # custom: the provider comes from the URL
    d = openai_log_payload(marker())
    d["providerRequest"]["url"] = "https://api.groq.com/openai/v1/chat/completions"
    row = p.row(api.post("/custom/v1/log", json=d).headers["helicone-id"])
    assert row["provider"] == "groq" and row["api"] == "openai-chat"


def test_api_requires_a_configured_key(fake, tmp_path):
    p = ApiProxy(tmp_path, fake.url, ["--set", "helicone_auth_keys=sekret"]).start()
    try:
        _check_auth(p.api_port)
    finally:
        p.stop()


def _check_auth(port: int) -> None:
    anon, good_api, wrong = Api(port), Api(port, "sekret"), Api(port, "nope")
    for api in (anon, wrong):
        r = api.post("/v1/request/query", json={"filter": "all"})
        assert (r.status_code, r.json()) == (401, {"data": None, "error": "Unauthorized"})
        r = api.post("/oai/v1/log", json=good())
        assert (r.status_code, r.text) == (401, "Unauthorized")
    assert good_api.post("/v1/request/query", json={"filter": "all"}).status_code == 201
    r = good_api.post("/oai/v1/log", json=good())
    assert r.status_code == 200
    rid = r.headers["helicone-id"]
    assert good_api.get(rid)["request_id"] == rid
    assert httpx.get(f"{anon.url}/v1/request/{rid}", headers={"Helicone-Auth": "Bearer sekret"},
                     trust_env=False).status_code == 200


def test_async_log_with_lone_surrogates_is_stored(api_proxy):
    """JSON may carry "\\ud800"; SQLite cannot store a lone surrogate, and one bad row must not take
    the writer's whole batch down with it."""
    p, api = api_proxy, api_proxy.api
    d = openai_log_payload(marker())
    d["providerRequest"]["meta"]["Helicone-User-Id"] = "bad\ud800user"
    d["providerRequest"]["meta"]["Helicone-Property-Emoji"] = "ok \U0001f600"
    d["providerRequest"]["json"]["messages"][0]["content"] = "lone \udc80 surrogate"
    r = api.post("/oai/v1/log", content=json.dumps(d).encode(), headers={"content-type": "application/json"})
    assert (r.status_code, r.text) == (200, "ok")
    row = p.row(r.headers["helicone-id"])
    assert row["user_id"] == "bad?user"
    assert json.loads(row["properties"])["emoji"] == "ok \U0001f600"
    assert "lone ? surrogate" in row["request_body"] and row["total_tokens"] == 18
