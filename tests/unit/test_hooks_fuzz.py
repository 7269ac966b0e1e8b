"""Property: whatever a client or a provider sends, no exception escapes the addon's hooks, and
every call the addon took on becomes exactly one complete row.

Flows are built with mitmproxy's own test helpers (taddons + tflow) and driven the way mitmproxy's
HTTP layer drives them (proxy/layers/http/__init__.py):

    requestheaders (body not read yet: content None)
    -> request (async; body set)                      [or: the client goes away -> error]
    -> responseheaders (content None; an addon may set response.stream)
    -> the stream callable gets the chunks, then b""  [or: the body is buffered]
    -> response                                       [or: the connection breaks -> error]

A response set by the `request` hook (400/401/429/cache hit) gets responseheaders + response.

The inputs are hostile: random Helicone-* headers (every name in helicone_addon.headers, valid,
near-valid and garbage values, raw non-UTF-8 bytes as they arrive on the wire, mixed with coherent
valid sets that reach the cache, the rate limiter, the retry relay and the gateway), random request
and response bodies (random bytes, truncated JSON and SSE, huge and non-integral token counts,
wrong types), random hosts (every KNOWN_HOSTS pattern and others), paths, modes, statuses,
content-types and content-encodings (matching the body or not). One example in six makes the same
call twice (a cache hit, a rate-limited second call).

Checked for every example:
  * no hook raises;
  * a flow that is not an LLM call is left untouched;
  * an LLM call either got a response from the addon (with Helicone-Id) or goes upstream with no
    Helicone-* header; an upstream response gets Helicone-Id; the stream tee forwards every chunk
    unchanged;
  * a call the addon took on (it has a request id) is handed to the writer once, and the writer
    builds and commits its row: `build_errors`, `write_retries`, `spilled` and `dropped` stay 0
    and the row is in the database.

HOOKS_FUZZ_EXAMPLES sets the number of examples (default 4000, ~25 s). The response cache is
emptied between examples so that a shrunk failure replays on its own; the rate limiter's state is
kept (an example that is rate limited always carries its own RateLimit-Policy header).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import sqlite3
import time
import types
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from helicone_addon import headers as H
from helicone_addon import providers
from helicone_addon.proxy import make_addons
from helicone_addon.proxy.calls import SIGNED_PROVIDERS
from helicone_addon.proxy.flowrecord import META
from helicone_addon.render import comment


class Chain:
    """The addons of `helicone-addon run`, each hook called on each addon in order, as mitmproxy's
    AddonManager does (an async hook awaited before the next addon's)."""

    def __init__(self) -> None:
        self.addons = make_addons()
        self.rows: dict[str, dict] = {}  # request id -> the row the writer built

    def get(self, cls_name: str):
        return next(a for a in self.addons if type(a).__name__ == cls_name)

    def _sync(self, hook: str, *args) -> None:
        for a in self.addons:
            fn = getattr(a, hook, None)
            if fn is not None:
                assert not asyncio.iscoroutinefunction(fn), hook
                fn(*args)

    async def _async(self, hook: str, *args) -> None:
        for a in self.addons:
            fn = getattr(a, hook, None)
            if fn is not None:
                r = fn(*args)
                if asyncio.iscoroutine(r):
                    await r

    def requestheaders(self, f) -> None:
        self._sync("requestheaders", f)
        rec = f.metadata.get(META)
        if rec is not None:
            rec.on_row.append(lambda row, props: self.rows.__setitem__(row["id"], row))

    async def request(self, f) -> None:
        await self._async("request", f)

    def responseheaders(self, f) -> None:
        self._sync("responseheaders", f)

    def response(self, f) -> None:
        self._sync("response", f)

    def error(self, f) -> None:
        self._sync("error", f)

    async def running(self) -> None:
        await self._async("running")

    async def done(self) -> None:
        await self._async("done")

MAX_EXAMPLES = int(os.environ.get("HOOKS_FUZZ_EXAMPLES", "4000"))

# -- names --------------------------------------------------------------------------------------
HELICONE_NAMES = sorted(
    {v for k, v in vars(H).items() if k.startswith("H_") and isinstance(v, str) and v.startswith(H.PREFIX)}
)


def _concrete(pattern: str) -> str:
    return pattern.replace("*-", "us-central1-").replace("*.", "myres.").replace(".*.", ".us-east-1.").replace("*", "x")


LLM_HOSTS = sorted({_concrete(p) for p in providers.KNOWN_HOSTS})
OTHER_HOSTS = ["example.com", "127.0.0.1", "localhost", "10.0.0.1", "api.openai.com.evil.test",
               "API.OPENAI.COM", "api.openai.com.", "xn--80ak6aa92e.com", "a" * 253]
LLM_PATHS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
    "/v1/complete", "/openai/v1/chat/completions", "/v1beta/models/gemini-1.5-flash:generateContent",
    "/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse",
    "/v1beta/models/text-embedding-004:embedContent",
    "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
    "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku:rawPredict",
    "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
    "/model/anthropic.claude-3-haiku/invoke", "/", "/health", "/v1/models",
]
ERROR_MSGS = ["Client disconnected.", "Connection killed.", "Server disconnected.",
              "peer closed connection without sending complete message body (incomplete chunked read)",
              "[Errno 111] Connection refused", "TimeoutError: timed out", "HTTP/2 protocol error: stream reset",
              "Connection closed by peer", ""]

