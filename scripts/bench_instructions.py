#!/usr/bin/env python3
"""Instructions per proxied call, counted by valgrind's callgrind: a figure that load does not move.

    .venv/bin/python scripts/bench_instructions.py                      # this checkout
    .venv/bin/python scripts/bench_instructions.py --baseline /tmp/old  # and another (git worktree add)
    .venv/bin/python scripts/bench_instructions.py --otlp               # spans on (the fake upstream collects)

The proxy runs under `valgrind --tool=callgrind` (`python -O`, reverse mode onto the fake upstream of
scripts/bench.py, full logging), serves calls one at a time, alternating JSON and SSE, and is stopped
once every call's row is in the log. Run twice, with --few and --many calls: the difference divided by
the extra calls is what one call costs, everything the process does included (event loop, writer
threads, SQLite), and startup cancels out. Slow (valgrind runs Python some 50x slower): ~2 minutes a
run. Needs Debian's valgrind.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import free_port, make_body, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def count(root: Path, calls: int, tmp: Path, otlp: bool = False) -> int:
    """Instructions the proxy of checkout `root` executes from start to exit, serving `calls` calls.
    Only the proxy's own process is counted: a helper process it starts (the OTLP exporter) is not."""
    up = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench.py"), "--serve-upstream", "--chunk-delay-ms", "0"],
                          stdout=subprocess.PIPE)
    try:
        up_port = int(up.stdout.readline().split()[1])
        port = free_port()
        run = Path(tempfile.mkdtemp(dir=tmp))
        out = run / "callgrind.out"
        proxy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-O", "-m", "helicone_addon",
             "run", "-q", "--listen-host", "127.0.0.1", "--mode", f"reverse:http://127.0.0.1:{up_port}@127.0.0.1:{port}",
             "--set", f"helicone_data_dir={run / 'data'}", "--set", "helicone_api_port=0",
             "--set", "helicone_hosts=127.0.0.1=openai", "--set", f"confdir={run / 'conf'}",
             *(["--set", f"helicone_otlp_endpoint=http://127.0.0.1:{up_port}"] if otlp else [])],
            cwd=root, stdout=subprocess.DEVNULL, stderr=open(run / "valgrind.log", "w"),  # noqa: SIM115
        )
        wait_port(port, proxy, timeout=600)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for i in range(calls):
            conn.request("POST", "/v1/chat/completions", body=make_body(i % 2 == 1),
                         headers={"content-type": "application/json", "authorization": "Bearer sk-bench"})
            conn.getresponse().read()
        conn.close()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # every row written, so the writer's work is counted too
            try:
                with sqlite3.connect(run / "data" / "helicone.db", timeout=30) as db:
                    if db.execute("SELECT count(*) FROM requests").fetchone()[0] >= calls:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.5)
        proxy.send_signal(signal.SIGINT)
        proxy.wait(600)
        m = re.search(r"Collected : (\d+)", (run / "valgrind.log").read_text())
        if not m:
            raise RuntimeError(f"no callgrind total in {run / 'valgrind.log'}")
        return int(m.group(1))
    finally:
        up.terminate()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", metavar="DIR", default=str(ROOT), help="the checkout to count (default: this one)")
    p.add_argument("--baseline", metavar="DIR", help="another checkout to count the same way")
    p.add_argument("--few", type=int, default=100)
    p.add_argument("--many", type=int, default=400)
    p.add_argument("--otlp", action="store_true", help="export a span per call (the fake upstream plays the collector)")
    a = p.parse_args()
    if not shutil.which("valgrind"):
        print("bench_instructions: valgrind not found (apt install valgrind)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="helicone-instructions-"))
    per_call = {}
    for name, root in [("this checkout", Path(a.checkout).resolve()),
                       *([("baseline", Path(a.baseline).resolve())] if a.baseline else [])]:
        few, many = count(root, a.few, tmp, a.otlp), count(root, a.many, tmp, a.otlp)
        per_call[name] = (many - few) / (a.many - a.few)
        print(f"{name} ({root}): {per_call[name] / 1e6:.2f} M instructions per call "
              f"({few:,} for {a.few} calls, {many:,} for {a.many})", flush=True)
    if a.baseline:
        print(f"this checkout / baseline: {per_call['this checkout'] / per_call['baseline']:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
