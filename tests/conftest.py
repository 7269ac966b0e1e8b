"""Shared fixtures: a fake upstream (in this process) and the real proxy (a subprocess)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes.upstream import FakeUpstream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


_STARTED: list[Proxy] = []  # every proxy started by the current test's fixtures (for failure reports)


class Proxy:
    """A `helicone-addon run` subprocess: a regular listener (HTTPS_PROXY) with map_remote of the
    provider hosts to the fake upstream, and reverse listeners (base_url) onto the fake."""

    start_timeout = 60.0  # seconds for every listener to answer

    def __init__(self, tmp: Path, upstream_url: str, extra: list[str] | None = None, data_dir: Path | None = None,
                 api_port: int = 0) -> None:
        self.api_port = api_port  # 0: the management API is off
        self.tmp = tmp
        self.data_dir = data_dir or tmp / "data"
        self.confdir = tmp / "conf"
        self.port = free_port()
        self.reverse_port = free_port()  # reverse:https://api.openai.com (map_remote sends it to the fake)
        self.reverse_anthropic_port = free_port()
        self.upstream_url = upstream_url
        self.db_path = self.data_dir / "helicone.db"
        self.ca = self.confdir / "mitmproxy-ca-cert.pem"
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.log = tmp / f"proxy-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def reverse_url(self) -> str:
        return f"http://127.0.0.1:{self.reverse_port}"

    def args(self) -> list[str]:
        up = self.upstream_url
        return [
            sys.executable, "-m", "helicone_addon", "run", "-q",
            "--mode", f"regular@{self.port}",
            "--mode", f"reverse:https://api.openai.com@{self.reverse_port}",
            "--mode", f"reverse:https://api.anthropic.com@{self.reverse_anthropic_port}",
            "--set", f"confdir={self.confdir}",
            "--set", f"helicone_data_dir={self.data_dir}",
            "--set", f"helicone_api_port={self.api_port}",
            "--set", "connection_strategy=lazy",
            "--map-remote", rf"|https://api\.openai\.com|{up}",
            "--map-remote", rf"|https://api\.anthropic\.com|{up}",
            "--map-remote", rf"|https://generativelanguage\.googleapis\.com|{up}",
            *self.extra,
        ]

    def start(self) -> Proxy:
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})  # output() reads it live
        _STARTED.append(self)
        for port in (self.port, self.reverse_port, self.reverse_anthropic_port, self.api_port):
            if port:
                wait_port(port, timeout=self.start_timeout, proc=self.proc)
        deadline = time.monotonic() + 10
        while not self.ca.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "logf", None):
            self.logf.close()
        if self in _STARTED:
            _STARTED.remove(self)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    # -- clients ---------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def openai(self, via: str = "proxy", **kw):
        import openai

        kw.setdefault("api_key", "sk-test-openai-key-123456")
        kw.setdefault("max_retries", 0)
        if via == "proxy":
            http_client = openai.DefaultHttpxClient(proxy=self.url, verify=self.ssl_context())
            return openai.OpenAI(base_url="https://api.openai.com/v1", http_client=http_client, **kw)
        return openai.OpenAI(base_url=self.reverse_url + "/v1", **kw)

    def anthropic(self, via: str = "proxy", **kw):
        import anthropic

        kw.setdefault("api_key", "sk-ant-test-anthropic-key-123456")
        kw.setdefault("max_retries", 0)
        if via == "proxy":
            http_client = anthropic.DefaultHttpxClient(proxy=self.url, verify=self.ssl_context())
            return anthropic.Anthropic(base_url="https://api.anthropic.com", http_client=http_client, **kw)
        return anthropic.Anthropic(base_url=f"http://127.0.0.1:{self.reverse_anthropic_port}", **kw)

    def httpx(self, **kw):
        import httpx

        return httpx.Client(proxy=self.url, verify=self.ssl_context(), timeout=30, **kw)

    # -- the log ---------------------------------------------------------------------------------
    def query(self, sql: str, params=()) -> list[dict]:
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(self.db_path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_rows(self, sql: str, params=(), n: int = 1, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = self.query(sql, params)
            if len(rows) >= n:
                return rows
            time.sleep(0.05)
        raise AssertionError(f"expected {n} rows for {sql} {params}, got {len(rows)}\n{self.output()[-3000:]}")

    def row(self, request_id: str, timeout: float = 15) -> dict:
        return self.wait_rows("SELECT * FROM requests WHERE id = ?", (request_id,), 1, timeout)[0]

    def props(self, request_id: str) -> dict:
        return {r["key"]: r["value"] for r in self.query("SELECT key, value FROM properties WHERE request_id = ?", (request_id,))}


@pytest.fixture(scope="session")
def fake():
    f = FakeUpstream().start()
    yield f
    f.stop()


@pytest.fixture(scope="session")
def proxy(fake, tmp_path_factory):
    p = Proxy(tmp_path_factory.mktemp("proxy"), fake.url).start()
    yield p
    p.stop()


@pytest.fixture
def make_proxy(fake, tmp_path):
    """Start extra proxies with their own options (stopped at the end of the test)."""
    started: list[Proxy] = []

    def make(extra: list[str] | None = None, data_dir: Path | None = None, upstream: str | None = None,
             api_port: int = 0) -> Proxy:
        sub = tmp_path / f"p{len(started)}"
        sub.mkdir()
        p = Proxy(sub, upstream or fake.url, extra, data_dir, api_port).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def loads(s):
    return json.loads(s) if s else None


os.environ.setdefault("NO_PROXY", "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report says, for every proxy still held by fixtures, whether it is alive and
    what it printed last: a refused connection in CI is otherwise a riddle."""
    report = yield
    if report.failed:
        for p in _STARTED:
            state = "running" if p.proc is not None and p.proc.poll() is None else f"exited {p.proc.returncode}"
            try:
                tail = p.output()[-3000:]
            except OSError as e:
                tail = f"(no output: {e})"
            report.sections.append((f"proxy {p.port} ({state}) {p.log}", tail))
    return report
