"""Cassettes: recorded calls in a portable, diff-friendly YAML file, and reading them back.

Layout (version 1)::

    version: 1
    calls:
    - id: 0a1b...                   # Helicone-Id of the recorded call
      key: 3f2e...                  # match key when written (informational: recomputed on load)
      recorded_at: '2025-05-01T12:00:00.000Z'
      provider: openai
      model: gpt-4o-mini
      request:
        method: POST
        url: https://api.openai.com/v1/chat/completions     # credentials redacted
        headers: {helicone-cache-seed: s1}                 # only headers that enter the key
        body: |                                             # JSON pretty-printed (same key)
          {...}
      response:
        status: 200
        headers: {content-type: application/json}          # no hop-by-hop, no framing, no cookies
        latency_ms: 812.5
        streamed: false
        body: |                                             # text, or body_base64 when not UTF-8
          {...}

A stream also has `stream_offsets: '[[ms,bytes],...]'` (the log column's JSON): for each event of
its body, when it had arrived (ms since the request) and how many body bytes had arrived with it;
the replay cuts the body into events again and paces them by it. A hand-written cassette may give
it as a YAML list.

A hand-edited request body still matches: the key is recomputed from `request` on load.
Secrets never appear: the log stores credentials redacted and a cassette keeps no request header
other than the helicone-cache-* ones the key uses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import yaml

from .. import __version__
from ..replay import Recording, Recordings, key_of_request, recording_from_row, timed_chunks
from .rows import header_dict, row_url

VERSION = 1

try:  # libyaml when available: much faster on big cassettes
    _Loader: Any = yaml.CSafeLoader
    _BaseDumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Loader, _BaseDumper = yaml.SafeLoader, yaml.SafeDumper


class CassetteError(ValueError):
    """A cassette file that cannot be read; the message names the file and the entry."""


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    pass


def _str(dumper: Any, value: str) -> Any:
    # multi-line text as a literal block (diffs line by line); the emitter falls back to a
    # quoted scalar by itself when a block cannot hold the text exactly
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _key_headers(pairs: dict[str, str]) -> dict[str, str]:
    """The request headers the match key reads (see cache.py: helicone-cache-*)."""
    return {k: v for k, v in pairs.items() if k.startswith("helicone-cache")}


def _pretty_request_body(text: str | None) -> str:
    """JSON bodies pretty-printed (the key normalises JSON, so it does not change); others as-is."""
    if not text:
        return text or ""
    try:
        obj = json.loads(text, parse_constant=_reject)
    except (ValueError, RecursionError):
        return text
    if not isinstance(obj, (dict, list)):
        return text
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _reject(name: str) -> Any:
    raise ValueError(name)


def _ms(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 3)


def _text_or_b64(data: bytes, prefix: str) -> dict[str, str]:
    try:
        return {prefix: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{prefix}_base64": base64.b64encode(data).decode("ascii")}


def entry_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """One cassette entry from a logged successful call."""
    rec = recording_from_row(row)
    req: dict[str, Any] = {"method": rec.method, "url": row_url(row)}
    kh = _key_headers(header_dict(row.get("request_headers")))
    if kh:
        req["headers"] = kh
    req["body"] = _pretty_request_body(row.get("request_body"))
    resp: dict[str, Any] = {"status": rec.status, "headers": {k: v for k, v in rec.headers}}
    if rec.latency_ms is not None:
        resp["latency_ms"] = _ms(rec.latency_ms)
    resp["streamed"] = rec.streamed
    if rec.streamed and rec.chunks:
        end, pairs = 0, []
        for c in rec.chunks:
            end += len(c.data)
            pairs.append([_ms(c.offset_ms), end])
        # one JSON string, as in the log: a YAML list of pairs would cost a node per number
        resp["stream_offsets"] = json.dumps(pairs, separators=(",", ":"))
    resp.update(_text_or_b64(rec.body, "body"))
    return {
        "id": rec.id,
        "key": rec.key,
        "recorded_at": row.get("created_at"),
        "provider": rec.provider,
        "model": rec.model,
        "request": req,
        "response": resp,
    }


def write_cassette(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write the rows (successful logged calls) as a cassette; returns how many were written.
    Streams: entries are written one by one."""
    out.write("# helicone-addon cassette: recorded LLM calls, replayed by the proxy's replay mode\n")
    out.write(yaml.dump({"version": VERSION, "recorded_with": f"helicone-addon {__version__}"},
                        Dumper=_Dumper, sort_keys=False))
    n = 0
    pending = None
    for row in rows:
        if pending is None:
            out.write("calls:\n")
        else:
            out.write(_continued(pending))
        pending = yaml.dump([entry_from_row(row)], Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)
        n += 1
    if pending is None:
        out.write("calls: []\n")
    else:
        out.write(pending)
    return n


def _continued(dumped: str) -> str:
    """An entry that another entry follows: without the document-end marker the emitter adds
    after a text that keeps its trailing blank lines (the next entry ends that text itself)."""
    return dumped[: -len("...\n")] if dumped.endswith("\n...\n") else dumped


# --------------------------------------------------------------------------------------------
# reading