# -- values --------------------------------------------------------------------------------------
SPECIAL_VALUES = [
    "true", "false", "TRUE", " true ", "1", "0", "-1", "yes", "", " ", "5", "20", "21", "600000", "600001",
    "99999999999999999999999999", "1e3", "1.5", "inf", "nan", "-0", "null",
    str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", "not-a-uuid",
    "https://api.openai.com", "http://127.0.0.1:1", "https://api.anthropic.com:443/v1", "http://host:notaport",
    "https://[::1]:99999", "https://", "ftp://x", "https://api.openai.com/v1?key=sk-secret",
    "10;w=60", "1000;w=3600;u=cents;s=user", "1;w=1;s=property-feature", "3;w=60;u=request;s=user",
    "0;w=0", "10;w=-5", ";;;", "10;w=60;u=bogus", "1;w=1",
    '[{"target-url":"https://api.openai.com","headers":{},"onCodes":[429,{"from":500,"to":599}]}]',
    '[{"target-url":"http://127.0.0.1:1","headers":{"authorization":"Bearer x"}}]',
    "[]", "[{}]", '{"a":1}', "[1,2", '[{"target-url":"javascript:alert(1)"}]',
    "max-age=60", "max-age=0", "max-age=-1", "max-age=99999999999999999999", "no-cache", "max-age=", "s-maxage=5",
    "a,b", ",,,", "openai", "OPENAI", "anthropic", "gemini", "groq", "Bearer k1", "Bearer wrong", "bearer  k1 ",
    "gpt-4o", "claude-3-5-sonnet-20241022", "\u00e9\u00e8", "\U0001f600", "a" * 3000,
]
HEADER_BYTES = st.binary(max_size=48).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
HEADER_VALUE = st.one_of(
    st.sampled_from(SPECIAL_VALUES).map(lambda s: s.encode("utf-8")),
    st.text(max_size=40).map(lambda s: s.replace("\r", "").replace("\n", "").encode("utf-8")),
    HEADER_BYTES,  # raw bytes: non-UTF-8 arrives as lone surrogates after mitmproxy's decoding
)
# Strategies are built once, here: building them inside the composites costs more than the hooks.
NAME_SUFFIX = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
                      max_size=12)
NAME_KIND = st.integers(0, 5)
NAME_STYLE = st.integers(0, 2)
NAME_BYTES = st.binary(max_size=10)
KNOWN_NAME = st.sampled_from([*HELICONE_NAMES, H.H_CACHE_CONTROL])
POSITION = st.integers(0, 1 << 16)  # a cut point, taken modulo the length it applies to
BOOL = st.booleans()


