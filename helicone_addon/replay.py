"""Replay recorded LLM calls: the match key, recordings (from the log or a cassette), stream pacing.

Pure module: no mitmproxy import. The proxy side (the addon) uses it like this::

    recs = load_recordings(path)                   # helicone_addon.export.cassette: a log or a cassette
    key = replay_key(method, url, body, headers, seed, ignore_keys)
    rec = recs.next(key)                           # None: no recording for this call
    for delay_s, chunk in schedule(rec, speed):    # a stream: wait, then send the chunk
        ...

The key is the response cache's recipe (helicone_addon/cache.py) with the provider credential left
out, the method in front, and the URL reduced to host, path and query without credential
parameters (scheme and port are not part of it: the log keeps neither). A CI run with a dummy
API key therefore replays what a developer recorded with a real one.

Stream timing lives in the log column `stream_offsets`: a JSON list of ``[ms, bytes]`` pairs, one
per network chunk: ``ms`` since the proxy received the request, ``bytes`` = how much of the
content-decoded body had arrived by then. :func:`encode_stream_offsets` builds it from what the
proxy saw; :func:`recording_from_row` splits a streamed body into the provider's SSE events
(helicone_addon/sse.py) and gives each event the arrival time of the chunk that completed it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import headers as hdrs
from .cache import cache_key
from .sse import SSEDecoder
from .usage.decode import BodyDecoder

__all__ = [
    "Chunk",
    "Recording",
    "Recordings",
    "CREDENTIAL_QUERY_PARAMS",
    "decode_stream_offsets",
    "encode_stream_offsets",
    "key_of_row",
    "recording_from_row",
    "replay_key",
    "replay_url",
    "row_url",
    "schedule",
    "split_events",
]


#: URL query parameters that carry a provider credential (Gemini `key=`, Azure-style `api-key=`).
CREDENTIAL_QUERY_PARAMS = frozenset({"key", "api-key", "api_key"})

#: Response headers a recording does not keep: hop-by-hop, framing (the body is stored decoded),
#: cookies, and the proxy's own Helicone-* headers.
DROPPED_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    "content-length", "content-encoding", "set-cookie",
})  # fmt: skip


# --------------------------------------------------------------------------------------------
# the match key


def replay_url(url: str) -> str:
    """'https://API.openai.com:443/v1/x?key=s&a=1#f' -> '//api.openai.com/v1/x?a=1'.

    Scheme, port, user info, fragment and credential query parameters are dropped; the other
    query parameters are kept byte for byte, in order."""
    m = re.match(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)(.*)$", url)
    if m:
        authority, rest = m.group(1), m.group(2)
        host = authority.rpartition("@")[2]
        if host.startswith("["):  # IPv6 literal
            host = host[: host.find("]") + 1]
        else:
            host = host.partition(":")[0]
        host = host.lower().rstrip(".")
    else:  # a bare path
        host, rest = "", url
    rest = rest.partition("#")[0]
    path, q, query = rest.partition("?")
    if q:
        kept = [p for p in query.split("&") if p and _param_name(p) not in CREDENTIAL_QUERY_PARAMS]
        path += "?" + "&".join(kept) if kept else ""
    return f"//{host}{path or '/'}"


def _param_name(part: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(part.partition("=")[0]).strip().lower()


def replay_key(
    method: str,
    url: str,
    body: bytes | str | None,
    headers: Iterable[tuple[str, str]] = (),
    seed: str | None = None,
    ignore_keys: Sequence[str] = (),
) -> str:
    """Match key of a call (hex sha256): the cache key recipe without the provider credential.

    `headers`: all request headers as sent (the recipe keeps the helicone-cache-* ones and drops
    credentials); `seed` / `ignore_keys`: Helicone-Cache-Seed / -Ignore-Keys as the proxy parsed
    them (`CallOptions.cache`)."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return cache_key(
        seed=seed,
        url=f"{(method or 'GET').upper()} {replay_url(url)}",
        body=body or b"",
        headers=list(headers),
        ignore_keys=tuple(ignore_keys),
        credentials=False,
    )


def row_url(row: dict[str, Any]) -> str:
    """The URL a logged call asked for (https is assumed: the log keeps no scheme)."""
    return f"https://{row.get('host') or ''}{row.get('path') or '/'}"


