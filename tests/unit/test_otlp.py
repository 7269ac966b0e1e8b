"""helicone_addon.otlp: OTLP bodies -> spans -> calls -> rows, with spans made and encoded by the
OpenTelemetry SDK itself (a private tracer provider per test, nothing global)."""

from __future__ import annotations

import gzip
import json

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from helicone_addon import otlp
from helicone_addon.otlp import decode

T0 = 1_750_000_000_000_000_000  # ns


class Tracer:
    """Spans with chosen times, made by the SDK; `body()` is what an OTLP exporter would send."""

    def __init__(self) -> None:
        self.out = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.out))

    def span(self, name, attrs=None, parent=None, start_ms=0, end_ms=100, scope="app", error=None, events=()):
        tracer = self.provider.get_tracer(scope)
        ctx = set_span_in_context(parent) if parent is not None else None
        s = tracer.start_span(name, context=ctx, attributes=attrs or {}, start_time=T0 + start_ms * 1_000_000)
        for ev_name, ev_attrs, at_ms in events:
            s.add_event(ev_name, ev_attrs, timestamp=T0 + at_ms * 1_000_000)
        if error:
            s.set_status(Status(StatusCode.ERROR, error))
        s.end(end_time=T0 + end_ms * 1_000_000)
        return s

    def take(self) -> list:
        spans = list(self.out.get_finished_spans())
        self.out.clear()
        return spans


def views(finished) -> list:
    return otlp.spans(otlp.decode_traces(encode_spans(finished).SerializeToString(), otlp.PROTOBUF))


def rows(results) -> list[dict]:
    return [otlp.row_job(state, call)()[0] for state, call in results]


def hexid(span) -> tuple[str, str]:
    c = span.get_span_context()
    return format(c.trace_id, "032x"), format(c.span_id, "016x")


OPENLLMETRY_CHAT = {
    "llm.request.type": "chat", "gen_ai.system": "OpenAI", "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.prompt_tokens": 40,
    "gen_ai.usage.completion_tokens": 10, "llm.usage.total_tokens": 50,
    "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "be brief",
    "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "weather in Paris?",
    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
    "gen_ai.completion.0.tool_calls.0.id": "call_1", "gen_ai.completion.0.tool_calls.0.name": "get_weather",
    "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
    "traceloop.association.properties.user_id": "alice", "traceloop.association.properties.Tier": "gold",
}  # fmt: skip


# -- bodies ----------------------------------------------------------------------------------------


def test_protobuf_json_and_gzip_bodies_decode_to_the_same_spans():
    t = Tracer()
    t.span("chat", OPENLLMETRY_CHAT)
    msg = encode_spans(t.take())
    raw = msg.SerializeToString()
    doc = MessageToDict(msg)
    for sp in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP JSON: hex ids
        for k in ("traceId", "spanId"):
            sp[k] = bytes.fromhex(__import__("base64").b64decode(sp[k]).hex()).hex()
    js = json.dumps(doc).encode()
    a = otlp.spans(otlp.decode_traces(raw, "application/x-protobuf"))
    b = otlp.spans(otlp.decode_traces(gzip.compress(raw), "application/x-protobuf", "gzip"))
    c = otlp.spans(otlp.decode_traces(gzip.compress(raw), "application/protobuf"))  # gzip without the header
    d = otlp.spans(otlp.decode_traces(js, "application/json; charset=utf-8"))
    assert a == b == c == d
    assert len(a) == 1 and a[0].attrs["gen_ai.prompt.1.content"] == "weather in Paris?"
    assert len(a[0].trace_id) == 32 and len(a[0].span_id) == 16


@pytest.mark.parametrize(
    ("body", "ctype", "enc", "status", "says"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", None, 400, "Invalid OTLP protobuf body"),
        (b"[1, 2]", "application/json", None, 400, "expected an object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "", "spanId": "", "name": "n"}]}]}]}',
         "application/json", None, 400, "resourceSpans[0].scopeSpans[0].spans[0] ('n'): traceId must be 16 bytes"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", '
         b'"spanId": "00f067aa0ba902b7", "parentSpanId": "abcd"}]}]}]}', "application/json", None, 400, "parentSpanId"),
        (gzip.compress(b"{}")[:-6], "application/json", "gzip", 400, "truncated gzip"),
        (b"{}", "application/xml", None, 415, "Unsupported Content-Type"),
        (b"{}", "application/json", "zstd", 415, "Unsupported Content-Encoding"),
    ],
)  # fmt: skip
def test_bad_bodies_name_the_problem(body, ctype, enc, status, says):
    with pytest.raises(otlp.OtlpError) as e:
        otlp.decode_traces(body, ctype, enc)
    assert e.value.status == status
    assert says in e.value.message


