"""Response cache: Helicone's cache-key recipe and N-slot buckets on a local diskcache.

Pure module (no mitmproxy import). Headers and behaviour: README, "Caching, rate limits, retries".

Key recipe (Helicone's; here the credentials enter only as hashes)::

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
``size_limit``. Values are a magic, one line of JSON metadata and the raw body (see
`CachedResponse`); nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import time
import zlib
from urllib.parse import unquote, unquote_plus
from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Iterable

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
        "CREDENTIAL_HEADERS",
]


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
# Stored entry
# --------------------------------------------------------------------------------------------


class CacheFormatError(ValueError):
    """A stored value is not a valid (current-version) cache entry."""


@dataclass
class CachedResponse:
    """One cached upstream response. The body is stored content-decoded; a hit's usage and cost
    are read from it again when its row is built, so the entry holds nothing else of the call."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    streamed: bool = False
    latency_ms: float = 0.0  # of the call that filled it (Helicone-Cache-Latency)
    request_id: str = ""  # id of the row that produced it (-> cache_reference_id)
    created_at: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedResponse:
        return _decode(data)


# Format, readable at a glance:  b"HLC2 " + metadata as one line of JSON + b"\n" + body
# The body is zlib-compressed when that pays ("zlib": true). Nothing in it is executable; every
# field is type-checked on the way back, and a damaged entry reads as CacheFormatError (a miss).
_MAGIC = b"HLC2 "
_COMPRESS_MIN = 2048
_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (int,), "headers": (list,), "streamed": (bool,), "latency_ms": (int, float),
    "request_id": (str,), "created_at": (int, float), "zlib": (bool,), "body_len": (int,),
}  # fmt: skip


def _encode(e: CachedResponse) -> bytes:
    body = bytes(e.body)
    stored, packed = body, False
    if len(body) >= _COMPRESS_MIN:
        z = zlib.compress(body, 1)
        if len(z) < len(body) * 0.9:
            stored, packed = z, True
    meta = {
        "status": int(e.status), "headers": [[str(n), str(v)] for n, v in e.headers],
        "streamed": bool(e.streamed), "latency_ms": float(e.latency_ms), "request_id": str(e.request_id),
        "created_at": float(e.created_at), "zlib": packed, "body_len": len(body),
    }  # fmt: skip
    line = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("ascii")
    return _MAGIC + line + b"\n" + stored


def _check_header(data: Any) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[: len(_MAGIC)]) != _MAGIC:
        raise CacheFormatError("not a cache entry (bad magic)")


def _decode(data: bytes) -> CachedResponse:
    _check_header(data)
    line, nl, stored = bytes(data[len(_MAGIC) :]).partition(b"\n")
    try:
        meta = json.loads(line.decode("ascii"))
    except ValueError as exc:
        raise CacheFormatError(f"bad metadata: {exc}") from None
    if not nl or not isinstance(meta, dict) or set(meta) != set(_FIELDS):
        raise CacheFormatError("bad metadata")
    for name, types in _FIELDS.items():
        v = meta[name]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise CacheFormatError(f"bad field {name!r}")
    if not all(isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in meta["headers"]):
        raise CacheFormatError("bad headers")
    body = stored
    if meta["zlib"]:
        d = zlib.decompressobj()
        try:
            body = d.decompress(stored, meta["body_len"] + 1)  # bounded: no zip bomb
        except zlib.error as exc:
            raise CacheFormatError(f"bad compressed body: {exc}") from None
        if d.unconsumed_tail or not d.eof or d.unused_data:
            raise CacheFormatError("bad compressed body")
    if len(body) != meta["body_len"]:
        raise CacheFormatError("body length mismatch")
    return CachedResponse(
        status=meta["status"], headers=[(n, v) for n, v in meta["headers"]], body=body,
        streamed=meta["streamed"], latency_ms=float(meta["latency_ms"]), request_id=meta["request_id"],
        created_at=float(meta["created_at"]),
    )  # fmt: skip


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

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
