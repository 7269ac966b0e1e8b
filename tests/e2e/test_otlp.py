"""OTLP/HTTP traces from real clients into the real proxy's local API: Helicone's async logger
(helicone-async, on OpenLLMetry), traceloop-sdk, the OpenTelemetry GenAI instrumentation for openai with
the official exporters; and Helicone's manual loggers (Python helicone-helpers, Node @helicone/helpers).

Each client runs in its own process (tests/clients/): OpenTelemetry's global state is process-wide.
The SDKs call the fake upstream directly, not through the proxy: only the traces reach us.
helicone-async pins traceloop-sdk <0.34 (and with it an opentelemetry older than ours): it and
traceloop-sdk run from a venv of their own, installed as users install them (`pip install helicone-async
openai anthropic`, which brings traceloop-sdk), kept between runs in the user's cache directory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import conftest
import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from helicone_addon.otlp import request_id
from helicone_addon.security import read_token

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
FAKE_TEXT = "Hello from the fake upstream!"


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def api(fake, tmp_path_factory):
    p = conftest.Proxy(tmp_path_factory.mktemp("otlp"), fake.url, api_port=conftest.free_port()).start()
    conftest.wait_port(p.api_port, proc=p.proc)
    p.token = read_token(p.data_dir)
    p.api_url = f"http://127.0.0.1:{p.api_port}"
    yield p
    p.stop()


# helicone-async as `pip install helicone-async` resolves it; the versions its pins come to are named so
# that pip does not spend minutes backtracking through every newer opentelemetry release to find them
CLIENT_VENV_PACKAGES = [
    "helicone-async>=1.1", "openai", "anthropic", "traceloop-sdk==0.33.12", "opentelemetry-api==1.28.2",
    "opentelemetry-sdk==1.28.2", "opentelemetry-exporter-otlp-proto-http==1.28.2",
    "opentelemetry-exporter-otlp-proto-grpc==1.28.2", "opentelemetry-instrumentation==0.49b2",
    "opentelemetry-semantic-conventions==0.49b2",
]  # fmt: skip


@pytest.fixture(scope="session")
def client_venv_python() -> str:
    """The Python of a venv holding helicone-async and its own pins (made once, then reused)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "helicone-addon-tests"
    tag = hashlib.sha256("\n".join([sys.version, *CLIENT_VENV_PACKAGES]).encode()).hexdigest()[:12]
    venv = cache / f"venv-helicone-async-{tag}"
    python = venv / "bin" / "python"
    if (venv / "ready").exists() and python.exists():
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *CLIENT_VENV_PACKAGES],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as e:
        done = subprocess.CompletedProcess([], 1, "", str(e))
    if done.returncode != 0:
        reason = f"could not install {' '.join(CLIENT_VENV_PACKAGES)} into {venv}: {(done.stderr or '')[-400:]}"
        print("SKIP reason:", reason)
        pytest.skip(reason)
    (venv / "ready").write_text("\n".join(CLIENT_VENV_PACKAGES))
    return str(python)


def run_client(script: str, *args: str, env: dict | None = None, timeout: float = 90, python: str = sys.executable) -> dict:
    cmd = [python, str(CLIENTS / script), *args]
    env = {**os.environ, "TRACELOOP_TELEMETRY": "false", **(env or {})}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_rows(api, m: str, n: int, extra: str = "", timeout: float = 20) -> list[dict]:
    sql = (
        "SELECT r.* FROM requests r JOIN properties p ON p.request_id = r.id "
        f"WHERE p.key = 'run' AND p.value = ? {extra} ORDER BY r.created_at"
    )
    return api.wait_rows(sql, (m,), n, timeout)


# -- helicone-async --------------------------------------------------------------------------------