def test_a_gzip_bomb_stops_at_the_limit(monkeypatch):
    monkeypatch.setattr(decode, "MAX_DECOMPRESSED", 1000)
    with pytest.raises(otlp.OtlpError, match="inflates beyond"):
        otlp.decode_traces(gzip.compress(b"\x00" * 5000), "application/x-protobuf", "gzip")


def test_empty_export_answers_in_the_request_encoding():
    assert otlp.empty_response("traces", otlp.JSON) == (b"{}", otlp.JSON)
    assert otlp.empty_response("traces", otlp.PROTOBUF) == (b"", otlp.PROTOBUF)


# -- calls -----------------------------------------------------------------------------------------


def test_openllmetry_chat_with_tool_calls_becomes_an_openai_row():
    t = Tracer()
    s = t.span("openai.chat", OPENLLMETRY_CHAT, scope="opentelemetry.instrumentation.openai.v1")
    book = otlp.TraceBook()
    (r,) = rows(book.add_spans(views(t.take())))
    assert r["id"] == otlp.request_id(*hexid(s))
    assert (r["source"], r["provider"], r["api"], r["status"]) == ("otlp", "openai", "openai-chat", 200)
    assert (r["model"], r["model_requested"]) == ("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    assert (r["prompt_tokens"], r["completion_tokens"], r["total_tokens"], r["usage_source"]) == (40, 10, 50, "client")
    assert r["cost_usd"] == pytest.approx(40 * 0.15e-6 + 10 * 0.6e-6)
    assert json.loads(r["usage_raw"])["gen_ai.usage.prompt_tokens"] == 40
    assert r["latency_ms"] == pytest.approx(100, abs=0.01)
    assert (r["user_id"], json.loads(r["properties"])) == ("alice", {"tier": "gold"})
    req, resp = json.loads(r["request_body"]), json.loads(r["response_body"])
    assert req["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Paris?"}]
    (choice,) = resp["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]


def test_anthropic_tokens_count_the_cache_once_and_tools_become_blocks():
    t = Tracer()
    t.span("anthropic.chat", {
        "gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-5-haiku-20241022",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 600, "gen_ai.usage.cache_creation.input_tokens": 300,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi",
        "gen_ai.prompt.1.role": "assistant", "gen_ai.prompt.1.tool_calls.0.id": "tu_1",
        "gen_ai.prompt.1.tool_calls.0.name": "lookup", "gen_ai.prompt.1.tool_calls.0.arguments": '{"q": 1}',
        "gen_ai.prompt.2.role": "tool", "gen_ai.prompt.2.tool_call_id": "tu_1", "gen_ai.prompt.2.content": "found",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "done",
        "gen_ai.completion.0.finish_reason": "end_turn",
    })  # fmt: skip
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["provider"], r["api"]) == ("anthropic", "anthropic-messages")
    assert (r["prompt_tokens"], r["cached_tokens"], r["cache_write_tokens"], r["completion_tokens"]) == (1000, 600, 300, 50)
    assert r["cost_usd"] > 0
    req = json.loads(r["request_body"])
    assert req["max_tokens"] == 256
    assert req["messages"][1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": 1}}]}
    assert req["messages"][2]["content"][0]["type"] == "tool_result"
    resp = json.loads(r["response_body"])
    assert resp["content"] == [{"type": "text", "text": "done"}] and resp["stop_reason"] == "end_turn"
    assert resp["usage"] == {"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 600, "cache_creation_input_tokens": 300}


def test_semantic_convention_messages_for_gemini():
    t = Tracer()
    t.span("generate_content gemini-2.0-flash", {
        "gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.0-flash", "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 7,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be kind"}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "hi!"}],
                                               "finish_reason": "stop"}]),
    })  # fmt: skip
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["provider"], r["api"], r["model"], r["path"]) == ("gemini", "gemini", "gemini-2.0-flash", "/v1beta/models/gemini-2.0-flash:generateContent")
    assert (r["prompt_tokens"], r["completion_tokens"], r["usage_source"]) == (30, 7, "client")
    req = json.loads(r["request_body"])
    assert req["systemInstruction"] == {"parts": [{"text": "be kind"}]}
    assert req["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert json.loads(r["response_body"])["candidates"][0]["content"]["parts"] == [{"text": "hi!"}]


def test_an_error_span_is_an_error_row_with_the_status_it_names():
    t = Tracer()
    t.span("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                           "error.type": "RateLimitError"}, error="Error code: 429 - rate limited")  # fmt: skip
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["status"], r["error"], r["cost_usd"]) == (429, "Error code: 429 - rate limited", None)


def test_streamed_call_takes_its_first_chunk_time_from_the_chunk_events():
    t = Tracer()
    chunks = [("llm.content.completion.chunk", {}, ms) for ms in (40, 55, 70)]
    t.span("openai.chat", {**OPENLLMETRY_CHAT, "llm.is_streaming": True}, events=chunks)
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert r["streamed"] == 1 and r["ttft_ms"] == pytest.approx(40, abs=0.01)
    assert json.loads(r["request_body"])["stream"] is True


def test_structure_spans_are_not_rows():
    t = Tracer()
    wf = t.span("research.workflow", {"traceloop.span.kind": "workflow", "traceloop.entity.name": "research"})
    t.span("agent", {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}, parent=wf)
    t.span("http GET", {"http.method": "GET"}, parent=wf)
    assert otlp.TraceBook().add_spans(views(t.take())) == []


# -- the book: sessions, duplicates, twins, late events ----------------------------------------------


def test_a_trace_is_a_session_and_late_ancestors_complete_the_path():
    t = Tracer()
    wf = t.provider.get_tracer("traceloop.tracer").start_span("research.workflow", attributes={
        "traceloop.span.kind": "workflow", "traceloop.entity.name": "research"}, start_time=T0)  # fmt: skip
    task = t.provider.get_tracer("traceloop.tracer").start_span("plan.task", context=set_span_in_context(wf), attributes={
        "traceloop.span.kind": "task", "traceloop.entity.name": "plan"}, start_time=T0)  # fmt: skip
    llm = t.span("openai.chat", {k: v for k, v in OPENLLMETRY_CHAT.items() if "association" not in k}, parent=task)
    book = otlp.TraceBook()
    (first,) = rows(book.add_spans(views(t.take())))  # the call ends first: its ancestors are unknown yet
    tid, sid = hexid(llm)
    assert (first["id"], first["session_id"], first["session_path"], first["session_name"]) == (otlp.request_id(tid, sid), tid, "/", None)
    task.end(end_time=T0 + 200_000_000)
    (partial,) = rows(book.add_spans(views(t.take())))  # the task: the part of the path known so far
    assert (partial["id"], partial["session_path"], partial["session_name"]) == (first["id"], "/plan", None)
    assert rows(book.add_spans(views([t.span("other", parent=task)]))) == []  # nothing new about the call
    wf.end(end_time=T0 + 300_000_000)
    (again,) = rows(book.add_spans(views(t.take())))  # the workflow ended: the same row, written again
    assert (again["id"], again["session_id"], again["session_path"], again["session_name"]) == (first["id"], tid, "/research/plan", "research")
    assert book.add_spans(views([])) == []


def test_traceloop_attributes_give_the_path_before_the_ancestors_arrive():
    t = Tracer()
    root = t.provider.get_tracer("x").start_span("wf", start_time=T0)
    t.span("openai.chat", {**OPENLLMETRY_CHAT, "traceloop.workflow.name": "research", "traceloop.entity.path": "act.sub"}, parent=root)
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["session_path"], r["session_name"]) == ("/research/act/sub", "research")


