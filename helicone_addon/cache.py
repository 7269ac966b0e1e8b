"""Response cache: Helicone's cache-key recipe and N-slot buckets on a local diskcache.

Pure module (no mitmproxy import). See SPEC A.4 and B.3.

Key recipe (SPEC B.3.2 as amended by A.4)::

    base   = sha256_hex(seed + url' + body' + JSON.stringify(entries))
    slot_i = base if i == 0 else sha256_hex(base + str(i))

* ``url'`` is the incoming URL with every ``key=`` query parameter removed (its value enters
  ``entries`` as a hash instead).
* ``body'`` is the body re-serialised compactly (key order kept) after dropping the top-level
  ``Helicone-Cache-Ignore-Keys``, when it is JSON; the raw bytes otherwise.
* ``entries`` are ``[name, value]`` pairs sorted by lower-cased name: every ``helicone-cache*``
  header with its clear value, and ``helicone-auth`` plus the provider credential
  (``authorization``, ``x-api-key``, ``api-key``, ``x-goog-api-key``, URL ``?key=``) with the
  value replaced by ``"sha256:" + sha256_hex(value)``. Two API keys never share entries and no
  secret ever appears in the key material or in the cache directory.

Storage: one diskcache ``Cache`` per directory (SQLite in WAL mode, safe for several processes),
values kept inline in SQLite (no value files), 'least-recently-stored' eviction above
``size_limit``. Values are a small self-describing binary format (magic + JSON metadata + raw
bytes, optionally zlib-compressed); nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import struct
import time
import zlib
from urllib.parse import unquote, unquote_plus
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import diskcache
from diskcache.core import MODE_RAW

from .config import private_diskcache_dir, restrict_files

log = logging.getLogger(__name__)

__all__ = [
    "CachedResponse",
    "CacheFormatError",
    "ResponseCache",
    "cache_key",
    "slot_key",
    "ttl_from_cache_control",
    "parse_bucket_size",
    "parse_ignore_keys",
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "MAX_BUCKET_SIZE",
    "CREDENTIAL_HEADERS",
]

DEFAULT_TTL_S = 604800  # 7 days (Helicone default)
MAX_TTL_S = 31536000  # 365 days (Helicone clamp)
MAX_BUCKET_SIZE = 20

#: Request headers carrying a provider credential; they enter the key only as a hash.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_HASHED_HEADERS = frozenset(CREDENTIAL_HEADERS) | {"helicone-auth"}
_URL_KEY_ENTRY = "?key"  # entry name for a URL `key=` credential (cannot clash with a header name)


# --------------------------------------------------------------------------------------------
# Key recipe
# --------------------------------------------------------------------------------------------


def _sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def _hashed(value: str) -> str:
    return "sha256:" + _sha256_hex(value)


def _split_url_credentials(url: str) -> tuple[str, list[str]]:
    """Return (url without `key=` query parameters, [their decoded values])."""
    qpos = url.find("?")
    if qpos < 0:
        return url, []
    hpos = url.find("#", qpos)
    base, query, frag = url[:qpos], url[qpos + 1 :], ""
    if hpos >= 0:
        query, frag = url[qpos + 1 : hpos], url[hpos:]
    if "key" not in query.lower() and "%" not in query:
        return url, []
    kept: list[str] = []
    secrets: list[str] = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if unquote_plus(name).strip().lower() == "key":
            secrets.append(unquote(value))
        else:
            kept.append(part)
    if not secrets:
        return url, []
    new = base + ("?" + "&".join(kept) if kept else "") + frag
    return new, secrets


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _normalised_body(body: bytes, ignore_keys: tuple[str, ...]) -> bytes:
    """JSON -> drop top-level ignore keys, compact re-serialisation keeping key order; else raw."""
    if not body:
        return b""
    stripped = body.lstrip()
    if not stripped or stripped[:1] not in b'{["-0123456789tfn\xef\xfe\xff\x00':
        return body  # not JSON (fast path for form bodies, binary uploads, ...)
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body
    if ignore_keys and isinstance(obj, dict):
        for k in ignore_keys:
            obj.pop(k, None)
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError):
        return body
    return text.encode("utf-8", "surrogatepass")


def _key_entries(
    url_secrets: Iterable[str], headers: Iterable[tuple[str, str]], credentials: bool = True
) -> list[list[str]]:
    combined: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in _HASHED_HEADERS and not credentials:
            continue
        if lname.startswith("helicone-cache") or lname in _HASHED_HEADERS:
            # duplicate header lines are combined like Fetch `Headers` does
            combined[lname] = combined[lname] + ", " + value if lname in combined else value
    entries = [
        [n, _hashed(v) if n in _HASHED_HEADERS else v] for n, v in combined.items()
    ]
    if credentials:
        entries.extend([_URL_KEY_ENTRY, _hashed(s)] for s in url_secrets)
    entries.sort(key=lambda e: e[0])  # stable: several ?key= keep their order
    return entries


def _key_material(
    *,
    seed: str | None,
    url: str,
    body: bytes,
    headers: Iterable[tuple[str, str]],
    ignore_keys: tuple[str, ...] = (),
    credentials: bool = True,
) -> bytes:
    """The exact bytes hashed by :func:`cache_key` (exposed for tests and debugging)."""
    clean_url, url_secrets = _split_url_credentials(url)
    entries = _key_entries(url_secrets, headers, credentials)
    enc = "utf-8"
    return b"".join(
        (
            (seed or "").encode(enc, "surrogatepass"),
            clean_url.encode(enc, "surrogatepass"),
            _normalised_body(body or b"", tuple(ignore_keys)),
            json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode(
                enc, "surrogatepass"
            ),
        )
    )


def cache_key(
    *,
    seed: str | None,
    url: str,
    body: bytes,
    headers: list[tuple[str, str]],
    ignore_keys: tuple[str, ...] = (),
    credentials: bool = True,
) -> str:
    """Base cache key (hex sha256) of a request. Pass ALL request headers; the recipe picks.

    `url` is the incoming URL as the proxy saw it (after removing any path-embedded Helicone
    key). Bucket slots are derived with :func:`slot_key`. With ``credentials=False`` the
    provider credential and ``helicone-auth`` stay out of the key entirely (URL ``key=`` values
    are still removed from the URL): two callers with different keys get the same key. The
    replay matcher (helicone_addon/replay.py) uses this; the response cache never does.
    """
    return hashlib.sha256(
        _key_material(
            seed=seed, url=url, body=body, headers=headers, ignore_keys=ignore_keys,
            credentials=credentials,
        )
    ).hexdigest()


def slot_key(base: str, i: int) -> str:
    """Key of bucket slot `i`: the base key itself for 0, else sha256_hex(base + str(i))."""
    if i < 0:
        raise ValueError("slot index must be >= 0")
    return base if i == 0 else _sha256_hex(base + str(i))


# --------------------------------------------------------------------------------------------
# Header parsing
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Stored entry
# --------------------------------------------------------------------------------------------


class CacheFormatError(ValueError):
    """A stored value is not a valid (current-version) cache entry."""


@dataclass
class CachedResponse:
    """One cached upstream response (decoded body, identity encoding)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    streamed: bool = False
    chunks: list[bytes] | None = None  # SSE chunks as received, for replay
    chunk_offsets_ms: list[float] | None = None  # offset of each chunk from the first
    latency_ms: float = 0.0
    request_id: str = ""  # id of the row that produced it (-> cache_reference_id)
    model: str | None = None
    provider: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_source: str | None = None
    cost_usd: float | None = None
    created_at: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "CachedResponse":
        return _decode(data)


