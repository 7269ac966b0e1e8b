"""`helicone-addon run --workers N`: N proxy processes sharing the listening port(s).

The supervisor (`run_workers`) starts N ordinary `helicone-addon run` processes with the same
arguments and the same data dir, so capacity grows with cores as nginx or uvicorn workers do:

* each worker binds its TCP listeners with SO_REUSEPORT (`enable_reuse_port`), and the kernel
  spreads new connections over them (Linux balances by connection; other systems may favour one);
  UDP listeners (HTTP/3, dns, wireguard) cannot be shared that way and are left to worker 0;
* they share the data dir: the log (SQLite, WAL, one writer at a time), the response cache and the
  rate-limit state (both diskcache, every read-modify-write in a transaction), so quotas stay exact;
* only worker 0 serves the local API (the others get `helicone_api_port=0`);
* Ctrl-C / SIGTERM stops them all; a worker that dies is restarted (with a growing delay), and
  the supervisor gives up when workers keep dying right after start (a port taken, a bad option);
* with more than one worker, each response says which worker answered (`X-Helicone-Worker`);
* worker 0's `/metrics` counts the calls of every worker: the supervisor gives the workers one
  fresh directory for prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, removed when
  it stops), where each worker's counters live in files of its own (see exporters/prometheus.py).

Pure module: no mitmproxy import. The worker side gets mitmproxy's modules from its caller
(`prepare_worker(mode_servers)`, `add_worker_addons(addons)`, called by the CLI's `run`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

__all__ = [
    "ENV_INDEX",
    "ENV_COUNT",
    "HEADER",
    "WorkerTag",
    "add_worker_addons",
    "enable_reuse_port",
    "parse_workers",
    "prepare_worker",
    "run_workers",
    "split_workers_flag",
    "worker_index",
]

ENV_INDEX = "HELICONE_WORKER_INDEX"  # set by the supervisor in each worker: 0 .. N-1
ENV_COUNT = "HELICONE_WORKERS"  # N
ENV_METRICS = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own: its multiprocess mode, on in workers
HEADER = "X-Helicone-Worker"

QUICK_DEATH_S = 5.0  # a worker that dies sooner than this after its start counts as a failed start
MAX_QUICK_DEATHS = 5  # consecutive failed starts of one worker before the supervisor gives up
STOP_TIMEOUT_S = 20.0


# -- the CLI flag ------------------------------------------------------------------------------
def parse_workers(value: str) -> int:
    """'auto' -> the CPUs this process may use; else a positive integer. ValueError otherwise."""
    v = value.strip().lower()
    if v == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"--workers takes a positive number or 'auto', got {value!r}") from None
    if n < 1:
        raise ValueError(f"--workers takes a positive number or 'auto', got {value!r}")
    return n


def split_workers_flag(args: list[str]) -> tuple[int, list[str]]:
    """Take `--workers N` / `--workers=N` out of `run`'s arguments: (N, the other arguments).

    Stops looking at `--` (what follows belongs to mitmproxy). Default 1. ValueError on a bad value.
    """
    n, out, i = 1, [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a == "--workers":
            if i + 1 >= len(args):
                raise ValueError("--workers needs a value: a positive number or 'auto'")
            n = parse_workers(args[i + 1])
            i += 2
            continue
        if a.startswith("--workers="):
            n = parse_workers(a.split("=", 1)[1])
        else:
            out.append(a)
        i += 1
    return n, out


# -- the worker side ---------------------------------------------------------------------------
def worker_index() -> int | None:
    """This process's worker number when started by `run_workers` with N > 1, else None."""
    try:
        if int(os.environ.get(ENV_COUNT, "1")) > 1:
            return int(os.environ[ENV_INDEX])
    except (KeyError, ValueError):
        pass
    return None


class _ReusePortAsyncio(types.ModuleType):
    """What mitmproxy's `mode_servers` module sees as `asyncio`: the real module, except that
    `start_server` binds its sockets with SO_REUSEPORT."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def start_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("reuse_port", True)
        return await self._real.start_server(*args, **kwargs)


def enable_reuse_port(mode_servers: types.ModuleType, udp: bool = True) -> bool:
    """Make mitmproxy's TCP listeners bind with SO_REUSEPORT, so that several processes can listen
    on one port. mitmproxy 12.2 creates them in `mitmproxy/proxy/mode_servers.py`,
    `AsyncioServerInstance.listen`, with `asyncio.start_server(self.handle_stream, host, port)` and
    no way to pass `reuse_port`; so this module's `asyncio` name is pointed at a wrapper that adds
    it (nothing else in the process is affected).

    UDP listeners (HTTP/3 beside an https reverse proxy, dns, wireguard) are bound by mitmproxy_rs,
    which cannot share a port: with `udp=False` a TCP+UDP mode listens on TCP only and a UDP mode
    not at all (the supervisor leaves UDP to worker 0). False when the platform has no
    SO_REUSEPORT or mitmproxy no longer looks like that."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    real = getattr(mode_servers, "asyncio", None)
    instance = getattr(mode_servers, "AsyncioServerInstance", None)
    if instance is None or not isinstance(real, types.ModuleType) or not hasattr(real, "start_server"):
        return False
    if not isinstance(real, _ReusePortAsyncio):
        mode_servers.asyncio = _ReusePortAsyncio(real)
    if not udp and not getattr(instance.listen, "_helicone_tcp_only", False):
        listen = instance.listen

        async def tcp_only_listen(self: Any, host: str, port: int) -> list:
            proto = self.mode.transport_protocol
            if proto == "udp":
                return []
            if proto == "both":
                return [await mode_servers.asyncio.start_server(self.handle_stream, host, port)]
            return await listen(self, host, port)

        tcp_only_listen._helicone_tcp_only = True  # type: ignore[attr-defined]
        instance.listen = tcp_only_listen
    return True