def _header_pairs(raw: Any) -> list[tuple[str, str]]:
    """A logged headers column (JSON object, or a list of pairs) -> pairs; garbage -> []."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if isinstance(raw, dict):
        return [(str(k), str(v)) for k, v in raw.items()]
    if isinstance(raw, list):
        return [(str(p[0]), str(p[1])) for p in raw if isinstance(p, (list, tuple)) and len(p) == 2]
    return []


def key_of_request(method: str, url: str, body: bytes | str | None, headers: Iterable[tuple[str, str]]) -> str:
    """`replay_key` with seed and ignore-keys read from the headers as the proxy would."""
    pairs = list(headers)
    cache = hdrs.parse(pairs, strict=False).cache
    return replay_key(method, url, body, pairs, cache.seed, cache.ignore_keys)


def key_of_row(row: dict[str, Any]) -> str:
    """Match key of a logged call."""
    return key_of_request(
        row.get("method") or "POST", row_url(row), row.get("request_body"), _header_pairs(row.get("request_headers"))
    )


# --------------------------------------------------------------------------------------------
# stream timing


def encode_stream_offsets(
    chunks: Sequence[bytes],
    offsets_ms: Sequence[float],
    content_encoding: str | None = None,
    first_ms: float = 0.0,
) -> str | None:
    """The `stream_offsets` column: '[[ms, bytes], ...]' (ms since the request, integer; bytes of
    the decoded body received so far). `chunks` are the raw (possibly content-encoded) network
    chunks, `offsets_ms` their arrival after the first chunk (CallState.chunk_offsets_ms) and
    `first_ms` the first chunk's arrival after the request. None when there is nothing to record."""
    if not chunks or len(chunks) != len(offsets_ms):
        return None
    dec = BodyDecoder(content_encoding)
    total = 0
    pairs: list[list[int]] = []
    for data, off in zip(chunks, offsets_ms, strict=True):
        total += len(dec.feed(data))
        ms = max(0, round(first_ms + off))
        if pairs and pairs[-1][1] == total:  # nothing decodable yet: keep the earlier time
            continue
        if pairs and pairs[-1][0] == ms:
            pairs[-1][1] = total
        else:
            pairs.append([ms, total])
    tail = len(dec.flush())
    if tail and pairs:
        pairs[-1][1] += tail
    return json.dumps(pairs, separators=(",", ":")) if pairs else None


def decode_stream_offsets(text: Any) -> list[tuple[float, int]]:
    """Parse a `stream_offsets` value; anything malformed -> [] (the replay then spaces evenly)."""
    if not text:
        return []
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return []
    out: list[tuple[float, int]] = []
    if not isinstance(data, list):
        return []
    for p in data:
        if (
            isinstance(p, list) and len(p) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
            and p[0] >= 0 and p[1] >= 0
        ):
            out.append((float(p[0]), int(p[1])))
        else:
            return []
    return out


_BLANK_LINE_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n){2}")  # two line endings in a row: a blank line


def split_events(body: bytes) -> list[bytes]:
    """A streamed SSE body -> its events, byte for byte (b''.join(result) == body).

    Each piece ends with the blank line that dispatched an event (as decided by SSEDecoder, fed
    up to each blank line: only a blank line dispatches); comments and blank lines before an event
    belong to it; anything after the last event joins the last piece, or is a piece of its own
    when it completes an event. A body with no SSE event (a JSON-array stream) is one piece."""
    if not body:
        return []
    dec = SSEDecoder()
    pieces: list[bytes] = []
    start = fed = 0
    for m in _BLANK_LINE_END.finditer(body):
        if dec.feed(body[fed : m.end()]):
            pieces.append(body[start : m.end()])
            start = m.end()
        fed = m.end()
    if start < len(body):
        rest = body[start:]
        dec.feed(body[fed:])
        if dec.close() or not pieces:
            pieces.append(rest)
        else:
            pieces[-1] += rest
    return pieces


# --------------------------------------------------------------------------------------------
# recordings


@dataclass(frozen=True)
class Chunk:
    offset_ms: float  # since the request was received
    data: bytes


@dataclass
class Recording:
    """One recorded answer: what the proxy needs to reply, and where it came from."""

    id: str
    key: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # content-decoded
    streamed: bool = False
    chunks: list[Chunk] = field(default_factory=list)  # streamed: the body cut into events
    method: str = "POST"
    url: str = ""  # secrets redacted
    model: str | None = None
    provider: str | None = None
    latency_ms: float | None = None

    @property
    def short_key(self) -> str:
        return self.key[:12]


def response_headers_for_replay(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k.lower() not in DROPPED_RESPONSE_HEADERS and not hdrs.is_helicone(k)]


def timed_chunks(
    body: bytes,
    offsets: Sequence[tuple[float, int]],
    ttft_ms: float | None = None,
    latency_ms: float | None = None,
) -> list[Chunk]:
    """Cut a streamed body into events and give each the arrival time of its last byte.

    Without recorded offsets, events are spread evenly from `ttft_ms` to `latency_ms` (both
    known) or all at time 0."""
    pieces = split_events(body)
    if len(pieces) == 1 and offsets and len(offsets) > 1:
        # no SSE events (e.g. a JSON-array stream): cut where the network cut
        cuts = sorted({min(b, len(body)) for _, b in offsets if 0 < b < len(body)})
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out: list[Chunk] = []
    if offsets:
        end, j = 0, 0
        for p in pieces:
            end += len(p)
            while j < len(offsets) - 1 and offsets[j][1] < end:
                j += 1
            out.append(Chunk(offsets[j][0], p))
        return out
    n = len(pieces)
    first = float(ttft_ms) if ttft_ms is not None else 0.0
    last = float(latency_ms) if latency_ms is not None and ttft_ms is not None else first
    for i, p in enumerate(pieces):
        at = first if n == 1 else first + (last - first) * i / (n - 1)
        out.append(Chunk(round(at, 3), p))
    return out


