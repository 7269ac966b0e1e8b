"""OtelExporter fed with real rows (record.build_row), its spans decoded by a real OTLP/HTTP receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from fakes.otlp_receiver import OtlpReceiver
from fakes.upstream import anthropic_message, anthropic_sse_events, openai_completion, openai_sse_events
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from helicone_addon import headers
from helicone_addon.exporters import genai
from helicone_addon.exporters.otel import OtelExporter
from helicone_addon.exporters.rows import parse_otlp_headers, traces_url
from helicone_addon.exporters.otel_process import OtelProcess
from helicone_addon.record import CallState, build_row

T0 = 1_714_564_800.0
CLIENT, INTERNAL = 3, 1  # opentelemetry.proto Span.SpanKind
APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


def call_row(*, provider="openai", api="openai-chat", path="/v1/chat/completions", model="gpt-4o-mini",
             status=200, body: bytes | None = None, chunks: list[bytes] | None = None, latency=0.4, ttft=None,
             hdrs=(), request: dict | None = None, started=T0, **state_kw) -> tuple[dict, list[dict]]:
    req_hdrs = [("content-type", "application/json"), ("authorization", "Bearer sk-secret-123"), *hdrs]
    opts = headers.parse(req_hdrs)
    request = request or {"model": model, "messages": [{"role": "system", "content": "Be terse."},
                                                       {"role": "user", "content": "Say hello"}]}
    st = CallState(id=opts.request_id, started_at=started, provider=provider, api=api, host="api.openai.com",
                   path=path, options=opts, request_headers=req_hdrs, request_body=json.dumps(request).encode(),
                   status=status, ended_at=started + latency, **state_kw)
    if chunks is not None:
        st.streamed, st.chunks, st.content_type = True, chunks, "text/event-stream"
        st.first_chunk_at = started + (ttft if ttft is not None else latency / 2)
    elif body is not None:
        st.response_body, st.content_type = body, "application/json"
    return build_row(st)


def chat_row(**kw):
    return call_row(body=json.dumps(openai_completion("gpt-4o-mini-2024-07-18", "Hello there")).encode(), **kw)


@pytest.fixture
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(params=["in-process", "child-process"])
def exporters(request):
    """Makes exporters: the in-process engine, and the child process the proxy runs it in (same results)."""
    made: list = []
    cls = OtelExporter if request.param == "in-process" else OtelProcess

    def make(*a, **kw):
        e = cls(*a, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def test_span_attributes_equal_the_row(receiver, exporters):
    exp = exporters(receiver.url, {"Authorization": "Bearer collector-key"})
    row, props = chat_row(hdrs=[("Helicone-User-Id", "alice"), ("Helicone-Property-Env", "prod"),
                                ("Helicone-Property-Team", "search")], latency=1.25)
    exp.on_row(row, props)
    assert exp.force_flush()
    [span] = receiver.wait_spans(1)
    a = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == CLIENT
    assert span.parent_span_id == ""
    assert span.trace_id == uuid.UUID(row["id"]).hex  # a lone call's trace id is its Helicone-Id
    assert span.start_ns == int(T0 * 1e9) and span.end_ns - span.start_ns == 1_250_000_000
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == row["model_requested"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == row["model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.usage.input_tokens"] == row["prompt_tokens"] == 12
    assert a["gen_ai.usage.output_tokens"] == row["completion_tokens"] == 6
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.id"] == "chatcmpl-fake123"
    assert a["server.address"] == "api.openai.com"
    assert not {"helicone.rate_limited", "helicone.retries", "gen_ai.request.stream", "helicone.usage_source",
                "gen_ai.usage.cache_read.input_tokens", "http.response.status_code"} & set(a)  # said by absence
    assert "error.type" not in a and span.status_code == 0
    assert a["helicone.user_id"] == "alice"
    assert {p["key"]: p["value"] for p in props} == {"env": "prod", "team": "search"}
    assert a["helicone.property.env"] == "prod" and a["helicone.property.team"] == "search"
    assert a["helicone.cost_usd"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
    assert a["helicone.cache_hit"] is False and a["helicone.request_id"] == row["id"]
    assert not any(k.startswith("gen_ai.input") or k.startswith("gen_ai.output") for k in a)
    assert "sk-secret-123" not in json.dumps(a)
    assert span.resource["service.name"] == "helicone-addon" and span.scope == "helicone_addon"
    assert receiver.requests[0]["authorization"] == "Bearer collector-key"
    assert exp.counters | {"restarts": 0} == {"spans_queued": 1, "spans_exported": 1, "spans_failed": 0,
                                              "spans_dropped": 0, "errors": 0, "restarts": 0}


def test_streams_errors_and_cache_hits(receiver, exporters):
    exp = exporters(receiver.url)
    stream, sp = call_row(provider="anthropic", api="anthropic-messages", path="/v1/messages",
                          model="claude-3-5-haiku-latest", chunks=anthropic_sse_events("claude-3-5-haiku-latest"),
                          latency=2.0, ttft=0.3)
    failed, fp = chat_row(status=429, latency=0.001)
    failed.update(rate_limited=1, error="rate limited by Helicone-RateLimit-Policy")
    down, dp = call_row(status=None, no_answer=True, error="upstream failed: read timed out")
    hit, hp = chat_row(hdrs=[("Helicone-Cache-Enabled", "true")])
    hit.update(cache_hit=1, cost_usd=0.0)
    for row, props in ((stream, sp), (failed, fp), (down, dp), (hit, hp)):
        exp.on_row(row, props)
    exp.force_flush()
    spans = {s.attributes["helicone.request_id"]: s for s in receiver.wait_spans(4)}
    s = spans[stream["id"]]
    assert s.name == "chat claude-3-5-haiku-latest"
    assert s.attributes["gen_ai.provider.name"] == "anthropic"
    assert s.attributes["gen_ai.usage.input_tokens"] == stream["prompt_tokens"] == 28
    assert s.attributes["gen_ai.usage.cache_read.input_tokens"] == 5
    assert s.attributes["gen_ai.usage.cache_creation.input_tokens"] == 3
    assert s.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert s.attributes["gen_ai.response.id"] == "msg_fake123"
    assert s.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.3, abs=1e-3)
    assert s.attributes["gen_ai.request.stream"] is True
    s = spans[failed["id"]]
    assert s.attributes["error.type"] == "429" and s.status_code == 2
    assert s.attributes["helicone.rate_limited"] is True and "gen_ai.response.model" not in s.attributes
    s = spans[down["id"]]
    assert s.attributes["error.type"] == "timeout" and "read timed out" in s.status_message
    assert "http.response.status_code" not in s.attributes
    assert spans[hit["id"]].attributes["helicone.cache_hit"] is True
    assert spans[hit["id"]].attributes["helicone.cost_usd"] == 0.0


def test_traceparent_makes_the_call_a_child_of_the_app_span(receiver, exporters):
    exp = exporters(receiver.url)
    row, props = chat_row(hdrs=[("traceparent", f"00-{APP_TRACE}-{APP_SPAN}-01"), ("tracestate", "app=1"),
                                ("Helicone-Session-Id", "s-1"), ("Helicone-Session-Path", "/a")])
    unsampled, up = chat_row(hdrs=[("traceparent", f"00-{APP_TRACE}-{APP_SPAN}-00")])
    broken, bp = chat_row(hdrs=[("traceparent", "00-zzzz-not-a-traceparent-01")])
    for r, p in ((row, props), (unsampled, up), (broken, bp)):
        exp.on_row(r, p)
    exp.force_flush()
    spans = {s.attributes["helicone.request_id"]: s for s in receiver.wait_spans(2)}
    s = spans[row["id"]]
    assert (s.trace_id, s.parent_span_id) == (APP_TRACE, APP_SPAN)
    assert s.attributes["helicone.session.id"] == "s-1"  # the session is still told, the app's trace wins
    assert unsampled["id"] not in spans  # the app sampled its trace out: so is the call
    assert spans[broken["id"]].parent_span_id == "" and spans[broken["id"]].trace_id == uuid.UUID(broken["id"]).hex
    assert len(receiver.spans) == 2 and exp.counters["spans_queued"] == 2


def test_a_session_is_one_trace_and_its_path_the_hierarchy(receiver, exporters):
    exp = exporters(receiver.url)
    sess = [("Helicone-Session-Id", "trip-42"), ("Helicone-Session-Name", "Trip planner")]
    calls = [chat_row(hdrs=[*sess, ("Helicone-Session-Path", p)], started=T0 + i)
             for i, p in enumerate(["/plan", "/plan/search", "/plan/search", "/plan/book/", "/"])]
    for row, props in calls:
        exp.on_row(row, props)
    exp.force_flush()
    spans = receiver.wait_spans(5 + 4)  # 5 calls + session root + /plan, /plan/search, /plan/book
    assert len({s.span_id for s in spans}) == len(spans) == 9
    assert {s.trace_id for s in spans} == {f"{genai.trace_id_for_session('trip-42'):032x}"}
    nodes = {s.attributes["helicone.session.path"]: s for s in spans if s.kind == INTERNAL}
    assert set(nodes) == {"/", "/plan", "/plan/search", "/plan/book"}
    assert nodes["/"].name == "session Trip planner" and nodes["/"].parent_span_id == ""
    assert nodes["/plan"].parent_span_id == nodes["/"].span_id
    assert nodes["/plan/search"].parent_span_id == nodes["/plan"].span_id
    assert nodes["/plan/book"].parent_span_id == nodes["/plan"].span_id
    by_id = {s.attributes["helicone.request_id"]: s for s in spans if s.kind == CLIENT}
    expected_parent = ["/plan", "/plan/search", "/plan/search", "/plan/book", "/"]
    for (row, _), node in zip(calls, expected_parent, strict=True):
        assert by_id[row["id"]].parent_span_id == nodes[node].span_id
        assert by_id[row["id"]].attributes["gen_ai.conversation.id"] == "trip-42"
    # another process (a new exporter) derives the same ids: its calls land under the same nodes
    receiver.spans.clear()
    other = exporters(receiver.url)
    row, props = chat_row(hdrs=[*sess, ("Helicone-Session-Path", "/plan/search")])
    other.on_row(row, props)
    other.force_flush()
    again = receiver.wait_spans(4)
    call = next(s for s in again if s.kind == CLIENT)
    assert call.parent_span_id == nodes["/plan/search"].span_id
    assert {s.span_id for s in again if s.kind == INTERNAL} == {nodes[n].span_id for n in ("/", "/plan", "/plan/search")}


def test_content_only_when_enabled(receiver, exporters):
    row, props = chat_row()
    anth, ap = call_row(provider="anthropic", api="anthropic-messages", path="/v1/messages",
                        body=json.dumps(anthropic_message("claude-3-5-haiku-latest", "Hi from Claude")).encode(),
                        request={"model": "claude-3-5-haiku-latest", "system": "You are kind.",
                                 "messages": [{"role": "user", "content": [{"type": "text", "text": "Greet me"}]}]})
    stream, sp = call_row(chunks=openai_sse_events("gpt-4o-mini", True))
    off = exporters(receiver.url)
    for r, p in ((row, props), (anth, ap), (stream, sp)):
        off.on_row(r, p)
    off.force_flush()
    for s in receiver.wait_spans(3):
        assert not [k for k in s.attributes if k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_"))]
        assert "Say hello" not in json.dumps(s.attributes) and "Hello there" not in json.dumps(s.attributes)
    receiver.spans.clear()
    on = exporters(receiver.url, content=True)
    for r, p in ((row, props), (anth, ap), (stream, sp)):
        on.on_row(r, p)
    on.force_flush()
    spans = {s.attributes["helicone.request_id"]: s.attributes for s in receiver.wait_spans(3)}
    a = spans[row["id"]]
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Say hello"}]},
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello there"}], "finish_reason": "stop"}]
    a = spans[anth["id"]]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are kind."}]
    assert json.loads(a["gen_ai.input.messages"])[0]["parts"][0]["content"] == "Greet me"
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Hi from Claude"
    a = spans[stream["id"]]
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Hello from the fake upstream!"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_down_collector_loses_spans_visibly_never_calls(exporters):
    exp = exporters(f"http://127.0.0.1:{closed_port()}", timeout=0.5)
    rows = [chat_row() for _ in range(50)]
    t = time.perf_counter()
    for row, props in rows:
        exp.on_row(row, props)
    assert time.perf_counter() - t < 2  # 50 rows: no network on the writer thread
    deadline = time.monotonic() + 15
    while exp.counters["spans_failed"] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exp.counters["spans_queued"] == 50
    assert exp.counters["spans_failed"] == 50 and exp.counters["spans_exported"] == 0


def test_a_refusing_collector_is_counted(receiver, exporters):
    receiver.fail_with = 400  # not retryable: one attempt
    exp = exporters(receiver.url)
    for row, props in [chat_row() for _ in range(3)]:
        exp.on_row(row, props)
    exp.force_flush()
    assert exp.counters["spans_failed"] == 3 and exp.counters["spans_exported"] == 0
    receiver.fail_with = None
    exp.on_row(*chat_row())
    exp.force_flush()
    assert exp.counters["spans_exported"] == 1 and len(receiver.wait_spans(1)) == 1


class Stuck(SpanExporter):
    """An exporter stuck on its first batch until released (a collector that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got = 0

    def export(self, spans: Sequence) -> SpanExportResult:
        self.release.wait(30)
        self.got += len(spans)
        return SpanExportResult.SUCCESS


def test_a_full_queue_drops_spans_and_counts_them():
    stuck = Stuck()
    exp = OtelExporter("http://127.0.0.1:4318", exporter=stuck, max_queue_size=8, schedule_delay_millis=10)
    try:
        for row, props in [chat_row() for _ in range(100)]:
            exp.on_row(row, props)
        stuck.release.set()
    finally:
        exp.close()
    c = exp.counters
    assert c["spans_queued"] == 8 and c["spans_dropped"] == 92  # 8 waiting or in flight: the rest dropped
    assert c["spans_exported"] == stuck.got == 8 and c["spans_failed"] == 0


def test_bad_rows_are_counted_never_raised(receiver, exporters):
    exp = exporters(receiver.url)
    exp.on_row(None, [])  # type: ignore[arg-type]
    exp.on_row({"id": "x", "created_at": "yesterday", "status": "200", "latency_ms": "slow",
                "request_headers": "{not json", "properties": "[1]", "response_body": 7}, [])
    exp.on_row({}, [])
    exp.force_flush()
    assert exp.counters["errors"] >= 1
    assert exp.counters["errors"] + exp.counters["spans_queued"] == 3


def test_parse_otlp_headers():
    assert parse_otlp_headers("") == {}
    assert parse_otlp_headers("api-key=abc, x-tenant = acme ,") == {"api-key": "abc", "x-tenant": "acme"}
    assert parse_otlp_headers("Authorization=Basic%20dXNlcjpwdw==") == {"Authorization": "Basic dXNlcjpwdw=="}
    with pytest.raises(ValueError, match="has no '='"):
        parse_otlp_headers("api-key")
    with pytest.raises(ValueError, match="not a valid HTTP header name"):
        parse_otlp_headers("bad key=1")
    with pytest.raises(ValueError, match="not a valid HTTP header name"):
        parse_otlp_headers("=value")
    with pytest.raises(ValueError, match="given twice"):
        parse_otlp_headers("a=1,A=2")
    with pytest.raises(ValueError, match="line break"):
        parse_otlp_headers("a=1%0d%0aInjected: yes")


def test_traces_url():
    assert traces_url("http://localhost:4318") == "http://localhost:4318/v1/traces"
    assert traces_url("https://otel.example.com/") == "https://otel.example.com/v1/traces"
    assert traces_url("http://c:4318/custom/traces") == "http://c:4318/custom/traces"
    for bad in ("localhost:4318", "grpc://c:4317", "http://"):
        with pytest.raises(ValueError, match="http:// or https://"):
            traces_url(bad)
    with pytest.raises(ValueError):
        OtelExporter("collector:4318")


def test_attribute_names_are_the_conventions():
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as g

    names = {g.GEN_AI_OPERATION_NAME, g.GEN_AI_PROVIDER_NAME, g.GEN_AI_SYSTEM, g.GEN_AI_REQUEST_MODEL,
             g.GEN_AI_RESPONSE_MODEL, g.GEN_AI_USAGE_INPUT_TOKENS, g.GEN_AI_USAGE_OUTPUT_TOKENS,
             g.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, g.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
             g.GEN_AI_RESPONSE_FINISH_REASONS, g.GEN_AI_RESPONSE_ID, g.GEN_AI_CONVERSATION_ID,
             g.GEN_AI_INPUT_MESSAGES, g.GEN_AI_OUTPUT_MESSAGES, g.GEN_AI_SYSTEM_INSTRUCTIONS,
             g.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, g.GEN_AI_REQUEST_STREAM}
    source = (genai.__file__, __import__("helicone_addon.exporters.otel", fromlist=["x"]).__file__)
    text = "".join(open(f).read() for f in source)
    for name in names:
        assert f'"{name}"' in text, name
    assert {p.value for p in g.GenAiProviderNameValues} >= {genai.provider_name(p) for p in
                                                            ("openai", "azure", "anthropic", "gemini", "vertex",
                                                             "bedrock", "mistral", "x-ai", "groq", "deepseek")}


def test_finish_reasons_and_ids_from_every_wire_format():
    assert genai.finish_reasons(b"".join(openai_sse_events("m", True))) == ["stop"]
    assert genai.finish_reasons(b"".join(anthropic_sse_events("m")), "anthropic-messages") == ["end_turn"]
    gemini = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}], "responseId": "r-1"}
    assert genai.finish_reasons(json.dumps(gemini)) == ["STOP"] and genai.response_id(json.dumps(gemini)) == "r-1"
    two = openai_completion("m", 'he said "finish_reason": "length" ok')
    two["choices"].append(dict(two["choices"][0], index=1, finish_reason="length"))
    assert genai.finish_reasons(json.dumps(two)) == ["stop", "length"]  # text quoting the key never matches
    assert genai.finish_reasons(None) == [] and genai.response_id("") is None
    big = "x" * (2 << 20) + json.dumps({"finish_reason": "stop"})
    assert genai.finish_reasons(big) == ["stop"]


