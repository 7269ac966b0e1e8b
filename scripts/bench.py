#!/usr/bin/env python3
"""Benchmark: what the proxy costs, against bare mitmdump and direct calls, in one run.

    .venv/bin/python scripts/bench.py                       # full run (~9 minutes)
    .venv/bin/python scripts/bench.py --quick               # short run (~3 minutes)
    .venv/bin/python scripts/bench.py --json bench.json     # also write the results as JSON
    .venv/bin/python scripts/bench.py --quick --baseline /tmp/old   # also the addon of another checkout
    .venv/bin/python scripts/bench.py --streams-only --streams 250,1000,2500 [--streams-nofile 1024]

Everything runs on loopback and is started by this script, each in its own process:
  * a fast fake OpenAI upstream (asyncio, raw HTTP/1.1 keep-alive; JSON, or SSE with a delay between
    chunks), byte for byte the payloads of tests/fakes/upstream.py;
  * the configurations measured, alternated A B A B for every cell so machine drift hits all alike:
      direct       the client talks to the fake upstream
      bare         `mitmdump -q` (same mitmproxy) in reverse mode onto the fake
      bare-stream  the same plus a one-line addon setting flow.response.stream (streamed calls only:
                   bare mitmdump buffers, so this is mitmproxy's own time to first chunk)
      addon        `python -m helicone_addon run -q` in reverse mode: full logging, usage, pricing
      addon-stock  the same with HELICONE_FAST_DISPATCH=0 (mitmproxy's stock addon dispatch)
      bare-https   `mitmdump` in regular mode, client through CONNECT + TLS (trusting the CA of a
                   temp confdir), --map-remote api.openai.com -> fake, connection_strategy=lazy
      addon-https  `helicone-addon run` the same way (the HTTPS_PROXY setup)
      litellm      `litellm` proxy onto the fake, only if litellm[proxy] happens to be installed
  * a closed-loop load generator (its own process, asyncio + raw sockets, keep-alive): N workers,
    each sending requests back to back, at concurrency 1, 8 and 32, non-streamed and streamed.
It reports requests/s, latency p50/p99, time to first chunk p50/p99 for streams, the proxy's CPU
per request (every process under the proxy: workers, a writer process, ... included), the ratios
addon/bare and addon/direct; N long streams opened at once (scripts/_bench_streams.py: completed,
TTFC and whole-stream p99 over direct, proxy CPU and RSS, against bare mitmdump with a one-line
streaming addon); a cache hit against a pass-through call; the log writer (scripts/_bench_writer.py:
rows/s by wall clock and by CPU, row visibility, hand-off costs); the proxy's RSS after 1k and
after 20k calls.
It is bounded in requests and seconds, and stops every process it started (also on Ctrl-C).
The proxy is pinned to one CPU and the clients to the others when the machine has several
(--no-pin to turn that off). Exit status: 0, or 2 if it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import MODEL, OPENAI_HOST, PATH, make_body, pct  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CONFIG_HELP = {
    "direct": "client -> fake upstream",
    "bare": "mitmdump -q, reverse mode",
    "bare-stream": "mitmdump -q, reverse mode, plus a one-line addon that streams responses (streams only: "
                   "mitmproxy's own time to first chunk, the floor for the addon's)",
    "addon": "helicone-addon run -q, reverse mode (fast dispatch)",
    "addon-stock": "helicone-addon run -q, reverse mode, HELICONE_FAST_DISPATCH=0",
    "addon-base": "addon as it is in the --baseline checkout (same venv, same options)",
    "addon-process": "addon with its log writer in a process of its own (helicone_log_process=true)",
    "addon-otlp": "addon, plus an OpenTelemetry span per call to an OTLP/HTTP collector (Prometheus is always on)",
    "bare-https": "mitmdump, regular mode, CONNECT + TLS interception, map_remote",
    "addon-https": "helicone-addon run, regular mode (HTTPS_PROXY), TLS interception, map_remote",
    "litellm": "litellm proxy (optional)",
}
STREAM_ONLY = {"bare-stream"}  # measured on streamed calls only (on JSON it is bare)


# =================================================================================================
# fake upstream (child process: bench.py --serve-upstream)
# =================================================================================================
def _payloads() -> tuple[bytes, list[bytes], list[bytes]]:
    from fakes.upstream import REPLY_WORDS, openai_completion, openai_sse_events

    return (
        json.dumps(openai_completion(MODEL, "".join(REPLY_WORDS))).encode(),
        openai_sse_events(MODEL, include_usage=True),
        openai_sse_events(MODEL, include_usage=False),
    )


def serve_upstream(chunk_delay_ms: float) -> None:
    body_json, sse_usage, sse_plain = _payloads()
    json_resp = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body_json)).encode() + b"\r\n\r\n" + body_json
    )
    sse_head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )

    def chunk(ev: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(ev), ev)

    sse_usage_c = [chunk(e) for e in sse_usage]
    sse_plain_c = [chunk(e) for e in sse_plain]
    long_answers: dict[tuple[int, bool], list[bytes]] = {}
    from _bench_streams import _raise_nofile, sse_chunks

    _raise_nofile()
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    otlp_ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.t = transport
            self.buf = bytearray()
            self.busy = False
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.buf += data
            self.process()

        def connection_lost(self, exc) -> None:
            self.busy = True

        def process(self) -> None:
            buf = self.buf
            while not self.busy:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                head = bytes(buf[:i]).lower()
                start = i + 4
                if b"transfer-encoding: chunked" in head:
                    body = bytearray()
                    pos = start
                    while True:
                        j = buf.find(b"\r\n", pos)
                        if j < 0:
                            return
                        size = int(bytes(buf[pos:j]).split(b";")[0], 16)
                        if len(buf) < j + 2 + size + 2:
                            return
                        body += buf[j + 2 : j + 2 + size]
                        pos = j + 2 + size + 2
                        if size == 0:
                            break
                    end = pos
                else:
                    n = 0
                    k = head.find(b"content-length:")
                    if k >= 0:
                        n = int(head[k + 15 : head.find(b"\r\n", k) if head.find(b"\r\n", k) > 0 else None])
                    end = start + n
                    if len(buf) < end:
                        return
                    body = buf[start:end]
                del buf[:end]
                first_line = head.split(b"\r\n", 1)[0]
                if b"/chat/completions" not in first_line:
                    self.t.write(otlp_ok if b"/v1/traces" in first_line else not_found)  # the OTLP collector
                    continue
                compact = bytes(body).replace(b" ", b"")
                if b'"stream":true' in compact:
                    usage = b'"include_usage":true' in compact
                    chunks = sse_usage_c if usage else sse_plain_c
                    k = head.find(b"x-fake-chunks:")
                    if k >= 0:  # a long answer of N one-token chunks (the concurrent-streams scenario)
                        n = int(head[k + 14 : head.find(b"\r\n", k) if head.find(b"\r\n", k) > 0 else None])
                        if (n, usage) not in long_answers:
                            long_answers[(n, usage)] = sse_chunks(MODEL, n, usage)
                        chunks = long_answers[(n, usage)]
                    delay = chunk_delay_ms
                    k = head.find(b"x-fake-delay-ms:")
                    if k >= 0:
                        delay = float(head[k + 16 : head.find(b"\r\n", k) if head.find(b"\r\n", k) > 0 else None])
                    if delay <= 0:
                        self.t.write(sse_head + b"".join(chunks) + b"0\r\n\r\n")
                    else:
                        self.busy = True
                        self.t.write(sse_head + chunks[0])
                        self._stream(chunks, 1, delay / 1000)
                        return
                else:
                    self.t.write(json_resp)

        def _stream(self, chunks: list[bytes], i: int, delay: float) -> None:
            loop = asyncio.get_running_loop()

            def step(i=i) -> None:
                if self.t.is_closing():
                    return
                if i < len(chunks):
                    self.t.write(chunks[i])
                    loop.call_later(delay, step, i + 1)
                else:
                    self.t.write(b"0\r\n\r\n")
                    self.busy = False
                    self.process()

            loop.call_later(delay, step)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


# =================================================================================================
# load generator (child process: bench.py --loadgen SPEC)
# =================================================================================================
def loadgen(spec: dict) -> None:
    """Closed loop: `conc` workers on keep-alive connections, each sending back to back.

    Prints "START" when the measurement window opens and "END" when it closes (the parent samples
    the proxy's CPU time there), then one JSON line with the results."""
    conc = spec["conc"]
    warmup = spec.get("warmup", 0.5)
    seconds = spec.get("seconds", 3.0)
    max_requests = spec.get("max_requests", 10**9)  # counted in the window (or in total if no window)
    total_requests = spec.get("total_requests")  # RSS mode: exactly this many, no window
    host = spec.get("host_header", f"{spec['host']}:{spec['port']}")
    extra = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", []))
    bodies = {s: make_body(s, spec.get("marker", "")) for s in (False, True)}
    reqs = {
        s: (
            f"POST {spec.get('path', PATH)} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer sk-bench-0000000000000000\r\n{extra}"
            f"content-length: {len(b)}\r\n\r\n"
        ).encode() + b
        for s, b in bodies.items()
    }
    mix = spec.get("mix", False)
    stream_default = spec.get("stream", False)
    connect = spec.get("connect")  # "api.openai.com:443" for the HTTPS_PROXY mode
    ctx = None
    if connect:
        ctx = ssl.create_default_context(cafile=spec["ca"])
    out: dict = {"lat": [], "ttfc": [], "errors": 0, "first_error": None, "hits": 0, "n": 0, "issued": 0}
    perf = time.perf_counter

    async def open_conn():
        r, w = await asyncio.open_connection(spec["host"], spec["port"])
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if connect:
            w.write(f"CONNECT {connect} HTTP/1.1\r\nhost: {connect}\r\n\r\n".encode())
            head = await r.readuntil(b"\r\n\r\n")
            if b" 200" not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"CONNECT failed: {head[:80]!r}")
            await w.start_tls(ctx, server_hostname=connect.rsplit(":", 1)[0])
        return r, w

    async def one(r, w, stream: bool) -> tuple[float, float | None, bool]:
        t0 = perf()
        w.write(reqs[stream])
        head = await r.readuntil(b"\r\n\r\n")
        status = head[9:12]
        low = head.lower()
        ttfc = None
        if b"transfer-encoding: chunked" in low:
            while True:
                line = await r.readuntil(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    await r.readuntil(b"\r\n")
                    break
                await r.readexactly(size + 2)
                if ttfc is None:
                    ttfc = perf() - t0
        else:
            k = low.find(b"content-length:")
            n = int(low[k + 15 : low.find(b"\r\n", k)]) if k >= 0 else 0
            if n:
                await r.readexactly(n)
                if stream and ttfc is None:
                    ttfc = perf() - t0
        if status != b"200":
            raise RuntimeError(f"status {status.decode(errors='replace')}: {head[:200]!r}")
        out["hits"] += b"helicone-cache: hit" in low
        if b"connection: close" in low:
            raise ConnectionResetError("server closed the connection")
        return perf() - t0, ttfc, True

    window = [None, None]  # start, end (perf)

    async def worker(idx: int) -> None:
        r = w = None
        k = idx
        while True:
            now = perf()
            if total_requests is not None:
                if out["issued"] >= total_requests:
                    break
            elif window[1] is not None and now >= window[1] or out["n"] >= max_requests:
                break
            out["issued"] += 1
            stream = (k % 2 == 1) if mix else stream_default
            k += 1
            try:
                if r is None:
                    r, w = await open_conn()
                lat, ttfc, _ = await one(r, w, stream)
            except Exception as e:  # noqa: BLE001 - counted and reported
                out["errors"] += 1
                if out["first_error"] is None:
                    out["first_error"] = f"{type(e).__name__}: {e}"[:300]
                if w is not None:
                    w.close()
                r = w = None
                await asyncio.sleep(0.01)
                continue
            end = perf()
            if total_requests is not None or (window[0] is not None and window[0] <= end <= window[1]):
                out["n"] += 1
                out["lat"].append(lat * 1000)
                if ttfc is not None:
                    out["ttfc"].append(ttfc * 1000)
        if w is not None:
            w.close()

    async def main() -> None:
        t_start = perf()
        tasks = [asyncio.ensure_future(worker(i)) for i in range(conc)]
        if total_requests is None:
            await asyncio.sleep(warmup)
            window[0] = perf()
            window[1] = window[0] + seconds
            print("START", flush=True)
            while perf() < window[1] and out["n"] < max_requests:
                await asyncio.sleep(0.02)
            out["elapsed"] = min(perf(), window[1]) - window[0]
            window[1] = min(window[1], perf())
            print("END", flush=True)
        else:
            print("START", flush=True)
        _, pending = await asyncio.wait(tasks, timeout=spec.get("timeout", 120))
        for t in pending:
            t.cancel()
        if total_requests is not None:
            out["elapsed"] = perf() - t_start
            print("END", flush=True)

    asyncio.run(main())
    print(json.dumps(out), flush=True)


# =================================================================================================
# log writer throughput (child process: bench.py --writer-bench N): see scripts/_bench_writer.py
# =================================================================================================
def writer_bench(n: int, tmp: str) -> None:
    sys.modules.setdefault("bench", sys.modules[__name__])  # _bench_writer imports helpers from here
    from _bench_writer import writer_bench as run

    print(json.dumps(run(n, tmp)), flush=True)


# =================================================================================================
# the parent: processes, measurements, report
# =================================================================================================
def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if the benchmark itself dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - not Linux: the parent's own cleanup still applies
        pass


from _util import free_port, wait_port  # noqa: E402


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on


def descendants(pid: int) -> list[int]:
    """Live descendants of a process (workers, a writer process, ...)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(int(_stat(int(d))[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_ticks(pid: int) -> int:
    """CPU time of a process and of every process under it: all their threads (utime + stime),
    live descendants included, and the children it has already reaped (cutime + cstime)."""
    try:
        parts = _stat(pid)
    except OSError:
        return 0
    total = int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])
    for child in descendants(pid):
        try:
            c = _stat(child)
        except OSError:
            continue  # it just exited: its time moves to its parent's cutime
        total += int(c[11]) + int(c[12])
    return total


def own_cpu_ticks(pid: int) -> int:
    """CPU time of the process itself (all its threads), without the processes under it."""
    try:
        parts = _stat(pid)
    except OSError:
        return 0
    return int(parts[11]) + int(parts[12])


def rss_kb(pid: int, tree: bool = False) -> int:
    """Resident memory of a process (and, with tree=True, of every process under it)."""
    total = 0
    for p in [pid, *(descendants(pid) if tree else [])]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="helicone-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.deadline = time.monotonic() + args.max_seconds
        self.results: dict = {"cells": [], "notes": []}
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pin = args.pin and ncpu >= 2
        self.proxy_cpus = {cpus[-1]} if self.pin else None
        self.client_cpus = set(cpus[:-1]) if self.pin else None
        self.servers: dict[str, dict] = {}

    # -- processes -------------------------------------------------------------------------------
    def spawn(self, argv: list[str], name: str, env: dict | None = None, cpus: set[int] | None = None,
              stdout=None, nofile: int | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed below

        def pre() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)
            if nofile:  # the soft descriptor limit a shell would give (e.g. 1024)
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        proc = subprocess.Popen(
            argv, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, stdout=stdout or log, stderr=log,
            stdin=subprocess.DEVNULL, preexec_fn=pre, start_new_session=True,  # noqa: PLW1509 - no threads here
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            try:
                self.stop(proc)
            except Exception:  # noqa: BLE001, S110 - best effort, every process is tried
                pass

    def unpin_helpers(self, pid: int) -> None:
        """The proxy process stays on its one core; the helper processes it started (the OTLP span
        exporter) may run on any, as in production: that is what moving work out of the proxy's
        process buys. Their CPU still counts in every CPU/request figure (`cpu_ticks`)."""
        every = set(self.client_cpus or ()) | set(self.proxy_cpus or ())
        for child in descendants(pid):
            try:
                for tid in os.listdir(f"/proc/{child}/task"):
                    os.sched_setaffinity(int(tid), every)
            except OSError:
                continue  # it just exited

    def settle(self, pids: list[int], timeout: float = 10.0) -> None:
        """Wait until the proxies are idle (the log writer has flushed, no stray work)."""
        deadline = time.monotonic() + timeout
        last = {p: cpu_ticks(p) for p in pids}
        while time.monotonic() < deadline:
            time.sleep(0.15)
            now = {p: cpu_ticks(p) for p in pids}
            if all(now[p] - last[p] <= 1 for p in pids):
                return
            last = now

    def start_upstream(self) -> None:
        proc = self.spawn([sys.executable, __file__, "--serve-upstream", "--chunk-delay-ms",
                           str(self.args.chunk_delay_ms)], "upstream", cpus=self.client_cpus,
                          stdout=subprocess.PIPE)
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        proc.stdout.close()
        self.up_port = int(line.split()[1])
        self.up_url = f"http://127.0.0.1:{self.up_port}"
        self.servers["direct"] = {"host": "127.0.0.1", "port": self.up_port, "pid": None}

    def start_config(self, name: str, data_dir: Path | None = None) -> dict:
        port = free_port()
        confdir = self.tmp / f"conf-{name}"
        mitmdump = str(Path(sys.executable).with_name("mitmdump"))
        env = {}
        helicone = [
            "--set", f"helicone_data_dir={data_dir or self.tmp / f'data-{name}'}",
            "--set", "helicone_api_port=0",
            "--set", "helicone_hosts=127.0.0.1=openai",
        ]
        reverse = ["--mode", f"reverse:{self.up_url}@127.0.0.1:{port}"]
        regular = ["--mode", f"regular@127.0.0.1:{port}", "--set", "connection_strategy=lazy",
                   "--map-remote", rf"|https://api\.openai\.com|{self.up_url}"]
        common = ["-q", "--listen-host", "127.0.0.1", "--set", f"confdir={confdir}"]
        addon = [sys.executable, "-m", "helicone_addon", "run"]
        if name == "bare":
            argv = [mitmdump, *common, *reverse]
        elif name == "bare-stream":
            argv = [mitmdump, *common, *reverse, "-s", str(self.stream_addon_script())]
        elif name == "bare-https":
            argv = [mitmdump, *common, *regular]
        elif name in ("addon", "addon-stock", "addon-rss", "addon-otlp", "addon-base", "addon-process"):
            argv = [*addon, *common, *reverse, *helicone]
            if name == "addon-process":
                argv += ["--set", "helicone_log_process=true"]
            if name == "addon-stock":
                env["HELICONE_FAST_DISPATCH"] = "0"
            if name == "addon-otlp":  # the fake upstream also plays the collector (200 to /v1/traces)
                argv += ["--set", f"helicone_otlp_endpoint={self.up_url}"]
        elif name == "addon-https":
            argv = [*addon, *common, *regular, *helicone]
        elif name == "litellm":
            return self.start_litellm(port)
        else:
            raise ValueError(name)
        cwd = Path(self.args.baseline).resolve() if name == "addon-base" else None  # its helicone_addon
        proc = self.spawn(argv, name, env=env, cpus=self.proxy_cpus, cwd=cwd)
        wait_port(port, proc)
        if self.pin:
            self.unpin_helpers(proc.pid)
        info = {"host": "127.0.0.1", "port": port, "pid": proc.pid, "proc": proc}
        if "https" in name:
            ca = confdir / "mitmproxy-ca-cert.pem"
            deadline = time.monotonic() + 10
            while not ca.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            info.update(connect=f"{OPENAI_HOST}:443", ca=str(ca), host_header=OPENAI_HOST)
        if name.startswith("addon"):
            info["db"] = (data_dir or self.tmp / f"data-{name}") / "helicone.db"
        self.servers[name] = info
        return info

    def stream_addon_script(self) -> Path:
        """The one-line addon that makes bare mitmdump stream (bare-stream), as a `-s` script."""
        from _bench_streams import STREAM_ADDON

        script = self.tmp / "stream_addon.py"
        script.write_text(STREAM_ADDON)
        return script

    def start_litellm(self, port: int) -> dict:
        exe = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
        cfg = self.tmp / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {self.up_url}/v1\n"
            "      api_key: sk-bench\n"
            "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        )
        proc = self.spawn([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)], "litellm",
                          cpus=self.proxy_cpus, env={"LITELLM_TELEMETRY": "False"})
        wait_port(port, proc, timeout=120)
        info = {"host": "127.0.0.1", "port": port, "pid": proc.pid, "proc": proc}
        self.servers["litellm"] = info
        return info

    def litellm_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("litellm") is not None and (
            shutil.which("litellm") is not None or Path(sys.executable).with_name("litellm").exists()
        )

    # -- one measurement -------------------------------------------------------------------------
    def measure(self, server: dict, **spec) -> dict:
        spec = {"host": server["host"], "port": server["port"], **{k: server[k] for k in ("connect", "ca", "host_header")
                                                                   if k in server}, **spec}
        pid = server.get("pid")
        proc = self.spawn([sys.executable, __file__, "--loadgen", json.dumps(spec)], "loadgen",
                          cpus=self.client_cpus, stdout=subprocess.PIPE)
        cpu0 = cpu1 = own0 = own1 = None
        result = None
        limit = time.monotonic() + spec.get("warmup", 0.5) + spec.get("seconds", 3) + spec.get("timeout", 120) + 30
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode().strip()
                if line == "START":
                    cpu0, own0 = (cpu_ticks(pid), own_cpu_ticks(pid)) if pid else (None, None)
                elif line == "END":
                    cpu1, own1 = (cpu_ticks(pid), own_cpu_ticks(pid)) if pid else (None, None)
                elif line.startswith("{"):
                    result = json.loads(line)
                if time.monotonic() > limit:
                    break
            proc.wait(30)
        finally:
            if proc.stdout:
                proc.stdout.close()
            self.stop(proc)
        if result is None:
            raise RuntimeError(f"load generator failed; see {self.tmp / 'loadgen.log'}")
        n = result["n"]
        elapsed = result.get("elapsed") or 1e-9
        result["rps"] = n / elapsed if elapsed > 0 else 0.0
        if cpu0 is not None and cpu1 is not None and n:
            result["cpu_ms_per_req"] = (cpu1 - cpu0) / CLK_TCK * 1000 / n
            result["cpu_util"] = (cpu1 - cpu0) / CLK_TCK / elapsed
            result["own_cpu_ms_per_req"] = (own1 - own0) / CLK_TCK * 1000 / n
        return result

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        self.start_upstream()
        if a.streams_only:
            self.results["streams"] = self.run_streams()
            return self.results
        configs = [c for c in a.configs.split(",") if c]
        if a.baseline and "addon-base" not in configs:
            configs.append("addon-base")
        if "litellm" in configs and not self.litellm_available():
            configs.remove("litellm")
            self.results["notes"].append("litellm: not installed (optional), skipped")
        elif "litellm" not in configs and self.litellm_available():
            configs.append("litellm")
        for c in list(configs):
            if c == "litellm":
                try:
                    self.start_config(c)
                except (RuntimeError, TimeoutError) as e:  # e.g. litellm without its [proxy] extra
                    configs.remove(c)
                    self.results["notes"].append(f"litellm: could not start ({e}), skipped")
            elif c != "direct":
                self.start_config(c)
        proxies = [self.servers[c]["pid"] for c in configs if self.servers[c].get("pid")]
        self.results["configs"] = {c: CONFIG_HELP.get(c, c) for c in configs}
        concs = [int(x) for x in a.concurrency.split(",")]
        kinds = ["json", "stream"]
        # warm every configuration once (imports, pools, the first TLS handshakes, cache dirs)
        for c in configs:
            if c not in STREAM_ONLY:
                self.measure(self.servers[c], conc=2, stream=False, warmup=0.3, seconds=0.5)
            self.measure(self.servers[c], conc=2, stream=True, warmup=0.2, seconds=0.3)
        for kind in kinds:
            for conc in concs:
                samples: dict[str, list[dict]] = {c: [] for c in configs}
                for rnd in range(a.rounds):
                    order = configs if rnd % 2 == 0 else list(reversed(configs))  # A B A B ... B A
                    for c in order:
                        if not self.time_left():
                            break
                        if c in STREAM_ONLY and kind != "stream":
                            continue
                        self.settle(proxies)
                        r = self.measure(self.servers[c], conc=conc, stream=kind == "stream",
                                         warmup=a.warmup, seconds=a.seconds, max_requests=a.max_requests)
                        samples[c].append(r)
                        _progress(f"{kind:6} c={conc:<3} {c:12} round {rnd + 1}: {r['rps']:8.1f} req/s"
                                  f"  p50 {pct(r['lat'], 50) or 0:6.2f} ms  errors {r['errors']}")
                for c in configs:
                    if samples[c]:
                        self.results["cells"].append(summarize(c, kind, conc, samples[c]))
        if a.streams and self.time_left():
            self.results["streams"] = self.run_streams()
        if a.cache and "addon" in self.servers and self.time_left():
            self.results["cache"] = self.run_cache()
        if a.writer and self.time_left():
            self.results["writer"] = self.run_writer()
        if a.rss and self.time_left():
            self.results["rss"] = self.run_rss()
        return self.results

    def run_cache(self) -> dict:
        srv = self.servers["addon"]
        pid = srv["pid"]
        marker = f" {uuid.uuid4()}"
        cache_hdr = [("Helicone-Cache-Enabled", "true")]
        # prime: the entry is written by the log writer thread after the first call
        hit = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not hit:
            r = self.measure(srv, conc=1, stream=False, total_requests=1, headers=cache_hdr, marker=marker)
            hit = r["hits"] > 0
            if not hit:
                time.sleep(0.1)
        out: dict = {"primed": hit}
        for conc in (1, 8):
            per: dict[str, list[dict]] = {"pass-through": [], "cache-hit": []}
            for _ in range(self.args.rounds):
                for label, hdrs in (("pass-through", []), ("cache-hit", cache_hdr)):
                    self.settle([pid])
                    r = self.measure(srv, conc=conc, stream=False, headers=hdrs, marker=marker,
                                     warmup=self.args.warmup, seconds=self.args.seconds,
                                     max_requests=self.args.max_requests)
                    per[label].append(r)
                    _progress(f"cache  c={conc:<3} {label:12}: {r['rps']:8.1f} req/s  p50 "
                              f"{pct(r['lat'], 50) or 0:6.2f} ms  hits {r['hits']}")
            out[f"c{conc}"] = {k: summarize(k, "json", conc, v) for k, v in per.items()}
            out[f"c{conc}"]["hits_in_window"] = sum(r["hits"] for r in per["cache-hit"])
        return out

    def run_streams(self) -> dict:
        """N streams opened at once, per N, against direct, bare mitmdump + stream addon, the addon."""
        a = self.args
        script = self.stream_addon_script()
        mitmdump = str(Path(sys.executable).with_name("mitmdump"))
        out: dict = {"meta": {"chunks": a.stream_chunks, "chunk_ms": a.stream_chunk_ms, "proxy_nofile": a.streams_nofile},
                     "cells": []}
        servers: dict[str, dict] = {"direct": self.servers["direct"]}
        for name in a.streams_configs.split(","):
            if name == "direct":
                continue
            port = free_port()
            common = ["-q", "--listen-host", "127.0.0.1", "--set", f"confdir={self.tmp / f'conf-s-{name}'}",
                      "--mode", f"reverse:{self.up_url}@127.0.0.1:{port}"]
            if name == "bare-stream":
                argv = [mitmdump, *common, "-s", str(script)]
            elif name == "addon":
                argv = [sys.executable, "-m", "helicone_addon", "run", *common,
                        "--set", f"helicone_data_dir={self.tmp / 'data-streams'}", "--set", "helicone_api_port=0",
                        "--set", "helicone_hosts=127.0.0.1=openai"]
                if a.stream_workers > 1:
                    argv += ["--workers", str(a.stream_workers)]
            else:
                raise ValueError(f"unknown streams config {name!r}")
            proc = self.spawn(argv, f"streams-{name}", cpus=self.proxy_cpus, nofile=a.streams_nofile)
            wait_port(port, proc, timeout=120)
            servers[name] = {"host": "127.0.0.1", "port": port, "pid": proc.pid, "proc": proc}
            time.sleep(2 if a.stream_workers > 1 else 0.2)
        for n in [int(x) for x in str(a.streams).split(",") if x.strip()]:
            for name, srv in servers.items():
                if not self.time_left():
                    break
                if srv.get("pid"):
                    self.settle([srv["pid"]], timeout=30)
                out["cells"].append(self._stream_burst(name, srv, n))
                c = out["cells"][-1]
                _progress(f"streams N={n:<5} {name:12} completed {c['completed']}/{n}  TTFC p99 "
                          f"{c['ttfc_p99_ms'] or 0:8.0f} ms  stream p99 {c['stream_p99_ms'] or 0:8.0f} ms  "
                          f"CPU {c['proxy_cpu_s'] or 0:5.1f} s  RSS {c['proxy_rss_peak_mb'] or 0:5.0f} MB")
        for srv in servers.values():
            if srv.get("proc"):
                self.stop(srv["proc"])
        return out

    def _stream_burst(self, name: str, srv: dict, n: int) -> dict:
        from _bench_streams import summarize

        a = self.args
        spec = {"host": srv["host"], "port": srv["port"], "n": n, "chunks": a.stream_chunks,
                "chunk_ms": a.stream_chunk_ms, "model": MODEL, "path": PATH,
                "timeout": max(60.0, a.stream_chunks * a.stream_chunk_ms / 1000 * 6)}
        pid = srv.get("pid")
        proc = self.spawn([sys.executable, __file__, "--stream-burst", json.dumps(spec)], "burst",
                          cpus=self.client_cpus, stdout=subprocess.PIPE)
        cpu0 = cpu1 = None
        rss_peak = 0
        result = None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        running = False
        try:
            while True:
                ready = sel.select(timeout=0.25)
                if pid and running:
                    rss_peak = max(rss_peak, rss_kb(pid, tree=True))
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.strip()
                    if line == b"START":
                        running = True
                        cpu0 = cpu_ticks(pid) if pid else None
                    elif line == b"END":
                        running = False
                        cpu1 = cpu_ticks(pid) if pid else None
                    elif line.startswith(b"{"):
                        result = json.loads(line)
            proc.wait(30)
        finally:
            sel.close()
            self.stop(proc)
        if result is None:
            raise RuntimeError(f"stream burst failed; see {self.tmp / 'burst.log'}")
        cpu_s = (cpu1 - cpu0) / CLK_TCK if cpu0 is not None and cpu1 is not None else None
        return summarize(name, n, result, cpu_s, rss_peak or None, pct)

    def run_writer(self) -> dict:
        n = self.args.writer_rows
        proc = self.spawn([sys.executable, __file__, "--writer-bench", str(n), "--tmp", str(self.tmp)],
                          "writer", stdout=subprocess.PIPE, cpus=self.proxy_cpus)
        try:
            out, _ = proc.communicate(timeout=600)
        finally:
            self.stop(proc)
        res = json.loads(out.decode().strip().splitlines()[-1])
        _progress(f"writer: {res['build_and_insert_rows_per_s']:.0f} rows/s (build+insert), "
                  f"{res['rows_per_cpu_s']:.0f} rows/CPU-s, {res['insert_only_rows_per_s']:.0f} rows/s insert only, "
                  f"build_row {res['build_row_us']:.0f} us")
        return res

    def run_rss(self) -> dict:
        data = self.tmp / "data-rss"
        srv = self.start_config("addon-rss", data_dir=data)
        pid = srv["pid"]
        first, total = self.args.rss_first, self.args.rss_total
        points = {}
        made = 0
        rps = []
        errors = 0
        for target in (first, total):
            r = self.measure(srv, conc=8, mix=True, total_requests=target - made, timeout=600)
            made += r["n"]
            errors += r["errors"]
            rps.append(r["rps"])
            self.settle([pid], timeout=30)
            points[made] = rss_kb(pid)
            _progress(f"rss    after {made:6} calls: {points[made] / 1024:.1f} MiB")
        rows = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = sqlite3.connect(srv["db"], timeout=10)
                rows = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
                conn.close()
            except sqlite3.Error:
                rows = 0
            if rows >= made:
                break
            time.sleep(0.2)
        self.stop(srv["proc"])
        keys = sorted(points)
        growth = (points[keys[-1]] - points[keys[0]]) / points[keys[0]] * 100 if points[keys[0]] else None
        return {"calls": made, "errors": errors, "rows_logged": rows, "rss_kb": {str(k): v for k, v in points.items()},
                "growth_pct": growth, "rps": statistics.median(rps) if rps else None}


def summarize(config: str, kind: str, conc: int, runs: list[dict]) -> dict:
    lat = [x for r in runs for x in r["lat"]]
    ttfc = [x for r in runs for x in r["ttfc"]]
    cpu = [r["cpu_ms_per_req"] for r in runs if r.get("cpu_ms_per_req") is not None]
    own = [r["own_cpu_ms_per_req"] for r in runs if r.get("own_cpu_ms_per_req") is not None]
    return {
        "config": config, "kind": kind, "conc": conc,
        "rps": statistics.median(r["rps"] for r in runs),
        "rps_runs": [round(r["rps"], 1) for r in runs],
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "ttfc_p50_ms": pct(ttfc, 50) if kind == "stream" else None,
        "ttfc_p99_ms": pct(ttfc, 99) if kind == "stream" else None,
        "cpu_ms_per_req": statistics.median(cpu) if cpu else None,
        "own_cpu_ms_per_req": statistics.median(own) if own else None,
        "requests": sum(r["n"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r.get("first_error")), None),
    }


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


# =================================================================================================
# report
# =================================================================================================
def _f(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def cell(results: dict, config: str, kind: str, conc: int) -> dict | None:
    for c in results["cells"]:
        if c["config"] == config and c["kind"] == kind and c["conc"] == conc:
            return c
    return None


def _div(x: dict | None, y: dict | None, k: str = "rps") -> float | None:
    return x[k] / y[k] if x and y and x.get(k) and y.get(k) else None


def _sub(x: dict | None, y: dict | None, k: str) -> float | None:
    return x[k] - y[k] if x and y and x.get(k) is not None and y.get(k) is not None else None


def ratios(results: dict) -> list[dict]:
    out = []
    kinds = sorted({c["kind"] for c in results["cells"]}, key=["json", "stream"].index)
    concs = sorted({c["conc"] for c in results["cells"]})
    for kind in kinds:
        for conc in concs:
            d, b, ad, st, bh, ah, ot, ab, th = (cell(results, name, kind, conc) for name in
                                                ("direct", "bare", "addon", "addon-stock", "bare-https", "addon-https",
                                                 "addon-otlp", "addon-base", "addon-process"))
            out.append({
                "kind": kind, "conc": conc,
                "addon/bare": _div(ad, b), "addon/direct": _div(ad, d), "addon-stock/bare": _div(st, b),
                "addon-https/bare-https": _div(ah, bh), "addon-https/bare": _div(ah, b),
                "addon-otlp/addon": _div(ot, ad), "addon/addon-base": _div(ad, ab), "addon-process/addon": _div(th, ad),
                "addon p50 - bare p50 ms": _sub(ad, b, "p50_ms"),
                "addon p50 - direct p50 ms": _sub(ad, d, "p50_ms"),
                "addon TTFC - direct TTFC ms": _sub(ad, d, "ttfc_p50_ms"),
                "bare-stream TTFC - direct TTFC ms": _sub(cell(results, "bare-stream", kind, conc), d, "ttfc_p50_ms"),
                "addon-https TTFC - direct TTFC ms": _sub(ah, d, "ttfc_p50_ms"),
            })
    return out


def targets(results: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """(target, measured, by CPU, wanted, ok). `by CPU` is the same throughput ratio estimated from
    the proxies' CPU time per request (bare ms/req / addon ms/req): what req/s would be if the proxy
    had its core to itself. It is much steadier on a busy machine; when the two disagree, rerun."""
    t = []

    def g(*k):
        return cell(results, *k)

    ratio = _div

    def check(name, value, target, ok, fmt="{:.2f}x", cpu=None):
        t.append((name, _f(value, fmt), _f(cpu, "{:.2f}x"), target, None if value is None else ok(value)))

    def tput(name, a, b, want, ok):
        x, y = g(a, "json", 8), g(b, "json", 8)
        check(name, ratio(x, y), want, ok, cpu=_div(y, x, "cpu_ms_per_req"))

    tput("addon / bare, req/s, c=8 JSON (full logging, usage, pricing)", "addon", "bare", ">= 0.90x",
         lambda v: v >= 0.90)
    tput("addon-https / bare-https, req/s, c=8 JSON (HTTPS_PROXY mode)", "addon-https", "bare-https", ">= 0.80x",
         lambda v: v >= 0.80)
    tput("addon-stock / bare, req/s, c=8 JSON (stock dispatch: the addon's own cost)", "addon-stock", "bare",
         ">= 0.90x", lambda v: v >= 0.90)
    tput("exporters on / off: addon-otlp / addon, req/s, c=8 JSON", "addon-otlp", "addon", ">= 0.95x",
         lambda v: v >= 0.95)
    tput("addon now / addon at --baseline, req/s, c=8 JSON", "addon", "addon-base", ">= 0.97x", lambda v: v >= 0.97)
    a1, b1, d1 = g("addon", "json", 1), g("bare", "json", 1), g("direct", "stream", 1)
    check("added p50 over bare, c=1 JSON", (a1["p50_ms"] - b1["p50_ms"]) if a1 and b1 else None,
          "<= 0.5 ms", lambda v: v <= 0.5, "{:+.2f} ms")
    s1 = g("addon", "stream", 1)
    check("TTFC addon - direct, c=1 stream", (s1["ttfc_p50_ms"] - d1["ttfc_p50_ms"]) if s1 and d1 and
          s1.get("ttfc_p50_ms") is not None and d1.get("ttfc_p50_ms") is not None else None,
          "<= +3 ms", lambda v: v <= 3.0, "{:+.2f} ms")
    sh1 = g("addon-https", "stream", 1)
    check("TTFC addon-https - direct, c=1 stream", (sh1["ttfc_p50_ms"] - d1["ttfc_p50_ms"]) if sh1 and d1 and
          sh1.get("ttfc_p50_ms") is not None and d1.get("ttfc_p50_ms") is not None else None,
          "<= +3 ms", lambda v: v <= 3.0, "{:+.2f} ms")
    cache = results.get("cache") or {}
    c1 = cache.get("c1") or {}
    check("cache hit vs pass-through (0 ms upstream), req/s c=1",
          ratio(c1.get("cache-hit"), c1.get("pass-through")), ">= 3x", lambda v: v >= 3.0)
    rss = results.get("rss") or {}
    check(f"RSS growth, {' -> '.join(sorted((rss.get('rss_kb') or {}), key=int)) or '1k -> 20k'} calls",
          rss.get("growth_pct"), "< 10%", lambda v: v < 10, "{:+.1f}%")
    tput("beat bare: addon / bare, req/s, c=8 JSON, every feature on", "addon", "bare", ">= 1.5x",
         lambda v: v >= 1.5)
    a32, b32 = g("addon", "json", 32), g("bare", "json", 32)
    check("beat bare at saturation: addon / bare, req/s, c=32 JSON", ratio(a32, b32), ">= 1.5x",
          lambda v: v >= 1.5, cpu=_div(b32, a32, "cpu_ms_per_req"))
    for conc in (1, 8):
        x, y = g("addon", "json", conc), g("bare", "json", conc)
        check(f"flat tail: addon p99 / bare p99, c={conc} JSON", _div(x, y, "p99_ms"), "<= 1.2x",
              lambda v: v <= 1.2)
    s8, d8, bs8 = g("addon", "stream", 8), g("direct", "stream", 8), g("bare-stream", "stream", 8)
    check("TTFC addon - direct, c=8 stream", _sub(s8, d8, "ttfc_p50_ms"), "<= +3 ms", lambda v: v <= 3.0,
          "{:+.2f} ms")
    t.append(("  (reference) TTFC bare-stream - direct, c=8 stream: mitmproxy's own floor",
              _f(_sub(bs8, d8, "ttfc_p50_ms"), "{:+.2f} ms"), "", "", None))
    check("cache hit p50 / bare p50 passing the call on (c=1, 0 ms upstream)",
          _div(c1.get("cache-hit"), b1, "p50_ms"), "<= 1.00x", lambda v: v <= 1.0)
    w = results.get("writer") or {}
    check("log writer, rows/s, usage + pricing + FTS", w.get("build_and_insert_rows_per_s"), ">= 15000",
          lambda v: v >= 15000, "{:,.0f}")
    t.extend(stream_targets(results.get("streams") or {}))
    return t


def stream_targets(streams: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """N streams at once: at N=1,000, no failure and no worse than bare mitmdump + stream addon (TTFC
    and whole-stream p99), RSS <= 600 MB; over every N run, the largest with TTFC p99 <= direct + 100 ms
    (and whether it reaches the moonshot: 1,000 streams at direct + 25 ms)."""
    t = []
    by = {(c["config"], c["n"]): c for c in streams.get("cells", [])}
    ns = sorted({n for _, n in by})

    def add(name, value, wanted, ok):
        t.append((name, value, "-", wanted, ok))

    if 1000 in ns:
        ad, bs = by.get(("addon", 1000)), by.get(("bare-stream", 1000))
        if ad:
            add("1,000 streams at once: failed", str(ad["failed"]), "0", ad["failed"] == 0)
            add("1,000 streams: proxy RSS peak", _f(ad.get("proxy_rss_peak_mb"), "{:.0f} MB"), "<= 600 MB",
                None if ad.get("proxy_rss_peak_mb") is None else ad["proxy_rss_peak_mb"] <= 600)
        for key, label in (("ttfc_p99_ms", "TTFC p99"), ("stream_p99_ms", "stream p99")):
            if ad and bs and ad.get(key) is not None and bs.get(key) is not None:
                add(f"1,000 streams: {label}, addon vs bare + stream addon",
                    f"{ad[key]:,.0f} vs {bs[key]:,.0f} ms", "addon <= bare", ad[key] <= bs[key])
    within = [n for n in ns if (ad := by.get(("addon", n))) and (d := by.get(("direct", n)))
              and ad.get("ttfc_p99_ms") is not None and d.get("ttfc_p99_ms") is not None
              and ad["failed"] == 0 and ad["ttfc_p99_ms"] - d["ttfc_p99_ms"] <= 100]
    if ns:
        add(f"largest N run ({', '.join(map(str, ns))}) with TTFC p99 <= direct + 100 ms",
            str(max(within)) if within else "none", "as large as can be", None)
    d1k, a1k = by.get(("direct", 1000)), by.get(("addon", 1000))
    if d1k and a1k and d1k.get("ttfc_p99_ms") is not None and a1k.get("ttfc_p99_ms") is not None:
        over = a1k["ttfc_p99_ms"] - d1k["ttfc_p99_ms"]
        add("moonshot: 1,000 streams, TTFC p99 over direct", f"{over:+,.0f} ms", "<= +25 ms", over <= 25)
    return t


def report(results: dict) -> str:
    lines = []
    meta = results.get("meta", {})
    lines.append(f"## helicone-addon benchmark ({meta.get('when', '')})\n")
    lines.append(f"mitmproxy {meta.get('mitmproxy')}, Python {meta.get('python')}, {meta.get('cpus')} CPUs"
                 f"{', proxy pinned to CPU ' + str(meta.get('proxy_cpus')) + ' (its helper processes, e.g. the OTLP exporter, are not; their CPU is counted)' if meta.get('proxy_cpus') else ''}; "
                 f"{meta.get('seconds')} s per run after {meta.get('warmup')} s warm-up, {meta.get('rounds')} rounds "
                 f"alternated; SSE: 8 chunks, {meta.get('chunk_delay_ms')} ms apart; loadavg at start {meta.get('loadavg')}\n")
    for name, desc in results.get("configs", {}).items():
        lines.append(f"- `{name}`: {desc}")
    lines.append("")
    if results["cells"]:
        lines.append("| config | kind | c | req/s | p50 ms | p99 ms | TTFC p50 | TTFC p99 | proxy CPU ms/req "
                     "(all its processes) | of it, the proxy process | req | err |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in results["cells"]:
        lines.append(
            f"| {c['config']} | {c['kind']} | {c['conc']} | {_f(c['rps'], '{:.0f}')} | {_f(c['p50_ms'], '{:.2f}')} | "
            f"{_f(c['p99_ms'], '{:.2f}')} | {_f(c['ttfc_p50_ms'], '{:.2f}')} | {_f(c['ttfc_p99_ms'], '{:.2f}')} | "
            f"{_f(c['cpu_ms_per_req'], '{:.3f}')} | {_f(c.get('own_cpu_ms_per_req'), '{:.3f}')} | "
            f"{c['requests']} | {c['errors']} |"
        )
    lines.append("")
    rt = ratios(results)
    if rt:
        keys = [k for k in rt[0] if k not in ("kind", "conc")]
        lines.append("| kind | c | " + " | ".join(keys) + " |")
        lines.append("|---|---:|" + "---:|" * len(keys))
        for r in rt:
            vals = [(_f(r[k], "{:.2f}x") if "/" in k else _f(r[k], "{:+.2f}")) for k in keys]
            lines.append(f"| {r['kind']} | {r['conc']} | " + " | ".join(vals) + " |")
        lines.append("")
    cache = results.get("cache")
    if cache:
        lines.append("| cache (addon, reverse, 0 ms upstream) | c | req/s | p50 ms | p99 ms |")
        lines.append("|---|---:|---:|---:|---:|")
        for key in ("c1", "c8"):
            for label in ("pass-through", "cache-hit"):
                c = (cache.get(key) or {}).get(label)
                if c:
                    lines.append(f"| {label} | {c['conc']} | {_f(c['rps'], '{:.0f}')} | {_f(c['p50_ms'], '{:.2f}')} | "
                                 f"{_f(c['p99_ms'], '{:.2f}')} |")
        lines.append("")
    st = results.get("streams")
    if st and st.get("cells"):
        from _bench_streams import report_lines as stream_lines

        lines.extend(stream_lines(st))
        lines.append("")
    w = results.get("writer")
    if w:
        from _bench_writer import report_lines

        lines.extend(report_lines(w))
        lines.append("")
    rss = results.get("rss")
    if rss:
        pts = ", ".join(f"{int(k):,} calls: {v / 1024:.1f} MiB" for k, v in rss["rss_kb"].items())
        lines.append(f"Proxy RSS (addon, reverse, c=8, half streamed): {pts}; growth {_f(rss['growth_pct'], '{:+.1f}')}%; "
                     f"{rss['rows_logged']:,} rows logged for {rss['calls']:,} calls, {rss['errors']} errors.\n")
    if results["cells"]:
        lines.append("| target | measured | by CPU/req | wanted | |")
        lines.append("|---|---:|---:|---:|---|")
        for name, val, cpu, want, ok in targets(results):
            verdict = "PASS" if ok else ("MISS" if ok is not None else ("n/a" if want else "reference"))
            lines.append(f"| {name} | {val} | {cpu} | {want} | {verdict} |")
        lines.append("\n`by CPU/req`: the throughput ratio estimated from the proxies' CPU time per request; steadier "
                     "than req/s when other work shares the machine (if the two disagree much, rerun).")
    if any(c["config"] in ("bare", "bare-https") and c["kind"] == "stream" for c in results["cells"]):
        results.setdefault("notes", []).append(
            "bare mitmdump buffers streamed responses (nothing sets flow.response.stream), so its TTFC is the "
            "whole response time; the addon streams SSE through a tee, and bare-stream is mitmdump with a "
            "one-line addon that streams.")
    for n in results.get("notes", []):
        lines.append(f"\nNote: {n}")
    return "\n".join(lines)


# =================================================================================================
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: 1 s per measurement, 1k -> 5k calls for RSS")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--configs", default="direct,bare,bare-stream,addon,addon-stock,bare-https,addon-https",
                   help="comma-separated (litellm is added when installed)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--baseline", metavar="DIR", help="a checkout of another commit (git worktree add DIR REV): "
                   "adds the config addon-base, its helicone_addon run with this venv")
    p.add_argument("--seconds", type=float, help="measurement window per run (default 2.5, quick 1)")
    p.add_argument("--warmup", type=float, help="warm-up per run (default 0.5, quick 0.3)")
    p.add_argument("--rounds", type=int, help="alternation rounds per cell (default 4, quick 2)")
    p.add_argument("--max-requests", type=int, default=50_000, help="per run")
    p.add_argument("--max-seconds", type=float, default=1500, help="overall bound; later parts are skipped")
    p.add_argument("--chunk-delay-ms", type=float, default=5.0, help="delay between SSE chunks of the fake")
    p.add_argument("--rss-first", type=int, help="calls before the first RSS sample (default 1000)")
    p.add_argument("--rss-total", type=int, help="calls before the last RSS sample (default 20000, quick 5000)")
    p.add_argument("--writer-rows", type=int, help="rows for the log writer benchmark (default 20000, quick 5000)")
    p.add_argument("--streams", help="concurrent-streams scenario: N calls opened at once, comma-separated "
                   "(default 250,1000; quick 250; 0 to skip), e.g. 250,1000,2500")
    p.add_argument("--streams-only", action="store_true", help="run only the concurrent-streams scenario")
    p.add_argument("--stream-chunks", type=int, default=100, help="chunks per stream (default 100)")
    p.add_argument("--stream-chunk-ms", type=float, default=100.0, help="delay between chunks (default 100 ms)")
    p.add_argument("--streams-nofile", type=int, help="start the proxies with this soft descriptor limit (e.g. 1024)")
    p.add_argument("--streams-configs", default="direct,bare-stream,addon")
    p.add_argument("--stream-workers", type=int, default=1, help="run the addon with --workers N in that scenario")
    p.add_argument("--no-cache", dest="cache", action="store_false")
    p.add_argument("--no-writer", dest="writer", action="store_false")
    p.add_argument("--no-rss", dest="rss", action="store_false")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the proxy to its own CPU")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    # child roles
    p.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--writer-bench", type=int, help=argparse.SUPPRESS)
    p.add_argument("--stream-burst", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.serve_upstream:
        serve_upstream(a.chunk_delay_ms)
        return 0
    if a.loadgen:
        loadgen(json.loads(a.loadgen))
        return 0
    if a.stream_burst:
        from _bench_streams import stream_burst

        print(json.dumps(stream_burst(json.loads(a.stream_burst))), flush=True)
        return 0
    if a.writer_bench:
        writer_bench(a.writer_bench, a.tmp or tempfile.mkdtemp(prefix="helicone-bench-w-"))
        return 0

    q = a.quick
    a.seconds = a.seconds or (1.0 if q else 2.5)
    a.warmup = a.warmup if a.warmup is not None else (0.3 if q else 0.5)
    a.rounds = a.rounds or (2 if q else 4)
    a.rss_first = a.rss_first or 1000
    a.rss_total = a.rss_total or (5000 if q else 20000)
    a.writer_rows = a.writer_rows or (5000 if q else 20000)
    a.streams = a.streams if a.streams is not None else ("250" if q else "250,1000")
    a.streams = "" if a.streams.strip() in ("", "0") else a.streams

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (e.g. `&` in a script)
    bench = Bench(a)
    import platform

    from mitmproxy import version

    bench.results["meta"] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "mitmproxy": version.VERSION, "python": platform.python_version(),
        "cpus": os.cpu_count(), "proxy_cpus": sorted(bench.proxy_cpus) if bench.proxy_cpus else None,
        "seconds": a.seconds, "warmup": a.warmup, "rounds": a.rounds, "chunk_delay_ms": a.chunk_delay_ms,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "quick": q,
    }
    rc = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: partial results", file=sys.stderr)
        rc = 130
    except Exception as e:  # noqa: BLE001
        print(f"\nbenchmark failed: {type(e).__name__}: {e} (logs in {bench.tmp})", file=sys.stderr)
        a.keep = True
        rc = 2
    finally:
        bench.stop_all()
    bench.results["ratios"] = ratios(bench.results)
    bench.results["targets"] = [dict(zip(("target", "measured", "by_cpu", "wanted", "ok"), t, strict=True))
                                for t in targets(bench.results)]
    print(report(bench.results))
    if a.json:
        Path(a.json).write_text(json.dumps(bench.results, indent=2))
    if not a.keep:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    else:
        print(f"\n(temp dir kept: {bench.tmp})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