def recording_from_row(row: dict[str, Any]) -> Recording:
    """A logged call (a `requests` row as a dict) -> Recording."""
    body = (row.get("response_body") or "").encode("utf-8", "surrogatepass")
    streamed = bool(row.get("streamed"))
    chunks = (
        timed_chunks(body, decode_stream_offsets(row.get("stream_offsets")), row.get("ttft_ms"), row.get("latency_ms"))
        if streamed
        else []
    )
    return Recording(
        id=str(row.get("id")),
        key=key_of_row(row),
        status=int(row.get("status") or 200),
        headers=response_headers_for_replay(_header_pairs(row.get("response_headers"))),
        body=body,
        streamed=streamed,
        chunks=chunks,
        method=row.get("method") or "POST",
        url=row_url(row),
        model=row.get("model"),
        provider=row.get("provider"),
        latency_ms=row.get("latency_ms"),
    )


#: Rows that make a recording: answered 2xx without error, bodies kept, not themselves replays.
RECORDABLE_SQL = (
    "r.status >= 200 AND r.status < 300 AND coalesce(r.error, '') = '' "
    "AND r.response_body IS NOT NULL AND r.request_body IS NOT NULL"
)


def recordable_where(columns: Iterable[str]) -> str:
    sql = RECORDABLE_SQL
    if "replayed_from" in set(columns):
        sql += " AND r.replayed_from IS NULL"
    return sql


class Recordings:
    """Recordings by match key. `next(key)` returns a key's recordings in recorded order, then
    starts over (cycles). Thread-safe."""

    def __init__(self, recordings: Iterable[Recording] = ()) -> None:
        self._by_key: dict[str, list[Recording]] = {}
        self._pos: dict[str, int] = {}
        self._lock = threading.Lock()
        for r in recordings:
            self.add(r)

    def add(self, rec: Recording) -> None:
        with self._lock:
            self._by_key.setdefault(rec.key, []).append(rec)

    def next(self, key: str) -> Recording | None:
        with self._lock:
            recs = self._by_key.get(key)
            if not recs:
                return None
            i = self._pos.get(key, 0)
            self._pos[key] = (i + 1) % len(recs)
            return recs[i]

    def get(self, key: str) -> list[Recording]:
        """All recordings of a key, in recorded order (does not move the cycle)."""
        with self._lock:
            return list(self._by_key.get(key, ()))

    def reset(self) -> None:
        with self._lock:
            self._pos.clear()

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._by_key)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._by_key.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._by_key

    def __iter__(self) -> Iterator[Recording]:
        with self._lock:
            return iter([r for v in self._by_key.values() for r in v])

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_log(cls, db: Any, filters: Any = None) -> Recordings:
        """Successful calls of a log (a path or a sqlite_utils.Database), oldest first.
        `filters`: a reports.Filters to narrow them (same meaning as `helicone-addon report`)."""
        import sqlite_utils

        own = not isinstance(db, sqlite_utils.Database)
        if own:
            path = Path(db)
            if not path.is_file():
                raise FileNotFoundError(f"no log database at {path}")
            db = sqlite_utils.Database(path)
        try:
            cols = list(db["requests"].columns_dict)
            where, params = filters.where() if filters is not None else ("1", [])
            sql = (
                f"SELECT * FROM requests r WHERE {recordable_where(cols)} AND {where} "
                "ORDER BY r.created_at, r.rowid"
            )
            cur = db.execute(sql, params)
            names = [d[0] for d in cur.description]
            return cls(recording_from_row(dict(zip(names, row, strict=True))) for row in cur)
        finally:
            if own:
                db.close()


# --------------------------------------------------------------------------------------------
# pacing


def schedule(recording: Recording, speed: float = 1.0) -> Iterator[tuple[float, bytes]]:
    """(delay_s, data) pairs to send in order: wait delay_s, then send data.

    A stream: one pair per event, delays following the recorded arrival offsets (the first
    delay is the recorded time to the first chunk) divided by `speed`; speed 0 sends everything
    at once. Not a stream: one pair (0, body)."""
    if speed < 0:
        raise ValueError("replay speed must be >= 0 (0 = no delays)")
    if not recording.streamed or not recording.chunks:
        yield 0.0, recording.body
        return
    prev = 0.0
    for c in recording.chunks:
        gap = max(0.0, c.offset_ms - prev)
        prev = max(prev, c.offset_ms)
        yield (gap / 1000.0 / speed if speed else 0.0), c.data