def test_helicone_session_headers_in_the_association_properties_win():
    t = Tracer()
    root = t.provider.get_tracer("x").start_span("wf", start_time=T0)
    t.span("openai.chat", {**OPENLLMETRY_CHAT, "traceloop.association.properties.Helicone-Session-Id": "my-session",
                           "traceloop.association.properties.helicone-session-name": "Mine"}, parent=root)  # fmt: skip
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["session_id"], r["session_name"], r["session_path"]) == ("my-session", "Mine", "/")
    assert json.loads(r["properties"]) == {"tier": "gold"}


def test_spans_of_our_own_exporter_keep_their_request_id_user_session_and_properties():
    t = Tracer()
    t.span("chat gpt-4o-mini", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 2,
        "helicone.request_id": "0b9d5e2c-6c5e-4f3a-9b1e-2f4d6a8c0e11", "helicone.user_id": "bob",
        "helicone.session.id": "s-1", "helicone.session.path": "/plan/search", "helicone.session.name": "Trip",
        "helicone.property.feature": "search",
    }, scope="helicone_addon")  # fmt: skip
    (r,) = rows(otlp.TraceBook().add_spans(views(t.take())))
    assert (r["id"], r["user_id"]) == ("0b9d5e2c-6c5e-4f3a-9b1e-2f4d6a8c0e11", "bob")
    assert (r["session_id"], r["session_path"], r["session_name"]) == ("s-1", "/plan/search", "Trip")
    assert json.loads(r["properties"]) == {"feature": "search"}


def test_a_span_sent_again_is_not_logged_again_until_forgotten():
    now = [0.0]
    book = otlp.TraceBook(ttl=60, clock=lambda: now[0])
    t = Tracer()
    t.span("openai.chat", OPENLLMETRY_CHAT)
    spans = views(t.take())
    (first,) = rows(book.add_spans(spans))
    assert book.add_spans(spans) == []
    now[0] = 1000.0
    book.add_spans([])  # time passes: the book forgets
    (again,) = rows(book.add_spans(spans))
    assert again["id"] == first["id"]  # and if it comes back, it replaces the same row


