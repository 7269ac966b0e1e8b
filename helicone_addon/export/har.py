"""`har` export: HTTP Archive 1.2, as browser devtools and HAR tools import it.

Each call is one entry. Bodies are the logged ones (content-decoded text; streams as their raw
events); credentials are redacted as in the log. A call that got no response has status 0 and its
error in `_error` (custom fields start with an underscore, as HAR allows). Timings: `wait` is the
time to the first byte of a stream (else the whole latency), `receive` the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from .. import __version__
from ..columns import USAGE_COLUMNS
from .rows import header_dict, row_url


def _pairs(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in d.items()]


def _reason(status: int | None) -> str:
    try:
        return HTTPStatus(status).phrase if status else ""
    except ValueError:
        return ""


def _ms(v: Any) -> float:
    return round(float(v), 3) if isinstance(v, (int, float)) and v >= 0 else 0.0


def har_entry(row: dict[str, Any]) -> dict[str, Any]:
    url = row_url(row)
    req_headers = header_dict(row.get("request_headers"))
    resp_headers = header_dict(row.get("response_headers"))
    req_body = row.get("request_body")
    resp_body = row.get("response_body")
    status = row.get("status")
    latency = _ms(row.get("latency_ms"))
    wait = min(_ms(row.get("ttft_ms")) or latency, latency)
    request: dict[str, Any] = {
        "method": row.get("method") or "GET",
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _pairs(req_headers),
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)],
        "headersSize": -1,
        "bodySize": len(req_body.encode("utf-8")) if req_body else 0,
    }
    if req_body is not None:
        request["postData"] = {"mimeType": req_headers.get("content-type", "application/json"), "text": req_body}
    content: dict[str, Any] = {
        "size": len(resp_body.encode("utf-8")) if resp_body else 0,
        "mimeType": resp_headers.get("content-type", ""),
    }
    if resp_body is not None:
        content["text"] = resp_body
    entry: dict[str, Any] = {
        "startedDateTime": row.get("created_at"),
        "time": latency,
        "request": request,
        "response": {
            "status": status or 0,
            "statusText": _reason(status),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _pairs(resp_headers),
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": wait, "receive": round(latency - wait, 3)},
        "_heliconeId": row.get("id"),
        "_provider": row.get("provider"),
        "_model": row.get("model"),
        "_streamed": bool(row.get("streamed")),
        "_usage": {c: row.get(c) for c in USAGE_COLUMNS},
        "_costUsd": row.get("cost_usd"),
    }
    if row.get("error"):
        entry["_error"] = row["error"]
    return entry


def write_har(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write the archive, one entry at a time; returns the number of entries."""
    out.write('{"log": {"version": "1.2", ')
    out.write('"creator": ' + json.dumps({"name": "helicone-addon", "version": __version__}) + ', ')
    out.write('"pages": [], "entries": [')
    n = 0
    for row in rows:
        out.write(("," if n else "") + "\n" + json.dumps(har_entry(row), ensure_ascii=False))
        n += 1
    out.write("\n]}}\n")
    return n