@st.composite
def header_name(draw) -> bytes:
    kind = draw(NAME_KIND)
    if kind == 0:
        name = (H.PROPERTY_PREFIX + draw(NAME_SUFFIX)).encode()
    elif kind == 1:
        name = H.PREFIX.encode() + draw(NAME_BYTES).translate(None, b": \r\n")
    else:
        name = draw(KNOWN_NAME).encode()
    style = draw(NAME_STYLE)
    if style == 1:
        return name.upper()
    if style == 2:
        return H.canonical(name.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    return name


HUGE = st.sampled_from([10**30, -(10**30), 2**63, 2**63 - 1, -(2**63) - 1, 10**400])
NUMBER = st.one_of(st.integers(-(10**6), 10**6), HUGE, st.floats(allow_nan=True, allow_infinity=True))
SCALAR = st.none() | st.booleans() | NUMBER | st.text(max_size=20)
JSONISH = st.recursive(
    SCALAR,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "model", "usage", "", "\u00e9"]), c,
                                                        max_size=3),
    max_leaves=5,
)
TOKENS = st.one_of(NUMBER, st.sampled_from(["12", " 7 ", "9" * 40, "-3", "1.5", "", "x", True, None, [], {}, [5],
                                            {"a": 1}]))
USAGE_KEYS = ["prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens",
              "cache_read_input_tokens", "cache_creation_input_tokens", "promptTokenCount",
              "candidatesTokenCount", "totalTokenCount", "cachedContentTokenCount", "thoughtsTokenCount",
              "prompt_cache_hit_tokens"]
USAGE = st.one_of(
    st.fixed_dictionaries({}, optional={
        **{k: TOKENS for k in USAGE_KEYS},
        "prompt_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": TOKENS,
                                                                     "cache_write_tokens": TOKENS}) | JSONISH,
        "completion_tokens_details": st.fixed_dictionaries({}, optional={"reasoning_tokens": TOKENS}) | JSONISH,
        "input_tokens_details": st.fixed_dictionaries({}, optional={"cached_tokens": TOKENS}),
    }),
    JSONISH,
)
MODEL = st.one_of(st.sampled_from(["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "gemini-1.5-flash",
                                   "o1", "text-embedding-3-small", "", "models/gemini-2.0-flash"]),
                  st.text(max_size=30), JSONISH)
SHORT_TEXT = st.text(max_size=20)
OBJ_KIND = st.integers(0, 6)
CHAT_OBJECT = st.sampled_from(["chat.completion", "chat.completion.chunk"])
CHOICES = st.sampled_from([
    [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    [], None,
])
ANTHROPIC_TYPE = st.sampled_from(["message", "message_start", "message_delta", "content_block_delta",
                                  "message_stop", "error", "ping"])
RESPONSES_TYPE = st.sampled_from(["response.completed", "response.created"])


@st.composite
def response_object(draw) -> object:
    kind = draw(OBJ_KIND)
    usage = draw(USAGE)
    model = draw(MODEL)
    if kind == 0:  # OpenAI chat / chunk
        return {"id": "chatcmpl-x", "object": draw(CHAT_OBJECT), "model": model, "usage": usage,
                "choices": draw(CHOICES) if draw(BOOL) else draw(JSONISH)}
    if kind == 1:  # Anthropic message / events
        return {"type": draw(ANTHROPIC_TYPE), "model": model, "usage": usage,
                "message": {"model": model, "usage": usage},
                "delta": draw(JSONISH), "content": [{"type": "text", "text": draw(SHORT_TEXT)}]}
    if kind == 2:  # Gemini
        return {"candidates": [{"content": {"parts": [{"text": draw(SHORT_TEXT)}]}}],
                "usageMetadata": usage, "modelVersion": model}
    if kind == 3:  # Responses API
        return {"object": "response", "type": draw(RESPONSES_TYPE), "model": model, "usage": usage,
                "response": {"model": model, "usage": usage}, "output": draw(JSONISH)}
    if kind == 4:  # embeddings
        return {"object": "list", "data": [{"embedding": [0.1, 0.2]}], "model": model, "usage": usage}
    if kind == 5:
        return {"error": draw(JSONISH)}
    return draw(JSONISH)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()  # NaN / Infinity / 400-digit ints on purpose


def _cut(body: bytes, pos: int) -> bytes:
    return body[: pos % (len(body) + 1)]


BODY_KIND = st.integers(0, 4)
RESPONSE_OBJECTS = st.lists(response_object(), max_size=4)
GEMINI_ARRAY = st.lists(response_object(), max_size=3)
SSE_PREFIX = st.sampled_from([b"", b"event: message_delta\n", b"event: x\n", b": ping\n"])
RANDOM_BODY = st.binary(max_size=512)


@st.composite
def response_body(draw) -> tuple[bytes, bool]:
    """(body bytes, looks like SSE)"""
    kind = draw(BODY_KIND)
    if kind == 0:
        return _dumps(draw(response_object())), False
    if kind in (1, 2):
        events = [draw(SSE_PREFIX) + b"data: " + _dumps(obj) + b"\n\n" for obj in draw(RESPONSE_OBJECTS)]
        if draw(BOOL):
            events.append(b"data: [DONE]\n\n")
        body = b"".join(events)
        return (_cut(body, draw(POSITION)) if kind == 2 else body), True  # kind 2: a truncated stream
    if kind == 3:  # Gemini's JSON-array stream
        return b"[" + b",\r\n".join(_dumps(o) for o in draw(GEMINI_ARRAY)) + b"]", False
    return draw(RANDOM_BODY), draw(BOOL)


def _compress(body: bytes, enc: str) -> bytes:
    if enc == "gzip":
        return gzip.compress(body)
    if enc == "deflate":
        return zlib.compress(body)
    if enc == "br":
        import brotli

        return brotli.compress(body)
    if enc == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(body)
    return body


ENCODINGS = st.sampled_from([None, None, None, "gzip", "deflate", "br", "zstd", "identity", "gzip, br",
                             "x-garbage", ""])
CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "text/event-stream",
                                 "text/event-stream; charset=utf-8", "text/plain", "text/html",
                                 "application/x-ndjson", "", "\u00e9/\u00e8"])
