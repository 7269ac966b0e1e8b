"""Helicone's async log format, both ends: which path stands for which provider, the payload's
validation and its decoding into the `CallState` of the call it describes.

The async logger (async_logger/payload.py) picks the path with `log_path` and builds payloads; the local
API (api/ingest.py) routes `LOG_ROUTES`, checks payloads with `validate` and turns them into rows
with `to_call_state` + `record.build_row`, like a proxied call.

A payload: ``{"providerRequest": {"url", "json", "meta"}, "providerResponse": {"json" | "textBody",
"status", "headers"}, "timing": {"startTime": {"seconds", "milliseconds"}, "endTime": ...,
"timeToFirstToken"?}}``. Validation follows Helicone's worker message for message (JavaScript
truthiness and `typeof` included), so clients see the same errors here as there.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from . import headers as hdrs
from . import providers
from .record import CallState

# path -> (provider the path stands for, or None: from the payload's URL; providers sent there)
LOG_ROUTES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "/oai/v1/log": ("openai", ("openai", "azure")),
    "/anthropic/v1/log": ("anthropic", ("anthropic",)),
    "/googleapis/v1/log": ("gemini", ("gemini", "vertex")),
    "/custom/v1/log": (None, ()),
    "/v1/trace/custom/v1/log": (None, ()),
    "/v1/trace/custom/log": (None, ()),
}
CUSTOM_LOG_PATH = "/custom/v1/log"

MSG_REQUIRED = "One of the required fields is missing, providerRequest, providerResponse, or timing"

MISSING: Any = object()  # a JavaScript `undefined`: the key is not there


def log_path(provider: str | None) -> str:
    """The async log path a client posts a call of this provider to (as Helicone's manual logger)."""
    for path, (_, sent) in LOG_ROUTES.items():
        if provider in sent:
            return path
    return CUSTOM_LOG_PATH


# ---------------------------------------------------------------------------------------------
# validation


def _get(obj: Any, key: str) -> Any:
    """JS property access: anything that is not an object with that key gives undefined."""
    if isinstance(obj, dict):
        return obj.get(key, MISSING)
    return MISSING


def _js_typeof(v: Any) -> str:
    if v is MISSING:
        return "undefined"
    if v is None or isinstance(v, (dict, list)):
        return "object"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "object"


def _js_falsy(v: Any) -> bool:
    if v is MISSING or v is None or v is False:
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0 or math.isnan(v)
    return isinstance(v, str) and v == ""


def validate(model: Any) -> str | None:
    """The worker's validation of a payload; None when it is valid, else Helicone's message.

    `timing` may be left out (both times then default to now), as in the newer worker and Jawn.
    """
    if (
        not isinstance(model, dict)
        or _js_falsy(_get(model, "providerRequest"))
        or _js_falsy(_get(model, "providerResponse"))
    ):
        return MSG_REQUIRED
    req = model["providerRequest"]
    if _js_typeof(_get(req, "url")) != "string":
        return "Invalid providerRequest: 'url' should be a string"
    if _js_typeof(_get(req, "meta")) != "object":
        return "Invalid providerRequest: 'meta' should be an object"
    if _get(req, "json") is MISSING:
        return "Invalid providerRequest: 'json' is undefined"
    resp = model["providerResponse"]
    if _get(resp, "json") is MISSING:
        return "Invalid providerResponse: 'json' is undefined"
    if _js_typeof(_get(resp, "status")) != "number":
        return "Invalid providerResponse: 'status' should be a number"
    if _js_typeof(_get(resp, "headers")) != "object":
        return "Invalid providerResponse: 'headers' should be an object"
    timing = _get(model, "timing")
    if _js_falsy(timing):
        return None
    values = {}
    for part in ("startTime", "endTime"):
        t = _get(timing, part)
        for unit in ("seconds", "milliseconds"):
            v = _get(t, unit)
            if _js_typeof(v) != "number":
                return f"Invalid timing: '{part}.{unit}' should be a number"
            values[(part, unit)] = v
    start = values[("startTime", "seconds")] * 1000 + values[("startTime", "milliseconds")]
    end = values[("endTime", "seconds")] * 1000 + values[("endTime", "milliseconds")]
    if not all(math.isfinite(x) and abs(x) <= 8.64e15 for x in (start, end)):
        return "Invalid timing structure or value type"
    if start > end:
        return "startTime cannot be greater than endTime"
    if start < 0 or end < 0:
        return "startTime and endTime cannot be negative"
    return None


# ---------------------------------------------------------------------------------------------
# decoding


SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def scrub_surrogates(obj: Any) -> Any:
    """Lone UTF-16 surrogates ("\\ud800" in JSON) cannot be stored by SQLite: replace them with '?'."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_surrogates(v) for v in obj]
    return obj


def _header_pairs(obj: Any) -> list[tuple[str, str]]:
    """meta / headers given as an object (or a list of [name, value] pairs) -> pairs of strings."""
    if isinstance(obj, dict):
        items: Iterable = obj.items()
    elif isinstance(obj, list):
        items = [p for p in obj if isinstance(p, (list, tuple)) and len(p) == 2]
    else:
        return []
    out = []
    for k, v in items:
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v)
        out.append((str(k), str(v)))
    return out


def _sse_text(obj: Any) -> bool:
    return isinstance(obj, str) and obj.lstrip().startswith(("data:", "event:", ":"))


def _api(provider: str, path: str, req_json: Any) -> str:
    api = providers.api_for(provider, path)
    if api != providers.API_UNKNOWN:
        return api
    if provider == "anthropic":
        return providers.API_ANTHROPIC
    if provider in ("gemini", "vertex"):
        return providers.API_GEMINI
    if isinstance(req_json, dict) and isinstance(req_json.get("messages"), list):
        return providers.API_OPENAI_CHAT
    return api


def _response(resp: dict) -> tuple[str, list[tuple[str, str]], str]:
    """(body text, headers, content type) of a payload's providerResponse."""
    text_body = resp.get("textBody")
    resp_json = resp.get("json")
    if isinstance(text_body, str) and text_body:
        body = text_body
    elif isinstance(resp_json, dict) and isinstance(resp_json.get("streamed_data"), list):
        body = "".join("data: " + json.dumps(d, ensure_ascii=False) + "\n\n" for d in resp_json["streamed_data"])
    else:
        body = json.dumps(resp_json, ensure_ascii=False)
    headers = _header_pairs(resp.get("headers"))
    ctype = next((v for k, v in headers if k.lower() == "content-type"), None)
    if ctype is None or (_sse_text(body) and "event-stream" not in ctype):
        ctype = "text/event-stream" if _sse_text(body) else "application/json"
    headers = [(k, v) for k, v in headers if k.lower() not in ("content-encoding", "content-length")]
    return body, headers, ctype


def _times(model: dict, now: float) -> tuple[float, float, float | None]:
    """(started, ended, time to first token in ms or None) of a payload."""
    timing = model.get("timing", MISSING)
    if _js_falsy(timing):
        return now, now, None
    started = (timing["startTime"]["seconds"] * 1000 + timing["startTime"]["milliseconds"]) / 1000.0
    ended = (timing["endTime"]["seconds"] * 1000 + timing["endTime"]["milliseconds"]) / 1000.0
    ttft = timing.get("timeToFirstToken")
    if isinstance(ttft, bool) or not isinstance(ttft, (int, float)) or not math.isfinite(ttft) or ttft < 0:
        ttft = None
    return started, ended, ttft


def to_call_state(
    model: dict,
    http_headers: Iterable[tuple[str, str]],
    path_provider: str | None,
    *,
    source: str = "async",
    now: float | None = None,
) -> CallState:
    """A validated payload (+ the log call's own headers) -> the CallState of the call it describes.

    Helicone headers may come in `providerRequest.meta` or as HTTP headers of the log call; they are
    merged and the HTTP headers win. Only Helicone-* headers of the log call are kept.
    """
    req = model["providerRequest"]
    resp = model["providerResponse"]
    merged: dict[str, tuple[str, str]] = {}
    for k, v in _header_pairs(req.get("meta")):
        merged[k.lower()] = (k, v)
    for k, v in http_headers:
        if hdrs.is_helicone(k):
            merged[k.lower()] = (k, v)
    pairs = list(merged.values())
    opts = hdrs.parse(pairs, strict=False)

    url = req["url"]
    parts = urlsplit(url) if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) else None
    host = (parts.hostname or "") if parts else ""
    path = ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")) if parts else url
    if opts.target_provider:
        provider = opts.target_provider.lower()
    else:
        provider = path_provider or providers.detect(host, path) or "custom"
    req_json = req.get("json")
    body, resp_headers, ctype = _response(resp)
    started, ended, ttft = _times(model, time.time() if now is None else now)
    status = resp["status"]
    status = int(status) if isinstance(status, (int, float)) and math.isfinite(status) else None
    is_stream = isinstance(req_json, dict) and (req_json.get("stream") is True or req_json.get("stream") == 1)

    return CallState(
        id=opts.request_id,
        started_at=started,
        source=source,
        provider=provider,
        api=_api(provider, path, req_json),
        method="POST",
        host=host,
        path=path,
        url=url,
        target_url=url if parts else None,
        options=opts,
        request_headers=pairs,
        request_body=json.dumps(req_json, ensure_ascii=False).encode() if req_json is not None else None,
        status=status,
        response_headers=resp_headers,
        response_body=body.encode(),
        content_type=ctype,
        first_chunk_at=started + ttft / 1000.0 if ttft is not None else None,
        ended_at=ended,
        streamed=is_stream,
    )
