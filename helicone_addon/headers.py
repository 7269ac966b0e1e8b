"""`Helicone-*` request headers -> one frozen `CallOptions`.

Every Helicone header name is spelled here only. A malformed value raises `HeaderError(header,
message)`, which the addon turns into a 400 JSON error naming the header and its accepted form (strict mode) or ignores (lenient mode,
Helicone's own behaviour; the problem is then kept in `CallOptions.warnings`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PREFIX = "helicone-"
PROPERTY_PREFIX = "helicone-property-"

H_AUTH = "helicone-auth"
H_USER_ID = "helicone-user-id"
H_SESSION_ID = "helicone-session-id"
H_SESSION_PATH = "helicone-session-path"
H_SESSION_NAME = "helicone-session-name"
H_REQUEST_ID = "helicone-request-id"
H_OMIT_REQUEST = "helicone-omit-request"
H_OMIT_RESPONSE = "helicone-omit-response"
H_CACHE_ENABLED = "helicone-cache-enabled"
H_CACHE_SAVE = "helicone-cache-save"
H_CACHE_READ = "helicone-cache-read"
H_CACHE_SEED = "helicone-cache-seed"
H_CACHE_BUCKET = "helicone-cache-bucket-max-size"
H_CACHE_IGNORE_KEYS = "helicone-cache-ignore-keys"
H_CACHE_CONTROL = "cache-control"  # the standard header, not stripped
H_RATE_LIMIT = "helicone-ratelimit-policy"
H_RETRY_ENABLED = "helicone-retry-enabled"
H_RETRY_NUM = "helicone-retry-num"
H_RETRY_FACTOR = "helicone-retry-factor"
H_RETRY_MIN = "helicone-retry-min-timeout"
H_RETRY_MAX = "helicone-retry-max-timeout"
H_FALLBACKS = "helicone-fallbacks"
H_TARGET_URL = "helicone-target-url"
H_OPENAI_API_BASE = "helicone-openai-api-base"
H_TARGET_PROVIDER = "helicone-target-provider"
H_MODEL_OVERRIDE = "helicone-model-override"
H_STREAM_USAGE = "helicone-stream-usage"
H_RERUN_OF = "helicone-rerun-of"  # set by `helicone-addon rerun`: id of the call re-sent (-> rerun_of)

# response headers
R_ID = "Helicone-Id"
R_STATUS = "Helicone-Status"
R_ERROR = "Helicone-Error"
R_CACHE = "Helicone-Cache"
R_CACHE_BUCKET_IDX = "Helicone-Cache-Bucket-Idx"
R_CACHE_LATENCY = "Helicone-Cache-Latency"
R_FALLBACK_INDEX = "Helicone-Fallback-Index"
R_RETRIES = "Helicone-Retries"
R_REPLAY = "Helicone-Replay"  # HIT | MISS (replay mode)
R_REPLAY_ID = "Helicone-Replay-Id"  # the recorded call that answered

UUID_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE
)

# Provider credentials: redacted wherever stored, hashed into cache keys.
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie", H_AUTH}
)


class HeaderError(ValueError):
    """A malformed Helicone header: `header` is its canonical name, `message` says the accepted form."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"{canonical(header)}: {message}")
        self.header = header
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": "invalid_helicone_header",
                "header": canonical(self.header),
                "message": self.message,
            }
        }


@dataclass(frozen=True)
class CacheOptions:
    read: bool = False
    write: bool = False
    seed: str | None = None
    bucket_size: int = 1
    ignore_keys: tuple[str, ...] = ()
    ttl_s: int = 604800  # DEFAULT_TTL_S


@dataclass(frozen=True)
class Fallback:
    target_url: str
    headers: dict[str, str]
    on_codes: tuple[tuple[int, int], ...]  # inclusive ranges
    body_override: dict[str, Any] | None = None

    def matches(self, status: int | None) -> bool:
        if status is None:  # connection error / time-out: always move on
            return True
        return any(lo <= status <= hi for lo, hi in self.on_codes)