def test_the_book_keeps_at_most_max_bytes_of_content():
    book = otlp.TraceBook(max_bytes=20_000)
    t = Tracer()
    for i in range(50):
        t.span("openai.chat", {**OPENLLMETRY_CHAT, "gen_ai.prompt.1.content": f"{i} " + "x" * 1000})
    spans = views(t.take())
    assert len(book.add_spans(spans)) == 50
    assert book._bytes <= 20_000 and 5 < len(book._calls) < 20
    assert len(book.add_spans(spans[-5:])) == 0  # the latest are still known
    assert len(book.add_spans(spans[:5])) == 5  # the oldest were forgotten: written again, same ids


def test_two_instrumentations_of_one_call_are_one_row():
    t = Tracer()
    sdk = {"gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-3-5-haiku-20241022",
           "gen_ai.response.id": "msg_1", "gen_ai.usage.input_tokens": 28, "gen_ai.usage.output_tokens": 6}  # fmt: skip
    wrapper = {"gen_ai.system": "Anthropic", "llm.request.type": "completion", "gen_ai.request.model": "claude-3-5-haiku-20241022",
               "gen_ai.usage.prompt_tokens": 28, "gen_ai.usage.completion_tokens": 6,
               "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hey",
               "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "hello"}  # fmt: skip
    t.span("anthropic.messages.create", sdk, start_ms=5, end_ms=90, scope="com.anthropic.sdk.python")
    book = otlp.TraceBook()
    (a,) = rows(book.add_spans(views(t.take())))
    t.span("anthropic.chat", wrapper, start_ms=0, end_ms=100, scope="opentelemetry.instrumentation.anthropic")
    (b,) = rows(book.add_spans(views(t.take())))
    assert b["id"] == a["id"]
    assert "msg_1" in b["response_body"] and "hello" in b["response_body"] and "hey" in b["request_body"]
    assert b["latency_ms"] == pytest.approx(100, abs=0.01)
    # the same instrumentation twice at once is two calls, not twins
    t.span("anthropic.messages.create", sdk, start_ms=200, end_ms=300, scope="com.anthropic.sdk.python")
    t.span("anthropic.messages.create", sdk, start_ms=210, end_ms=290, scope="com.anthropic.sdk.python")
    assert len({r["id"] for r in rows(book.add_spans(views(t.take())))}) == 2


def _log_body(span, events: list[tuple[str, dict]]) -> bytes:
    """An OTLP logs export of GenAI events tied to `span`, as openai-v2 sends them (event name in the
    `event.name` attribute, the message in the body)."""
    ctx = span.get_span_context()
    records = [
        logs_pb2.LogRecord(
            time_unix_nano=T0, severity_number=logs_pb2.SEVERITY_NUMBER_INFO, trace_id=ctx.trace_id.to_bytes(16, "big"),
            span_id=ctx.span_id.to_bytes(8, "big"), body=_any(body),
            attributes=[common_pb2.KeyValue(key="event.name", value=_any(name)),
                        common_pb2.KeyValue(key="gen_ai.system", value=_any("openai"))],
        )
        for name, body in events
    ]  # fmt: skip
    scope = logs_pb2.ScopeLogs(scope=common_pb2.InstrumentationScope(name="opentelemetry.instrumentation.openai_v2"), log_records=records)
    return ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(scope_logs=[scope])]).SerializeToString()


def _any(v) -> common_pb2.AnyValue:
    if isinstance(v, dict):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[common_pb2.KeyValue(key=k, value=_any(x)) for k, x in v.items()]))
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    return common_pb2.AnyValue(string_value=str(v))


@pytest.mark.parametrize("events_first", [False, True])
def test_log_events_bring_the_content_whichever_comes_first(events_first):
    t = Tracer()
    s = t.span("chat gpt-4o-mini", {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                                    "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 6})  # fmt: skip
    logs = _log_body(s, [
        ("gen_ai.system.message", {"content": "be brief"}), ("gen_ai.user.message", {"content": "hi"}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}),
    ])  # fmt: skip
    events = otlp.log_events(otlp.decode_logs(logs, otlp.PROTOBUF))
    book = otlp.TraceBook()
    if events_first:
        assert book.add_events(events) == []
        (r,) = rows(book.add_spans(views(t.take())))
    else:
        (bare,) = rows(book.add_spans(views(t.take())))
        assert "messages" not in json.loads(bare["request_body"])
        (r,) = rows(book.add_events(events))
    assert json.loads(r["request_body"])["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert json.loads(r["response_body"])["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert r["prompt_tokens"] == 12 and r["id"] == otlp.request_id(*hexid(s))