# Format: MAGIC(4) VERSION(1) FLAGS(1) META_LEN(u32 BE) TOTAL_LEN(u32 BE) BLOB
# BLOB = META (JSON, ascii) + PAYLOAD, zlib-compressed as a whole when FLAG_ZLIB; META_LEN and
# TOTAL_LEN are the uncompressed lengths. PAYLOAD = body + chunks (the chunks are omitted when
# they are exactly the body split at `chunks.lens`, the usual SSE case). META holds every other
# field. Nothing in the format is executable; every field is type-checked on the way back.
_MAGIC = b"HLCR"
_VERSION = 1
_FLAG_ZLIB = 0x01
_HDR = struct.Struct(">4sBBII")
_COMPRESS_MIN = 2048
_OPT_INT = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
            "cache_write_tokens", "reasoning_tokens")  # fmt: skip
_OPT_STR = ("model", "provider", "usage_source")


def _encode(e: CachedResponse) -> bytes:
    body = bytes(e.body)
    chunks = None if e.chunks is None else [bytes(c) for c in e.chunks]
    meta: dict[str, Any] = {
        "status": int(e.status),
        "headers": [[str(n), str(v)] for n, v in e.headers],
        "streamed": bool(e.streamed),
        "chunk_offsets_ms": None
        if e.chunk_offsets_ms is None
        else [float(x) for x in e.chunk_offsets_ms],
        "latency_ms": float(e.latency_ms),
        "request_id": str(e.request_id),
        "cost_usd": None if e.cost_usd is None else float(e.cost_usd),
        "created_at": float(e.created_at),
        "body_len": len(body),
    }
    for k in _OPT_INT:
        v = getattr(e, k)
        meta[k] = None if v is None else int(v)
    for k in _OPT_STR:
        v = getattr(e, k)
        meta[k] = None if v is None else str(v)
    parts = [body]
    if chunks is None:
        meta["chunks"] = None
    else:
        lens = [len(c) for c in chunks]
        from_body = sum(lens) == len(body) and b"".join(chunks) == body
        meta["chunks"] = {"lens": lens, "from_body": from_body}
        if not from_body:
            parts.extend(chunks)
    mj = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("ascii")
    blob = b"".join([mj, *parts])
    flags = 0
    if len(blob) >= _COMPRESS_MIN:
        packed = zlib.compress(blob, 1)
        if len(packed) < len(blob) * 0.9:
            blob, flags = packed, _FLAG_ZLIB
    total = len(mj) + sum(len(p) for p in parts)
    if total > 0xFFFFFFFF:
        raise ValueError("response too large to cache")
    return _HDR.pack(_MAGIC, _VERSION, flags, len(mj), total) + blob


