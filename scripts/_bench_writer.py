"""The log writer benchmark of scripts/bench.py (`bench.py --writer-bench N`), run in its own process.

Measures LogStore as the proxy uses it (rows built by record.build_row: usage, pricing; inserted
with the full-text index), by wall clock AND by CPU time (the CPU figures hold on a busy machine),
per thread of the store; the time from `submit` to the committed row under light load; and what
each way of handing a finished call to the writer costs the event loop's thread:

* thread (today): `LogStore.submit(job)`, plus the GIL time the writer threads then hold, which the
  event loop waits for (measured with a probe thread doing pure-Python work beside the writer);
* process: pickling the call and writing it to a pipe drained by another process (the writer
  process itself would then build and insert on its own core and its own GIL).
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _util import MODEL, OPENAI_HOST, PATH, make_body, pct


def _thread_cpu(thread: threading.Thread | None) -> float:
    """CPU seconds used so far by a running thread (Linux, macOS); 0.0 when unknown."""
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError):
        return 0.0


def _states(n: int, stream_events: list[bytes], body_json: bytes):
    from helicone_addon import headers, providers
    from helicone_addon.record import CallState

    out = []
    for i in range(n):
        stream = i % 2 == 1
        req_headers = [("host", OPENAI_HOST), ("content-type", "application/json"),
                       ("authorization", "Bearer sk-bench-0000000000000000"),
                       ("helicone-property-bench", "yes"), ("helicone-user-id", "u1")]
        st = CallState(id="", started_at=time.time(), provider="openai", api=providers.api_for("openai", PATH),
                       method="POST", host=OPENAI_HOST, path=PATH, url=f"https://{OPENAI_HOST}{PATH}",
                       request_headers=req_headers)
        st.request_body = make_body(stream)
        st.options = headers.parse(req_headers, strict=True)
        st.id = st.options.request_id
        st.status = 200
        if stream:
            st.streamed = True
            st.chunks = list(stream_events)
            st.content_type = "text/event-stream; charset=utf-8"
            st.first_chunk_at = st.started_at + 0.001
        else:
            st.response_body = body_json
            st.content_type = "application/json"
        st.response_headers = [("content-type", st.content_type)]
        st.ended_at = st.started_at + 0.002
        out.append(st)
    return out


def _compact(st) -> tuple:
    """What a loop could hand over instead of the CallState: plain values and bytes only."""
    o = st.options
    return (st.id, st.started_at, st.provider, st.api, st.method, st.host, st.path, st.status,
            st.request_headers, st.request_body, st.response_headers,
            b"".join(st.chunks) if st.chunks is not None else st.response_body,
            st.content_type, st.content_encoding, st.first_chunk_at, st.ended_at,
            st.streamed, o.user_id if o else None, o.session_id if o else None,
            dict(o.properties) if o else None)


def _loop_lateness(seconds: float | None, busy: threading.Event | None = None) -> list[float]:
    """An asyncio loop on this thread waking every 1 ms (as the proxy's loop waits on sockets):
    how late each wake-up is, in ms. Runs `seconds`, or while `busy` is set."""
    import asyncio

    async def run() -> list[float]:
        late = []
        end = time.perf_counter() + (seconds or 3600)
        while time.perf_counter() < end and (busy is None or busy.is_set()):
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(max(0.0, (time.perf_counter() - t - 0.001) * 1000))
        return late

    return asyncio.run(run())


def writer_bench(n: int, tmp: str) -> dict:
    from fakes.upstream import REPLY_WORDS, openai_completion, openai_sse_events

    from helicone_addon.record import build_row
    from helicone_addon.store import LogStore

    body_json = json.dumps(openai_completion(MODEL, "".join(REPLY_WORDS))).encode()
    sse = openai_sse_events(MODEL, include_usage=True)
    res: dict = {"rows": n}
    warm = LogStore(Path(tmp) / "warm.db").start()  # imports, price tables, SQL compiled once
    for st in _states(300, sse, body_json):
        warm.submit(lambda st=st: build_row(st))
    warm.flush(120)
    warm.close()

    # 1. the writer as the proxy uses it: build_row (usage, pricing) + insert + FTS, its two threads
    states = _states(n, sse, body_json)
    store = LogStore(Path(tmp) / "full.db").start()
    c0, t0 = time.process_time(), time.perf_counter()
    b0, i0 = _thread_cpu(store._thread), _thread_cpu(store._inserter)
    for st in states:
        store.submit(lambda st=st: build_row(st, price_overrides=None, estimate=True))
    store.flush(600)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res["build_and_insert_rows_per_s"] = n / wall
    res["cpu_us_per_row"] = cpu / n * 1e6
    res["rows_per_cpu_s"] = n / cpu
    res["builder_cpu_us_per_row"] = (_thread_cpu(store._thread) - b0) / n * 1e6
    res["insert_cpu_us_per_row"] = (_thread_cpu(store._inserter) - i0) / n * 1e6
    # the pipeline's ceiling on two free cores: the slower of its two stages
    res["pipelined_rows_per_s_by_cpu"] = 1e6 / max(res["builder_cpu_us_per_row"], res["insert_cpu_us_per_row"], 1e-9)
    store.close()
    res["rows_in_db"] = _count(Path(tmp) / "full.db")

    # 2. build_row alone (CPU per call that building takes)
    states = _states(n, sse, body_json)
    c0 = time.thread_time()
    rows = [build_row(st, price_overrides=None, estimate=True) for st in states]
    res["build_row_us"] = (time.thread_time() - c0) / n * 1e6
    streams = [st for st in _states(2000, sse, body_json) if st.streamed]
    c0 = time.thread_time()
    for st in streams:
        build_row(st)
    res["build_row_stream_us"] = (time.thread_time() - c0) / len(streams) * 1e6

    # 3. insert only (rows built beforehand)
    store = LogStore(Path(tmp) / "insert.db").start()
    c0, t0 = time.process_time(), time.perf_counter()
    for row in rows:
        store.submit(row)
    store.flush(600)
    dt = time.perf_counter() - t0
    res["insert_only_rows_per_s"] = n / dt
    res["insert_us"] = dt / n * 1e6
    res["insert_only_cpu_us_per_row"] = (time.process_time() - c0) / n * 1e6
    store.close()

    res.update(_visibility(tmp, sse, body_json))
    res.update(_handoff(tmp, n, sse, body_json))
    return res


def _count(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


def _visibility(tmp: str, sse: list[bytes], body_json: bytes, calls: int = 100, every_s: float = 0.02) -> dict:
    """Light load (a call every 20 ms): time from submit to the commit of its row."""
    from helicone_addon.record import build_row
    from helicone_addon.store import LogStore

    submitted: dict[str, float] = {}
    seen: list[float] = []

    def on_row(row: dict) -> None:  # runs on the insert thread, right after the commit
        seen.append((time.perf_counter() - submitted[row["id"]]) * 1000)

    store = LogStore(Path(tmp) / "visible.db", on_row=on_row).start()
    for st in _states(calls, sse, body_json):
        submitted[st.id] = time.perf_counter()
        store.submit(lambda st=st: build_row(st))
        time.sleep(every_s)
    store.flush(60)
    store.close()
    return {"visible_ms_p50": pct(seen, 50), "visible_ms_p99": pct(seen, 99), "visible_ms_max": max(seen),
            "flush_interval_ms": LogStore(Path(tmp) / "x.db").flush_interval * 1000}


def _handoff(tmp: str, n: int, sse: list[bytes], body_json: bytes) -> dict:
    from helicone_addon.record import build_row
    from helicone_addon.store import LogStore

    out: dict = {}
    n = min(n, 5000)
    # thread: the submit itself
    states = _states(n, sse, body_json)
    store = LogStore(Path(tmp) / "handoff.db", flush_interval=3600, batch_size=10**9).start()
    c0 = time.thread_time()
    for st in states:
        store.submit(lambda st=st: build_row(st))
    out["thread_submit_us"] = (time.thread_time() - c0) / n * 1e6
    store.close()
    # thread: what the writer threads do to an event loop on the main thread (the proxy's switch
    # interval): wake-up lateness with the writer busy, against the same loop alone
    from helicone_addon.proxy.logwriter import LOOP_SWITCH_INTERVAL

    sys.setswitchinterval(min(sys.getswitchinterval(), LOOP_SWITCH_INTERVAL))
    alone = _loop_lateness(1.0)
    states = _states(n, sse, body_json)
    store = LogStore(Path(tmp) / "gil.db").start()
    busy = threading.Event()
    busy.set()
    for st in states:
        store.submit(lambda st=st: build_row(st))
    waiter = threading.Thread(target=lambda: (store.flush(600), busy.clear()))
    waiter.start()
    t0 = time.perf_counter()
    with_writer = _loop_lateness(None, busy)
    busy_s = time.perf_counter() - t0
    waiter.join()
    store.close()
    out["loop_late_ms_alone_p50"], out["loop_late_ms_alone_p99"] = pct(alone, 50), pct(alone, 99)
    out["loop_late_ms_writer_p50"], out["loop_late_ms_writer_p99"] = pct(with_writer, 50), pct(with_writer, 99)
    # loop time lost per row: the extra lateness, summed over the busy period, per row written
    extra = sum(with_writer) - statistics.mean(alone) * len(with_writer)
    out["thread_loop_delay_us_per_row"] = max(0.0, extra) / n * 1000
    out["thread_busy_s"] = busy_s
    # process: pickle + pipe write, a separate process draining the pipe
    states = _states(n, sse, body_json)
    c0 = time.thread_time()
    blobs = [pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL) for st in states]
    out["process_pickle_state_us"] = (time.thread_time() - c0) / n * 1e6
    out["process_pickle_state_bytes"] = statistics.mean(len(b) for b in blobs)
    c0 = time.thread_time()
    blobs = [pickle.dumps(_compact(st), protocol=pickle.HIGHEST_PROTOCOL) for st in states]
    out["process_pickle_compact_us"] = (time.thread_time() - c0) / n * 1e6
    out["process_pickle_compact_bytes"] = statistics.mean(len(b) for b in blobs)
    drain = subprocess.Popen([sys.executable, "-c", "import sys\nwhile sys.stdin.buffer.read(1 << 16): pass"],
                             stdin=subprocess.PIPE)
    fd = drain.stdin.fileno()
    c0 = time.thread_time()
    for st in states:
        blob = pickle.dumps(_compact(st), protocol=pickle.HIGHEST_PROTOCOL)
        os.write(fd, len(blob).to_bytes(4, "little") + blob)
    out["process_handoff_us"] = (time.thread_time() - c0) / n * 1e6  # pickle + framing + write(2)
    drain.stdin.close()
    drain.wait(30)
    return out


def report_lines(w: dict) -> list[str]:
    return [
        f"Log writer (LogStore, {w['rows']} calls, half streamed, build_row with usage + pricing, FTS on): "
        f"**{w['build_and_insert_rows_per_s']:.0f} rows/s** by wall clock; CPU {w['cpu_us_per_row']:.0f} us/row "
        f"= {w['rows_per_cpu_s']:.0f} rows per CPU-second (writer thread {w['builder_cpu_us_per_row']:.0f} us, "
        f"insert thread {w['insert_cpu_us_per_row']:.0f} us per row: two free cores would sustain "
        f"{w['pipelined_rows_per_s_by_cpu']:.0f} rows/s); build_row {w['build_row_us']:.0f} us/call "
        f"({w['build_row_stream_us']:.0f} us for a stream); insert only {w['insert_only_rows_per_s']:.0f} rows/s, "
        f"{w['insert_only_cpu_us_per_row']:.0f} us CPU/row.",
        f"Row visible (committed) after submit, a call every 20 ms: p50 {w['visible_ms_p50']:.1f} ms, "
        f"p99 {w['visible_ms_p99']:.1f} ms, max {w['visible_ms_max']:.1f} ms (flush interval "
        f"{w['flush_interval_ms']:.0f} ms).",
        f"Hand-off cost on the event loop's thread, per call: thread: submit {w['thread_submit_us']:.1f} us, "
        f"then the writer threads hold the GIL (builder {w['builder_cpu_us_per_row']:.0f} us CPU/row, all of it "
        f"under the GIL): a 1 ms event loop beside them wakes late by p50 {w['loop_late_ms_writer_p50']:.2f} / "
        f"p99 {w['loop_late_ms_writer_p99']:.2f} ms (alone: {w['loop_late_ms_alone_p50']:.2f} / "
        f"{w['loop_late_ms_alone_p99']:.2f} ms), {w['thread_loop_delay_us_per_row']:.0f} us of extra loop delay "
        f"per row; process: pickle the CallState "
        f"{w['process_pickle_state_us']:.1f} us ({w['process_pickle_state_bytes']:.0f} B), compact tuple "
        f"{w['process_pickle_compact_us']:.1f} us ({w['process_pickle_compact_bytes']:.0f} B), "
        f"pickle + write to a pipe {w['process_handoff_us']:.1f} us.",
    ]
