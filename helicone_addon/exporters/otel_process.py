"""The OTLP span export in a process of its own: `OtelProcess`, a row subscriber like `OtelExporter`.

Building a span and encoding it as protobuf costs about 150 µs of Python per call. Done on the
proxy's threads, that work holds the proxy's GIL: measured, it cost 16% of the proxy's requests per
second. Here the proxy's writer thread only picks the columns a span reads (`rows.SPAN_COLUMNS`)
into a tuple and queues it; a sender thread pickles the tuples in batches down a pipe to a child
process (`python -m helicone_addon.exporters.otel_process`), which runs the `OtelExporter` on its
own GIL and core. The collector's address and headers (auth) go down the pipe too, never on the
command line where `ps` shows them.

Frames on the child's stdin (`pipes.py`):
("config", kwargs) first, then ("rows", [tuple, ...]), ("flush", seq, deadline), ("close", deadline);
a deadline is a `time.monotonic()` value, the same clock in both processes, so the time a frame
waited (for the child to start, say) counts against it.
The child answers on stdout, in the same frames: {"counters": {...}} when they change, and
{"counters": ..., "flushed": seq, "ok": bool} after a flush.

Nothing here can stall or break a call: the queue to the sender is bounded (rows beyond it are
dropped and counted as `spans_dropped`), a child that exits is logged, its last counters are kept,
and it is started again (at most every RESTART_S seconds; rows meanwhile are dropped, counted). The
child ignores Ctrl-C (the proxy closes it, flushing first) and exits by itself when its stdin
closes, so a proxy killed with -9 leaves no exporter behind. Where no child can be started (a
frozen build, no interpreter), the export runs in-process as before.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .. import pipes
from ..pipes import read_frame, write_frame
from .rows import SPAN_COLUMNS, slim_row, traces_url

logger = logging.getLogger(__name__)

RESTART_S = 5.0  # a child that exited is started again at most this often
BATCH_ROWS = 512  # rows pickled into one frame at most

class OtelProcess(pipes.Supervisor):
    """Row subscriber exporting one GenAI span per call from a child process (see the module doc).

    Arguments as `OtelExporter`'s; `max_queue_size` also bounds the rows waiting for the child."""

    def __init__(self, endpoint: str, headers: dict[str, str] | None = None, content: bool = False, *,
                 max_queue_size: int = 8192, **kw: Any) -> None:
        self.endpoint = traces_url(endpoint)  # a bad URL is refused here, before any process starts
        super().__init__(restart_s=RESTART_S)
        self.content = content
        self._config = dict(endpoint=endpoint, headers=dict(headers or {}), content=content,
                            max_queue_size=max_queue_size, **kw)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue_size)
        self._lock = threading.Lock()
        self._local = {"spans_dropped": 0, "errors": 0, "restarts": 0}  # counted in this process
        self._done: dict[str, int] = {}  # the last counters of children that exited
        self._child: dict[int, dict[str, int]] = {}  # pid -> last report, for each child not yet reaped
        self._inproc = None  # an otel.OtelExporter, when no child process can be started
        self._launch()
        self._sender = threading.Thread(target=self._send_loop, name="helicone-otlp-send", daemon=True)
        self._sender.start()

    # -- the subscriber -------------------------------------------------------------------------
    def on_row(self, row: dict[str, Any], props: list[dict[str, Any]] | None = None) -> None:
        """Queue the call's slim row for the child. Writer thread; never raises, never blocks."""
        if self._inproc is not None:
            self._inproc.on_row(row, props)
            return
        try:
            self._queue.put_nowait(slim_row(row, props or [], self.content))
        except queue.Full:
            self._count("spans_dropped")
        except Exception:
            self._count("errors")
            logger.exception("helicone otlp: no span for call %s", row.get("id") if isinstance(row, dict) else row)

    @property
    def counters(self) -> dict[str, int]:
        """spans_queued / exported / failed / dropped, errors (all children's, plus this side's) and restarts."""
        if self._inproc is not None:
            return dict(self._inproc.counters)
        with self._lock:
            out = {k: self._done.get(k, 0) + sum(c.get(k, 0) for c in self._child.values())
                   for k in ("spans_queued", "spans_exported", "spans_failed", "spans_dropped", "errors")}
            for k, v in self._local.items():
                out[k] = out.get(k, 0) + v
        return out

    def force_flush(self, timeout: float = 10) -> bool:
        """Wait until the rows queued so far are exported (True) or `timeout` passes (False)."""
        if self._inproc is not None:
            return self._inproc.force_flush(timeout)
        seq = self._new_waiter()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(("flush", seq, deadline), timeout=timeout)
        except queue.Full:
            self._answer(seq, False)
        return self._wait(seq, deadline)

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued for up to `timeout` seconds, then stop the child."""
        if self._inproc is not None:
            self._inproc.close(timeout)
            return
        flushed_by = time.monotonic() + timeout
        deadline = flushed_by + 3  # then the child reports and exits
        try:
            self._queue.put(("close", flushed_by), timeout=timeout)
        except queue.Full:  # the child is stuck: what still waits for it is lost, and counted
            self._drain()
            self._queue.put(("close", flushed_by))
        self._sender.join(max(0.0, deadline - time.monotonic()))
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("helicone otlp: the exporter process did not stop in time; killing it")
                proc.kill()
                proc.wait()
            reader = getattr(proc, "reader", None)
            if reader is not None:
                reader.join(2)

    # -- the child process ------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, tuple) and msg and msg[0] == "flush":
                self._answer(msg[1], False)
            else:
                self._count("spans_dropped")

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._local[name] += n

    def _spawn(self) -> bool:
        if not pipes.can_spawn():
            return self._fall_back("no Python interpreter to start it with")
        try:
            proc = pipes.spawn(__name__, ("config", self._config))
        except OSError as e:
            return self._fall_back(str(e))
        proc.reader = threading.Thread(target=self._read_loop, args=(proc,), name="helicone-otlp-read", daemon=True)
        proc.reader.start()
        self._proc = proc
        return True

    def _fall_back(self, why: str) -> bool:
        logger.warning("helicone otlp: cannot start the exporter process (%s); exporting in-process", why)
        from .otel import OtelExporter

        cfg = dict(self._config)
        self._inproc = OtelExporter(cfg.pop("endpoint"), cfg.pop("headers"), cfg.pop("content"), **cfg)
        return False

    def _restarted(self) -> None:
        self._count("restarts")

    def _send_loop(self) -> None:
        get = self._queue.get
        while True:
            msg = get()
            if isinstance(msg, tuple) and msg and msg[0] in ("flush", "close"):
                if not self._send_control(msg):
                    return
                continue
            rows = [msg]
            control = None
            while len(rows) < BATCH_ROWS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, tuple) and nxt and nxt[0] in ("flush", "close"):
                    control = nxt
                    break
                rows.append(nxt)
            if not self._send(("rows", rows)):
                self._count("spans_dropped", len(rows))
            if control is not None and not self._send_control(control):
                return

    def _send_control(self, msg: tuple) -> bool:
        """Send a flush or close; False when the loop is over (close)."""
        if msg[0] == "flush":
            if not self._send(msg):
                self._answer(msg[1], False)
            return True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._send(msg)
            try:
                proc.stdin.close()
            except OSError:
                pass  # it died meanwhile: its reader has seen that and logged it
        return False

    def _read_loop(self, proc: subprocess.Popen) -> None:
        while (msg := read_frame(proc.stdout)) is not None:
            with self._lock:
                self._child[proc.pid] = msg.get("counters") or self._child.get(proc.pid, {})
            if "flushed" in msg:
                self._answer(msg["flushed"], bool(msg.get("ok")))
        code = proc.wait()
        with self._lock:
            for k, v in self._child.pop(proc.pid, {}).items():
                self._done[k] = self._done.get(k, 0) + v
        self._fail_waiters()
        if code != 0:
            logger.error("helicone otlp: the exporter process exited with code %s; spans are dropped (counted) "
                         "until it is started again", code)


# -- the child --------------------------------------------------------------------------------------
def serve(inp: BinaryIO, report: Callable[[dict], None]) -> int:
    """Run an OtelExporter on the frames of `inp` (the child's main loop); `report(message)` answers."""
    first = read_frame(inp)
    if not first or first[0] != "config":
        return 2
    from .otel import OtelExporter

    cfg = dict(first[1])
    exporter = OtelExporter(cfg.pop("endpoint"), cfg.pop("headers"), cfg.pop("content"), **cfg)
    last: dict[str, int] = {}
    stop = threading.Event()

    def tick() -> None:  # counters change on the SDK's export thread too: report them as they do
        nonlocal last
        while not stop.wait(0.5):
            now = dict(exporter.counters)
            if now != last:
                last = now
                report({"counters": now})

    threading.Thread(target=tick, name="helicone-otlp-report", daemon=True).start()
    deadline: float | None = None  # of the final flush: the proxy's, or 5 s from when it went away
    try:
        while True:
            msg = read_frame(inp)
            if msg is None or msg[0] == "close":
                deadline = msg[1] if msg else None
                break
            if msg[0] == "rows":
                for values in msg[1]:
                    row = dict(zip(SPAN_COLUMNS, values[0], strict=True))
                    exporter.on_row(row, [{"key": k, "value": v} for k, v in values[1]])
            elif msg[0] == "flush":
                ok = exporter.force_flush(max(0.0, msg[2] - time.monotonic()))
                report({"counters": dict(exporter.counters), "flushed": msg[1], "ok": ok})
    finally:
        # the SDK's close can sit out a retry's back-off past its time-out: give it the time left,
        # then count what it still holds as failed, and go (main exits without waiting for it)
        left = 5.0 if deadline is None else max(0.0, deadline - time.monotonic())
        closer = threading.Thread(target=exporter.close, args=(left,), name="helicone-otlp-close", daemon=True)
        closer.start()
        closer.join(left + 0.5)
        stop.set()
        final = dict(exporter.counters)
        if closer.is_alive():
            final["spans_failed"] = final["spans_queued"] - final["spans_exported"]
        report({"counters": final})
    return 0


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the proxy, which closes us after a flush
    logging.basicConfig(level=logging.WARNING, format="helicone otlp exporter: %(message)s")
    out = os.fdopen(os.dup(1), "wb")  # the frames' own descriptor; anything printed goes to stderr
    os.dup2(2, 1)
    lock = threading.Lock()

    def report(msg: dict) -> None:
        with lock:
            try:
                write_frame(out, msg)
            except (OSError, ValueError):
                pass  # the proxy is gone: its stdin closing ends the loop

    code = serve(sys.stdin.buffer, report)
    logging.shutdown()
    os._exit(code)  # not waiting for an export thread still in its back-off (its spans are counted failed)


if __name__ == "__main__":
    main()
