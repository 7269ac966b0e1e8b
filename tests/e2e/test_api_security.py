"""The local API admits only its owner: the token in <data dir>/api-token, the Host and Origin rules,
JSON-only bodies; `helicone_api_open` drops the token; another local account gets nothing.

Real proxy subprocesses (tests/conftest.py), driven with httpx, curl and the async logger."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import conftest
import httpx
import pytest
from conftest import Proxy

from helicone_addon import security
from helicone_addon.async_logger import HeliconeAsyncLogger

QUERY = {"filter": "all", "limit": 1}


def log_payload(rid: str) -> dict:
    return {
        "providerRequest": {"url": "https://api.openai.com/v1/chat/completions",
                            "json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": rid}]},
                            "meta": {"Helicone-Request-Id": rid}},
        "providerResponse": {"json": {"choices": []}, "status": 200, "headers": {}},
    }


def every_route(rid: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/v1/request/query", QUERY),
        ("POST", "/v1/request/query-clickhouse", QUERY),
        ("POST", "/v1/request/query-ids", {"requestIds": [rid]}),
        ("GET", f"/v1/request/{rid}", None),
        ("POST", f"/v1/request/{rid}/feedback", {"rating": True}),
        ("POST", f"/v1/request/{rid}/score", {"scores": {"s": 1}}),
        ("PUT", f"/v1/request/{rid}/property", {"key": "k", "value": "v"}),
        ("POST", "/v1/feedback", {"helicone-id": rid, "rating": True}),
        *[("POST", path, log_payload(str(uuid.uuid4()))) for path in
          ("/oai/v1/log", "/anthropic/v1/log", "/googleapis/v1/log", "/custom/v1/log", "/v1/trace/custom/log")],
    ]


@pytest.fixture(scope="module")
def shared_base():
    """A directory other accounts may traverse (0711), so only the data dir's own modes protect it."""
    base = Path(tempfile.mkdtemp(prefix="helicone-sec-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def sp(fake, tmp_path_factory, shared_base):
    p = Proxy(tmp_path_factory.mktemp("secproxy"), fake.url, ["--set", "helicone_api_hosts=box.internal"],
              data_dir=shared_base / "data", api_port=conftest.free_port()).start()
    conftest.wait_port(p.api_port, proc=p.proc)
    p.token = security.read_token(p.data_dir)
    p.base = f"http://127.0.0.1:{p.api_port}"
    yield p
    p.stop()


def client(p, token: str | None = None, **headers) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=p.base, headers=headers, timeout=30, trust_env=False)


def proxied_call(p) -> str:
    with p.httpx() as c:
        r = c.post("https://api.openai.com/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    rid = r.headers["helicone-id"]
    p.row(rid)
    return rid


def flush_marker(p) -> None:
    """Log one call through the API and wait for its row: whatever was queued before it is written."""
    rid = str(uuid.uuid4())
    with client(p, p.token) as c:
        assert c.post("/custom/v1/log", json=log_payload(rid)).status_code == 200
    p.row(rid)


def test_the_token_file_opens_the_api_and_nothing_else_does(sp):
    path = sp.data_dir / "api-token"
    assert sp.token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sp.data_dir.stat().st_mode) == 0o700
    rid = proxied_call(sp)
    with client(sp) as anon, client(sp, "not-the-token") as wrong:
        for method, route, body in every_route(rid):
            for c in (anon, wrong):
                r = c.request(method, route, json=body)
                assert r.status_code == 401, (method, route, r.text)
    with client(sp, sp.token) as c:
        r = c.post("/v1/request/query", json=QUERY)
        assert r.status_code == 201 and r.json()["error"] is None and len(r.json()["data"]) == 1
        assert c.get(f"/v1/request/{rid}").json()["data"]["request_id"] == rid
        r = httpx.post(f"{sp.base}/v1/request/query", json=QUERY, headers={"Helicone-Auth": f"Bearer {sp.token}"},
                       trust_env=False)
        assert r.status_code == 201
    assert not sp.query("SELECT * FROM feedback WHERE request_id = ?", (rid,))  # the 401s wrote nothing


def test_a_foreign_host_is_refused_dns_rebinding(sp):
    rid = proxied_call(sp)
    with client(sp, sp.token, Host="attacker.example.com") as c:
        for method, route, body in every_route(rid):
            r = c.request(method, route, json=body)
            assert r.status_code == 403, (method, route, r.text)
            assert "Host" in r.json()["error"]
    # the issue's own reproduction, with curl
    out = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-H", "Host: attacker.example.com", "-H", f"Authorization: Bearer {sp.token}",
         "-X", "POST", f"{sp.base}/v1/request/query", "-d", '{"filter":"all"}', "-w", "\n%{http_code}"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.endswith("\n403") and "request_id" not in out
    for host in ("localhost", f"localhost:{sp.api_port}", f"[::1]:{sp.api_port}", "box.internal:1"):
        with client(sp, sp.token, Host=host) as c:
            assert c.post("/v1/request/query", json=QUERY).status_code == 201, host
    assert not sp.query("SELECT * FROM feedback WHERE request_id = ?", (rid,))


def test_cross_origin_simple_posts_are_refused_and_write_nothing(sp):
    rid = proxied_call(sp)
    forged = str(uuid.uuid4())
    evil = {"Origin": "http://attacker.example.com", "Content-Type": "text/plain"}
    with client(sp, sp.token) as c:  # even a request that somehow carried the token
        r = c.post(f"/v1/request/{rid}/feedback", content=b'{"rating": true}', headers=evil)
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        r = c.post("/oai/v1/log", content=json.dumps(log_payload(forged)).encode(), headers=evil)
        assert r.status_code == 403
        r = c.put(f"/v1/request/{rid}/property", content=b'{"key": "k", "value": "v"}', headers=evil)
        assert r.status_code == 403
        # same origin, but not declared JSON: 415 and a message
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Origin": f"http://127.0.0.1:{sp.api_port}"} | ({"Content-Type": ctype} if ctype else {})
            r = c.post(f"/v1/request/{rid}/score", content=b'{"scores": {"s": 1}}', headers=headers)
            assert r.status_code == 415 and "Content-Type must be application/json" in r.json()["error"], ctype
            r = c.post("/custom/v1/log", content=json.dumps(log_payload(forged)).encode(), headers=headers)
            assert r.status_code == 415 and "application/json" in r.json()["error"], ctype
    flush_marker(sp)
    assert not sp.query("SELECT * FROM feedback WHERE request_id = ?", (rid,))
    assert not sp.query("SELECT * FROM scores WHERE request_id = ?", (rid,))
    assert not sp.query("SELECT * FROM properties WHERE request_id = ? AND key = 'k'", (rid,))
    assert not sp.query("SELECT * FROM requests WHERE id = ?", (forged,))
    with client(sp, sp.token, Origin=f"http://localhost:{sp.api_port}") as c:  # our own page: fine
        assert c.post(f"/v1/request/{rid}/feedback", json={"rating": True}).status_code == 201
    assert sp.query("SELECT rating FROM feedback WHERE request_id = ?", (rid,)) == [{"rating": 1}]


def test_our_clients_find_the_token(sp, monkeypatch, fake):
    # `helicone-addon env` prints it for Helicone's own SDKs (Authorization: Bearer $HELICONE_API_KEY)
    env = {**os.environ, "HELICONE_ADDON_DATA_DIR": str(sp.data_dir)}
    env.pop("HELICONE_API_KEY", None)
    out = subprocess.run([sys.executable, "-m", "helicone_addon", "env"], capture_output=True, text=True, env=env,
                         check=True).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("export HELICONE_API_KEY=")]
    key = line.split("=", 1)[1]
    assert key == sp.token
    r = httpx.post(f"{sp.base}/v1/request/query", json=QUERY, headers={"Authorization": f"Bearer {key}"},
                   trust_env=False)
    assert r.status_code == 201
    import openai

    def logged(log: HeliconeAsyncLogger) -> str:
        c = log.instrument(openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0))
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert log.flush() and log.counters == {**log.counters, "sent": 1, "failed": 0}, log.counters
        return log.last_request_id

    # the async logger: no key given, it reads the token file of the data dir
    monkeypatch.delenv("HELICONE_API_KEY", raising=False)
    monkeypatch.setenv("HELICONE_ADDON_DATA_DIR", str(sp.data_dir))
    with HeliconeAsyncLogger(endpoint=sp.base) as log:
        sp.row(logged(log))
    # ... or takes HELICONE_API_KEY, as `eval $(helicone-addon env)` sets it
    monkeypatch.setenv("HELICONE_ADDON_DATA_DIR", str(sp.tmp / "elsewhere"))
    monkeypatch.setenv("HELICONE_API_KEY", key)
    with HeliconeAsyncLogger(endpoint=sp.base) as log:
        sp.row(logged(log))