@pytest.mark.timeout(900)  # the first run installs the client's venv
def test_helicone_async_logger_logs_openai_json_stream_and_anthropic(api, fake, client_venv_python):
    m = marker()
    got = run_client("helicone_async_client.py", f"{api.api_url}/v1/trace/log-python", api.token, fake.url, m,
                     python=client_venv_python)  # fmt: skip
    assert got == {"json": FAKE_TEXT, "stream": FAKE_TEXT, "anthropic": FAKE_TEXT}
    # the anthropic SDK traces itself too: its span and OpenLLMetry's are one call, merged into one row
    # (content from OpenLLMetry's span, the response id from the SDK's)
    run_rows(api, m, 1, "AND r.provider = 'anthropic' AND r.response_body LIKE '%msg_fake123%' "
                        f"AND r.request_body LIKE '%{m} anthropic%'")  # fmt: skip
    rows = run_rows(api, m, 3)
    assert len(rows) == 3, [(r["provider"], r["model"]) for r in rows]
    by = {("stream" if r["streamed"] else r["provider"]): r for r in rows}
    assert set(by) == {"openai", "stream", "anthropic"}
    for r in rows:
        assert r["source"] == "otlp"
        assert r["status"] == 200 and r["error"] is None
        assert r["user_id"] == f"user-{m}"
        assert json.loads(r["properties"]) == {"run": m, "feature": "otlp-e2e"}
        assert api.props(r["id"]) == {"run": m, "feature": "otlp-e2e"}
        assert r["latency_ms"] > 0 and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
        assert r["cost_usd"] > 0
        assert FAKE_TEXT in r["response_body"]
        assert r["session_id"] is None  # a call on its own is no session
    oai = by["openai"]
    assert (oai["model"], oai["api"], oai["path"]) == ("gpt-4o-mini", "openai-chat", "/v1/chat/completions")
    assert (oai["prompt_tokens"], oai["completion_tokens"], oai["total_tokens"]) == (12, 6, 18)
    assert oai["usage_source"] == "client"
    assert json.loads(oai["request_body"])["messages"] == [{"role": "user", "content": f"{m} json"}]
    assert json.loads(oai["response_body"])["choices"][0]["message"]["content"] == FAKE_TEXT
    st = by["stream"]
    assert st["provider"] == "openai" and st["streamed"] == 1 and st["ttft_ms"] is not None
    assert json.loads(st["request_body"])["stream"] is True and f"{m} stream" in st["request_body"]
    assert st["usage_source"] in ("client", "estimated")  # OpenLLMetry 0.33 reports no usage for a stream
    an = by["anthropic"]
    assert (an["model"], an["api"]) == ("claude-3-5-sonnet-20241022", "anthropic-messages")
    assert (an["prompt_tokens"], an["completion_tokens"], an["cached_tokens"], an["cache_write_tokens"]) == (28, 6, 5, 3)
    assert an["usage_source"] == "client"
    body = json.loads(an["request_body"])
    assert body["system"] == "You are terse." and body["messages"] == [{"role": "user", "content": f"{m} anthropic"}]


@pytest.mark.timeout(900)
def test_helicone_async_logger_without_content(api, fake, client_venv_python):
    m = marker()
    run_client("helicone_async_client.py", f"{api.api_url}/v1/trace/log-python", api.token, fake.url, m, "--no-content",
               python=client_venv_python)  # fmt: skip
    rows = run_rows(api, m, 3)
    for r in rows:
        assert m not in (r["request_body"] or "") and FAKE_TEXT not in (r["response_body"] or "")
        assert r["model"] and r["provider"] in ("openai", "anthropic")
    priced = [r for r in rows if not r["streamed"]]
    assert priced and all(r["usage_source"] == "client" and r["cost_usd"] > 0 for r in priced)


# -- traceloop-sdk: a workflow is a session ------------------------------------------------------------


