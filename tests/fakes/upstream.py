"""A local fake LLM provider speaking the real wire formats (JSON and SSE), byte for byte.

Routes (any host; the proxy maps provider hosts here):
  POST .../chat/completions   OpenAI chat: JSON, or SSE when "stream": true (usage chunk only with
                              stream_options.include_usage, like OpenAI)
  POST .../v1/messages        Anthropic messages: JSON, or SSE events when "stream": true
  POST .../models/M:generateContent        Gemini: JSON
  POST .../models/M:streamGenerateContent  Gemini: SSE with ?alt=sse, else a JSON array of chunks
  any path with header  x-fake-corpus: <case dir name>   replays that corpus case's recorded bytes
Control headers (reach the fake because they are not Helicone-*):
  x-fake-delay-ms: N      delay before each SSE chunk (ms)
  x-fake-status: N        answer with this status and an OpenAI-style error body
  x-fake-fail: N[:S]      the first N requests carrying the same x-fake-fail-key fail with status S (500)
  x-fake-retry-after: V   add `Retry-After: V` to the x-fake-fail / x-fake-status error answers
  x-fake-gzip: 1          gzip the response body
  x-fake-fault: KIND      reset-mid-stream | truncated-json | not-json | truncated-sse | hang | big
From the test's side, `FakeUpstream.fail_next(marker, n, status)` makes the next n requests whose
body or headers contain `marker` (e.g. a test's own API key) fail, without any header in the client code.
Everything received is recorded in `FakeUpstream.requests` (method, path, headers, body); requests
whose client went away while the answer was being written are also in `FakeUpstream.aborted`.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "cases"  # tests/data/corpus

REPLY_WORDS = ["Hello", " from", " the", " fake", " upstream", "!"]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


def openai_completion(model: str, text: str, prompt_tokens: int = 12) -> dict:
    completion_tokens = len(REPLY_WORDS)
    return {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def openai_sse_events(model: str, include_usage: bool, prompt_tokens: int = 12) -> list[bytes]:
    events = []
    base = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    first = dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    events.append(first)
    for w in REPLY_WORDS:
        events.append(dict(base, choices=[{"index": 0, "delta": {"content": w}, "finish_reason": None}]))
    events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        n = len(REPLY_WORDS)
        events.append(dict(base, choices=[], usage={"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                    "total_tokens": prompt_tokens + n}))
    out = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return out


def anthropic_message(model: str, text: str) -> dict:
    return {
        "id": "msg_fake123",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": len(REPLY_WORDS),
                  "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5},
    }


def anthropic_sse_events(model: str) -> list[bytes]:
    def ev(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    msg = anthropic_message(model, "")
    msg["content"] = []
    msg["usage"] = {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5}
    out = [ev("message_start", {"type": "message_start", "message": msg}),
           ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
    for w in REPLY_WORDS:
        out.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}))
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": len(REPLY_WORDS)}}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


def gemini_response(model: str, words: list[str] | None = None, final: bool = True) -> dict:
    text = "".join(REPLY_WORDS if words is None else words)
    n = len(REPLY_WORDS)
    out = {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
           "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": n if final else 1,
                             "totalTokenCount": 12 + (n if final else 1)},
           "modelVersion": model}
    if final:
        out["candidates"][0]["finishReason"] = "STOP"
    return out


def gemini_stream_chunks(model: str) -> list[dict]:
    return [gemini_response(model, [w], final=i == len(REPLY_WORDS) - 1) for i, w in enumerate(REPLY_WORDS)]


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[Received] = []
        self.aborted: list[Received] = []
        self.fail_counts: dict[str, int] = defaultdict(int)
        self.fail_markers: dict[str, list[int]] = {}  # marker -> [failures left, status]
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self._handle()

            def do_POST(self):
                self._handle()

            def do_PUT(self):
                self._handle()

            def _handle(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                rec = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with fake.lock:
                    fake.requests.append(rec)
                try:
                    fake.route(self, rec)
                except (BrokenPipeError, ConnectionResetError):
                    with fake.lock:
                        fake.aborted.append(rec)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self, marker: str | None = None) -> list[Received]:
        """Requests received, optionally only those whose body or headers contain `marker`."""
        with self.lock:
            reqs = list(self.requests)
        if marker is None:
            return reqs
        return [r for r in reqs if marker.encode() in r.body or any(marker in v for v in r.headers.values())]

    def fail_next(self, marker: str, n: int, status: int = 500) -> None:
        """The next `n` requests carrying `marker` (body or a header value) get `status` with an error body."""
        with self.lock:
            self.fail_markers[marker] = [n, status]

    def _marked_failure(self, rec: Received) -> int | None:
        with self.lock:
            for marker, left in self.fail_markers.items():
                if left[0] > 0 and (marker.encode() in rec.body or any(marker in v for v in rec.headers.values())):
                    left[0] -= 1
                    return left[1]
        return None

    # -- routing -----------------------------------------------------------------------------------
    def route(self, h: BaseHTTPRequestHandler, rec: Received) -> None:
        hd = rec.headers
        status = self._marked_failure(rec)
        if status is not None:
            return self.send_json(h, status, {"error": {"message": f"fake failure (fail_next) {status}", "type": "server_error"}})
        if "x-fake-fail" in hd:
            n, _, status = hd["x-fake-fail"].partition(":")
            key = hd.get("x-fake-fail-key", "default")
            with self.lock:
                self.fail_counts[key] += 1
                count = self.fail_counts[key]
            if count <= int(n):
                return self.send_json(h, int(status or 500), {"error": {"message": f"fake failure {count}", "type": "server_error"}},
                                      extra=self._retry_after(hd))
        if "x-fake-status" in hd:
            status = int(hd["x-fake-status"])
            return self.send_json(h, status, {"error": {"message": f"fake error {status}", "type": "invalid_request_error", "code": None}},
                                  extra=self._retry_after(hd))
        if "x-fake-corpus" in hd:
            return self.replay_corpus(h, hd["x-fake-corpus"], hd)
        if "x-fake-fault" in hd:
            return self.fault(h, hd["x-fake-fault"], hd)
        try:
            req = json.loads(rec.body or b"{}")
        except ValueError:
            req = {}
        delay = float(hd.get("x-fake-delay-ms", "0")) / 1000
        gz = hd.get("x-fake-gzip") == "1"
        model = req.get("model", "gpt-4o-mini")
        path = rec.path.split("?")[0]
        if path.endswith("/chat/completions"):
            if req.get("stream"):
                include = bool((req.get("stream_options") or {}).get("include_usage"))
                return self.send_sse(h, openai_sse_events(model, include), delay, gz)
            return self.send_json(h, 200, openai_completion(model, "".join(REPLY_WORDS)), gz)
        if path.endswith("/v1/messages"):
            if req.get("stream"):
                return self.send_sse(h, anthropic_sse_events(model), delay, gz)
            return self.send_json(h, 200, anthropic_message(model, "".join(REPLY_WORDS)), gz)
        if ":generateContent" in path or ":streamGenerateContent" in path:
            gmodel = path.rsplit("/models/", 1)[-1].split(":", 1)[0]
            if ":generateContent" in path:
                return self.send_json(h, 200, gemini_response(gmodel), gz)
            chunks = gemini_stream_chunks(gmodel)
            if "alt=sse" in rec.path:
                events = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]
                return self.send_sse(h, events, delay, gz)
            return self.send_json(h, 200, chunks, gz)
        return self.send_json(h, 404, {"error": {"message": f"no route {rec.path}", "type": "not_found"}})

    @staticmethod
    def _retry_after(hd: dict[str, str]) -> list[tuple[str, str]]:
        return [("retry-after", hd["x-fake-retry-after"])] if "x-fake-retry-after" in hd else []

    @staticmethod
    def send_json(h, status: int, obj, gz: bool = False, extra: list[tuple[str, str]] = ()) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        for k, v in extra:
            h.send_header(k, v)
        if gz:
            data = gzip.compress(data)
            h.send_header("content-encoding", "gzip")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def send_sse(h, events: list[bytes], delay: float, gz: bool = False, content_type: str = "text/event-stream; charset=utf-8") -> None:
        h.send_response(200)
        h.send_header("content-type", content_type)
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        if gz:
            h.send_header("content-encoding", "gzip")
        h.end_headers()
        import zlib

        comp = zlib.compressobj(wbits=31) if gz else None
        for ev in events:
            if delay:
                time.sleep(delay)
            data = comp.compress(ev) + comp.flush(zlib.Z_SYNC_FLUSH) if comp else ev
            if data:
                h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                h.wfile.flush()
        if comp:
            tail = comp.flush()
            if tail:
                h.wfile.write(f"{len(tail):x}\r\n".encode() + tail + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def fault(self, h, kind: str, hd: dict[str, str]) -> None:
        """x-fake-fault: reset-mid-stream | truncated-json | not-json | truncated-sse | hang | big (x-fake-size bytes)."""
        import socket
        import struct

        if kind == "hang":
            time.sleep(float(hd.get("x-fake-hang-s", "30")))
            return
        if kind == "reset-mid-stream":
            h.send_response(200)
            h.send_header("content-type", "text/event-stream")
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            for ev in openai_sse_events("gpt-4o-mini", False)[:3]:
                h.wfile.write(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
                h.wfile.flush()
                time.sleep(0.05)
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()  # RST, no terminating chunk
            h.close_connection = True
            return
        if kind == "truncated-sse":  # a complete HTTP response whose SSE stops mid-event
            events = openai_sse_events("gpt-4o-mini", False)
            data = b"".join(events[:4]) + events[4][: len(events[4]) // 2]
            h.send_response(200)
            h.send_header("content-type", "text/event-stream")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if kind in ("truncated-json", "not-json"):
            data = json.dumps(openai_completion("gpt-4o-mini", "hi")).encode()[:40] if kind == "truncated-json" else b"<html>upstream proxy error</html>"
            status = 200 if kind == "truncated-json" else 502
            h.send_response(status)
            h.send_header("content-type", "application/json" if kind == "truncated-json" else "text/html")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if kind == "big":
            size = int(hd.get("x-fake-size", str(50 * 1024 * 1024)))
            completion = openai_completion("gpt-4o-mini", "")
            head, tail = json.dumps(completion).split('"content": ""', 1)
            pre = (head + '"content": "').encode()
            post = ('"' + tail).encode()
            n = size - len(pre) - len(post)
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(pre) + n + len(post)))
            h.end_headers()
            h.wfile.write(pre)
            block = b"a" * 65536
            left = n
            while left > 0:
                h.wfile.write(block[: min(left, len(block))])
                left -= len(block)
            h.wfile.write(post)
            return
        self.send_json(h, 400, {"error": {"message": f"unknown fault {kind}"}})

    def replay_corpus(self, h, case: str, hd: dict[str, str]) -> None:
        """Serve a recorded case. x-fake-chunks: N splits the body into N random pieces; x-fake-gzip: 1 gzips."""
        import random

        d = CORPUS / case
        body = (d / "response.body").read_bytes()
        meta = json.loads((d / "response.headers.json").read_text())
        ctype = meta.get("content_type") or "application/json"
        status = meta["status_code"]
        gz = hd.get("x-fake-gzip") == "1"
        pieces = int(hd.get("x-fake-chunks", "1"))
        if gz:
            body = gzip.compress(body)
        rng = random.Random(hd.get("x-fake-seed", case))
        cuts = sorted(rng.sample(range(1, len(body)), min(pieces - 1, max(len(body) - 1, 0)))) if pieces > 1 else []
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        h.send_response(status)
        h.send_header("content-type", ctype)
        if gz:
            h.send_header("content-encoding", "gzip")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        for p in parts:
            h.wfile.write(f"{len(p):x}\r\n".encode() + p + b"\r\n")
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
