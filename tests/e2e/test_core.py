"""The core proxy, driven by the real openai / anthropic SDKs and httpx through a real mitmproxy."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


def chat(client, text: str, **kw):
    return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw)


@pytest.mark.parametrize("via", ["proxy", "reverse"])
def test_openai_json_call_is_logged(proxy, fake, via):
    m = marker()
    rid = str(uuid.uuid4())
    client = proxy.openai(via)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": m}],
        extra_headers={
            "Helicone-Request-Id": rid,
            "Helicone-User-Id": "alice",
            "Helicone-Property-Feature": "search",
            "Helicone-Property-Env": "test",
            "Helicone-Session-Id": "sess-1",
            "Helicone-Session-Path": "/plan/step",
            "Helicone-Session-Name": "Trip",
        },
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream!"
    assert raw.headers["helicone-id"] == rid
    row = proxy.row(rid)
    assert row["provider"] == "openai"
    assert row["api"] == "openai-chat"
    assert row["model"] == "gpt-4o-mini"
    assert row["status"] == 200
    assert row["streamed"] == 0
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (12, 6, 18)
    assert row["usage_source"] == "provider"
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["user_id"] == "alice"
    assert (row["session_id"], row["session_path"], row["session_name"]) == ("sess-1", "/plan/step", "Trip")
    assert json.loads(row["properties"]) == {"feature": "search", "env": "test"}
    assert proxy.props(rid) == {"feature": "search", "env": "test"}
    assert row["latency_ms"] > 0
    assert m in row["request_body"] and "fake upstream" in row["response_body"]
    # secrets are redacted in the stored headers
    stored = json.loads(row["request_headers"])
    assert "sk-test-openai-key-123456" not in row["request_headers"]
    assert stored["authorization"].startswith("Bearer [REDACTED")
    # no Helicone-* header reached the upstream
    got = fake.received(m)
    assert len(got) == 1
    assert not [h for h in got[0].headers if h.startswith("helicone-")]
    assert got[0].headers["authorization"] == "Bearer sk-test-openai-key-123456"


@pytest.mark.parametrize("via", ["proxy", "reverse"])
def test_openai_stream_is_unbuffered_and_logged(proxy, via):
    m = marker()
    rid = str(uuid.uuid4())
    client = proxy.openai(via)
    t0 = time.monotonic()
    stream = chat(
        client, m, stream=True, stream_options={"include_usage": True},
        extra_headers={"Helicone-Request-Id": rid, "x-fake-delay-ms": "150"},
    )
    arrivals = []
    text = ""
    for chunk in stream:
        arrivals.append(time.monotonic() - t0)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text == "Hello from the fake upstream!"
    # 9 events, 150 ms apart upstream: the first must arrive long before the last was sent
    assert arrivals[0] < 0.6, arrivals
    assert arrivals[-1] - arrivals[0] > 0.8, arrivals
    row = proxy.row(rid)
    assert row["streamed"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 6)
    assert row["usage_source"] == "provider"
    assert 100 <= row["ttft_ms"] < 600, row["ttft_ms"]
    assert row["latency_ms"] >= 9 * 150 - 50
    assert row["ttft_ms"] < row["latency_ms"]
    assert "fake upstream" not in row["response_body"]  # raw SSE is stored, words split across events
    assert '"content": " fake"' in row["response_body"]


def test_stream_without_usage_is_estimated(proxy):
    rid = str(uuid.uuid4())
    stream = chat(proxy.openai(), marker(), stream=True, extra_headers={"Helicone-Request-Id": rid})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello from the fake upstream!"
    row = proxy.row(rid)
    assert row["usage_source"] == "estimated"
    assert row["completion_tokens"] and row["completion_tokens"] > 0
    assert row["prompt_tokens"] and row["prompt_tokens"] > 0


@pytest.mark.parametrize("via", ["proxy", "reverse"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages(proxy, via, stream):
    rid = str(uuid.uuid4())
    client = proxy.anthropic(via)
    kw = dict(model="claude-3-5-haiku-latest", max_tokens=50, messages=[{"role": "user", "content": marker()}],
              extra_headers={"Helicone-Request-Id": rid, "Helicone-User-Id": "bob"})
    if stream:
        with client.messages.stream(**kw) as s:
            text = "".join(s.text_stream)
    else:
        text = client.messages.create(**kw).content[0].text
    assert text == "Hello from the fake upstream!"
    row = proxy.row(rid)
    assert row["provider"] == "anthropic"
    assert row["model"] == "claude-3-5-haiku-latest"
    assert row["streamed"] == int(stream)
    # Anthropic input excludes cache reads/writes; our prompt_tokens includes them (20 + 5 + 3)
    assert row["prompt_tokens"] == 28
    assert row["cached_tokens"] == 5 and row["cache_write_tokens"] == 3
    assert row["completion_tokens"] == 6
    assert row["user_id"] == "bob"
    assert "sk-ant-test-anthropic-key-123456" not in row["request_headers"]
    stored = json.loads(row["request_headers"])
    key = stored.get("x-api-key") or stored["authorization"]
    assert "[REDACTED sha256:" in key


def test_user_falls_back_to_body_user(proxy):
    rid = str(uuid.uuid4())
    chat(proxy.openai(), marker(), user="body-user", extra_headers={"Helicone-Request-Id": rid})
    assert proxy.row(rid)["user_id"] == "body-user"


def test_omit_request_and_response(proxy):
    rid = str(uuid.uuid4())
    m = marker()
    chat(proxy.openai(), m, extra_headers={"Helicone-Request-Id": rid, "Helicone-Omit-Request": "true",
                                           "Helicone-Omit-Response": "true"})
    row = proxy.row(rid)
    assert row["request_body"] is None and row["response_body"] is None
    assert row["prompt_tokens"] == 12  # metrics are still recorded
    assert m not in json.dumps(row)


def test_non_uuid_request_id_is_kept_as_client_id(proxy):
    client = proxy.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_headers={"Helicone-Request-Id": "my-own-id-42"})
    hid = raw.headers["helicone-id"]
    uuid.UUID(hid)
    assert proxy.row(hid)["client_request_id"] == "my-own-id-42"


def test_bad_helicone_header_gets_400_and_is_logged(proxy, fake):
    m = marker()
    with proxy.httpx() as c:
        r = c.post("https://api.openai.com/v1/chat/completions",
                   headers={"Authorization": "Bearer sk-x", "Helicone-Cache-Bucket-Max-Size": "21"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": m}]})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "invalid_helicone_header"
    assert body["error"]["header"] == "Helicone-Cache-Bucket-Max-Size"
    assert "1 to 20" in body["error"]["message"]
    assert r.headers["helicone-error"] == "true"
    assert fake.received(m) == []
    row = proxy.row(r.headers["helicone-id"])
    assert row["status"] == 400 and "Bucket" in row["error"]


def test_upstream_error_is_logged_with_status_and_message(proxy):
    import openai

    rid = str(uuid.uuid4())
    with pytest.raises(openai.NotFoundError):
        chat(proxy.openai(), marker(), extra_headers={"Helicone-Request-Id": rid, "x-fake-status": "404"})
    row = proxy.row(rid)
    assert row["status"] == 404
    assert "fake error 404" in row["error"]


def test_connection_failure_is_a_row(make_proxy):
    dead = f"http://127.0.0.1:{__import__('conftest').free_port()}"
    p = make_proxy(upstream=dead)
    rid = str(uuid.uuid4())
    with p.httpx() as c:
        r = c.post("https://api.openai.com/v1/chat/completions", headers={"Helicone-Request-Id": rid},
                   json={"model": "gpt-4o-mini", "messages": []})
    assert r.status_code == 502
    body = r.json()  # Helicone's JSON error shape, not mitmproxy's HTML page
    assert body["error"] == "Network connection lost" and body["message"] == "Unable to connect to the provider"
    assert "refused" in body["helicone-message"].lower() or "connect" in body["helicone-message"].lower()
    assert r.headers["helicone-id"] == rid
    row = p.row(rid)
    assert row["status"] is None
    assert "upstream failed" in row["error"] and "502" in row["error"]
    # the proxy keeps serving after the failure
    with p.httpx() as c:
        r2 = c.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    assert r2.status_code == 502 and r2.json()["error"] == "Network connection lost"


def test_non_llm_https_is_tunnelled_untouched(proxy, tmp_path):
    """A local HTTPS server with its own certificate: the client trusts only that certificate, so
    the call succeeds only if the proxy does not intercept TLS. Nothing is logged."""
    import http.server
    import ssl
    import subprocess

    import httpx

    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        before = proxy.query("SELECT count(*) AS n FROM requests")[0]["n"]
        port = srv.server_address[1]
        with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(crt))) as c:
            r = c.get(f"https://localhost:{port}/v1/chat/completions")
        assert r.status_code == 200 and r.text == "ok"
        time.sleep(0.3)
        assert proxy.query("SELECT count(*) AS n FROM requests")[0]["n"] == before
    finally:
        srv.shutdown()


def test_gateway_target_url(proxy, fake):
    """Helicone-Target-Url sends the call to that origin, path and query kept."""
    m = marker()
    rid = str(uuid.uuid4())
    port = fake.url.rsplit(":", 1)[1]
    import httpx

    r = httpx.post(proxy.reverse_url + "/openai/v1/chat/completions?x=1",
                   headers={"Helicone-Target-Url": f"http://127.0.0.1:{port}", "Helicone-Request-Id": rid,
                            "Helicone-Target-Provider": "groq"},
                   json={"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": m}]})
    assert r.status_code == 200
    got = fake.received(m)
    assert got and got[0].path == "/openai/v1/chat/completions?x=1"
    row = proxy.row(rid)
    assert row["provider"] == "groq"


def test_helicone_auth_required(make_proxy, fake):
    p = make_proxy(["--set", "helicone_auth_keys=sk-helicone-local-1"])
    with p.httpx() as c:
        url = "https://api.openai.com/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        assert c.post(url, json=body).status_code == 401
        assert c.post(url, json=body, headers={"Helicone-Auth": "Bearer wrong"}).status_code == 401
        r = c.post(url, json=body, headers={"Helicone-Auth": "Bearer sk-helicone-local-1"})
    assert r.status_code == 200
    row = p.row(r.headers["helicone-id"])
    assert "sk-helicone-local-1" not in row["request_headers"]


def test_restart_keeps_the_database_and_two_proxies_share_it(make_proxy, tmp_path):
    data = tmp_path / "shared-data"
    a = make_proxy(data_dir=data)
    b = make_proxy(data_dir=data)
    ids = []
    errors = []

    def worker(p, n):
        try:
            client = p.openai()
            for _ in range(n):
                rid = str(uuid.uuid4())
                chat(client, "x", extra_headers={"Helicone-Request-Id": rid})
                ids.append(rid)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(p, 15)) for p in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a.wait_rows("SELECT id FROM requests", n=60)
    a.stop()
    b.stop()
    c = make_proxy(data_dir=data)
    chat(c.openai(), "after restart")
    rows = c.wait_rows("SELECT id FROM requests", n=61)
    assert set(ids) <= {r["id"] for r in rows}
    assert c.query("PRAGMA integrity_check")[0]["integrity_check"] == "ok"
    import os
    import stat

    assert stat.S_IMODE(os.stat(c.db_path).st_mode) == 0o600


def test_mitmdump_script_mode(fake, tmp_path):
    """`mitmdump -s helicone_addon/addon.py --listen-host 127.0.0.1` (as README says) loads the same addons."""
    import subprocess
    import sys
    from pathlib import Path

    import httpx
    from conftest import ROOT, free_port, wait_port

    port = free_port()
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.Popen(
        [str(mitmdump), "-q", "-s", str(ROOT / "helicone_addon" / "addon.py"), "--listen-host", "127.0.0.1",
         "--mode", f"reverse:{fake.url}@{port}",
         "--set", f"confdir={tmp_path / 'conf'}", "--set", f"helicone_data_dir={tmp_path / 'data'}",
         "--set", "helicone_api_port=0"], cwd=tmp_path)
    try:
        wait_port(port, proc=proc)
        rid = str(uuid.uuid4())
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Helicone-Request-Id": rid},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.headers["helicone-id"] == rid
    finally:
        proc.terminate()
        proc.wait(20)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "helicone.db")
    assert conn.execute("SELECT prompt_tokens FROM requests WHERE id = ?", (rid,)).fetchone() == (12,)
    conn.close()


def test_env_command_prints_exports(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "helicone_addon", "env", "--confdir", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    ca = str(tmp_path / "mitmproxy-ca-cert.pem")
    for var in ("HTTPS_PROXY=http://127.0.0.1:8080", f"SSL_CERT_FILE={ca}", f"REQUESTS_CA_BUNDLE={ca}",
                f"NODE_EXTRA_CA_CERTS={ca}"):
        assert f"export {var}" in out


def test_price_override_and_unknown_model(make_proxy):
    overrides = '{"my-local-*": {"input_mtok": 1000, "output_mtok": 2000}}'
    p = make_proxy(["--set", f"helicone_price_overrides={overrides}"])
    client = p.openai()
    rid1, rid2 = str(uuid.uuid4()), str(uuid.uuid4())
    client.chat.completions.create(model="my-local-llama", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"Helicone-Request-Id": rid1})
    client.chat.completions.create(model="totally-unknown-model-xyz", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"Helicone-Request-Id": rid2})
    priced, unknown = p.row(rid1), p.row(rid2)
    assert priced["cost_usd"] == pytest.approx(12 * 1000 / 1e6 + 6 * 2000 / 1e6)
    assert "override" in priced["cost_note"]
    assert unknown["cost_usd"] is None and "totally-unknown-model-xyz" in unknown["cost_note"]
    assert unknown["prompt_tokens"] == 12  # tokens are still logged


def test_bad_option_value_stops_startup(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "helicone_addon", "run", "-q", "-p", "0", "--set", f"confdir={tmp_path}",
                        "--set", f"helicone_data_dir={tmp_path / 'd'}", "--set", "helicone_price_overrides={bad json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "helicone_price_overrides" in (r.stdout + r.stderr)


def test_retention_options_apply_at_start(make_proxy, tmp_path):
    """`--set helicone_retention_days=30`: calls older than that are deleted in the background."""
    from datetime import UTC, datetime, timedelta

    from helicone_addon.store import open_db

    data = tmp_path / "ret"
    db = open_db(data / "helicone.db")
    old = (datetime.now(UTC) - timedelta(days=45)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    db["requests"].insert({"id": "old-call", "created_at": old, "status": 200})
    db.conn.commit()
    db.conn.close()
    p = make_proxy(["--set", "helicone_retention_days=30", "--set", "helicone_max_db_mb=500"], data_dir=data)
    chat(p.openai(), "new call")
    rows = p.wait_rows("SELECT id FROM requests WHERE id != 'old-call'")
    assert rows
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.query("SELECT id FROM requests WHERE id = 'old-call'"):
        time.sleep(0.1)
    assert p.query("SELECT id FROM requests WHERE id = 'old-call'") == []



def test_run_reexecs_under_python_optimize(proxy):
    """`helicone-addon run` re-executes itself with `python -O` (mitmproxy's debug-only checks off)."""
    import pathlib

    cmdline = pathlib.Path(f"/proc/{proxy.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-O" in cmdline[:3], cmdline


def test_bedrock_is_logged_but_never_modified(make_proxy, fake):
    """SigV4 signs the headers: a Bedrock call keeps every header (Helicone-* included) and is logged."""
    p = make_proxy(["--map-remote", rf"|https://bedrock-runtime\.us-east-1\.amazonaws\.com|{fake.url}"])
    m = marker()
    with p.httpx() as c:
        r = c.post("https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku/invoke",
                   headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, Signature=abc",
                            "Helicone-Property-Team": "infra", "Helicone-Cache-Enabled": "true"},
                   json={"messages": [{"role": "user", "content": m}]})
    got = fake.received(m)
    assert len(got) == 1
    assert got[0].headers["helicone-property-team"] == "infra"
    assert got[0].headers["authorization"].startswith("AWS4-HMAC-SHA256")
    row = p.row(r.headers["helicone-id"])
    assert row["provider"] == "bedrock" and json.loads(row["properties"]) == {"team": "infra"}
    assert "AKIDEXAMPLE" not in row["request_headers"]
