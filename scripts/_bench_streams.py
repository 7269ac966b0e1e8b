"""Many long, slow streams open at once: the scenario of scripts/bench.py `--streams N[,N...]`.

N streamed chat calls are opened at the same moment; the fake upstream answers each with `chunks`
small SSE events (one content delta each, as LLMs send them), `chunk_ms` apart, then the usage
event and [DONE]. Per N and per configuration (direct, bare mitmdump with a one-line addon that
only sets `flow.response.stream = True`, the addon) it reports: completed / failed, time to first
chunk p50 / p99 and whole-stream p99 (and both over direct), the proxy's CPU seconds (every process
under it) and its peak RSS (sum over those processes). The burst itself runs in a child process
(`bench.py --stream-burst SPEC`) that raises its own descriptor limit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

STREAM_ADDON = "def responseheaders(flow):\n    flow.response.stream = True\n"


def sse_chunks(model: str, n: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one long answer: n one-token deltas (HTTP chunked framing included)."""
    base = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    events = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    events += [dict(base, choices=[{"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}])
               for i in range(n)]
    events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        events.append(dict(base, choices=[], usage={"prompt_tokens": 12, "completion_tokens": n,
                                                    "total_tokens": 12 + n}))
    raw = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    raw.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(ev), ev) for ev in raw]


def _raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, OSError, ValueError):
        pass


def stream_burst(spec: dict) -> dict:
    """Child: open spec['n'] streams at once; one JSON result."""
    _raise_nofile()
    n, chunks, chunk_ms = spec["n"], spec["chunks"], spec["chunk_ms"]
    host_header = spec.get("host_header", f"{spec['host']}:{spec['port']}")
    body = json.dumps({"model": spec["model"], "messages": [{"role": "user", "content": "Write a long answer"}],
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = (f"POST {spec['path']} HTTP/1.1\r\nhost: {host_header}\r\ncontent-type: application/json\r\n"
           f"authorization: Bearer sk-bench-0000000000000000\r\nx-fake-delay-ms: {chunk_ms}\r\n"
           f"x-fake-chunks: {chunks}\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    out: dict = {"n": n, "completed": 0, "failed": 0, "errors": {}, "ttfc": [], "total": []}
    perf = time.perf_counter
    start = asyncio.Event()

    async def one() -> None:
        await start.wait()
        t0 = perf()
        w = None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(spec["host"], spec["port"]), spec["timeout"])
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            w.write(req)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), spec["timeout"])
            if head[9:12] != b"200":
                raise RuntimeError(f"status {head[9:12].decode(errors='replace')}")
            ttfc = None
            got_done = False
            deadline = t0 + spec["timeout"]
            if b"transfer-encoding: chunked" in head.lower():
                while True:
                    line = await asyncio.wait_for(r.readuntil(b"\r\n"), max(0.1, deadline - perf()))
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await asyncio.wait_for(r.readexactly(size + 2), max(0.1, deadline - perf()))
                    if ttfc is None:
                        ttfc = perf() - t0
                    got_done = got_done or b"[DONE]" in data
            else:  # a buffering proxy: the whole body at once
                data = await asyncio.wait_for(r.read(), max(0.1, deadline - perf()))
                ttfc = perf() - t0
                got_done = b"[DONE]" in data
            if not got_done:
                raise RuntimeError("stream ended without [DONE]")
            out["ttfc"].append(ttfc * 1000)
            out["total"].append((perf() - t0) * 1000)
            out["completed"] += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            out["failed"] += 1
            key = f"{type(e).__name__}: {e}"[:120]
            out["errors"][key] = out["errors"].get(key, 0) + 1
        finally:
            if w is not None:
                w.close()

    async def main() -> None:
        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        await asyncio.sleep(0.2)  # every task waits on the event: they all start together
        print("START", flush=True)
        start.set()
        await asyncio.gather(*tasks)
        print("END", flush=True)

    asyncio.run(main())
    return out


def summarize(config: str, n: int, r: dict, cpu_s: float | None, rss_peak_kb: int | None, pct) -> dict:
    return {
        "config": config, "n": n, "completed": r["completed"], "failed": r["failed"],
        "errors": dict(sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]),
        "ttfc_p50_ms": pct(r["ttfc"], 50), "ttfc_p99_ms": pct(r["ttfc"], 99),
        "stream_p50_ms": pct(r["total"], 50), "stream_p99_ms": pct(r["total"], 99),
        "proxy_cpu_s": cpu_s, "proxy_rss_peak_mb": rss_peak_kb / 1024 if rss_peak_kb else None,
    }


def report_lines(streams: dict) -> list[str]:
    meta = streams["meta"]
    lines = [
        f"Concurrent streams: N calls opened at once, {meta['chunks']} chunks {meta['chunk_ms']} ms apart each "
        f"(~{meta['chunks'] * meta['chunk_ms'] / 1000:.1f} s per stream); proxy soft descriptor limit: "
        f"{meta['proxy_nofile'] or 'as inherited'}; `bare+stream` = mitmdump with a one-line addon setting "
        "flow.response.stream = True. Over direct: p99 minus direct's p99 in the same N.",
        "",
        "| N | config | completed | failed | TTFC p50 ms | TTFC p99 ms | TTFC p99 over direct | stream p99 ms "
        "| stream p99 over direct | proxy CPU s | proxy RSS peak MB | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def f(x, fmt="{:.0f}"):
        return "-" if x is None else fmt.format(x)

    for c in streams["cells"]:
        d = next((x for x in streams["cells"] if x["n"] == c["n"] and x["config"] == "direct"), None)
        over_t = c["ttfc_p99_ms"] - d["ttfc_p99_ms"] if d and c["ttfc_p99_ms"] is not None and d["ttfc_p99_ms"] is not None else None
        over_s = c["stream_p99_ms"] - d["stream_p99_ms"] if d and c["stream_p99_ms"] is not None and d["stream_p99_ms"] is not None else None
        errs = "; ".join(f"{k} x{v}" for k, v in c["errors"].items()) or ""
        lines.append(
            f"| {c['n']} | {c['config']} | {c['completed']} | {c['failed']} | {f(c['ttfc_p50_ms'])} | "
            f"{f(c['ttfc_p99_ms'])} | {f(over_t, '{:+.0f}')} | {f(c['stream_p99_ms'])} | {f(over_s, '{:+.0f}')} | "
            f"{f(c['proxy_cpu_s'], '{:.1f}')} | {f(c['proxy_rss_peak_mb'])} | {errs[:100]} |"
        )
    return lines
