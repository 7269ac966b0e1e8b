"""`jsonl` export: one call per line with its request, response text, usage, cost and metadata.

Every column of the log appears exactly once: in `request`, `response`, `usage`, the top level,
or `metadata` (all columns the other groups do not take, so a new column shows up by itself).
JSON columns (properties, attempts, usage_raw, stream_offsets) are parsed.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import usage
from ..columns import NAMES, USAGE_COLUMNS
from .rows import body_json, header_dict, loads, row_url

logger = logging.getLogger(__name__)

TOP = ("id", "created_at", "provider", "api", "model", "status", "cost_usd")
USAGE = (*USAGE_COLUMNS, "usage_source")
REQUEST = ("method", "host", "path", "request_headers", "request_body")
RESPONSE = ("response_headers", "response_body", "streamed")
JSON_COLUMNS = ("properties", "attempts", "usage_raw", "stream_offsets")


def response_text(api: str | None, body: str | None, content_type: str | None, status: int | None) -> str:
    """The assistant's text (streams joined), as the usage parsers read it."""
    if not body:
        return ""
    try:
        return usage.parse_response(api or "unknown", body.encode("utf-8", "surrogatepass"), content_type, status).text
    except Exception:  # noqa: BLE001 - an export never fails on one odd body
        logger.debug("export: response text not read (api %s)", api, exc_info=True)
        return ""


def jsonl_record(row: dict[str, Any]) -> dict[str, Any]:
    req_body = row.get("request_body")
    parsed = body_json(req_body)
    resp_headers = header_dict(row.get("response_headers"))
    out: dict[str, Any] = {k: row.get(k) for k in TOP}
    out["request"] = {
        "method": row.get("method"),
        "url": row_url(row),
        "headers": header_dict(row.get("request_headers")),
        "body": parsed if parsed is not None else req_body,
    }
    out["response"] = {
        "status": row.get("status"),
        "headers": resp_headers,
        "streamed": bool(row.get("streamed")),
        "text": response_text(row.get("api"), row.get("response_body"), resp_headers.get("content-type"), row.get("status")),
        "body": row.get("response_body"),
    }
    out["usage"] = {k: row.get(k) for k in USAGE}
    taken = {*TOP, *USAGE, *REQUEST, *RESPONSE}
    meta: dict[str, Any] = {}
    for name in NAMES:
        if name in taken or name not in row:
            continue
        v = row[name]
        meta[name] = loads(v, v) if name in JSON_COLUMNS else v
    out["metadata"] = meta
    return out
