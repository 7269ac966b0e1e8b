"""Helper processes of the proxy, talked to over their stdin/stdout: start one, and frame messages.

The proxy moves CPU-heavy work it does not need an answer to at once (building log rows, encoding
spans) into child processes of its own: their work then runs on their own GIL and core. A child is
`python -m <module>` with the proxy's interpreter and its `-O` flag, and the directory holding
`helicone_addon` first on its path. It exits by itself when its stdin ends, so a proxy killed with
-9 leaves nothing behind. Configuration (collector headers, say) goes down the pipe as the first
frame, never on the command line, which `ps` shows to every user.

A frame is a 4-byte big-endian length and a pickle: only ever between the proxy and its own child.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

_LEN = struct.Struct(">I")


def write_frame(out: BinaryIO, msg: Any) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def read_frame(inp: BinaryIO) -> Any:
    """The next message, or None when the other side closed the pipe (or died)."""
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    size = _LEN.unpack(head)[0]
    data = inp.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # noqa: S301 - our own child or parent, over a private pipe


def can_spawn() -> bool:
    """False where no child interpreter can be started (a frozen build)."""
    return not getattr(sys, "frozen", False) and bool(sys.executable)


def spawn(module: str, first: Any) -> subprocess.Popen:
    """Start `python -m module` with pipes on stdin/stdout (stderr is the proxy's) and send it `first`.
    Raises OSError when it cannot be started."""
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, *(["-O"] if sys.flags.optimize else []), "-m", module]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
    try:
        write_frame(proc.stdin, first)
    except OSError:
        proc.kill()
        proc.wait()
        raise
    return proc


class Supervisor:
    """The proxy's side of one helper process: started again when it has died (at most every
    `restart_s` seconds), and the answers (flushes) threads wait for from it.

    A subclass starts its process in `_spawn()` (setting `self._proc`, returning False when it
    cannot) and counts restarts in `_restarted()`."""

    def __init__(self, restart_s: float) -> None:
        self.restart_s = restart_s
        self._proc: subprocess.Popen | None = None
        self._started_at = 0.0
        self._waiters: dict[int, list] = {}  # seq -> [threading.Event, ok]
        self._waiter_seq = 0
        self._waiter_lock = threading.Lock()

    def _spawn(self) -> bool:
        raise NotImplementedError

    def _restarted(self) -> None:
        raise NotImplementedError

    def _launch(self) -> bool:
        self._started_at = time.monotonic()
        return self._spawn()

    def _alive(self) -> bool:
        """True while the process runs; once it has died, start a new one if it is time."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return True
        if time.monotonic() - self._started_at < self.restart_s:
            return False
        self._restarted()
        return self._launch()

    def _send(self, msg: Any) -> bool:
        """Write `msg` to the process (started again first if it died); False if it did not go."""
        if not self._alive():
            return False
        try:
            write_frame(self._proc.stdin, msg)
            return True
        except (OSError, ValueError):  # it died meanwhile: its reader logs it and keeps its counters
            return False

    def _new_waiter(self) -> int:
        with self._waiter_lock:
            self._waiter_seq += 1
            self._waiters[self._waiter_seq] = [threading.Event(), False]
            return self._waiter_seq

    def _wait(self, seq: int, deadline: float) -> bool:
        """The answer to `seq` (False when none came by `deadline`)."""
        with self._waiter_lock:
            waiter = self._waiters.get(seq)
        if waiter is not None:
            waiter[0].wait(max(0.0, deadline - time.monotonic()))
        with self._waiter_lock:
            self._waiters.pop(seq, None)
        return bool(waiter and waiter[1])

    def _answer(self, seq: int, ok: bool) -> None:
        with self._waiter_lock:
            waiter = self._waiters.get(seq)
        if waiter is not None:
            waiter[1] = ok
            waiter[0].set()

    def _fail_waiters(self) -> None:
        """The process died: nobody will answer what is awaited now."""
        with self._waiter_lock:
            pending = list(self._waiters)
        for seq in pending:
            self._answer(seq, False)