@dataclass(frozen=True)
class CallOptions:
    request_id: str
    client_request_id: str | None = None
    auth: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    session_path: str | None = None
    session_name: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    omit_request: bool = False
    omit_response: bool = False
    cache: CacheOptions = CacheOptions()
    rate_limit: Any = None  # ratelimit.Policy
    retry: Any = None  # retry.RetryPolicy
    fallbacks: tuple[Fallback, ...] = ()
    target_url: str | None = None
    target_provider: str | None = None
    model_override: str | None = None
    stream_usage: bool = False
    warnings: tuple[str, ...] = ()


_CANONICAL = {H_RATE_LIMIT: "Helicone-RateLimit-Policy", H_OPENAI_API_BASE: "Helicone-OpenAI-Api-Base"}


def canonical(name: str) -> str:
    """'helicone-cache-bucket-max-size' -> 'Helicone-Cache-Bucket-Max-Size'."""
    low = name.lower()
    return _CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def is_helicone(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def new_request_id() -> str:
    return str(uuid.uuid4())


# Headers that take a boolean: `true` / `false`, any letter case, surrounding spaces ignored.
BOOLEAN_HEADERS = (H_OMIT_REQUEST, H_OMIT_RESPONSE, H_CACHE_ENABLED, H_CACHE_SAVE, H_CACHE_READ,
                   H_RETRY_ENABLED, H_STREAM_USAGE)
BOOLEAN_FORM = "true or false"


def _flag(name: str, value: str | None) -> bool:
    """A boolean header's value; absent is false. Anything but true/false is a HeaderError."""
    if value is None:
        return False
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise HeaderError(name, f"{value!r} is not a boolean; accepted: {BOOLEAN_FORM}")


def _int(name: str, value: str, lo: int | None = None, hi: int | None = None, form: str = "") -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise HeaderError(name, f"{value!r} is not an integer; accepted: {form or 'an integer'}") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise HeaderError(name, f"{n} is out of range; accepted: {form}")
    return n


def _float(name: str, value: str, lo: float, form: str) -> float:
    try:
        n = float(value.strip())
    except ValueError:
        raise HeaderError(name, f"{value!r} is not a number; accepted: {form}") from None
    if n != n or n < lo or n == float("inf"):
        raise HeaderError(name, f"{value!r} is out of range; accepted: {form}")
    return n


def parse(headers: Iterable[tuple[str, str]], *, strict: bool = True) -> CallOptions:
    """Read every Helicone header (case-insensitive names) into CallOptions.

    strict=True raises HeaderError on the first malformed value. strict=False ignores a malformed
    feature header as Helicone does and records why in `warnings`.
    """
    h: dict[str, str] = {}
    properties: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        if low.startswith(PROPERTY_PREFIX) and len(low) > len(PROPERTY_PREFIX):
            properties[low[len(PROPERTY_PREFIX) :]] = value
        elif low.startswith(PREFIX) or low == H_CACHE_CONTROL:
            h[low] = value
    warnings: list[str] = []

    def lenient(fn, default):
        try:
            return fn()
        except HeaderError as e:
            if strict:
                raise
            warnings.append(str(e))
            return default

    rid = h.get(H_REQUEST_ID, "").strip()
    client_rid = None
    if rid and UUID_RE.match(rid):
        request_id = rid.lower()
    else:
        request_id = new_request_id()
        client_rid = rid or None

    # Each boolean on its own: a bad one is off (lenient) without dropping its neighbours.
    flags = {name: lenient(lambda name=name: _flag(name, h.get(name)), False) for name in BOOLEAN_HEADERS}
    auth = h.get(H_AUTH)
    cache = lenient(lambda: _cache_options(h, flags), CacheOptions())
    rate_limit = lenient(lambda: _rate_limit(h), None)
    retry = lenient(lambda: _retry(h, flags[H_RETRY_ENABLED]), None)
    fallbacks = lenient(lambda: _fallbacks(h), ())
    target_url = lenient(lambda: _target_url(h), None)

    return CallOptions(
        request_id=request_id,
        client_request_id=client_rid,
        auth=auth,
        user_id=h.get(H_USER_ID) or None,
        session_id=h.get(H_SESSION_ID) or None,
        session_path=h.get(H_SESSION_PATH) or None,
        session_name=h.get(H_SESSION_NAME) or None,
        properties=properties,
        omit_request=flags[H_OMIT_REQUEST],
        omit_response=flags[H_OMIT_RESPONSE],
        cache=cache,
        rate_limit=rate_limit,
        retry=retry,
        fallbacks=fallbacks,
        target_url=target_url,
        target_provider=h.get(H_TARGET_PROVIDER) or None,
        model_override=h.get(H_MODEL_OVERRIDE) or None,
        stream_usage=flags[H_STREAM_USAGE],
        warnings=tuple(warnings),
    )


# -- Helicone-Cache-* and Cache-Control grammar -------------------------------------------------

DEFAULT_TTL_S = 604800  # 7 days (Helicone default)
MAX_TTL_S = 31536000  # 365 days (Helicone clamp)
MAX_BUCKET_SIZE = 20
_DIGITS = re.compile(r"[0-9]+")


def ttl_from_cache_control(
    value: str | None, default: int = DEFAULT_TTL_S, maximum: int = MAX_TTL_S
) -> int:
    """TTL in seconds from a `Cache-Control` value: `s-maxage=N` wins over `max-age=N`.

    No value / no such directive -> `default`. Values above `maximum` are clamped. Other
    directives are ignored. A negative, fractional or non-numeric value raises ValueError.
    """
    if value is None:
        return min(default, maximum)
    found: dict[str, int] = {}
    for directive in value.split(","):
        name, eq, raw = directive.partition("=")
        name = name.strip().lower()
        if name not in ("max-age", "s-maxage"):
            continue
        v = raw.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1].strip()
        if not eq or not _DIGITS.fullmatch(v):
            raise ValueError(
                f"invalid Cache-Control directive {directive.strip()!r}; accepted: "
                "max-age=N or s-maxage=N with N a whole number of seconds "
                f"(0 or more; values over {maximum} are clamped to {maximum})"
            )
        found.setdefault(name, int(v))  # first occurrence wins
    ttl = found.get("s-maxage", found.get("max-age", default))
    return min(ttl, maximum)


