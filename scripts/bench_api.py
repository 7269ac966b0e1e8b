#!/usr/bin/env python3
"""Where should the local API's uvicorn run: in its own thread, or on the proxy's event loop?

    .venv/bin/python scripts/bench_api.py            # ~40 s (2 rounds of 8 s per mode)
    .venv/bin/python scripts/bench_api.py --seconds 4

This process plays the proxy: its main thread runs an asyncio loop with a heartbeat task (wake up
every millisecond, record how late it woke) standing for the flows the proxy serves. The API is
started on that loop (`in_thread=False`) or in its own thread (`in_thread=True`), on a log seeded
with 2,000 calls, while a separate process hammers it with 8 concurrent clients: query 50 records
(bodies included), GET one, POST feedback. Reported per mode, alternated A B A B: the heartbeat's
lateness p50 / p99 / max (what a proxied call would wait on top of its own work), and the API's
requests/s and latency p50 / p99. The same lateness with the API idle is the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from helicone_addon.api import ApiServer
from helicone_addon.store import open_db

LOAD = r"""
import json, random, statistics, sys, threading, time
import httpx
base, token, seconds, ids = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
lat, lock = [], threading.Lock()
def worker(n):
    c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rid = random.choice(ids)
        for method, path, body in (("POST", "/v1/request/query", {"filter": "all", "limit": 50}),
                                   ("GET", f"/v1/request/{rid}", None),
                                   ("POST", f"/v1/request/{rid}/feedback", {"rating": n % 2 == 0})):
            t0 = time.perf_counter()
            r = c.request(method, path, json=body)
            assert r.status_code < 300, r.text
            with lock:
                lat.append(time.perf_counter() - t0)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
lat.sort()
print(json.dumps({"requests": len(lat), "rps": len(lat) / seconds,
                  "p50_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[int(len(lat) * 0.99)] * 1000}))
"""


def seed(db: Path, n: int = 2000) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 1500}]})
    log = open_db(db)
    log["requests"].insert_all(
        {"id": rid, "created_at": f"2025-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z", "model": "gpt-4o-mini",
         "provider": "openai", "status": 200, "latency_ms": 100.0, "request_body": body, "response_body": body,
         "properties": "{}", "source": "proxy"}
        for i, rid in enumerate(ids)
    )
    log.conn.close()
    return ids


async def heartbeat(stop: asyncio.Event, late: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - t0 - 0.001) * 1000)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


async def run(mode: str, db: Path, ids: list[str], seconds: float) -> dict:
    stop, late = asyncio.Event(), []
    server = ApiServer(db, "127.0.0.1", 0, in_thread=(mode == "thread"), data_dir=db.parent).start()
    beat = asyncio.create_task(heartbeat(stop, late))
    await asyncio.sleep(0.5)
    idle = list(late)
    late.clear()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOAD, server.url, server.token, str(seconds), json.dumps(ids[:200]),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    stop.set()
    await beat
    server.stop()
    if mode == "loop":
        await asyncio.sleep(0.5)  # let the server task finish on this loop
    load = json.loads(out)
    return {"mode": mode, "idle_p99_ms": pct(idle, 0.99), "late_p50_ms": statistics.median(late),
            "late_p99_ms": pct(late, 0.99), "late_max_ms": max(late), **load}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="load per run")
    ap.add_argument("--rounds", type=int, default=2, help="thread/loop pairs")
    args = ap.parse_args()
    from helicone_addon.proxy.logwriter import LOOP_SWITCH_INTERVAL

    sys.setswitchinterval(LOOP_SWITCH_INTERVAL)  # as the addon sets it for the proxy
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "helicone.db"
        ids = seed(db)
        results = []
        for mode in ("thread", "loop") * args.rounds:
            results.append(asyncio.run(run(mode, db, ids, args.seconds)))
            r = results[-1]
            print(f"{r['mode']:6}  loop lateness p50 {r['late_p50_ms']:.3f} ms  p99 {r['late_p99_ms']:.2f} ms  "
                  f"max {r['late_max_ms']:.1f} ms (idle p99 {r['idle_p99_ms']:.2f})  |  API {r['rps']:.0f} req/s  "
                  f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