REQ_KIND = st.integers(0, 5)
MESSAGES = st.sampled_from([[{"role": "user", "content": "hello"}], [], None,
                            [{"role": "user", "content": [{"type": "text", "text": "x"}]}]])
STREAM_FLAG = st.sampled_from([True, False, "true", None, 1])
STREAM_OPTIONS = st.sampled_from([{"include_usage": True}, None, [], "x", {}])
EMPTY_BODY = st.sampled_from([None, b""])


@st.composite
def request_body(draw) -> bytes | None:
    kind = draw(REQ_KIND)
    if kind == 5:
        return draw(EMPTY_BODY)
    if kind == 4:
        return draw(RANDOM_BODY)
    if kind == 3:
        return _dumps(draw(JSONISH))
    req = {"model": draw(MODEL), "messages": draw(MESSAGES) if draw(BOOL) else draw(JSONISH)}
    if draw(BOOL):
        req["stream"] = draw(STREAM_FLAG)
    if draw(BOOL):
        req["stream_options"] = draw(STREAM_OPTIONS)
    if draw(BOOL):
        req["max_tokens"] = draw(NUMBER)
    if draw(BOOL):
        req["user"] = draw(SHORT_TEXT) if draw(BOOL) else draw(JSONISH)
    if draw(BOOL):
        req["input"] = draw(JSONISH)
    body = _dumps(req)
    return _cut(body, draw(POSITION)) if kind == 1 else body  # kind 1: truncated JSON


def _clean_path(b: bytes) -> bytes:
    return b.translate(None, b" \r\n")


HOSTS = st.one_of(st.sampled_from(LLM_HOSTS), st.sampled_from(OTHER_HOSTS),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=30))
REQ_HEADERS = st.lists(st.tuples(header_name(), HEADER_VALUE), max_size=8)
ONE_IN_SIX = st.integers(0, 5)
REQ_ENCODING = st.sampled_from([b"gzip", b"br", b"x-garbage", b"identity"])
PATHS = st.one_of(
    st.sampled_from(LLM_PATHS).map(str.encode),
    st.tuples(st.sampled_from(LLM_PATHS), st.binary(max_size=20)).map(lambda t: t[0].encode() + _clean_path(t[1])),
    st.binary(min_size=1, max_size=40).map(lambda b: b"/" + _clean_path(b)),
)
CUTS = st.lists(POSITION, max_size=6)
MODES = st.sampled_from(["regular", "reverse:https://api.openai.com", "reverse:http://127.0.0.1:9",
                         "reverse:https://api.anthropic.com", "reverse:http://example.com"])
PORTS = st.sampled_from([443, 80, 8080, 1])
SCHEMES = st.sampled_from([b"https", b"http"])
METHODS = st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"DELETE", b"OPTIONS"])
AUTH_KEYS = st.sampled_from([[], [], ["k1"], ["Bearer k1", "  "]])
OUTCOMES = st.sampled_from(["response", "response", "response", "error_no_response", "error_mid_body",
                            "client_gone_before_request", "response_then_error"])