def parse_bucket_size(value: str | None) -> int:
    """`Helicone-Cache-Bucket-Max-Size`: absent -> 1; else an integer from 1 to 20."""
    if value is None:
        return 1
    v = value.strip()
    if _DIGITS.fullmatch(v):
        n = int(v)
        if 1 <= n <= MAX_BUCKET_SIZE:
            return n
    raise ValueError(
        f"invalid bucket size {value!r}; accepted: an integer from 1 to {MAX_BUCKET_SIZE}"
    )


def parse_ignore_keys(value: str | None) -> tuple[str, ...]:
    """`Helicone-Cache-Ignore-Keys`: comma list, trimmed, empties dropped (duplicates too)."""
    if not value:
        return ()
    out: dict[str, None] = {}
    for part in value.split(","):
        p = part.strip()
        if p:
            out[p] = None
    return tuple(out)


def _cache_options(h: dict[str, str], flags: dict[str, bool]) -> CacheOptions:
    # Helicone checks the bucket size on every request, cache on or off.
    bucket = 1
    if H_CACHE_BUCKET in h:
        try:
            bucket = parse_bucket_size(h[H_CACHE_BUCKET])
        except ValueError as e:
            raise HeaderError(H_CACHE_BUCKET, str(e)) from None
    enabled = flags[H_CACHE_ENABLED]
    read = enabled or flags[H_CACHE_READ]
    write = enabled or flags[H_CACHE_SAVE]
    if not (read or write):
        return CacheOptions(bucket_size=bucket)
    try:
        ttl = ttl_from_cache_control(h.get(H_CACHE_CONTROL))
    except ValueError as e:
        raise HeaderError(H_CACHE_CONTROL, str(e)) from None
    return CacheOptions(
        read=read,
        write=write,
        seed=h.get(H_CACHE_SEED) or None,
        bucket_size=bucket,
        ignore_keys=parse_ignore_keys(h.get(H_CACHE_IGNORE_KEYS)),
        ttl_s=ttl,
    )


def _rate_limit(h: dict[str, str]):
    value = h.get(H_RATE_LIMIT)
    if value is None:
        return None
    from . import ratelimit

    try:
        return ratelimit.parse_policy(value)
    except ValueError as e:
        raise HeaderError(H_RATE_LIMIT, str(e)) from None