def _check_header(data: Any) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < _HDR.size:
        raise CacheFormatError("not a cache entry (too short or not bytes)")
    magic, version, _flags, _mlen, _total = _HDR.unpack_from(data)
    if magic != _MAGIC:
        raise CacheFormatError("not a cache entry (bad magic)")
    if version != _VERSION:
        raise CacheFormatError(f"unsupported cache entry version {version}")


def _want(meta: dict[str, Any], name: str, types: tuple[type, ...], optional: bool = False) -> Any:
    v = meta.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
        raise CacheFormatError(f"bad field {name!r}")
    return v


def _decode(data: bytes) -> CachedResponse:
    try:
        return _decode_unchecked(data)
    except CacheFormatError:
        raise
    except Exception as exc:  # struct/json/zlib/type errors of a damaged value
        raise CacheFormatError(f"damaged cache entry: {exc!r}") from exc


def _decode_unchecked(data: bytes) -> CachedResponse:
    _check_header(data)
    data = bytes(data)
    _magic, _version, flags, mlen, total = _HDR.unpack_from(data)
    blob = data[_HDR.size :]
    if flags & ~_FLAG_ZLIB or mlen > total:
        raise CacheFormatError("bad entry header")
    if flags & _FLAG_ZLIB:
        d = zlib.decompressobj()
        blob = d.decompress(blob, total + 1)  # bounded: no zip bomb
        if d.unconsumed_tail or not d.eof or d.unused_data:
            raise CacheFormatError("bad compressed payload")
    if len(blob) != total:
        raise CacheFormatError("entry length mismatch")
    meta = json.loads(blob[:mlen].decode("ascii"))
    if not isinstance(meta, dict):
        raise CacheFormatError("bad metadata")
    payload = blob[mlen:]
    body_len = _want(meta, "body_len", (int,))
    if not 0 <= body_len <= len(payload):
        raise CacheFormatError("bad body length")
    body = payload[:body_len]
    rest = payload[body_len:]
    chunks: list[bytes] | None = None
    cm = meta.get("chunks")
    if cm is None:
        if rest:
            raise CacheFormatError("trailing payload bytes")
    else:
        if not isinstance(cm, dict):
            raise CacheFormatError("bad chunks")
        lens = _want(cm, "lens", (list,))
        from_body = _want(cm, "from_body", (bool,))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lens):
            raise CacheFormatError("bad chunk lengths")
        src = body if from_body else rest
        if sum(lens) != len(src) or (from_body and rest):
            raise CacheFormatError("chunk lengths do not match payload")
        chunks, pos = [], 0
        for n in lens:
            chunks.append(src[pos : pos + n])
            pos += n
    headers_raw = _want(meta, "headers", (list,))
    headers: list[tuple[str, str]] = []
    for h in headers_raw:
        if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
            raise CacheFormatError("bad headers")
        headers.append((h[0], h[1]))
    offsets = _want(meta, "chunk_offsets_ms", (list,), optional=True)
    if offsets is not None:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in offsets):
            raise CacheFormatError("bad chunk offsets")
        offsets = [float(x) for x in offsets]
    kw: dict[str, Any] = {}
    for k in _OPT_INT:
        kw[k] = _want(meta, k, (int,), optional=True)
    for k in _OPT_STR:
        kw[k] = _want(meta, k, (str,), optional=True)
    cost = _want(meta, "cost_usd", (int, float), optional=True)
    return CachedResponse(
        status=_want(meta, "status", (int,)),
        headers=headers,
        body=body,
        streamed=_want(meta, "streamed", (bool,)),
        chunks=chunks,
        chunk_offsets_ms=offsets,
        latency_ms=float(_want(meta, "latency_ms", (int, float))),
        request_id=_want(meta, "request_id", (str,)),
        cost_usd=None if cost is None else float(cost),
        created_at=float(_want(meta, "created_at", (int, float))),
        **kw,
    )