def test_on_row_cost(exporters):
    exp = exporters(f"http://127.0.0.1:{closed_port()}", timeout=0.2, max_queue_size=100_000)
    rows = [chat_row(hdrs=[("Helicone-Session-Id", f"s{i % 7}"), ("Helicone-Session-Path", f"/a/{i % 3}")])
            for i in range(200)]
    t = time.perf_counter()
    for _ in range(5):
        for row, props in rows:
            exp.on_row(row, props)
    per_row = (time.perf_counter() - t) / 1000
    assert per_row < 0.002, f"{per_row * 1e6:.0f} µs per row"


# -- the child process the proxy runs the export in -------------------------------------------------
def test_the_collector_headers_never_reach_the_command_line(receiver):
    exp = OtelProcess(receiver.url, {"Authorization": "Bearer collector-secret"})
    try:
        cmdline = open(f"/proc/{exp._proc.pid}/cmdline", "rb").read()
        assert b"otel_process" in cmdline and b"collector-secret" not in cmdline
        exp.on_row(*chat_row())
        assert exp.force_flush()
        assert receiver.requests[0]["authorization"] == "Bearer collector-secret"
    finally:
        exp.close()


def test_a_child_that_dies_is_counted_and_started_again(receiver, monkeypatch):
    from helicone_addon.exporters import otel_process

    monkeypatch.setattr(otel_process, "RESTART_S", 1.0)
    exp = OtelProcess(receiver.url)
    try:
        exp.on_row(*chat_row())
        assert exp.force_flush()
        first = exp._proc
        first.kill()
        first.wait()
        exp._started_at = time.monotonic()  # as if it had just been started: the next start waits 1 s
        for row, props in [chat_row() for _ in range(3)]:
            exp.on_row(row, props)  # never raises: dropped and counted, or exported by the new child
        deadline = time.monotonic() + 10
        while exp._proc is first and time.monotonic() < deadline:
            exp.on_row(*chat_row())
            time.sleep(0.1)
        assert exp._proc is not first and exp.force_flush()
        c = exp.counters
        assert c["restarts"] == 1
        assert c["spans_exported"] == len(receiver.spans) >= 2  # before the kill and after the restart
        assert c["spans_queued"] + c["spans_dropped"] >= 5 and c["spans_dropped"] >= 1
    finally:
        exp.close()


