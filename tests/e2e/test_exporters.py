"""Exporters through the real proxy: OTLP spans to a real OTLP/HTTP receiver, /metrics on the local API
read with prometheus-client's own parser, both compared with the SQLite log."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter as Tally
from collections import defaultdict

import httpx
import pytest
from fakes.otlp_receiver import OtlpReceiver
from prometheus_client.parser import text_string_to_metric_families

CLIENT, INTERNAL = 3, 1
APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"
REPLY = "Hello from the fake upstream!"

def marker() -> str:
    return f"x-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def chat(client, text: str, headers: dict | None = None, model: str = "gpt-4o-mini", **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **kw)


def spans_by_request(receiver: OtlpReceiver, ids: list[str]) -> dict:
    spans = receiver.wait_spans(len(ids), where=lambda s: s.attributes.get("helicone.request_id") in ids)
    return {s.attributes["helicone.request_id"]: s for s in spans}


@pytest.mark.parametrize("log_process", [False, True], ids=["writer-thread", "writer-process"])
def test_one_span_per_call_equal_to_the_log(make_proxy, receiver, log_process):
    """Also with the log writer in its own process: the spans come from the rows it sends back."""
    p = make_proxy(["--set", f"helicone_otlp_endpoint={receiver.url}", "--set", f"helicone_log_process={str(log_process).lower()}"])
    m = marker()
    ids = []
    r = chat(p.openai(), m, {"Helicone-User-Id": "u-1", "Helicone-Property-Env": "e2e"})
    ids.append(r.headers["helicone-id"])
    with p.openai(via="reverse").chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": m}], stream=True,
            stream_options={"include_usage": True}) as s:
        assert REPLY in "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)
        ids.append(s.headers["helicone-id"])
    a = p.anthropic().messages.with_raw_response.create(
        model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": m}])
    ids.append(a.headers["helicone-id"])
    traced = chat(p.openai(), m, {"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-01"}).headers["helicone-id"]
    ids.append(traced)
    session = f"trip-{uuid.uuid4().hex[:8]}"
    sess_ids = []
    for path in ("/plan", "/plan/search", "/plan/search"):
        h = {"Helicone-Session-Id": session, "Helicone-Session-Name": "Trip", "Helicone-Session-Path": path}
        sess_ids.append(chat(p.openai(), m, h).headers["helicone-id"])
    ids += sess_ids

    rows = {rid: p.row(rid) for rid in ids}
    spans = spans_by_request(receiver, ids)
    assert len(spans) == len(ids)
    for rid, span in spans.items():
        row, at = rows[rid], span.attributes
        assert span.kind == CLIENT
        assert span.name == f"chat {row['model_requested']}"
        assert at["gen_ai.operation.name"] == "chat"
        assert at["gen_ai.provider.name"] == row["provider"]
        assert at["gen_ai.request.model"] == row["model_requested"]
        assert at["gen_ai.response.model"] == row["model"]
        assert at["gen_ai.usage.input_tokens"] == row["prompt_tokens"]
        assert at["gen_ai.usage.output_tokens"] == row["completion_tokens"]
        assert at["server.address"] == row["host"]
        assert "error.type" not in at and row["status"] == 200
        assert at["gen_ai.response.finish_reasons"] == (["end_turn"] if row["provider"] == "anthropic" else ["stop"])
        assert (span.end_ns - span.start_ns) / 1e6 == pytest.approx(row["latency_ms"], abs=0.01)
        assert at["helicone.cost_usd"] == pytest.approx(row["cost_usd"], abs=1e-12)
        assert not [k for k in at if k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_"))]
        assert m not in json.dumps(at) and REPLY not in json.dumps(at)  # no content unless asked
    assert spans[ids[0]].attributes["helicone.user_id"] == "u-1"
    assert spans[ids[0]].attributes["helicone.property.env"] == "e2e"
    assert spans[ids[0]].trace_id == uuid.UUID(ids[0]).hex and spans[ids[0]].parent_span_id == ""
    assert spans[ids[1]].attributes["gen_ai.request.stream"] is True
    assert spans[ids[1]].attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(rows[ids[1]]["ttft_ms"] / 1000)
    assert spans[ids[2]].attributes["gen_ai.provider.name"] == "anthropic"
    assert (spans[traced].trace_id, spans[traced].parent_span_id) == (APP_TRACE, APP_SPAN)

    trace_ids = {spans[i].trace_id for i in sess_ids}
    assert len(trace_ids) == 1
    nodes = {s.attributes["helicone.session.path"]: s for s in receiver.spans
             if s.kind == INTERNAL and s.attributes.get("helicone.session.id") == session}
    assert set(nodes) == {"/", "/plan", "/plan/search"}
    assert {s.trace_id for s in nodes.values()} == trace_ids
    assert nodes["/"].parent_span_id == "" and nodes["/"].name == "session Trip"
    assert nodes["/plan"].parent_span_id == nodes["/"].span_id
    assert nodes["/plan/search"].parent_span_id == nodes["/plan"].span_id
    assert spans[sess_ids[0]].parent_span_id == nodes["/plan"].span_id
    assert spans[sess_ids[1]].parent_span_id == spans[sess_ids[2]].parent_span_id == nodes["/plan/search"].span_id


def test_content_only_when_enabled(make_proxy, receiver):
    p = make_proxy(["--set", f"helicone_otlp_endpoint={receiver.url}", "--set", "helicone_otlp_content=true",
                    "--set", "helicone_otlp_headers=x-tenant=acme,Authorization=Bearer%20collector-key"])
    m = marker()
    rid = chat(p.openai(), m).headers["helicone-id"]
    at = spans_by_request(receiver, [rid])[rid].attributes
    assert json.loads(at["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": m}]}]
    out = json.loads(at["gen_ai.output.messages"])
    assert out[0]["parts"][0]["content"] == REPLY and out[0]["finish_reason"] == "stop"
    sent = [h for h in receiver.requests if h.get("x-tenant") == "acme"]
    assert sent and sent[0]["authorization"] == "Bearer collector-key"


@pytest.mark.parametrize("bad, said", [
    (["--set", "helicone_otlp_endpoint=collector:4318"], "must be an http:// or https:// URL"),
    (["--set", "helicone_otlp_endpoint=http://127.0.0.1:4318", "--set", "helicone_otlp_headers=novalue"],
     "has no '='"),
])
def test_bad_otlp_options_stop_startup(tmp_path, bad, said):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "helicone_addon", "run", "-q", "-p", "0", "--set", f"confdir={tmp_path}",
                        "--set", f"helicone_data_dir={tmp_path / 'd'}", *bad], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert said in r.stdout + r.stderr


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_down_collector_never_breaks_calls(make_proxy, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    p = make_proxy(["--set", f"helicone_otlp_endpoint=http://127.0.0.1:{closed_port()}"])
    m = marker()
    ids = [chat(p.openai(), m) for _ in range(5)]
    assert all(r.parse().choices[0].message.content == REPLY for r in ids)
    for r in ids:
        assert p.row(r.headers["helicone-id"])["status"] == 200
    # the lost spans are counted where users look: the log's store_counters
    failed = p.wait_rows("SELECT value FROM store_counters WHERE name = 'otlp_spans_failed' AND value >= 5",
                         timeout=30)
    assert failed[0]["value"] == 5
    exported = p.query("SELECT value FROM store_counters WHERE name = 'otlp_spans_exported'")
    assert exported in ([], [{"value": 0}])


# -- /metrics -------------------------------------------------------------------------------------
def api_headers(p) -> dict:
    from helicone_addon.security import read_token

    return {"Authorization": f"Bearer {read_token(p.data_dir)}"}


def scrape(p) -> dict:
    r = httpx.get(f"http://127.0.0.1:{p.api_port}/metrics", headers=api_headers(p), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict = defaultdict(dict)
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[s.name][frozenset(s.labels.items())] = s.value
    return out


def cache_label(row) -> str:
    h = json.loads(row["request_headers"])
    return "hit" if row["cache_hit"] else ("miss" if h.get("helicone-cache-enabled") == "true" else "off")


def test_metrics_match_the_log_after_a_mixed_run(make_proxy, receiver, monkeypatch):
    from conftest import free_port, wait_port

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    p = make_proxy(["--set", f"helicone_otlp_endpoint=http://127.0.0.1:{closed_port()}"], api_port=free_port())
    wait_port(p.api_port, proc=p.proc)
    m = marker()
    client = p.openai()
    ids = [chat(client, m).headers["helicone-id"] for _ in range(2)]
    ids.append(chat(client, m, model="gpt-4o").headers["helicone-id"])
    with p.openai(via="reverse").chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": m}], stream=True,
            stream_options={"include_usage": True}) as s:
        list(s.parse())
        ids.append(s.headers["helicone-id"])
    ids.append(p.anthropic().messages.with_raw_response.create(
        model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": m}]).headers["helicone-id"])
    cache = {"Helicone-Cache-Enabled": "true"}
    first = chat(client, f"{m}-cache", cache)
    p.row(first.headers["helicone-id"])  # the cache is written before the row
    hit = chat(client, f"{m}-cache", cache)
    assert hit.headers["helicone-cache"] == "HIT"
    ids += [first.headers["helicone-id"], hit.headers["helicone-id"]]
    policy = {"Helicone-RateLimit-Policy": "1;w=60", "Helicone-User-Id": m}
    ids.append(chat(client, m, policy).headers["helicone-id"])
    import openai

    with pytest.raises(openai.RateLimitError) as e:
        chat(client, m, policy)
    ids.append(e.value.response.headers["helicone-id"])
    with pytest.raises(openai.InternalServerError) as e:
        chat(client, m, {"x-fake-status": "500"})
    ids.append(e.value.response.headers["helicone-id"])
    retried = chat(client, m, {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "2",
                               "Helicone-Retry-Min-Timeout": "10", "Helicone-Retry-Max-Timeout": "20",
                               "x-fake-fail": "1:500", "x-fake-fail-key": m})
    ids.append(retried.headers["helicone-id"])

    rows = [p.row(rid) for rid in ids]
    assert httpx.get(f"http://127.0.0.1:{p.api_port}/metrics", timeout=10).status_code == 401  # the API's token
    got = scrape(p)
    assert sum(r["cache_hit"] for r in rows) == 1 and sum(r["rate_limited"] for r in rows) == 1
    assert {r["status"] for r in rows} >= {200, 429, 500}

    def sclass(s):
        return "none" if s is None else f"{s // 100}xx"

    calls = Tally((r["provider"], r["model"], sclass(r["status"]), cache_label(r)) for r in rows)
    assert got["helicone_llm_calls_total"] == {
        frozenset(dict(provider=pr, model=mo, status_class=s, cache=c).items()): float(n)
        for (pr, mo, s, c), n in calls.items()}
    tokens: dict = defaultdict(float)
    cost: dict = defaultdict(float)
    for r in rows:
        for kind, col in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cached", "cached_tokens"),
                          ("cache_write", "cache_write_tokens"), ("reasoning", "reasoning_tokens")):
            if r[col]:
                tokens[frozenset(dict(provider=r["provider"], model=r["model"], kind=kind).items())] += r[col]
        if r["cost_usd"] is not None:
            cost[frozenset(dict(provider=r["provider"], model=r["model"]).items())] += r["cost_usd"]
    assert got["helicone_llm_tokens_total"] == tokens
    assert set(got["helicone_llm_cost_usd_total"]) == set(cost)
    for k, v in cost.items():
        assert math.isclose(got["helicone_llm_cost_usd_total"][k], v, abs_tol=1e-9)
    upstream = [r for r in rows if not r["cache_hit"] and not r["rate_limited"] and r["latency_ms"] is not None]
    assert sum(got["helicone_llm_latency_seconds_count"].values()) == len(upstream)
    assert math.isclose(sum(got["helicone_llm_latency_seconds_sum"].values()),
                        sum(r["latency_ms"] for r in upstream) / 1000, abs_tol=1e-6)
    assert sum(got["helicone_llm_ttft_seconds_count"].values()) == sum(1 for r in rows if r["ttft_ms"] is not None) == 1
    assert sum(got["helicone_llm_rate_limited_total"].values()) == 1
    assert sum(got["helicone_llm_retries_total"].values()) == sum(r["retries"] for r in rows) == 1
    assert got["helicone_store_written_total"][frozenset()] > 0
    assert got["helicone_store_spilled_total"][frozenset()] == got["helicone_store_dropped_total"][frozenset()] == 0

    # the collector is down: the spans are lost, counted, and every call above still worked
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = scrape(p)
        failed = got.get("helicone_otlp_spans_failed_total", {}).get(frozenset(), 0)
        if failed >= len(rows):
            break
        time.sleep(0.2)
    assert failed == got["helicone_otlp_spans_queued_total"][frozenset()] >= len(rows)
    assert got["helicone_otlp_spans_exported_total"][frozenset()] == 0
