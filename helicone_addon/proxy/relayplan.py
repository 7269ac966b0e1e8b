"""What a relayed call will try, decided before any byte goes out: its targets (the URL, then each
Helicone-Fallbacks entry with its headers and merged body), its time-out, and the words for an
attempt that got no answer. No I/O here; `relay.py` runs the plan.
"""

from __future__ import annotations

import copy
import errno as errno_mod
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from helicone_addon import headers as hh
from helicone_addon.retry import RetryPolicy

logger = logging.getLogger(__name__)

TOKEN_HEADER = "x-helicone-relay-token"
JOB_TTL_S = 900.0  # a job whose flow never reached the relay (client gone, flow killed) is dropped
DISCARD_LIMIT = 1 << 20  # bytes of a retried/abandoned answer read before its connection is dropped
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_DEFAULT_CLIENT_HEADERS = ("accept", "accept-encoding", "user-agent", "connection")


@dataclass
class Target:
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    fallback: hh.Fallback | None = None


@dataclass
class Job:
    flow: Any
    state: Any
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    policy: RetryPolicy | None
    fallbacks: tuple[hh.Fallback, ...]
    proxy: str | None
    origin: tuple[str, str, int]  # scheme, host, port of the real target, restored on the flow
    created: float = field(default_factory=time.monotonic)


class RelayError(Exception):
    """Raised inside the relay for a failure that is not the provider's."""


def deep_merge(base: Any, override: Any) -> Any:
    """`override` merged into `base`: objects merge key by key, anything else (leaves) overwrites."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def fallback_targets(job: Job) -> list[Target]:
    """One target per Helicone-Fallbacks entry."""
    out = []
    tail = path_and_query(job.url)
    ctype = next((v for k, v in job.headers if k.lower() == b"content-type"), None)
    for fb in job.fallbacks:
        hdrs = [(k.encode(), v.encode()) for k, v in fb.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length")]
        if ctype is not None and not any(k.lower() == b"content-type" for k, _ in hdrs):
            hdrs.append((b"content-type", ctype))
        body = job.body
        if fb.body_override:
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = None
            if isinstance(data, dict):
                body = json.dumps(deep_merge(data, fb.body_override)).encode()
        out.append(Target(origin_of(fb.target_url) + tail, hdrs, body, fb))
    return out


_bad_timeouts: set[str] = set()


def parse_timeout(value: Any, default: float = 600.0) -> float | None:
    """`helicone_upstream_timeout` (a string option: mitmproxy's --set cannot parse floats) in
    seconds; <= 0 means no limit; an unreadable value falls back to the default (logged once)."""
    if value is None or value == "":
        return default
    try:
        t = float(value)
    except (TypeError, ValueError):
        if str(value) not in _bad_timeouts:
            _bad_timeouts.add(str(value))
            logger.warning("helicone: helicone_upstream_timeout=%r is not a number; using %s s", value, default)
        return default
    if math.isnan(t):
        return default
    return t if t > 0 else None


def describe_failure(exc: BaseException | None) -> str:
    """A short human cause for an attempt that got no answer: 'connection refused ([Errno 111] ...)'."""
    if exc is None:
        return "no answer"
    if isinstance(exc, httpx.TimeoutException):
        kind = {
            httpx.ConnectTimeout: "connect timed out",
            httpx.ReadTimeout: "timed out waiting for the provider's answer",
            httpx.WriteTimeout: "timed out sending the request",
            httpx.PoolTimeout: "timed out waiting for a free connection",
        }.get(type(exc), "timed out")
        return f"{kind} ({type(exc).__name__})"
    oserr = None
    e: BaseException | None = exc
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            oserr = e
        e = e.__cause__ or e.__context__
    if oserr is not None:
        name = {
            errno_mod.ECONNREFUSED: "connection refused",
            errno_mod.ECONNRESET: "connection reset",
            errno_mod.EHOSTUNREACH: "host unreachable",
            errno_mod.ENETUNREACH: "network unreachable",
        }.get(oserr.errno, os.strerror(oserr.errno).lower())
        return f"{name} ({oserr})"
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({msg})"
    if isinstance(exc, httpx.ProxyError):
        return f"upstream proxy error ({msg})"
    return f"{type(exc).__name__}: {msg}"
