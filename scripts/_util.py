"""Helpers shared by scripts/bench.py, its parts (_bench_writer.py, ...) and scripts/soak.py (loopback only)."""

from __future__ import annotations

import json
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:port; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening after {timeout}s")


MODEL = "gpt-4o-mini"
OPENAI_HOST = "api.openai.com"
PATH = "/v1/chat/completions"


def make_body(stream: bool, marker: str = "") -> bytes:
    body: dict = {"model": MODEL, "messages": [{"role": "user", "content": f"Say hello{marker}"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
