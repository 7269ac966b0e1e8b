"""Prometheus metrics fed with real rows (built by record.build_row), read back with prometheus-client's
own text parser through the Starlette route."""

from __future__ import annotations

import json
import math
import time
from collections import Counter as Tally
from collections import defaultdict

import pytest
from fakes.upstream import anthropic_message, anthropic_sse_events, openai_completion, openai_sse_events
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from helicone_addon import headers
from helicone_addon.exporters.prometheus import LATENCY_BUCKETS, Metrics, metrics_route
from helicone_addon.record import CallState, build_row

T0 = 1_714_564_800.0


def call_row(*, provider="openai", api="openai-chat", path="/v1/chat/completions", model="gpt-4o-mini",
             status=200, body: bytes | None = None, chunks: list[bytes] | None = None, latency=0.4, ttft=None,
             hdrs=(), **state_kw) -> tuple[dict, list[dict]]:
    req_hdrs = [("content-type", "application/json"), ("authorization", "Bearer sk-secret-123"), *hdrs]
    opts = headers.parse(req_hdrs)
    st = CallState(id=opts.request_id, started_at=T0, provider=provider, api=api, host="api.example.com",
                   path=path, options=opts, request_headers=req_hdrs,
                   request_body=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                                            "stream": chunks is not None}).encode(),
                   status=status, ended_at=T0 + latency, **state_kw)
    if chunks is not None:
        st.streamed, st.chunks, st.content_type = True, chunks, "text/event-stream"
        st.first_chunk_at = T0 + (ttft if ttft is not None else latency / 2)
    elif body is not None:
        st.response_body, st.content_type = body, "application/json"
    return build_row(st)


def mixed_rows() -> list[tuple[dict, list[dict]]]:
    rows = [
        call_row(body=json.dumps(openai_completion("gpt-4o-mini", "Hello")).encode(), latency=0.3),
        call_row(body=json.dumps(openai_completion("gpt-4o-mini", "Hello", prompt_tokens=40)).encode(), latency=1.7,
                 hdrs=[("Helicone-User-Id", "alice@example.com"), ("Helicone-Property-Env", "prod")]),
        call_row(chunks=[b"".join(openai_sse_events("gpt-4o", True))], model="gpt-4o", latency=2.5, ttft=0.42,
                 hdrs=[("Helicone-Cache-Enabled", "true")]),
        call_row(provider="anthropic", api="anthropic-messages", path="/v1/messages", model="claude-3-5-haiku-latest",
                 body=json.dumps(anthropic_message("claude-3-5-haiku-latest", "Hi")).encode(), latency=0.9),
        call_row(provider="anthropic", api="anthropic-messages", path="/v1/messages", model="claude-3-5-haiku-latest",
                 chunks=anthropic_sse_events("claude-3-5-haiku-latest"), latency=4.0, ttft=0.08, retries=2),
        call_row(status=500, body=b'{"error": {"message": "boom", "type": "server_error"}}', latency=0.05),
        call_row(status=None, error="upstream failed: connection refused", no_answer=True, latency=0.02),
    ]
    hit, hp = call_row(body=json.dumps(openai_completion("gpt-4o-mini", "Hello")).encode(), latency=0.004,
                       hdrs=[("Helicone-Cache-Enabled", "true")])
    hit.update(cache_hit=1, cost_usd=0.0, cache_saved_usd=0.000123)
    limited, lp = call_row(status=429, body=b'{"error": {"message": "rate limited"}}', latency=0.001,
                           hdrs=[("Helicone-User-Id", "bob")])
    limited.update(rate_limited=1, prompt_tokens=None, completion_tokens=None, cost_usd=None)
    return [*rows, (hit, hp), (limited, lp)]


def scrape(metrics: Metrics) -> dict:
    """{sample name: {frozenset(labels): value}} as prometheus-client's parser reads /metrics."""
    app = Starlette(routes=[metrics_route(metrics)])
    with TestClient(app) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict = defaultdict(dict)
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[s.name][frozenset(s.labels.items())] = s.value
    return out


def labels(**kw) -> frozenset:
    return frozenset(kw.items())