def test_open_api_needs_no_token_but_keeps_host_and_origin_rules(make_proxy):
    p = make_proxy(["--set", "helicone_api_open=true"], api_port=conftest.free_port())
    conftest.wait_port(p.api_port, proc=p.proc)
    base = f"http://127.0.0.1:{p.api_port}"
    r = httpx.post(f"{base}/v1/request/query", json=QUERY, trust_env=False)
    assert r.status_code == 201 and r.json()["error"] is None
    r = httpx.post(f"{base}/v1/request/query", json=QUERY, headers={"Host": "attacker.example.com"}, trust_env=False)
    assert r.status_code == 403
    r = httpx.post(f"{base}/v1/request/query", content=b'{"filter": "all"}', trust_env=False,
                   headers={"Origin": "http://attacker.example.com", "Content-Type": "text/plain"})
    assert r.status_code == 403


# -- another account on the same machine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_user():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        print("\nskipped: creating another local account needs root, useradd and runuser")
        pytest.skip("creating another local account needs root, useradd and runuser")
    name = f"hsec{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        assert pwd.getpwnam(name).pw_uid != 0
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60)


def curl_status(user: str, method: str, url: str, body: dict | None = None, *headers: str) -> str:
    argv = ["curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, url]
    for h in headers:
        argv += ["-H", h]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return as_user(user, *argv).stdout


def test_another_account_reads_neither_the_token_nor_the_api(sp, other_user):
    token_file = sp.data_dir / "api-token"
    r = as_user(other_user, "cat", str(token_file))
    assert r.returncode != 0 and sp.token not in r.stdout and "Permission denied" in r.stderr
    os.chmod(sp.data_dir, 0o755)  # even if the owner opened up the data dir, the file itself is 0600
    try:
        r = as_user(other_user, "cat", str(token_file))
        assert r.returncode != 0 and sp.token not in r.stdout and "Permission denied" in r.stderr
    finally:
        os.chmod(sp.data_dir, 0o700)
    assert as_user(other_user, "id", "-u").stdout.strip() != "0"
    rid = proxied_call(sp)
    for method, route, body in every_route(rid):
        assert curl_status(other_user, method, sp.base + route, body) == "401", route
    # and with what they might guess or see
    assert curl_status(other_user, "POST", sp.base + "/v1/request/query", QUERY, "Authorization: Bearer ") == "401"
    assert as_user(other_user, "curl", "-s", "--noproxy", "*", "-X", "POST", "-H", "Content-Type: application/json",
                   "-d", '{"filter":"all"}', sp.base + "/v1/request/query").stdout == \
        '{"data": null, "error": "Unauthorized"}'
    flush_marker(sp)
    assert not sp.query("SELECT * FROM feedback WHERE request_id = ?", (rid,))


def test_another_account_cannot_open_the_web_view(sp, other_user, tmp_path):
    port = conftest.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "helicone_addon", "ui", "--db", str(sp.db_path), "--port", str(port),
         "--data-dir", str(sp.data_dir)],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "ui.log", "wb"), stdin=subprocess.DEVNULL,
    )
    try:
        conftest.wait_port(port, timeout=60, proc=proc)
        base = f"http://127.0.0.1:{port}"
        printed = (tmp_path / "ui.log").read_text()
        assert f"?token={sp.token}" in printed  # the command prints the URL with the token
        owner = httpx.get(f"{base}/requests", headers={"Authorization": f"Bearer {sp.token}"},
                          trust_env=False, timeout=30)
        assert owner.status_code == 200
        for path in ("/", "/requests", "/sessions", "/static/style.css", "/?range=all"):
            assert curl_status(other_user, "GET", base + path) == "401", path
        assert curl_status(other_user, "GET", base + "/?token=guess") == "401"
        assert curl_status(other_user, "GET", base + "/", None, "Cookie: helicone_ui=guess") == "401"
    finally:
        proc.terminate()
        proc.wait(10)


# -- the server itself ---------------------------------------------------------------------------------------


def test_extra_routes_sit_behind_the_same_door(tmp_path):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from helicone_addon.api import ApiServer

    async def metrics(request):
        return PlainTextResponse("helicone_calls_total 1\n")

    server = ApiServer(tmp_path / "h.db", "127.0.0.1", 0, extra_routes=[Route("/metrics", metrics)]).start()
    try:
        token = security.read_token(tmp_path)
        assert token == server.token
        assert httpx.get(f"{server.url}/metrics", trust_env=False).status_code == 401
        r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert (r.status_code, r.text) == (200, "helicone_calls_total 1\n")
        r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}", "Host": "evil.test"},
                      trust_env=False)
        assert r.status_code == 403
    finally:
        server.stop()


def test_a_busy_port_fails_start_synchronously(tmp_path):
    from helicone_addon.api import ApiServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            ApiServer(tmp_path / "h.db", "127.0.0.1", s.getsockname()[1]).start()