STATUSES = st.one_of(st.sampled_from([200, 200, 201, 204, 400, 401, 404, 429, 500, 502, 503]),
                     st.integers(100, 999))
ERRORS = st.one_of(st.sampled_from(ERROR_MSGS), st.text(max_size=40))
EXTRA_RESP_HEADERS = st.lists(st.tuples(st.sampled_from([b"x-request-id", b"openai-model", b"helicone-id",
                                                         b"content-length", b"transfer-encoding", b"x-\xff"]),
                                        HEADER_BYTES), max_size=2)


FALLBACKS_OK = '[{"target-url":"http://127.0.0.1:9","headers":{},"onCodes":[{"from":400,"to":599}]}]'
VALID_SETS = st.sampled_from([  # coherent, valid feature headers: reach the cache, limiter, relay, gateway
    [(b"Helicone-Cache-Enabled", b"true")],
    [(b"Helicone-Cache-Enabled", b"true"), (b"Helicone-Cache-Bucket-Max-Size", b"3"),
     (b"Helicone-Cache-Seed", b"s1"), (b"Cache-Control", b"max-age=60")],
    [(b"Helicone-Cache-Save", b"true")],
    [(b"Helicone-Cache-Read", b"true"), (b"Helicone-Cache-Ignore-Keys", b"user,stream")],
    [(b"Helicone-RateLimit-Policy", b"1;w=60")],
    [(b"Helicone-RateLimit-Policy", b"1;w=60;s=user"), (b"Helicone-User-Id", b"alice")],
    [(b"Helicone-RateLimit-Policy", b"2;w=60;u=cents;s=property-team"), (b"Helicone-Property-Team", b"a")],
    [(b"Helicone-Retry-Enabled", b"true"), (b"Helicone-Retry-Num", b"1"), (b"Helicone-Retry-Min-Timeout", b"0")],
    [(b"Helicone-Fallbacks", FALLBACKS_OK.encode())],
    [(b"Helicone-Target-Url", b"http://127.0.0.1:9"), (b"Helicone-Target-Provider", b"groq")],
    [(b"Helicone-OpenAI-Api-Base", b"https://myres.openai.azure.com")],
    [(b"Helicone-Stream-Usage", b"true")],
    [(b"Helicone-Omit-Request", b"true"), (b"Helicone-Omit-Response", b"true")],
    [(b"Helicone-User-Id", b"bob"), (b"Helicone-Session-Id", b"s-1"), (b"Helicone-Session-Path", b"/a/b"),
     (b"Helicone-Session-Name", b"n"), (b"Helicone-Property-Env", b"\xc3\xa9t\xc3\xa9")],
    [(b"Helicone-Request-Id", str(uuid.uuid4()).encode()), (b"Helicone-Model-Override", b"gpt-4o")],
    [(b"Helicone-Auth", b"Bearer k1")],
])
HEADER_SETS = st.one_of(
    REQ_HEADERS,
    VALID_SETS,
    st.tuples(VALID_SETS, REQ_HEADERS).map(lambda t: t[0] + t[1]),
    st.tuples(VALID_SETS, VALID_SETS).map(lambda t: t[0] + t[1]),
)


@st.composite
def scenario(draw) -> dict:
    req_headers = list(draw(HEADER_SETS))
    if draw(BOOL):
        req_headers.append((b"content-type", b"application/json"))
    if draw(ONE_IN_SIX) == 5:
        req_headers.append((b"content-encoding", draw(REQ_ENCODING)))
    if draw(BOOL):
        req_headers.append((b"authorization", b"Bearer sk-test-fuzz-123456"))
    resp_body, sse = draw(response_body())
    enc = draw(ENCODINGS)
    if enc and draw(BOOL):
        resp_body = _compress(resp_body, enc)  # matching the header (else: a header that lies)
        if draw(ONE_IN_SIX) == 5:
            resp_body = _cut(resp_body, draw(POSITION))
    ctype = draw(CONTENT_TYPES) if draw(BOOL) else ("text/event-stream" if sse else "application/json")
    return {
        "mode": draw(MODES),
        "host": draw(HOSTS),
        "port": draw(PORTS),
        "scheme": draw(SCHEMES),
        "method": draw(METHODS),
        "path": draw(PATHS),
        "req_headers": req_headers,
        "req_body": draw(request_body()),
        "strict": draw(BOOL),
        "auth_keys": draw(AUTH_KEYS),
        "outcome": draw(OUTCOMES),
        "status": draw(STATUSES),
        "ctype": ctype,
        "enc": enc,
        "resp_body": resp_body,
        "cuts": sorted({c % (len(resp_body) + 1) for c in draw(CUTS)}),
        "store_streamed": draw(BOOL),
        "error_msg": draw(ERRORS),
        "extra_resp_headers": draw(EXTRA_RESP_HEADERS),
        "repeat": draw(ONE_IN_SIX) == 5,  # the same call twice: a cache hit, a rate-limited second call
    }