@pytest.mark.timeout(900)  # the first run installs the client's venv
def test_traceloop_workflow_is_a_session_tree(api, fake, client_venv_python):
    m = marker()
    run_client("traceloop_client.py", api.api_url, api.token, fake.url, m, python=client_venv_python)
    rows = run_rows(api, m, 3)
    assert len(rows) == 3
    sids = {r["session_id"] for r in rows}
    assert len(sids) == 1 and len(next(iter(sids))) == 32
    assert {r["session_name"] for r in rows} == {"research"}
    assert sorted(r["session_path"] for r in rows) == ["/research/act", "/research/act", "/research/plan"]
    sid = rows[0]["session_id"]
    out = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "sessions", sid, "--json", "--db", str(api.db_path)],
        capture_output=True, text=True, timeout=60, cwd=conftest.ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    nodes = {n["path"]: n for n in json.loads(out.stdout)["nodes"]}
    assert set(nodes) == {"/", "/research", "/research/plan", "/research/act"}
    assert (nodes["/"]["calls"], nodes["/research"]["calls"]) == (3, 3)
    assert (nodes["/research/plan"]["calls"], nodes["/research/act"]["calls"]) == (1, 2)
    assert nodes["/research"]["total_tokens"] == sum(r["total_tokens"] for r in rows) == 54
    text = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "sessions", sid, "--db", str(api.db_path)],
        capture_output=True, text=True, timeout=60, cwd=conftest.ROOT, env={**os.environ, "COLUMNS": "200"},
    ).stdout  # fmt: skip
    assert "research" in text and "plan" in text and "act" in text


# -- the OpenTelemetry GenAI instrumentation with the official exporters ------------------------------


def test_opentelemetry_openai_v2_with_official_exporters(api, fake):
    m = marker()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": api.api_url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{api.token}",
    }
    got = run_client("openai_v2_client.py", fake.url, m, env=env)
    tid = got["trace_id"]
    # spans to /v1/traces, content as log events to /v1/logs: each row is complete once both arrived
    rows = api.wait_rows(
        "SELECT * FROM requests WHERE session_id = ? AND request_body LIKE ? AND response_body LIKE ? ORDER BY created_at",
        (tid, f"%{m}%", f"%{FAKE_TEXT}%"), 2,
    )  # fmt: skip
    assert len(api.query("SELECT id FROM requests WHERE session_id = ?", (tid,))) == 2
    for r in rows:
        assert (r["source"], r["provider"], r["model"], r["status"]) == ("otlp", "openai", "gpt-4o-mini", 200)
        assert (r["prompt_tokens"], r["completion_tokens"], r["usage_source"]) == (12, 6, "client")
        assert r["cost_usd"] > 0
        assert (r["session_path"], r["session_name"]) == ("/agent", "agent")
    first = json.loads(rows[0]["request_body"])
    assert first["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"{m} json"}]


# -- Helicone's manual loggers (the async log payload) ----------------------------------------------


def test_helicone_helpers_python_manual_logger(api):
    m = marker()
    assert run_client("manual_logger_client.py", api.api_url, api.token, m) == {"model": "gpt-4o-mini"}
    (r,) = api.wait_rows("SELECT * FROM requests WHERE properties LIKE ?", (f'%"run": "{m}"%',), 1)
    assert (r["source"], r["provider"], r["model"], r["user_id"]) == ("async", "openai", "gpt-4o-mini", "manual-user")
    assert (r["prompt_tokens"], r["completion_tokens"]) == (11, 3) and r["cost_usd"] > 0
    assert f"{m} manual" in r["request_body"] and "logged by hand" in r["response_body"]


def test_helicone_helpers_node_manual_logger(api, tmp_path):
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        print("SKIP reason: node or npm is not installed")
        pytest.skip("node or npm is not installed")
    try:
        done = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(tmp_path),
                               "@helicone/helpers"], capture_output=True, text=True, timeout=240)  # fmt: skip
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        reason = "npm install @helicone/helpers failed: " + ((done.stderr or done.stdout)[-300:] if done else "timed out")
        print("SKIP reason:", reason)
        pytest.skip(reason)
    m = marker()
    out = subprocess.run([node, str(CLIENTS / "manual_logger_node.cjs"), api.api_url, api.token, m], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "NODE_PATH": str(tmp_path / "node_modules")})  # fmt: skip
    assert out.returncode == 0, out.stderr
    (r,) = api.wait_rows("SELECT * FROM requests WHERE properties LIKE ?", (f'%"run": "{m}"%',), 1)
    assert (r["source"], r["provider"], r["model"], r["user_id"]) == ("async", "openai", "gpt-4o-mini", "node-user")
    assert (r["prompt_tokens"], r["completion_tokens"]) == (9, 4) and r["cost_usd"] > 0


# -- the door: duplicates, bad bodies, no token ------------------------------------------------------


