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
