#!/usr/bin/env python3
"""Soak test: many calls through the real proxy; nothing lost, no leak, no client error.

    .venv/bin/python scripts/soak.py                 # 20,000 calls, concurrency 32, half streamed
    .venv/bin/python scripts/soak.py --quick         # 2,000 calls
    .venv/bin/python scripts/soak.py --calls 50000 --concurrency 64 --max-seconds 900

It starts, on loopback only:
  * a fast asyncio fake OpenAI upstream in a separate process (same bytes as tests/fakes/upstream.py:
    chat JSON, or chat SSE with the usage chunk when stream_options.include_usage is set);
  * `python -m helicone_addon run` in reverse mode onto that fake, with its own temporary data dir;
then fires the calls with httpx (half `"stream": true` with include_usage, half JSON), each carrying
its own Helicone-Request-Id, and checks:
  1. no client error (transport error, non-200, incomplete body or stream);
  2. the database holds exactly one complete row per call made (after the writer has flushed);
  3. the proxy's RSS is flat: every sample from 25% to 100% of the run is within +-10% of the
     sample taken at 25% (the first quarter is warm-up: imports, caches, pools);
  4. the proxy's open file descriptors are flat (never above the 25% sample + max(8, 10%)), and
     drop back to within 4 of the pre-load count once the client has closed its connections.
It prints a short report (calls/s, latency, RSS and fd series, errors) and exits 1 if a check
fails, 2 if it could not run. Everything it started is stopped on exit, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "gpt-4o-mini"
EXPECTED_TEXT = "Hello from the fake upstream!"


# ---------------------------------------------------------------------------------------------
# fake upstream (runs in its own process: `soak.py --fake-upstream`)
# ---------------------------------------------------------------------------------------------
def _payloads() -> tuple[bytes, list[bytes], list[bytes]]:
    from fakes.upstream import REPLY_WORDS, openai_completion, openai_sse_events

    return (
        json.dumps(openai_completion(MODEL, "".join(REPLY_WORDS))).encode(),
        openai_sse_events(MODEL, include_usage=True),
        openai_sse_events(MODEL, include_usage=False),
    )


async def _serve_fake(chunk_delay: float) -> None:
    body_json, sse_usage, sse_plain = _payloads()
    json_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body_json)).encode() + b"\r\n\r\n"
    )
    sse_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                body = await reader.readexactly(length) if length else b""
                try:
                    req = json.loads(body or b"{}")
                except ValueError:
                    req = {}
                served += 1
                if req.get("stream"):
                    include = bool((req.get("stream_options") or {}).get("include_usage"))
                    writer.write(sse_head)
                    for ev in sse_usage if include else sse_plain:
                        if chunk_delay:
                            await writer.drain()
                            await asyncio.sleep(chunk_delay)
                        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(json_head + body_json)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"served {served}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------------------------
from _util import free_port, wait_port  # noqa: E402


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def stop_process(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def db_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(db, timeout=30)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM requests")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Samples the proxy's RSS and fd count every `interval` seconds while the load runs."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (t since start, rss kB, fds)
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        r, n = rss_kb(self.pid), fd_count(self.pid)
        if r is not None and n is not None:
            self.samples.append((time.monotonic() - self.t0, r, n))

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)
        self.sample()


async def run_load(base: str, calls: int, concurrency: int, deadline: float, progress) -> dict:
    import httpx

    ids: list[str] = []
    errors: list[str] = []
    error_count = 0
    latencies: list[float] = []
    next_i = 0
    done = 0
    timed_out = False
    body_json = {"model": MODEL, "messages": [{"role": "user", "content": "soak"}]}
    body_stream = dict(body_json, stream=True, stream_options={"include_usage": True})

    def fail(i: int, msg: str) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < 20:
            errors.append(f"call {i}: {msg}")

    async def one(client: httpx.AsyncClient, i: int) -> None:
        rid = str(uuid.uuid4())
        stream = i % 2 == 1
        hdrs = {"Authorization": "Bearer sk-soak-test-key", "Helicone-Request-Id": rid,
                "Helicone-Property-Soak": "1"}
        t = time.monotonic()
        ids.append(rid)  # counted as made as soon as it is sent (a failed call may still be logged)
        try:
            if stream:
                async with client.stream("POST", "/v1/chat/completions", json=body_stream, headers=hdrs) as r:
                    data = b"".join([c async for c in r.aiter_raw()])
                if r.status_code != 200:
                    return fail(i, f"stream status {r.status_code}: {data[:200]!r}")
                if not data.rstrip().endswith(b"data: [DONE]") or b'"usage"' not in data:
                    return fail(i, f"incomplete stream ({len(data)} bytes): {data[-200:]!r}")
            else:
                r = await client.post("/v1/chat/completions", json=body_json, headers=hdrs)
                if r.status_code != 200:
                    return fail(i, f"status {r.status_code}: {r.text[:200]}")
                if r.json()["choices"][0]["message"]["content"] != EXPECTED_TEXT:
                    return fail(i, f"unexpected body {r.text[:200]}")
            if r.headers.get("helicone-id") != rid:
                return fail(i, f"helicone-id {r.headers.get('helicone-id')!r} != {rid}")
            latencies.append(time.monotonic() - t)
        except Exception as e:  # noqa: BLE001 - every client failure is a finding
            fail(i, f"{type(e).__name__}: {e}")

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i, done, timed_out
        while next_i < calls:
            if time.monotonic() >= deadline:
                timed_out = True
                return
            i = next_i
            next_i += 1
            await one(client, i)
            done += 1
            progress(done)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {"ids": ids, "errors": errors, "error_count": error_count, "latencies": latencies,
            "elapsed": elapsed, "timed_out": timed_out}


# ---------------------------------------------------------------------------------------------
# checks and report
# ---------------------------------------------------------------------------------------------
def at_fraction(samples: list[tuple[float, int, int]], t_start: float, t_end: float, frac: float):
    t = t_start + (t_end - t_start) * frac
    return min(samples, key=lambda s: abs(s[0] - t))


def series(samples, t_start: float, t_end: float, idx: int, points: int = 11) -> str:
    out = []
    for k in range(points):
        frac = k / (points - 1)
        s = at_fraction(samples, t_start, t_end, frac)
        out.append(f"{int(frac * 100)}%:{s[idx] / 1024:.1f}" if idx == 1 else f"{int(frac * 100)}%:{s[idx]}")
    return " ".join(out)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=600, help="bound on the whole run (load + checks)")
    ap.add_argument("--quick", action="store_true", help="2,000 calls (unless --calls is given)")
    ap.add_argument("--chunk-delay-ms", type=float, default=0, help="fake upstream delay before each SSE event")
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--sample-interval", type=float, default=0.5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir (printed)")
    ap.add_argument("--fake-upstream", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.fake_upstream:
        asyncio.run(_serve_fake(args.chunk_delay_ms / 1000))
        return 0
    if args.quick and "--calls" not in (argv if argv is not None else sys.argv[1:]):
        args.calls = 2000

    t_begin = time.monotonic()
    deadline = t_begin + args.max_seconds
    tmp = Path(tempfile.mkdtemp(prefix="helicone-soak-"))
    fake = proxy = None
    proxy_log = tmp / "proxy.log"
    failures: list[str] = []
    files = contextlib.ExitStack()  # logs of the processes: closed after they are stopped

    def on_term(signum, frame):  # SIGTERM -> same clean-up path as Ctrl-C (asyncio's handler while loading)
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, on_term)
    try:
        fake = subprocess.Popen(
            [sys.executable, __file__, "--fake-upstream", "--chunk-delay-ms", str(args.chunk_delay_ms)],
            stdout=subprocess.PIPE, stderr=files.enter_context(open(tmp / "fake.log", "wb")),  # noqa: SIM115
            cwd=ROOT, text=True,
        )
        fake_port = int(fake.stdout.readline().strip() or 0)
        if not fake_port:
            print("soak: the fake upstream did not start", file=sys.stderr)
            return 2
        port = free_port()
        data_dir = tmp / "data"
        cmd = [
            sys.executable, "-m", "helicone_addon", "run", "-q",
            "--listen-host", "127.0.0.1",
            "--mode", f"reverse:http://127.0.0.1:{fake_port}@{port}",
            "--set", f"confdir={tmp / 'conf'}",
            "--set", f"helicone_data_dir={data_dir}",
            "--set", "helicone_api_port=0",
            "--set", "helicone_hosts=127.0.0.1=openai",
        ]
        logf = files.enter_context(open(proxy_log, "wb"))  # noqa: SIM115 - closed by `files`
        proxy = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_port(port, proxy)
        time.sleep(0.5)  # let start-up settle (CA generation, imports) before the baseline
        fd_before = fd_count(proxy.pid)
        rss_before = rss_kb(proxy.pid)
        print(f"soak: {args.calls} calls, concurrency {args.concurrency}, half streamed; proxy pid {proxy.pid} "
              f"on :{port} -> fake :{fake_port}; data {data_dir}", flush=True)

        sampler = Sampler(proxy.pid, args.sample_interval)
        last_print = [0.0]

        def progress(n: int) -> None:
            now = time.monotonic()
            if now - last_print[0] >= 10:
                last_print[0] = now
                print(f"  {n}/{args.calls} calls, {now - sampler.t0:.0f}s, rss "
                      f"{(rss_kb(proxy.pid) or 0) / 1024:.1f} MB, fds {fd_count(proxy.pid)}", flush=True)

        sampler.start()
        # leave 20% of the budget (at least 30 s) for the flush and the checks
        load_deadline = deadline - max(30.0, 0.2 * args.max_seconds)
        res = asyncio.run(run_load(f"http://127.0.0.1:{port}", args.calls, args.concurrency, load_deadline, progress))
        sampler.halt.set()
        sampler.join()
        load_end = sampler.samples[-1][0] if sampler.samples else 0.0
        time.sleep(1.0)  # client pool closed: the proxy drops both sides of each connection
        fd_after = fd_count(proxy.pid)

        made = set(res["ids"])
        # wait for the writer to flush everything (rows for every call made)
        flush_t0 = time.monotonic()
        db = data_dir / "helicone.db"
        got: set[str] = set()
        last_change, last_n = time.monotonic(), -1
        while time.monotonic() < deadline:
            got = db_ids(db)
            if made <= got or proxy.poll() is not None:
                break
            if len(got) != last_n:
                last_n, last_change = len(got), time.monotonic()
            elif time.monotonic() - last_change > 15:
                break  # no progress for 15 s
            time.sleep(0.2)
        flush_s = time.monotonic() - flush_t0
        alive = proxy.poll() is None
        stop_process(proxy)  # SIGTERM: done() drains the writer
        rc = proxy.returncode
        got_final = db_ids(db)
        complete = 0
        if db.exists():
            conn = sqlite3.connect(db)
            complete = conn.execute(
                "SELECT count(*) FROM requests WHERE status = 200 AND model = ? AND provider = 'openai' "
                "AND prompt_tokens = 12 AND completion_tokens = 6 AND usage_source = 'provider' "
                "AND latency_ms > 0 AND request_body IS NOT NULL AND response_body IS NOT NULL "
                "AND streamed = (request_body LIKE '%\"stream\": true%' OR request_body LIKE '%\"stream\":true%')",
                [MODEL],
            ).fetchone()[0]
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            conn.close()
        else:
            integrity = "no database"

        # ---- checks ----
        n_made, n_ok = len(made), len(res["latencies"])
        if res["timed_out"]:
            failures.append(f"load did not finish within the time budget: {n_made}/{args.calls} calls made")
        if res["error_count"]:
            failures.append(f"{res['error_count']} client errors")
        if not alive:
            failures.append("the proxy died during the run")
        missing = made - got_final
        extra = got_final - made
        if missing:
            failures.append(f"{len(missing)} calls have no row (e.g. {sorted(missing)[:3]})")
        if extra:
            failures.append(f"{len(extra)} rows for calls never made")
        if not made <= got:
            failures.append(f"writer had not flushed {len(made - got)} rows after {flush_s:.1f}s (running proxy)")
        if complete != n_made:
            failures.append(f"only {complete}/{n_made} rows are complete (status, model, tokens, latency, bodies)")
        if integrity != "ok":
            failures.append(f"integrity_check: {integrity}")
        if alive and rc not in (0, None):
            failures.append(f"proxy exited with {rc} on SIGTERM")

        s = sampler.samples
        rss_line = fd_line = "(no samples)"
        if len(s) >= 4:
            ref = at_fraction(s, 0, load_end, 0.25)
            window = [x for x in s if x[0] >= ref[0]]
            rss_lo, rss_hi = min(x[1] for x in window), max(x[1] for x in window)
            fd_hi = max(x[2] for x in window)
            tol = args.rss_tolerance
            if rss_hi > ref[1] * (1 + tol) or rss_lo < ref[1] * (1 - tol):
                failures.append(
                    f"RSS not flat: {ref[1] / 1024:.1f} MB at 25%, range {rss_lo / 1024:.1f}-{rss_hi / 1024:.1f} MB "
                    f"after (tolerance +-{tol:.0%})"
                )
            fd_tol = max(8, int(0.10 * ref[2]))
            # only growth counts: the count falls at the very end as the workers finish one by one
            if fd_hi > ref[2] + fd_tol:
                failures.append(f"fds not flat: {ref[2]} at 25%, up to {fd_hi} after (tolerance +{fd_tol})")
            rss_line = series(s, 0, load_end, 1)
            fd_line = series(s, 0, load_end, 2)
            growth = (s[-1][1] - ref[1]) / ref[1]
        else:
            growth = float("nan")
        if fd_before is not None and fd_after is not None and fd_after > fd_before + 4:
            failures.append(f"fds leaked: {fd_before} before the load, {fd_after} after the client closed")

        # ---- report ----
        lat = res["latencies"]
        print()
        print("=== soak report ===")
        print(f"calls made      {n_made} ({n_made - n_made // 2} JSON, {n_made // 2} streamed), ok {n_ok}, "
              f"client errors {res['error_count']}")
        print(f"load            {res['elapsed']:.1f}s  ->  {n_made / max(res['elapsed'], 1e-9):.0f} calls/s "
              f"at concurrency {args.concurrency}")
        print(f"latency         p50 {pct(lat, 50) * 1000:.1f} ms  p99 {pct(lat, 99) * 1000:.1f} ms  "
              f"max {max(lat, default=0) * 1000:.1f} ms")
        print(f"rows            {len(got_final)} (complete {complete}); writer flushed "
              f"{'all' if made <= got else len(got & made)} within {flush_s:.2f}s after the load; integrity {integrity}")
        print(f"RSS MB          before load {(rss_before or 0) / 1024:.1f}; {rss_line}; end vs 25%: {growth:+.1%}")
        print(f"open fds        before load {fd_before}; {fd_line}; after client closed {fd_after}")
        print(f"proxy exit      {rc}" + (" (on SIGTERM)" if alive else " (died during the run)"))
        for e in res["errors"]:
            print(f"  error: {e}")
        print(f"total           {time.monotonic() - t_begin:.1f}s")
        if failures:
            print("FAIL")
            for f in failures:
                print(f"  - {f}")
            tail = proxy_log.read_text(errors="replace")[-3000:] if proxy_log.exists() else ""
            if tail.strip():
                print("--- proxy log (tail) ---")
                print(tail)
            return 1
        print("PASS")
        return 0
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        print(f"soak: could not run: {type(e).__name__}: {e}", file=sys.stderr)
        if proxy_log.exists():
            print(proxy_log.read_text(errors="replace")[-3000:], file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        for p in (proxy, fake):
            try:
                stop_process(p, timeout=20)
            except Exception:  # noqa: BLE001
                if p is not None and p.poll() is None:
                    p.kill()
        files.close()
        if args.keep:
            print(f"soak: data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
