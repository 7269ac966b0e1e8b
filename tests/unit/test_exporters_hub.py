"""exporters.hub.Exporters: what the addon holds — both subscribers behind one on_row, OTLP options."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fakes.otlp_receiver import OtlpReceiver
from fakes.upstream import openai_completion
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from helicone_addon import headers
from helicone_addon.exporters.hub import Exporters
from helicone_addon.record import CallState, build_row


def row() -> tuple[dict, list[dict]]:
    hdrs = [("content-type", "application/json")]
    opts = headers.parse(hdrs)
    st = CallState(id=opts.request_id, started_at=time.time(), provider="openai", api="openai-chat",
                   host="api.openai.com", path="/v1/chat/completions", options=opts, request_headers=hdrs,
                   request_body=b'{"model": "gpt-4o-mini", "messages": []}', status=200, ended_at=time.time() + 0.1,
                   response_body=json.dumps(openai_completion("gpt-4o-mini", "hi")).encode(), content_type="application/json")
    return build_row(st)


def samples(ex: Exporters) -> dict:
    with TestClient(Starlette(routes=ex.routes())) as c:
        text = c.get("/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def test_metrics_always_spans_when_configured():
    r = OtlpReceiver().start()
    ex = Exporters(store_counters=lambda: {"written": 7})
    try:
        ex.on_row(*row())
        assert ex.otel is None and "helicone_otlp_spans_queued_total" not in samples(ex)
        ex.set_otlp(r.url, "x-tenant=acme")
        ex.on_row(*row())
        ex.otel.force_flush()
        assert len(r.wait_spans(1)) == 1 and r.requests[0]["x-tenant"] == "acme"
        got = samples(ex)
        assert got["helicone_otlp_spans_exported_total"] == 1 and got["helicone_store_written_total"] == 7
        with TestClient(Starlette(routes=ex.routes())) as c:
            calls = [s for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples
                     if s.name == "helicone_llm_calls_total"]
        assert sum(s.value for s in calls) == 2
        old = ex.otel
        with pytest.raises(ValueError, match="has no '='"):
            ex.set_otlp(r.url, "broken")
        assert ex.otel is old  # a bad value changes nothing
        ex.set_otlp("")
        assert ex.otel is None
    finally:
        ex.close()
        r.stop()


def test_a_failing_subscriber_never_reaches_the_writer():
    class Broken:
        def on_row(self, row, props):
            raise RuntimeError("bug")

    ex = Exporters()
    ex.otel = Broken()
    ex.on_row(*row())  # no raise
    assert ex.errors == 1
    with TestClient(Starlette(routes=ex.routes())) as c:
        text = c.get("/metrics").text
    assert sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "helicone_llm_calls_total") == 1  # the metrics still counted the call
    ex.otel = None


def test_close_with_a_down_collector_is_bounded():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = Exporters()
    ex.set_otlp(f"http://127.0.0.1:{port}")
    for _ in range(20):
        ex.on_row(*row())
    t = time.monotonic()
    otel = ex.otel
    ex.close()
    assert time.monotonic() - t < 8  # flush for 5 s at most, then the retrying export is cut short
    c = otel.counters
    assert c["spans_queued"] == 20 and c["spans_exported"] == 0 and c["spans_failed"] == 20  # lost, and counted
