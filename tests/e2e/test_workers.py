"""`helicone-addon run --workers 2`: two proxy processes on the same ports, one data dir.

Every call is made on a new TCP connection, so the kernel (SO_REUSEPORT) picks a worker for each;
the `X-Helicone-Worker` response header ("<index> <pid>") tells which one answered.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid

import conftest
import httpx
import pytest

from helicone_addon.workers import HEADER, _without_option, parse_workers, split_workers_flag

pytestmark = [
    pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT") or not os.path.isdir("/proc"),
                       reason="needs SO_REUSEPORT and /proc (Linux)"),
    pytest.mark.timeout(600),
]

STARTUP_S = 120  # two interpreters importing mitmproxy at once, on a shared 2-core machine
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out


# no keep-alive: every call opens a new connection, for the kernel to give to either worker
CLIENT = httpx.Client(timeout=30, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def call(p, headers: dict | None = None, stream: bool = False) -> httpx.Response:
    """One call on its own connection (reverse mode, as an SDK with base_url would do)."""
    body = dict(BODY, stream=True, stream_options={"include_usage": True}) if stream else BODY
    return CLIENT.post(p.reverse_url + "/v1/chat/completions", json=body,
                       headers={"Authorization": "Bearer sk-workers-test", **(headers or {})})


def tags_until_both(p, deadline_s: float = STARTUP_S) -> dict[str, int]:
    """Calls on new connections until both workers have answered (the second may still be
    starting when the port first accepts); returns {tag: calls answered}."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        r = call(p)
        assert r.status_code == 200, r.text
        seen[r.headers[HEADER]] = seen.get(r.headers[HEADER], 0) + 1
        if len(seen) >= 2 and sum(seen.values()) >= 20:
            break
    return seen