def _genai_span(m: str):
    """One finished GenAI chat span, made by the OpenTelemetry SDK (a private tracer provider)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("otlp-e2e").start_as_current_span("chat gpt-4o-mini") as s:
        s.set_attributes({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": m}]}]),
        })  # fmt: skip
    return spans.get_finished_spans()


def test_duplicate_span_is_one_row_and_json_encoding(api):
    m = marker()
    finished = _genai_span(m)
    ctx = finished[0].get_span_context()
    rid = request_id(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    exporter = OTLPSpanExporter(endpoint=f"{api.api_url}/v1/traces", headers={"Authorization": f"Bearer {api.token}"})
    assert exporter.export(finished) == SpanExportResult.SUCCESS
    assert exporter.export(finished) == SpanExportResult.SUCCESS  # the exporter retried, say
    r = api.row(rid)
    assert (r["model"], r["prompt_tokens"], r["completion_tokens"], r["usage_source"]) == ("gpt-4o-mini-2024-07-18", 100, 20, "client")
    assert len(api.query("SELECT id FROM requests WHERE request_body LIKE ?", (f"%{m}%",))) == 1

    # the same span in OTLP's JSON encoding (hex ids), gzip-compressed, to Helicone's JS path
    doc = MessageToDict(encode_spans(finished))
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for k in ("traceId", "spanId"):
                    sp[k] = base64.b64decode(sp[k]).hex()
    resp = httpx.post(f"{api.api_url}/v1/trace/log", content=gzip.compress(json.dumps(doc).encode()),
                      headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json",
                               "Content-Encoding": "gzip"})  # fmt: skip
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {}
    assert len(api.query("SELECT id FROM requests WHERE request_body LIKE ?", (f"%{m}%",))) == 1


def test_protobuf_answer_is_an_empty_export_response(api):
    body = encode_spans(_genai_span(marker())).SerializeToString()
    resp = httpx.post(f"{api.api_url}/v1/trace/log-python", content=body,
                      headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/x-protobuf"})  # fmt: skip
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(resp.content)
    assert not ExportTraceServiceResponse.FromString(resp.content).HasField("partial_success")


@pytest.mark.parametrize(
    ("ctype", "encoding", "body", "status", "says"),
    [
        ("application/x-protobuf", None, b"\xff\xff\xff\xff not protobuf", 400, "Invalid OTLP protobuf body"),
        ("application/json", None, b'{"resourceSpans": [', 400, "Invalid OTLP JSON body"),
        ("application/json", None, b'{"resourceSpans": 7}', 400, "Invalid OTLP JSON body"),
        ("application/json", None, json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "abcd", "spanId": "00f067aa0ba902b7", "name": "x"}]}]}]}).encode(), 400, "traceId must be 16 bytes"),
        ("application/json", "gzip", b"not gzip at all", 400, "not valid gzip"),
        ("text/plain", None, b"{}", 415, "Unsupported Content-Type"),
        (None, None, b"{}", 415, "Content-Type is missing"),
        ("application/json", "br", b"{}", 415, "Unsupported Content-Encoding"),
    ],
)  # fmt: skip
def test_malformed_body_is_a_400_naming_the_problem(api, ctype, encoding, body, status, says):
    headers = {"Authorization": f"Bearer {api.token}"}
    if ctype:
        headers["Content-Type"] = ctype
    if encoding:
        headers["Content-Encoding"] = encoding
    resp = httpx.post(f"{api.api_url}/v1/traces", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert says in resp.json()["message"]


def test_no_token_is_401_and_the_exporter_sees_it(api):
    finished = _genai_span(marker())
    body = encode_spans(finished).SerializeToString()
    for path in ("/v1/traces", "/v1/trace/log-python", "/v1/trace/log", "/v1/logs"):
        resp = httpx.post(f"{api.api_url}{path}", content=body, headers={"Content-Type": "application/x-protobuf"})
        assert resp.status_code == 401, path
    wrong = OTLPSpanExporter(endpoint=f"{api.api_url}/v1/traces", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.export(finished) == SpanExportResult.FAILURE
    ctx = finished[0].get_span_context()
    rid = request_id(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    assert api.query("SELECT id FROM requests WHERE id = ?", (rid,)) == []
