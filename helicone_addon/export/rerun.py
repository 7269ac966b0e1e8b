"""`helicone-addon rerun ID`: send a logged request again, through the proxy, to the live provider.

The log never holds a usable credential, so the key comes from the environment (OPENAI_API_KEY,
ANTHROPIC_API_KEY, ... by provider, or the variable named by --key-env) and goes where the
original request carried its own (Authorization, x-api-key, api-key, x-goog-api-key, `?key=`).
The new request carries `Helicone-Rerun-Of: <ID>` (the proxy records it in the `rerun_of`
column) and a fresh Helicone-Request-Id; Helicone-Cache-* headers are dropped so the call really
reaches the provider.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import pricing, usage
from ..headers import H_REQUEST_ID, H_RERUN_OF, SECRET_HEADERS, canonical
from ..replay import row_url as raw_row_url
from .rows import body_json, header_dict

#: Environment variables holding each provider's API key, first found wins.
PROVIDER_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "vertex": ("VERTEX_ACCESS_TOKEN", "GOOGLE_ACCESS_TOKEN"),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "together": ("TOGETHER_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "x-ai": ("XAI_API_KEY",),
    "fireworks": ("FIREWORKS_API_KEY",),
    "perplexity": ("PERPLEXITY_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
    "deepinfra": ("DEEPINFRA_API_KEY",),
    "nvidia": ("NVIDIA_API_KEY",),
    "cohere": ("CO_API_KEY", "COHERE_API_KEY"),
    "openai-compatible": ("OPENAI_API_KEY",),
}

CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
_NOT_RESENT = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding", "cookie",
})  # fmt: skip
_URL_KEY = re.compile(r"([?&](?:key|api-key|api_key)=)[^&#]*", re.IGNORECASE)
_GEMINI_MODEL = re.compile(r"(/models/)[^/:?]+(:)")


class RerunError(ValueError):
    """The call cannot be re-run as asked; the message says why and what to do."""


@dataclass
class RerunRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    new_id: str
    key_source: str | None = None  # the environment variable the key came from
    streamed: bool = False
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _env_key(provider: str | None, env: Mapping[str, str], key_env: str | None) -> tuple[str | None, str | None, list[str]]:
    names = [key_env] if key_env else list(PROVIDER_ENV.get(provider or "", ()))
    for n in names:
        if env.get(n):
            return env[n], n, names
    return None, None, names


def build_rerun(
    row: dict[str, Any],
    *,
    model: str | None = None,
    set_headers: Sequence[tuple[str, str]] = (),
    env: Mapping[str, str],
    key_env: str | None = None,
    new_id: str | None = None,
) -> RerunRequest:
    """The request to send again for a logged call. Raises RerunError."""
    rid = str(row.get("id"))
    if row.get("provider") == "bedrock":
        raise RerunError("bedrock calls are signed (SigV4) for one moment: they cannot be re-sent")
    if row.get("request_body") is None and (row.get("method") or "POST") not in ("GET", "HEAD", "DELETE"):
        raise RerunError(f"the request body of {rid} was not logged (Helicone-Omit-Request): nothing to re-send")
    logged = header_dict(row.get("request_headers"))
    url = raw_row_url(row)
    body_text = row.get("request_body") or ""
    needs_key = [h for h in CREDENTIAL_HEADERS if h in logged]
    url_key = bool(_URL_KEY.search(url))
    key, key_source, tried = _env_key(row.get("provider"), env, key_env)
    if (needs_key or url_key) and key is None:
        hint = " or ".join(tried) if tried else "a variable named with --key-env"
        raise RerunError(
            f"the original call ({row.get('provider') or 'unknown provider'}) sent an API key; set {hint} "
            "to re-run it (keys are never taken from the log)"
        )
    headers: list[tuple[str, str]] = []
    for name, value in logged.items():
        if name in _NOT_RESENT or name == H_REQUEST_ID or name.startswith("helicone-cache") or name == H_RERUN_OF:
            continue
        if name in SECRET_HEADERS and name not in CREDENTIAL_HEADERS:
            continue  # Helicone-Auth and the like: redacted in the log (pass one with --set-header)
        if name in CREDENTIAL_HEADERS:
            scheme = value.split(" ", 1)[0] if name == "authorization" and " " in value else ""
            value = f"{scheme} {key}" if scheme else str(key)
        headers.append((name, value))
    if url_key:
        url = _URL_KEY.sub(lambda m: m.group(1) + str(key), url)
    body = body_text.encode("utf-8", "surrogatepass")
    new_model = None
    if model:
        doc = body_json(body_text)
        if isinstance(doc, dict) and "model" in doc:
            doc["model"] = model
            body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            new_model = model
        elif _GEMINI_MODEL.search(url):
            url = _GEMINI_MODEL.sub(lambda m: m.group(1) + model + m.group(2), url, count=1)
            new_model = model
        else:
            raise RerunError(f"--model: the request of {rid} names no model to replace")
    for k, v in set_headers:
        headers = [(n, val) for n, val in headers if n.lower() != k.lower()]
        if v != "":
            headers.append((k, v))
    new_id = new_id or str(uuid.uuid4())
    headers += [(canonical(H_RERUN_OF), rid), (canonical(H_REQUEST_ID), new_id)]
    doc = body_json(body.decode("utf-8", "replace"))
    streamed = bool(row.get("streamed")) or (isinstance(doc, dict) and doc.get("stream") is True)
    return RerunRequest(
        method=row.get("method") or "POST", url=url, headers=headers, body=body, new_id=new_id,
        key_source=key_source, streamed=streamed, model=new_model or row.get("model_requested") or row.get("model"),
        extra={"api": row.get("api"), "provider": row.get("provider")},
    )


@dataclass
class RerunResult:
    id: str
    status: int | None
    headers: dict[str, str]
    body: str
    latency_ms: float
    ttft_ms: float | None
    model: str | None
    usage: dict[str, Any]
    cost_usd: float | None
    cost_note: str | None
    text: str
    error: str | None = None


def send(req: RerunRequest, *, proxy: str, ca_file: str | None, timeout: float = 600.0) -> RerunResult:
    """Send through the proxy (trusting its CA), reading a stream to the end."""
    import ssl

    import httpx

    verify: Any = ssl.create_default_context(cafile=ca_file) if ca_file else True
    t0 = time.monotonic()
    ttft = None
    chunks: list[bytes] = []
    with httpx.Client(proxy=proxy, verify=verify, timeout=timeout) as client:
        with client.stream(req.method, req.url, headers=req.headers, content=req.body) as resp:
            for chunk in resp.iter_bytes():
                if ttft is None and chunk:
                    ttft = (time.monotonic() - t0) * 1000
                chunks.append(chunk)
            status, rheaders = resp.status_code, {k.lower(): v for k, v in resp.headers.items()}
    latency = (time.monotonic() - t0) * 1000
    raw = b"".join(chunks)
    return result_of(req, status, rheaders, raw, latency, ttft if req.streamed else None)


def result_of(req: RerunRequest, status: int, headers: dict[str, str], body: bytes, latency_ms: float,
              ttft_ms: float | None, provider: str | None = None, api: str | None = None) -> RerunResult:
    api = api or req.extra.get("api") or "unknown"
    provider = provider or req.extra.get("provider")
    parsed = usage.parse_response(api, body, headers.get("content-type"), status)
    u = parsed.usage
    model = parsed.model or req.model
    cost = note = None
    if u is not None:
        pr = pricing.price(provider, model, u)
        cost, note = pr.cost_usd, pr.note
    return RerunResult(
        id=req.new_id, status=status, headers=headers, body=body.decode("utf-8", "replace"),
        latency_ms=round(latency_ms, 3), ttft_ms=round(ttft_ms, 3) if ttft_ms is not None else None, model=model,
        usage={k: getattr(u, k) for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                                          "reasoning_tokens")} if u else {},
        cost_usd=cost, cost_note=note, text=parsed.text or "", error=parsed.error,
    )