class WorkersProxy(conftest.Proxy):
    """The test proxy, started with --workers 2 (two interpreters start at once: allow more time)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.extra = ["--workers", "2", *self.extra]

    start_timeout = STARTUP_S


@pytest.fixture
def workers(fake, tmp_path):
    started: list[WorkersProxy] = []

    def make(api_port: int = 0) -> WorkersProxy:
        p = WorkersProxy(tmp_path / f"w{len(started)}", fake.url, api_port=api_port)
        p.tmp.mkdir()
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.stop()


def test_flag_parsing():
    assert split_workers_flag(["-q", "--workers", "3", "--mode", "x"]) == (3, ["-q", "--mode", "x"])
    assert split_workers_flag(["--workers=2"]) == (2, [])
    assert split_workers_flag(["-q"]) == (1, ["-q"])
    assert split_workers_flag(["--", "--workers", "2"]) == (1, ["--", "--workers", "2"])
    assert parse_workers("auto") >= 1
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(ValueError, match="positive number or 'auto'"):
            parse_workers(bad)
    argv = ["-q", "--set", "helicone_api_port=9000", "--set=helicone_api_port=1", "--set", "x=1", "--", "--set",
            "helicone_api_port=2"]
    assert _without_option(argv, "helicone_api_port") == ["-q", "--set", "x=1", "--", "--set", "helicone_api_port=2"]


def test_two_workers_share_the_port_the_log_and_the_quotas(workers):
    p = workers()
    seen = tags_until_both(p)
    assert len(seen) == 2, seen
    pids = {int(t.split()[1]) for t in seen}
    assert pids == children(p.proc.pid), (pids, children(p.proc.pid))
    assert {t.split()[0] for t in seen} == {"0", "1"}

    # a stream through each worker arrives whole
    streamed = {}
    for _ in range(40):
        r = call(p, stream=True)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        streamed[r.headers[HEADER]] = r.headers["helicone-id"]
        if len(streamed) == 2:
            break
    assert len(streamed) == 2, streamed

    # both write the one log
    for rid in streamed.values():
        row = p.row(rid)
        assert row["status"] == 200 and row["total_tokens"] == 18 and row["streamed"] == 1

    # a quota is exact across workers: 30 calls at once, on 30 connections, quota 10
    user = f"u-{uuid.uuid4().hex[:8]}"
    hdrs = {"Helicone-RateLimit-Policy": "10;w=60;s=user", "Helicone-User-Id": user}
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        r = call(p, hdrs)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 10 + [429] * 20, codes
    by_worker = {r.headers[HEADER] for r in results}
    assert len(by_worker) == 2, by_worker  # both workers took part in the counting
    rows = p.wait_rows("SELECT status FROM requests WHERE user_id = ?", (user,), n=30)
    assert sorted(r["status"] for r in rows) == codes


def test_local_api_is_served_once(workers):
    port = conftest.free_port()
    p = workers(api_port=port)
    conftest.wait_port(port, timeout=STARTUP_S, proc=p.proc)
    assert len(tags_until_both(p)) == 2
    rid = call(p).headers["helicone-id"]
    p.row(rid)
    from helicone_addon.security import read_token

    token = read_token(p.data_dir)  # one token for both workers: they share the data dir
    r = httpx.get(f"http://127.0.0.1:{port}/v1/request/{rid}", timeout=10, trust_env=False,
                  headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["data"]["request_id"] == rid
    assert "local API not started" not in p.output(), p.output()[-2000:]


def metric_totals(p, port: int) -> dict[str, float]:
    """Worker 0's /metrics (the local API's), each series summed over its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    from helicone_addon.security import read_token

    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False,
                  headers={"Authorization": f"Bearer {read_token(p.data_dir)}"})
    assert r.status_code == 200, r.text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def wait_metrics(p, port: int, want: dict[str, float], timeout: float = 30) -> dict[str, float]:
    """/metrics once it shows `want` (rows are counted by the writer thread after the answer, and
    the other worker's store counters are copied every second), or the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        got = metric_totals(p, port)
        if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_a_crashed_worker_is_restarted_and_ctrl_c_stops_all(workers):
    port = conftest.free_port()
    p = workers(api_port=port)
    conftest.wait_port(port, timeout=STARTUP_S, proc=p.proc)
    seen = tags_until_both(p)
    assert len(seen) == 2, seen
    before = children(p.proc.pid)

    # worker 0 serves /metrics, and it counts the calls of both workers
    served = sum(seen.values())
    want = {"helicone_llm_calls_total": served, "helicone_store_written_total": served}
    got = wait_metrics(p, port, want)
    assert {k: got.get(k) for k in want} == want, got
    assert got.get("helicone_proxy_connections_refused_no_fd_total") == 0, sorted(got)

    victim = next(int(t.split()[1]) for t in seen if t.split()[0] == "1")  # the worker without the API
    os.kill(victim, signal.SIGKILL)
    # The other worker serves meanwhile and the supervisor starts a new one. A connection the
    # kernel had already queued on the killed worker's socket is reset (as with any SO_REUSEPORT
    # server whose process dies): clients see a connection error for those and retry.
    deadline = time.monotonic() + STARTUP_S
    after: set[int] = set()
    served_after_kill = resets = 0
    while time.monotonic() < deadline:
        try:
            assert call(p).status_code == 200
            served_after_kill += 1
        except httpx.TransportError:
            resets += 1
        after = children(p.proc.pid)
        if len(after) == 2 and victim not in after:
            break
        time.sleep(0.2)
    assert len(after) == 2 and victim not in after, (before, after)
    assert served_after_kill > resets, (served_after_kill, resets)
    new_pid = (after - before).pop()
    tags = tags_until_both(p)
    assert new_pid in {int(t.split()[1]) for t in tags}, (new_pid, tags)
    assert "restarted" in p.output()

    # the crashed worker's calls are still counted, beside those of the worker that replaced it
    served += served_after_kill + sum(tags.values())
    want = {"helicone_llm_calls_total": served, "helicone_store_written_total": served}
    got = wait_metrics(p, port, want)
    assert {k: got.get(k) for k in want} == want, got

    # Ctrl-C: every process stops, and the port is free again
    p.proc.send_signal(signal.SIGINT)
    assert p.proc.wait(30) == 0
    assert all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in after)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", p.reverse_port))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
