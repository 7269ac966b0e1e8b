"""LogProcess: the log writer in a child process — rows as in-process, listeners fed back, faults counted."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest
from fakes.upstream import openai_completion

from helicone_addon import headers, pricing
from helicone_addon.record import CallState, build_row
from helicone_addon.store import LogStore
from helicone_addon.store import process as logprocess
from helicone_addon.store.process import LogProcess


def state(model: str = "gpt-4o-mini", user: str = "alice") -> CallState:
    hdrs = [("content-type", "application/json"), ("authorization", "Bearer sk-secret-123"),
            ("helicone-user-id", user), ("helicone-property-team", "search")]
    opts = headers.parse(hdrs)
    t = time.time()
    return CallState(id=opts.request_id, started_at=t, provider="openai", api="openai-chat", host="api.openai.com",
                     path="/v1/chat/completions", options=opts, request_headers=hdrs,
                     request_body=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
                     status=200, ended_at=t + 0.2, content_type="application/json",
                     response_body=json.dumps(openai_completion(model, "Hello there")).encode())


def rows(path) -> dict[str, dict]:
    conn = sqlite3.connect(path, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM requests")}
    finally:
        conn.close()


@pytest.fixture
def made():
    stores: list[LogProcess] = []
    yield stores
    for s in stores:
        s.close(10)


def test_rows_are_the_in_process_rows_and_listeners_get_them(tmp_path, made):
    store = LogProcess(tmp_path / "h.db").start()
    made.append(store)
    heard: list = []
    states = [state(user=f"u{i}") for i in range(20)]
    for st in states:
        store.submit_call(st, [lambda row, props: heard.append((row, props))])
    assert store.flush(30)
    got = rows(tmp_path / "h.db")
    assert set(got) == {st.id for st in states}
    assert len(heard) == 20 and {r["id"] for r, _ in heard} == set(got)  # every listener ran, once, before flush
    for st in states:  # the same columns as build_row gives in this process (times aside)
        want, want_props = build_row(st)
        have = got[st.id]
        for col in ("model", "prompt_tokens", "completion_tokens", "cost_usd", "user_id", "properties",
                    "request_headers", "response_body", "status", "provider"):
            assert have[col] == want[col], col
        assert "sk-secret-123" not in have["request_headers"]
        assert [p["key"] for p in want_props] == ["team"]
    assert store.counters["written"] == 20 and store.counters["dropped"] == 0


def test_rows_built_elsewhere_and_options_reach_the_child(tmp_path, made):
    store = LogProcess(tmp_path / "h.db").start()
    made.append(store)
    built = build_row(state())
    store.submit(lambda: built)  # the local API's way
    store.submit(lambda: 1 / 0)  # a job that fails is counted, never raised
    store.price_overrides = pricing.parse_overrides('{"gpt-4o-mini": {"input_mtok": 1000000, "output_mtok": 0}}')
    priced = state()
    store.submit_call(priced)
    assert store.flush(30)
    got = rows(tmp_path / "h.db")
    assert built[0]["id"] in got
    assert got[priced.id]["cost_usd"] == pytest.approx(got[priced.id]["prompt_tokens"])  # $1 per token now
    assert store.counters["build_errors"] == 1


def test_a_writer_that_dies_is_counted_and_started_again(tmp_path, made, monkeypatch):
    monkeypatch.setattr(logprocess, "RESTART_S", 0.5)
    store = LogProcess(tmp_path / "h.db").start()
    made.append(store)
    store.submit_call(state())
    assert store.flush(30)
    first = store._proc
    first.send_signal(signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 15
    later = []
    while store._proc is first and time.monotonic() < deadline:
        st = state()
        later.append(st)
        store.submit_call(st)  # never raises: dropped and counted, or written by the new child
        time.sleep(0.1)
    assert store._proc is not first
    last = state()
    store.submit_call(last)
    assert store.flush(30)
    got = rows(tmp_path / "h.db")
    c = store.counters
    assert last.id in got and c["writer_restarts"] == 1
    assert len(got) + c["dropped"] == 2 + len(later)  # every call is either logged or counted as lost


def test_a_proxy_that_dies_leaves_every_call_it_handed_over_written(tmp_path):
    """SIGKILL of the proxy closes the child's stdin: the child writes what it got, then exits."""
    store = LogProcess(tmp_path / "h.db").start()
    states = [state() for _ in range(200)]
    for st in states:
        store.submit_call(st)
    time.sleep(0.5)  # the sender thread has written them down the pipe (the proxy "dies" after)
    proc = store._proc
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert set(rows(tmp_path / "h.db")) == {st.id for st in states}


def test_ctrl_c_is_left_to_the_proxy(tmp_path, made):
    store = LogProcess(tmp_path / "h.db").start()
    made.append(store)
    store.submit_call(state())
    assert store.flush(30)
    store._proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches every process of the group
    after = state()
    store.submit_call(after)
    assert store.flush(30) and after.id in rows(tmp_path / "h.db")


def test_same_surface_as_the_thread_store(tmp_path, made):
    """What the proxy's addons use of the store exists on both."""
    store = LogProcess(tmp_path / "h.db").start()
    made.append(store)
    thread = LogStore(tmp_path / "t.db")
    for name in ("submit", "flush", "close", "counters", "retention_days", "max_db_bytes", "path"):
        assert hasattr(store, name) and hasattr(thread, name), name
    store.retention_days = 7
    assert store.retention_days == 7
