"""The log writer in a process of its own: `LogProcess`, what the proxy hands its finished calls to.

Turning a finished call into a row (usage, pricing, redaction: `record.build_row`) costs a few
hundred microseconds of Python per call; on the proxy's writer thread it holds the proxy's GIL that
long, and the event loop waits. Here the proxy pickles the finished `CallState` (~20 µs) onto a
queue; a sender thread writes the queue in batches down a pipe to a child process
(`python -m helicone_addon.store.process`, started through `pipes.py`), which runs a `LogStore`:
the same batches, spill file, retention and counters as in-process, on its own GIL and core.

A call whose flow has row listeners (metrics and spans, rate-limit cost, mitmweb's comment,
replay's recorder) gets its row and property rows back, and the listeners run on the proxy's
reader thread, as they ran on the writer thread before: after the row is built, before or while
it is inserted. Rows built elsewhere (the local API's ingestion: `submit(job)`) are built on the
caller's thread and sent as rows.

Frames to the child: ("config", {...}) first; ("calls", [(seq, CallState, want_row), ...]);
("rows", [(seq, row, props), ...]); ("set", {...}) for retention and pricing options;
("flush", seq, deadline) and ("close", deadline), deadlines on the shared `time.monotonic()` clock.
Frames back: ("rows", [(seq, row, props), ...]), ("counters", {...}) when they change, and
("flushed", seq, ok, counters) after every row sent before the flush is written.

What is guaranteed stays: nothing here blocks the event loop; a database that cannot be written
spills (in the child, as before). A proxy killed with -9 closes the child's stdin: the child writes
every call it was handed, then exits, so a SIGKILL loses less than it did in-process. If the child
dies, the calls handed to it and not yet reported written are counted as dropped (an upper bound:
the last report may be up to half a second old), it is logged, and a new child is started.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import pipes
from ..pipes import read_frame, write_frame
from .writer import COUNTERS

logger = logging.getLogger(__name__)

Listener = Callable[[dict, list], None]
RESTART_S = 2.0  # a child that exited is started again at most this often
BATCH = 256  # calls pickled into one frame at most
_ACCOUNTED = ("written", "spilled", "dropped", "build_errors")


class LogProcess(pipes.Supervisor):
    """Drop-in for `LogStore` where the proxy uses it: submit_call / submit / flush / close /
    counters / retention_days / max_db_bytes, plus price_overrides and estimate for build_row."""

    def __init__(self, path: str | os.PathLike, *, retention_days: float = 0, max_db_bytes: int = 0,
                 price_overrides: dict | None = None, estimate: bool = True) -> None:
        super().__init__(restart_s=RESTART_S)
        self.path = Path(path)
        self._settings = {"retention_days": retention_days, "max_db_bytes": max_db_bytes,
                          "price_overrides": price_overrides, "estimate": estimate}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._seq = 0
        self._listeners: dict[int, Sequence[Listener]] = {}
        self._local = {"dropped": 0, "build_errors": 0, "listener_errors": 0, "writer_restarts": 0}
        self._done: dict[str, int] = {}  # counters of children that exited
        self._child: dict[int, dict[str, int]] = {}  # pid -> its last report
        self._sent: dict[int, int] = {}  # pid -> calls and rows handed to it
        self._sender: threading.Thread | None = None

    # -- the LogStore surface -------------------------------------------------------------------
    def start(self) -> LogProcess:
        from .db import open_db

        try:  # create and migrate here, so that the proxy's readers find the schema from the start
            open_db(self.path).conn.close()
        except Exception as e:  # the child tries again, and spills until the database works
            logger.error("helicone: cannot open the log database %s: %s", self.path, e)
        self._launch()
        self._sender = threading.Thread(target=self._send_loop, name="helicone-log-send", daemon=True)
        self._sender.start()
        return self

    def submit_call(self, state: Any, listeners: Sequence[Listener] = ()) -> None:
        """Hand a finished call to the writer process. Never blocks, never raises."""
        seq = self._next(listeners)
        self._queue.put(("call", seq, state, bool(listeners)))

    def submit(self, job: Callable[[], tuple[dict, list]] | tuple[dict, list]) -> None:
        """A row built elsewhere (the local API): built here, on the caller's thread, then sent."""
        try:
            row, props = job() if callable(job) else job
        except Exception:
            self._count("build_errors")
            logger.exception("helicone: could not build a log row")
            return
        self._queue.put(("row", self._next(()), row, props))

    def flush(self, timeout: float = 10) -> bool:
        """Wait until every call submitted so far is written (and its listeners have run)."""
        deadline = time.monotonic() + timeout
        seq = self._new_waiter()
        self._queue.put(("flush", seq, deadline))
        return self._wait(seq, deadline)

    def close(self, timeout: float = 30) -> None:
        if self._sender is None:
            return
        deadline = time.monotonic() + timeout
        self._queue.put(("close", deadline))
        self._sender.join(timeout + 1)
        self._sender = None
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(max(0.5, deadline + 2 - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("helicone: the log writer process did not finish in %.0f s; stopping it", timeout)
                proc.kill()
                proc.wait()
            proc.reader.join(5)

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict.fromkeys(COUNTERS, 0) | self._done
            for c in self._child.values():
                for k, v in c.items():
                    out[k] = out.get(k, 0) + v
            for k, v in self._local.items():
                out[k] = out.get(k, 0) + v
        return out

    def _set(self, name: str, value: Any) -> None:
        self._settings[name] = value
        self._queue.put(("set", {name: value}))

    retention_days = property(lambda self: self._settings["retention_days"], lambda self, v: self._set("retention_days", v))
    max_db_bytes = property(lambda self: self._settings["max_db_bytes"], lambda self, v: self._set("max_db_bytes", v))
    price_overrides = property(lambda self: self._settings["price_overrides"],
                               lambda self, v: self._set("price_overrides", v))
    estimate = property(lambda self: self._settings["estimate"], lambda self, v: self._set("estimate", v))

    # -- this side: sending, reading back ----------------------------------------------------------
    def _next(self, listeners: Sequence[Listener]) -> int:
        with self._lock:
            self._seq += 1
            if listeners:
                self._listeners[self._seq] = listeners
            return self._seq

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._local[name] += n

    def _spawn(self) -> bool:
        try:
            proc = pipes.spawn(__name__, ("config", {"path": str(self.path), **self._settings}))
        except OSError as e:
            logger.error("helicone: cannot start the log writer process: %s", e)
            return False
        with self._lock:
            self._sent[proc.pid] = 0
        proc.reader = threading.Thread(target=self._read_loop, args=(proc,), name="helicone-log-read", daemon=True)
        proc.reader.start()
        self._proc = proc
        return True

    def _restarted(self) -> None:
        self._count("writer_restarts")

    def _send_loop(self) -> None:
        get = self._queue.get
        while True:
            batch = [get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            calls: list = []
            rows: list = []
            for item in batch:
                kind = item[0]
                if kind == "call":
                    calls.append(item[1:])
                elif kind == "row":
                    rows.append(item[1:])
                else:  # a control message: what came before it goes first
                    self._send_work(calls, rows)
                    calls, rows = [], []
                    if kind == "close":
                        self._send(item)
                        self._end_child()
                        return
                    if not self._send(item) and kind == "flush":
                        self._answer(item[1], False)
            self._send_work(calls, rows)

    def _send_work(self, calls: list, rows: list) -> None:
        for kind, items in (("calls", calls), ("rows", rows)):
            if not items:
                continue
            if self._send((kind, items)):
                with self._lock:
                    self._sent[self._proc.pid] = self._sent.get(self._proc.pid, 0) + len(items)
            else:
                self._count("dropped", len(items))
                with self._lock:
                    for seq, *_ in items:
                        self._listeners.pop(seq, None)
                logger.error("helicone: the log writer process is down; %d calls NOT logged", len(items))

    def _end_child(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass  # already gone: the reader has seen it

    def _read_loop(self, proc: subprocess.Popen) -> None:
        while True:
            msg = read_frame(proc.stdout)
            if msg is None:
                break
            kind = msg[0]
            if kind == "rows":
                for seq, row, props in msg[1]:
                    with self._lock:
                        listeners = self._listeners.pop(seq, ())
                    if row is None:
                        continue
                    for listener in listeners:
                        try:
                            listener(row, props)
                        except Exception:
                            self._count("listener_errors")
                            logger.exception("helicone: a row listener failed for %s", row.get("id"))
            elif kind == "counters":
                with self._lock:
                    self._child[proc.pid] = msg[1]
            elif kind == "flushed":
                with self._lock:
                    self._child[proc.pid] = msg[3]
                self._answer(msg[1], msg[2])
        code = proc.wait()
        with self._lock:
            last = self._child.pop(proc.pid, {})
            lost = self._sent.pop(proc.pid, 0) - sum(last.get(k, 0) for k in _ACCOUNTED)
            for k, v in last.items():
                self._done[k] = self._done.get(k, 0) + v
            if lost > 0:
                self._done["dropped"] = self._done.get("dropped", 0) + lost
        if code != 0:
            logger.error("helicone: the log writer process exited with code %s; up to %d calls NOT logged; "
                         "starting it again", code, max(lost, 0))
            self._fail_waiters()


# -- the child ---------------------------------------------------------------------------------------
class _Child:
    """The writer process: a LogStore fed by the frames of stdin, answering on stdout."""

    def __init__(self, config: dict, out) -> None:
        from .writer import LogStore

        self.out = out
        self.out_lock = threading.Lock()
        self.settings = config
        self.store = LogStore(config["path"], retention_days=config["retention_days"],
                              max_db_bytes=config["max_db_bytes"]).start()
        self.replies: queue.SimpleQueue = queue.SimpleQueue()

    def reply(self, msg: tuple) -> None:
        with self.out_lock:
            try:
                write_frame(self.out, msg)
            except (OSError, ValueError):
                pass  # the proxy is gone: its closed pipe ends our loop too

    def reply_loop(self) -> None:
        """Rows back to the proxy, batched; a flush answer after the rows before it."""
        last: dict = {}
        while True:
            try:
                item = self.replies.get(timeout=0.5)
            except queue.Empty:
                item = None
            rows = []
            while item is not None and item[0] == "row":
                rows.append(item[1])
                try:
                    item = self.replies.get_nowait()
                except queue.Empty:
                    item = None
            if rows:
                self.reply(("rows", rows))
            counters = dict(self.store.counters)
            if item is not None and item[0] == "flushed":
                self.reply(("flushed", item[1], item[2], counters))
                last = counters
            elif item is not None and item[0] == "stop":
                self.reply(("counters", counters))
                return
            elif counters != last:
                self.reply(("counters", counters))
                last = counters

    def job(self, seq: int, state: Any, want_row: bool) -> Callable[[], tuple[dict, list]]:
        from ..record import build_row

        settings = self.settings

        def run() -> tuple[dict, list]:
            try:
                row, props = build_row(state, price_overrides=settings["price_overrides"], estimate=settings["estimate"])
            except Exception:
                if want_row:  # the proxy forgets the call's listeners (the store counts the error)
                    self.replies.put(("row", (seq, None, None)))
                raise
            if want_row:
                self.replies.put(("row", (seq, row, props)))
            return row, props

        return run

    def serve(self, inp) -> None:
        replier = threading.Thread(target=self.reply_loop, name="helicone-log-reply", daemon=True)
        replier.start()
        deadline = None
        while True:
            msg = read_frame(inp)
            if msg is None or msg[0] == "close":
                deadline = msg[1] if msg else None
                break
            kind = msg[0]
            if kind == "calls":
                for seq, state, want_row in msg[1]:
                    self.store.submit(self.job(seq, state, want_row))
            elif kind == "rows":
                for _seq, row, props in msg[1]:
                    self.store.submit((row, props))
            elif kind == "set":
                self.settings.update(msg[1])
                for name in ("retention_days", "max_db_bytes"):
                    if name in msg[1]:
                        setattr(self.store, name, msg[1][name])
            elif kind == "flush":
                ok = self.store.flush(max(0.0, msg[2] - time.monotonic()))
                self.replies.put(("flushed", msg[1], ok))
        left = 30.0 if deadline is None else max(0.5, deadline - time.monotonic())
        self.store.close(left)
        self.replies.put(("stop",))
        replier.join(5)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the proxy, which closes us after a flush
    logging.basicConfig(level=logging.WARNING, format="helicone log writer: %(message)s")
    out = os.fdopen(os.dup(1), "wb")  # the frames' own descriptor; anything printed goes to stderr
    os.dup2(2, 1)
    first = read_frame(sys.stdin.buffer)
    if not first or first[0] != "config":
        os._exit(2)
    _Child(first[1], out).serve(sys.stdin.buffer)
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