def prepare_worker(mode_servers: types.ModuleType) -> bool:
    """Before mitmproxy starts, in a worker: SO_REUSEPORT on its TCP listeners; UDP listeners in
    worker 0 only. True when this process is a worker."""
    index = worker_index()
    if index is None:
        return False
    if not enable_reuse_port(mode_servers, udp=index == 0):
        print("helicone: --workers: cannot share the listening port here (no SO_REUSEPORT)", file=sys.stderr)
    return True


class WorkerTag:
    """mitmproxy addon (duck-typed): the `X-Helicone-Worker` response header, "<index> <pid>"."""

    def __init__(self, index: int) -> None:
        self.value = f"{index} {os.getpid()}"

    def responseheaders(self, flow: Any) -> None:
        if flow.response is not None:
            flow.response.headers[HEADER] = self.value

    def response(self, flow: Any) -> None:  # answers made by the proxy itself (cache hit, 429, ...)
        if flow.response is not None and HEADER not in flow.response.headers:
            flow.response.headers[HEADER] = self.value


def add_worker_addons(addons: Any) -> None:
    """In a worker (N > 1), add the `WorkerTag` addon to the master's addon manager."""
    index = worker_index()
    if index is not None:
        addons.add(WorkerTag(index))


# -- the supervisor ----------------------------------------------------------------------------
def _without_option(argv: list[str], name: str) -> list[str]:
    """argv less any `--set name=...` (mitmproxy refuses an option set twice on its command line)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a == "--set" and i + 1 < len(argv) and argv[i + 1].split("=", 1)[0] == name:
            i += 2
            continue
        if a.startswith("--set=") and a[6:].split("=", 1)[0] == name:
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def _worker_argv(index: int, argv: list[str]) -> list[str]:
    cmd = [sys.executable]
    if sys.flags.optimize:
        cmd.append("-" + "O" * sys.flags.optimize)
    cmd += ["-m", "helicone_addon", "run"]
    if index > 0:  # the local API is served once, by worker 0
        cmd += [*_without_option(argv, "helicone_api_port"), "--set", "helicone_api_port=0"]
    else:
        cmd += argv
    return cmd


def _die_with_supervisor() -> None:
    """In a worker, before exec (Linux): SIGTERM when the supervisor dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own clean-up still applies
        pass


class _Worker:
    def __init__(self, index: int, n: int, argv: list[str], metrics_dir: str) -> None:
        self.index, self.n, self.argv, self.metrics_dir = index, n, argv, metrics_dir
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        env = {**os.environ, ENV_INDEX: str(self.index), ENV_COUNT: str(self.n), ENV_METRICS: self.metrics_dir}
        self.proc = subprocess.Popen(_worker_argv(self.index, self.argv), env=env,  # noqa: PLW1509 - no threads
                                     preexec_fn=_die_with_supervisor if sys.platform.startswith("linux") else None)
        self.started = time.monotonic()
        self.restart_at = None


def run_workers(n: int, argv: list[str]) -> int:
    """Run `helicone-addon run <argv>` as n processes on the same port(s) until Ctrl-C / SIGTERM.

    Returns 0 after a requested stop, 1 when a worker could not be kept running."""
    if n <= 1:
        raise ValueError("run_workers is for two workers or more")
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    metrics_dir = tempfile.mkdtemp(prefix="helicone-metrics-")  # 0700; the workers' metric files
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    workers = [_Worker(i, n, argv, metrics_dir) for i in range(n)]
    rc = 0
    try:
        for w in workers:
            w.start()
        print(f"helicone: {n} workers started (pids {', '.join(str(w.proc.pid) for w in workers)})",
              file=sys.stderr, flush=True)
        while not stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for w in workers:
                if w.restart_at is not None:
                    if now >= w.restart_at and not stopping:
                        w.start()
                        print(f"helicone: worker {w.index} restarted (pid {w.proc.pid})", file=sys.stderr, flush=True)
                    continue
                code = w.proc.poll()
                if code is None or stopping:
                    continue
                lived = now - w.started
                _metrics_of_dead_worker(metrics_dir, w.proc.pid)
                w.quick_deaths = w.quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if w.quick_deaths >= MAX_QUICK_DEATHS:
                    print(f"helicone: worker {w.index} keeps exiting right after it starts (exit status {code}); "
                          "stopping all workers", file=sys.stderr, flush=True)
                    stopping, rc = True, 1
                    break
                delay = min(30.0, 0.5 * 2 ** w.quick_deaths)
                print(f"helicone: worker {w.index} (pid {w.proc.pid}) exited with status {code} after "
                      f"{lived:.1f} s; restarting in {delay:.1f} s", file=sys.stderr, flush=True)
                w.restart_at = now + delay
    finally:
        _stop_all(workers)
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return rc


def _metrics_of_dead_worker(metrics_dir: str, pid: int) -> None:
    """A worker exited: its counters stay counted (the calls were served), its live gauges go."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, metrics_dir)
    except Exception as e:  # noqa: BLE001 - metrics must never stop the supervisor
        print(f"helicone: metrics of worker pid {pid} not cleaned up: {e}", file=sys.stderr, flush=True)


def _stop_all(workers: list[_Worker]) -> None:
    live = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    for p in live:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in live:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