def test_metrics_match_the_rows():
    m = Metrics()
    rows = mixed_rows()
    for row, props in rows:
        m.on_row(row, props)
    got = scrape(m)

    def sclass(s):
        return "none" if s is None else f"{s // 100}xx"

    def cache(r):
        h = json.loads(r["request_headers"])
        return "hit" if r["cache_hit"] else ("miss" if h.get("helicone-cache-enabled") == "true" else "off")

    calls = Tally((r["provider"], r["model"], sclass(r["status"]), cache(r)) for r, _ in rows)
    assert {k: v for k, v in got["helicone_llm_calls_total"].items()} == {
        labels(provider=p, model=mo, status_class=s, cache=c): float(n) for (p, mo, s, c), n in calls.items()
    }
    assert sum(got["helicone_llm_calls_total"].values()) == len(rows) == 9
    assert got["helicone_llm_calls_total"][labels(provider="openai", model="gpt-4o-mini", status_class="4xx", cache="off")] == 1
    assert got["helicone_llm_calls_total"][labels(provider="openai", model="gpt-4o-mini", status_class="2xx", cache="hit")] == 1
    assert got["helicone_llm_calls_total"][labels(provider="openai", model="gpt-4o", status_class="2xx", cache="miss")] == 1

    tokens: dict = defaultdict(float)
    cost: dict = defaultdict(float)
    for r, _ in rows:
        for kind, col in (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("cached", "cached_tokens"),
                          ("cache_write", "cache_write_tokens"), ("reasoning", "reasoning_tokens")):
            if r[col]:
                tokens[(r["provider"], r["model"], kind)] += r[col]
        if r["cost_usd"] is not None:
            cost[(r["provider"], r["model"])] += r["cost_usd"]
    assert got["helicone_llm_tokens_total"] == {labels(provider=p, model=mo, kind=k): v for (p, mo, k), v in tokens.items()}
    assert tokens[("anthropic", "claude-3-5-haiku-latest", "cached")] == 10  # the fake's cache reads, twice
    assert set(got["helicone_llm_cost_usd_total"]) == {labels(provider=p, model=mo) for p, mo in cost}
    for (p, mo), v in cost.items():
        assert math.isclose(got["helicone_llm_cost_usd_total"][labels(provider=p, model=mo)], v, abs_tol=1e-9)
    assert sum(cost.values()) > 0
    assert got["helicone_llm_cache_saved_usd_total"] == {labels(provider="openai", model="gpt-4o-mini"): 0.000123}

    upstream = [r for r, _ in rows if not r["cache_hit"] and not r["rate_limited"] and r["latency_ms"] is not None]
    for p, mo in {(r["provider"], r["model"]) for r in upstream}:
        mine = [r["latency_ms"] / 1000 for r in upstream if (r["provider"], r["model"]) == (p, mo)]
        key = labels(provider=p, model=mo)
        assert got["helicone_llm_latency_seconds_count"][key] == len(mine)
        assert math.isclose(got["helicone_llm_latency_seconds_sum"][key], sum(mine), abs_tol=1e-9)
        for le in LATENCY_BUCKETS:
            assert got["helicone_llm_latency_seconds_bucket"][labels(provider=p, model=mo, le=str(float(le)))] == \
                sum(1 for x in mine if x <= le)
    assert sum(got["helicone_llm_latency_seconds_count"].values()) == len(upstream) == 7

    streams = [r for r, _ in rows if r["ttft_ms"] is not None]
    assert sum(got["helicone_llm_ttft_seconds_count"].values()) == len(streams) == 2
    assert math.isclose(sum(got["helicone_llm_ttft_seconds_sum"].values()), sum(r["ttft_ms"] for r in streams) / 1000,
                        abs_tol=1e-9)
    assert got["helicone_llm_rate_limited_total"] == {labels(provider="openai"): 1.0}
    assert got["helicone_llm_retries_total"] == {labels(provider="anthropic"): 2.0}
    assert got["helicone_exporter_errors_total"] == {labels(exporter="prometheus"): 0.0}


def test_no_ids_as_labels_and_models_capped():
    m = Metrics(max_models=3)
    rows = mixed_rows()
    for i in range(6):
        rows.append(call_row(model=f"ft:gpt-4o:acme:{i}", body=json.dumps(openai_completion(f"ft:gpt-4o:acme:{i}", "x")).encode()))
    for row, props in rows:
        m.on_row(row, props)
    got = scrape(m)
    values = {v for series in got.values() for key in series for _, v in key}
    for r, _ in rows:
        for secret in (r["id"], r["user_id"], r["session_id"]):
            assert secret is None or secret not in values
    assert "alice@example.com" not in values and "sk-secret-123" not in str(values)
    models = {dict(k)["model"] for k in got["helicone_llm_calls_total"]}
    assert len(models - {"other"}) == 3 and "other" in models
    n_other = sum(v for k, v in got["helicone_llm_calls_total"].items() if dict(k)["model"] == "other")
    assert got["helicone_metrics_other_labels_total"][labels(label="model")] == n_other == len(rows) - sum(
        v for k, v in got["helicone_llm_calls_total"].items() if dict(k)["model"] != "other")
    assert sum(got["helicone_llm_calls_total"].values()) == len(rows)


def test_store_counters_and_shipper_lag_are_read_at_scrape_time():
    counters = {"written": 5, "spilled": 0, "dropped": 0}
    lag = {"rows": 12, "seconds": 3.5}
    m = Metrics(store_counters=lambda: counters, shipper_lag=lambda: lag)
    got = scrape(m)
    assert got["helicone_store_written_total"] == {frozenset(): 5.0}
    assert got["helicone_fleet_shipper_lag_seconds"] == {frozenset(): 3.5}
    counters.update(written=9, spilled=2)
    lag["rows"] = 0
    got = scrape(m)
    assert got["helicone_store_written_total"] == {frozenset(): 9.0}
    assert got["helicone_store_spilled_total"] == {frozenset(): 2.0}
    assert got["helicone_fleet_shipper_lag_rows"] == {frozenset(): 0.0}