def body_from_fields(text: str | None, b64: str | None) -> bytes:
    """A cassette body: text (UTF-8) or base64."""
    if b64 is not None:
        return base64.b64decode(b64, validate=True)
    return (text or "").encode("utf-8", "surrogatepass")


def _need(d: Any, name: str, types: tuple[type, ...], where: str, optional: bool = False) -> Any:
    if not isinstance(d, dict):
        raise CassetteError(f"{where}: expected a mapping")
    v = d.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        want = " or ".join(t.__name__ for t in types)
        raise CassetteError(f"{where}: field {name!r} must be {want}, got {type(v).__name__}")
    return v


def _str_map(d: Any, where: str) -> list[tuple[str, str]]:
    if d is None:
        return []
    if not isinstance(d, dict):
        raise CassetteError(f"{where}: expected a mapping of header name to value")
    return [(str(k), str(v)) for k, v in d.items()]


def recording_from_entry(e: Any, where: str) -> Recording:
    req = _need(e, "request", (dict,), where)
    resp = _need(e, "response", (dict,), where)
    method = _need(req, "method", (str,), f"{where}.request")
    url = _need(req, "url", (str,), f"{where}.request")
    body = _need(req, "body", (str,), f"{where}.request", optional=True) or ""
    key = key_of_request(method, url, body, _str_map(req.get("headers"), f"{where}.request.headers"))
    status = _need(resp, "status", (int,), f"{where}.response")
    streamed = bool(_need(resp, "streamed", (bool,), f"{where}.response", optional=True))
    try:
        data = body_from_fields(
            _need(resp, "body", (str,), f"{where}.response", optional=True),
            _need(resp, "body_base64", (str,), f"{where}.response", optional=True),
        )
    except ValueError as exc:  # bad base64
        raise CassetteError(f"{where}.response: bad body: {exc}") from None
    offsets = _offsets(resp.get("stream_offsets"), f"{where}.response.stream_offsets")
    latency = _need(resp, "latency_ms", (int, float), f"{where}.response", optional=True)
    rid = e.get("id")
    streamed = streamed or bool(offsets)
    return Recording(
        id=str(rid) if rid is not None else "",
        key=key,
        status=status,
        headers=_str_map(resp.get("headers"), f"{where}.response.headers"),
        body=data,
        streamed=streamed,
        chunks=timed_chunks(data, offsets) if streamed else [],
        method=method,
        url=url,
        model=e.get("model") if isinstance(e.get("model"), str) else None,
        provider=e.get("provider") if isinstance(e.get("provider"), str) else None,
        latency_ms=float(latency) if latency is not None else None,
    )


def _offsets(raw: Any, where: str) -> list[tuple[float, int]]:
    """'[[ms, bytes], ...]' as JSON text (written so) or as a YAML list (hand-written)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise CassetteError(f"{where}: not JSON: {raw[:40]!r}") from None
    ok = isinstance(raw, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
        and p[0] >= 0 and p[1] >= 0 and float(p[1]).is_integer()
        for p in raw
    )
    if not ok:
        raise CassetteError(f"{where}: must be a list of [ms, bytes] pairs of numbers >= 0")
    return [(float(ms), int(n)) for ms, n in raw]


def read_cassette(path: str | Path) -> list[Recording]:
    """The recordings of a cassette file, in file order. Raises CassetteError (bad content) or
    OSError (cannot read)."""
    p = Path(path)
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CassetteError(f"{p}: not a valid YAML cassette: {exc}") from None
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{p}: not UTF-8 text: {exc}") from None
    if not isinstance(doc, dict) or "calls" not in doc:
        raise CassetteError(f"{p}: not a helicone-addon cassette (no 'calls' list)")
    version = doc.get("version")
    if version != VERSION:
        raise CassetteError(f"{p}: unsupported cassette version {version!r} (this helicone-addon reads {VERSION})")
    calls = [] if doc["calls"] is None else doc["calls"]
    if not isinstance(calls, list):
        raise CassetteError(f"{p}: 'calls' must be a list")
    return [recording_from_entry(e, f"{p.name}: calls[{i}]") for i, e in enumerate(calls)]


LOG_SUFFIXES = frozenset({".db", ".sqlite", ".sqlite3"})
CASSETTE_SUFFIXES = frozenset({".yaml", ".yml", ".cassette", ".json"})


def load_recordings(path: str | Path) -> Recordings:
    """The recordings of a SQLite log or of a cassette file, told apart by the name (.db / .sqlite /
    .sqlite3 is a log), else by the first bytes.

    Never peek into a database this process has open through SQLite (the proxy's own log): closing
    any other descriptor of that file drops SQLite's POSIX locks on it, and other processes then
    stop seeing its writes. Use `Recordings.from_log` for it."""
    p = Path(path)
    if p.suffix.lower() in LOG_SUFFIXES:
        return Recordings.from_log(p)
    if p.suffix.lower() not in CASSETTE_SUFFIXES:
        with open(p, "rb") as f:
            head = f.read(16)
        if head.startswith(b"SQLite format 3"):
            return Recordings.from_log(p)
    return Recordings(read_cassette(p))