# --------------------------------------------------------------------------------------------
# Disk store
# --------------------------------------------------------------------------------------------


class _UnsafeValue(Exception):
    """A row that this cache never writes (pickled key/value, value file)."""


class _SafeDisk(diskcache.Disk):
    """Disk that only ever reads/writes raw bytes kept in SQLite: never unpickles, never
    follows a row's filename (a damaged or hostile row is rejected, not executed/read)."""

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise _UnsafeValue("pickled key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if type(value) is not bytes or read:
            raise TypeError("ResponseCache stores bytes only")
        return 0, MODE_RAW, None, sqlite3.Binary(value)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode != MODE_RAW or filename is not None or read:
            raise _UnsafeValue(f"unexpected storage mode {mode}")
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value

    def remove(self, file_path: Any) -> None:
        # This cache never creates value files; only delete one that is really inside the dir.
        if not file_path:
            return
        root = os.path.realpath(self._directory)
        full = os.path.realpath(os.path.join(self._directory, file_path))
        if os.path.commonpath([root, full]) == root and full != root:
            super().remove(file_path)


class _RNG(Protocol):
    def randrange(self, n: int, /) -> int: ...




class ResponseCache:
    """N-slot response buckets on a diskcache directory shared by any number of processes.

    The directory is dedicated to the cache: it is made 0700 and its files 0600. The
    constructor raises OSError / sqlite3.Error if the directory cannot be opened; after that
    `lookup` and `store` never raise (disk trouble is logged and reads as a miss / not stored).
    Calls are blocking (tens of microseconds); they are thread-safe (one SQLite connection
    per thread) and fork-safe.
    """

    def __init__(self, directory: str, size_limit: int = 1 << 30, *, timeout: float = 2.0):
        directory = private_diskcache_dir(directory)
        self.directory = directory
        self._cache = diskcache.Cache(
            directory,
            timeout=timeout,
            disk=_SafeDisk,
            size_limit=int(size_limit),
            eviction_policy="least-recently-stored",
            disk_min_file_size=1 << 62,  # values always inline in SQLite
            statistics=0,
            tag_index=0,
        )
        restrict_files(directory)

    # -- reading ---------------------------------------------------------------------------

    def _get_raw(self, key: str) -> Any:
        try:
            return self._cache.get(key, default=None, retry=False)
        except _UnsafeValue as exc:
            log.warning("helicone cache: dropping unreadable entry %s: %s", key[:16], exc)
            self._discard(key, None)
        except Exception as exc:  # sqlite3.Error, diskcache.Timeout, OSError, ...
            log.warning("helicone cache: read of %s failed: %r", key[:16], exc)
        return None

    def _discard(self, key: str, seen: Any) -> None:
        """Delete a bad entry; with `seen`, only if the slot still holds those bytes."""
        try:
            if seen is None:
                self._cache.delete(key, retry=False)
                return
            with self._cache.transact(retry=False):
                try:
                    current = self._cache.get(key, default=None)
                except _UnsafeValue:
                    current = seen
                if current == seen:
                    self._cache.delete(key)
        except Exception as exc:
            log.warning("helicone cache: could not delete bad entry %s: %r", key[:16], exc)

    def lookup(
        self, base: str, bucket_size: int = 1, rng: _RNG = random
    ) -> tuple[CachedResponse, int] | None:
        """HIT only when all `bucket_size` slots are filled: (a uniformly picked entry, index).

        Any empty, expired, corrupt or unreadable slot -> None (MISS); a corrupt slot is deleted.
        """
        n = max(1, int(bucket_size))
        raws: list[Any] = []
        for i in range(n):
            k = slot_key(base, i)
            raw = self._get_raw(k)
            if raw is None:
                return None
            try:
                _check_header(raw)
            except CacheFormatError as exc:
                log.warning("helicone cache: dropping corrupt entry %s: %s", k[:16], exc)
                self._discard(k, raw)
                return None
            raws.append(raw)
        idx = rng.randrange(n) if n > 1 else 0
        try:
            entry = _decode(raws[idx])
        except CacheFormatError as exc:
            k = slot_key(base, idx)
            log.warning("helicone cache: dropping corrupt entry %s: %s", k[:16], exc)
            self._discard(k, raws[idx])
            return None
        return entry, idx

    # -- writing ---------------------------------------------------------------------------

    def store(self, base: str, bucket_size: int, entry: CachedResponse, ttl_s: int) -> int | None:
        """Put `entry` into the first empty slot (atomic across processes: an occupied slot is
        never overwritten). Returns the slot index, or None if all full / ttl <= 0 / error."""
        if ttl_s is None or ttl_s <= 0:
            return None
        try:
            data = _encode(entry)
        except Exception:
            log.exception("helicone cache: cannot serialise response for %s", base[:16])
            return None
        n = max(1, int(bucket_size))
        for i in range(n):
            k = slot_key(base, i)
            try:
                if self._cache.add(k, data, expire=float(ttl_s), retry=False):
                    return i
            except Exception as exc:
                log.warning("helicone cache: write of %s failed: %r", k[:16], exc)
                return None
        return None

    # -- misc ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        """Estimated size on disk in bytes."""
        return self._cache.volume()

    def clear(self) -> int:
        return self._cache.clear(retry=True)

    def close(self) -> None:
        try:
            self._cache.close()
        except Exception as exc:
            log.warning("helicone cache: close failed: %r", exc)

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