def test_ctrl_c_leaves_the_export_to_the_proxy(receiver):
    """Ctrl-C in a terminal reaches every process of the group: the child ignores it, and the proxy
    closes it after a last flush. A proxy killed outright closes the child's stdin: it exits alone."""
    import signal

    exp = OtelProcess(receiver.url)
    try:
        exp.on_row(*chat_row())
        assert exp.force_flush()  # the child is up and has set its handlers
        exp._proc.send_signal(signal.SIGINT)
        exp.on_row(*chat_row())
        assert exp.force_flush() and len(receiver.spans) == 2
        proc = exp._proc
    finally:
        exp.close()
    assert proc.poll() == 0
    exp = OtelProcess(receiver.url)
    exp._proc.stdin.close()  # as when the proxy dies: the child sees its input end
    assert exp._proc.wait(10) == 0
    exp.close()


def test_the_proxy_process_never_loads_the_sdk():
    """The proxy's process only slims rows: the OpenTelemetry SDK is imported by the exporter process."""
    import subprocess
    import sys

    code = ("import sys; from helicone_addon.exporters.hub import Exporters; e = Exporters(); "
            "e.set_otlp('http://127.0.0.1:9'); loaded = [m for m in sys.modules if m.startswith('opentelemetry')]; "
            "e.close(); print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