# -- driving ---------------------------------------------------------------------------------------
def build_flow(sc: dict) -> http.HTTPFlow:
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse(sc["mode"])
    hdrs = http.Headers(fields=[(b"host", sc["host"].encode()), *sc["req_headers"]])
    req = http.Request(sc["host"], sc["port"], sc["method"], sc["scheme"], b"", sc["path"], b"HTTP/1.1",
                       hdrs, None, None, time.time(), None)  # body not read yet at requestheaders
    return tflow.tflow(client_conn=client, req=req)


def feed(stream, body: bytes, cuts: list[int], end: bool) -> None:
    """Call the stream callable as mitmproxy does: once per chunk received, then b"" at the end."""
    bounds = [0, *cuts, len(body)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            assert stream(body[a:b]) == body[a:b], "the tee must forward every chunk unchanged"
    if end:
        assert stream(b"") in (b"", None, [])


def respond(addon: Chain, f: http.HTTPFlow, sc: dict, complete: bool) -> None:
    hdrs = [(b"content-type", sc["ctype"].encode())] if sc["ctype"] is not None else []
    if sc["enc"] is not None:
        hdrs.append((b"content-encoding", sc["enc"].encode()))
    hdrs += sc["extra_resp_headers"]
    f.response = http.Response(b"HTTP/1.1", sc["status"], b"", http.Headers(fields=hdrs), None, None,
                               time.time(), None)
    addon.responseheaders(f)
    state = f.metadata.get(META)
    if state is not None:
        assert f.response.headers.get(H.R_ID) == state.id, "Helicone-Id must be on the response headers"
    body = sc["resp_body"]
    if callable(f.response.stream):
        feed(f.response.stream, body, sc["cuts"], end=complete)
        if complete and sc["store_streamed"]:
            f.response.data.content = body  # store_streamed_bodies (mitmweb)
    elif complete:
        f.response.data.content = body
    if complete:
        f.response.timestamp_end = time.time()


async def drive(addon: Chain, f: http.HTTPFlow, sc: dict) -> None:
    addon.requestheaders(f)
    state = f.metadata.get(META)
    f.request.data.content = sc["req_body"]
    f.request.timestamp_end = time.time()
    before = list(f.request.headers.fields)
    if sc["outcome"] == "client_gone_before_request":
        f.error = mflow.Error("Client disconnected.")
        addon.error(f)
        return
    await addon.request(f)
    if state is None:
        assert f.response is None and f.request.headers.fields == tuple(before), "a non-LLM flow was touched"
    elif state.call.provider in SIGNED_PROVIDERS and f.response is None:
        assert f.request.headers.fields == tuple(before), "a signed (Bedrock) call was modified on its way upstream"
    elif f.response is None:
        left = [k for k in f.request.headers if H.is_helicone(k)]
        assert not left, f"Helicone headers would go upstream: {left}"
    if f.response is not None:  # the addon answered (400 / 401 / 429 / cache hit)
        assert state is not None and f.response.headers.get(H.R_ID) == state.id
        addon.responseheaders(f)
        f.response.timestamp_end = time.time()
        addon.response(f)
        return
    outcome = sc["outcome"]
    if outcome == "error_no_response":
        f.error = mflow.Error(sc["error_msg"])
        addon.error(f)
    elif outcome == "error_mid_body":
        respond(addon, f, sc, complete=False)
        f.error = mflow.Error(sc["error_msg"])
        addon.error(f)
    else:
        respond(addon, f, sc, complete=True)
        addon.response(f)
        if outcome == "response_then_error":
            f.error = mflow.Error(sc["error_msg"])
            addon.error(f)


# -- the test --------------------------------------------------------------------------------------
@pytest.fixture
def fast_retries(monkeypatch):
    """The store retries a failed write 5 times with back-off (1.5 s in all) before spilling. A
    failure is a finding here either way; skip the sleeps so that shrinking one stays quick."""
    import helicone_addon.store.writer as store_mod

    fast = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    fast.sleep = lambda s: None
    monkeypatch.setattr(store_mod, "time", fast)


@pytest.mark.timeout(600)  # a pass takes well under a minute; a failure gets time to shrink
def test_hooks_never_raise_and_every_call_is_logged(tmp_path, fast_retries):
    addon = Chain()
    with taddons.context(*addon.addons) as tctx:
        loop = tctx.master.event_loop
        # the writer on a thread of this process: its retries are sped up here, its batches cut per call
        # (the writer process is the same LogStore: tests/unit/test_store_process.py, the e2e suite)
        tctx.configure(addon.addons[0], helicone_data_dir=str(tmp_path / "data"), helicone_api_port=0,
                       helicone_log_process=False)

        async def start() -> None:
            await addon.running()

        loop.run_until_complete(start())
        store = addon.get("HeliconeLog").store
        assert store is not None
        store.flush_interval = 0.0  # commit each call at once: one example's row per batch
        db = sqlite3.connect(store.path, timeout=30)
        stats = dict.fromkeys(["examples", "llm", "rows", "short", "upstream", "streamed", "errors", "usage",
                               "cost", "cache_hit", "rate_limited"], 0)

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much, HealthCheck.large_base_example])
        @given(scenario())
        def check(sc: dict) -> None:
            if tctx.options.helicone_strict != sc["strict"]:
                tctx.options.update(helicone_strict=sc["strict"])
            if list(tctx.options.helicone_auth_keys) != sc["auth_keys"]:
                tctx.options.update(helicone_auth_keys=sc["auth_keys"])
            cache = addon.get("HeliconeCache").cache
            if cache is not None and len(cache):
                cache.clear()  # a cache hit comes from this example's own first call, never an older one
            for _ in range(1 + sc["repeat"]):
                one_call(sc)

        def one_call(sc: dict) -> None:
            f = build_flow(sc)
            before = dict(store.counters)
            loop.run_until_complete(drive(addon, f, sc))
            stats["examples"] += 1
            state = f.metadata.get(META)
            if state is None:
                return
            stats["llm"] += 1
            if not state.id:  # the client left before the request was read: nothing to log
                assert not state.finished
                return
            stats["short"] += bool(state.short_circuit)
            assert store.flush(30), "the writer did not catch up"
            delta = {k: v - before[k] for k, v in store.counters.items()}
            assert delta == {**delta, "build_errors": 0, "write_retries": 0, "spilled": 0, "dropped": 0}, delta
            assert delta["written"] == 1, f"{delta['written']} rows written for one call"
            row = addon.rows.get(state.id)
            assert row and row["id"] == state.id
            comment(row)
            n = db.execute("SELECT count(*) FROM requests WHERE id = ?", [state.id]).fetchone()[0]
            assert n == 1
            stats["rows"] += 1
            stats["upstream"] += bool(state.call.status and not state.short_circuit)
            stats["streamed"] += bool(state.call.streamed and not state.short_circuit)
            stats["errors"] += bool(row["error"])
            stats["usage"] += row["total_tokens"] is not None
            stats["cost"] += bool(row["cost_usd"])
            stats["cache_hit"] += bool(row["cache_hit"])
            stats["rate_limited"] += bool(row["rate_limited"])

        try:
            check()
        finally:
            db.close()
            loop.run_until_complete(addon.done())
        print(stats)
        # the generator really reaches the interesting branches (rows from upstream answers, streams,
        # usage found and priced, short-circuits)
        n = MAX_EXAMPLES
        assert stats["llm"] > n // 4 and stats["rows"] > n // 5 and stats["short"] > n // 50, stats
        assert stats["upstream"] > n // 10 and stats["streamed"] > n // 50 and stats["usage"] > n // 50, stats