def _retry(h: dict[str, str], enabled: bool):
    if not enabled:
        return None
    from .retry import RetryPolicy

    num = _int(H_RETRY_NUM, h[H_RETRY_NUM], 0, 20, "an integer from 0 to 20") if H_RETRY_NUM in h else 5
    factor = _float(H_RETRY_FACTOR, h[H_RETRY_FACTOR], 1.0, "a number >= 1") if H_RETRY_FACTOR in h else 2.0
    lo = _int(H_RETRY_MIN, h[H_RETRY_MIN], 0, 600000, "milliseconds from 0 to 600000") if H_RETRY_MIN in h else 1000
    hi = _int(H_RETRY_MAX, h[H_RETRY_MAX], 0, 600000, "milliseconds from 0 to 600000") if H_RETRY_MAX in h else 10000
    if hi < lo:
        raise HeaderError(H_RETRY_MAX, f"{hi} is below {canonical(H_RETRY_MIN)} ({lo}); accepted: max >= min")
    return RetryPolicy(num=num, factor=factor, min_ms=lo, max_ms=hi)


_FALLBACK_FORM = (
    'a JSON array of {"target-url": "https://host", "headers": {"name": "value"}, '
    '"onCodes": [429, {"from": 500, "to": 599}]}'
)


def _fallbacks(h: dict[str, str]) -> tuple[Fallback, ...]:
    value = h.get(H_FALLBACKS)
    if value is None:
        return ()
    try:
        data = json.loads(value)
    except ValueError as e:
        raise HeaderError(H_FALLBACKS, f"not valid JSON ({e}); accepted: {_FALLBACK_FORM}") from None
    if not isinstance(data, list) or not data:
        raise HeaderError(H_FALLBACKS, f"must be a non-empty array; accepted: {_FALLBACK_FORM}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("target-url"), str):
            raise HeaderError(H_FALLBACKS, f"entry {i} has no string target-url; accepted: {_FALLBACK_FORM}")
        url = item["target-url"]
        if not re.match(r"^https?://[^/\s]+", url):
            raise HeaderError(H_FALLBACKS, f"entry {i} target-url {url!r} is not an http(s) URL")
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise HeaderError(H_FALLBACKS, f"entry {i} headers must be an object of strings")
        codes = item.get("onCodes", [])
        if not isinstance(codes, list):
            raise HeaderError(H_FALLBACKS, f"entry {i} onCodes must be an array; accepted: {_FALLBACK_FORM}")
        ranges = []
        for c in codes:
            if isinstance(c, int) and not isinstance(c, bool):
                ranges.append((c, c))
            elif isinstance(c, dict) and isinstance(c.get("from"), int) and isinstance(c.get("to"), int):
                ranges.append((c["from"], c["to"]))
            else:
                raise HeaderError(H_FALLBACKS, f"entry {i} onCodes item {c!r}; accepted: {_FALLBACK_FORM}")
        override = item.get("bodyKeyOverride")
        if override is not None and not isinstance(override, dict):
            raise HeaderError(H_FALLBACKS, f"entry {i} bodyKeyOverride must be an object")
        out.append(Fallback(url, dict(headers), tuple(ranges), override))
    return tuple(out)


@dataclass(frozen=True)
class Target:
    """An upstream origin named by Helicone-Target-Url / Helicone-OpenAI-Api-Base."""

    scheme: str
    host: str
    port: int

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def parse_target(name: str, value: str) -> Target:
    """Only the origin of the URL is used, as Helicone does; path and query come from the request."""
    from urllib.parse import urlsplit

    form = "accepted: http(s)://host[:port] (only the origin is used)"
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as e:
        raise HeaderError(name, f"{value!r} is not a valid URL ({e}); {form}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HeaderError(name, f"{value!r} is not an http(s) URL; {form}")
    if parts.username is not None or parts.password is not None:
        raise HeaderError(name, f"{value!r} has credentials in it; {form}")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def _target_url(h: dict[str, str]) -> str | None:
    for name in (H_OPENAI_API_BASE, H_TARGET_URL):
        value = h.get(name)
        if value:
            return parse_target(name, value).origin
    return None