def test_a_failing_source_or_row_is_counted_never_raised():
    def broken():
        raise RuntimeError("shipper gone")

    m = Metrics(store_counters=lambda: {"written": 1}, shipper_lag=broken)
    m.on_row(None, [])  # type: ignore[arg-type]
    m.on_row({"provider": "openai", "latency_ms": "soon", "retries": "many", "status": "200"}, [])
    got = scrape(m)
    assert got["helicone_store_written_total"] == {frozenset(): 1.0}  # the scrape still answers
    assert got["helicone_exporter_errors_total"][labels(exporter="prometheus")] == 1.0
    assert got["helicone_exporter_errors_total"][labels(exporter="scrape")] == 1.0
    assert got["helicone_llm_calls_total"] == {
        labels(provider="openai", model="unknown", status_class="none", cache="off"): 1.0}
    assert "helicone_fleet_shipper_lag_rows" not in got


def test_route_is_get_only_and_fast():
    m = Metrics()
    for row, props in mixed_rows() * 50:
        m.on_row(row, props)
    app = Starlette(routes=[metrics_route(m)])
    with TestClient(app) as client:
        assert client.post("/metrics").status_code == 405
        t = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        assert time.perf_counter() - t < 1


@pytest.mark.parametrize("n", [2000])
def test_on_row_cost(n):
    m = Metrics()
    rows = mixed_rows()
    t = time.perf_counter()
    for i in range(n):
        row, props = rows[i % len(rows)]
        m.on_row(row, props)
    per_row = (time.perf_counter() - t) / n
    assert per_row < 0.001, f"{per_row * 1e6:.0f} µs per row"


def test_openmetrics_when_the_scraper_asks():
    m = Metrics()
    for row, props in mixed_rows():
        m.on_row(row, props)
    app = Starlette(routes=[metrics_route(m)])
    with TestClient(app) as client:
        resp = client.get("/metrics", headers={"accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n")
    assert 'helicone_llm_calls_total{cache="hit",model="gpt-4o-mini",provider="openai",status_class="2xx"} 1.0' in resp.text


# one worker of `helicone-addon run --workers N`: prometheus-client decides its mode when imported, so
# each worker is a process of its own, started with the directory the supervisor would give it
_WORKER = """
import json, sys
from helicone_addon.exporters.prometheus import Metrics
store = {"written": 0}
m = Metrics(store_counters=lambda: store, shipper_lag=lambda: {"rows": int(sys.argv[2])})
for row in json.loads(sys.argv[1]):
    m.on_row(row, [])
for written in (7, 3, 5):  # 3: the store started over (reopened): followed from there, never subtracted
    store["written"] = written
    m.render()  # a scrape copies this process's numbers into its files first
"""


def test_workers_metrics_add_up_across_processes(tmp_path):
    """Under --workers, every worker counts into prometheus-client's shared directory, and a scrape
    (MultiProcessCollector, as worker 0's /metrics does it) adds them up, also after they exited."""
    import os
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from helicone_addon.workers import _metrics_of_dead_worker

    shared = tmp_path / "metrics"
    shared.mkdir()
    rows = [r for r, _ in mixed_rows()]
    pids = []
    for lag, part in ((4, rows[:3]), (9, rows[3:])):
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(part), str(lag)], env=env,
                                stderr=subprocess.PIPE, text=True)
        assert proc.wait(120) == 0, proc.stderr.read()
        pids.append(proc.pid)

    def scrape_shared() -> dict[str, float]:
        reg = CollectorRegistry()
        MultiProcessCollector(reg, str(shared))
        got: dict[str, float] = defaultdict(float)
        for family in reg.collect():
            for s in family.samples:
                got[s.name] += s.value
        return got

    got = scrape_shared()
    assert got["helicone_llm_calls_total"] == len(rows)
    assert got["helicone_llm_latency_seconds_count"] == sum(1 for r in rows if not r["cache_hit"]
                                                             and not r["rate_limited"] and r["latency_ms"] is not None)
    assert got["helicone_store_written_total"] == 18  # 7, then 3 (a new start: +0), then 5 (+2): 9 each
    assert got["helicone_fleet_shipper_lag_rows"] == 9  # a gauge: the largest among the workers
    for pid in pids:  # what the supervisor does when a worker exits
        _metrics_of_dead_worker(str(shared), pid)
    got = scrape_shared()
    assert "helicone_fleet_shipper_lag_rows" not in got  # their gauges went with them
    assert got["helicone_llm_calls_total"] == len(rows)  # what they counted stays
    assert got["helicone_store_written_total"] == 18
