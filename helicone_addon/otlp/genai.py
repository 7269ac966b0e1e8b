"""What an LLM span says about the call it timed: `Call`, read from GenAI attributes and events.

Three ways instrumentations put a call's content on the wire are read:

- OpenLLMetry (Traceloop, Helicone's async logger): indexed attributes ``gen_ai.prompt.N.role`` /
  ``.content`` / ``.tool_calls.M.*`` and ``gen_ai.completion.N.*``;
- the current GenAI semantic conventions: ``gen_ai.system_instructions``, ``gen_ai.input.messages``
  and ``gen_ai.output.messages`` (JSON, messages made of typed parts);
- the conventions' events, on the span or as log records tied to it: ``gen_ai.system|user|
  assistant|tool.message`` and ``gen_ai.choice``, and the older ``gen_ai.content.prompt`` /
  ``gen_ai.content.completion`` span events.

Messages are kept in one neutral shape (OpenAI chat's: role, content, tool_calls, tool_call_id);
wire.py writes them in the provider's format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import providers
from .decode import EventView, SpanView

ASSOC_PREFIX = "traceloop.association.properties."
# what our own span exporter (helicone_addon/exporters) writes: a proxy's spans logged by another one
HELICONE_PROPERTY = "helicone.property."
HELICONE_ATTRS = {
    "helicone.user_id": "user_id", "helicone.session.id": "Helicone-Session-Id",
    "helicone.session.path": "Helicone-Session-Path", "helicone.session.name": "Helicone-Session-Name",
}  # fmt: skip
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion", "embeddings", "responses"})
NOT_LLM_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})
STRUCTURE_KINDS = frozenset({"workflow", "task", "agent", "tool"})  # traceloop.span.kind of non-LLM spans

# gen_ai.system / gen_ai.provider.name values -> our provider ids (providers.py)
SYSTEMS: dict[str, str] = {
    "openai": "openai", "azure.ai.openai": "azure", "az.ai.openai": "azure", "azure_openai": "azure",
    "azure": "azure", "az.ai.inference": "azure", "anthropic": "anthropic", "gcp.gemini": "gemini",
    "gemini": "gemini", "google_generative_ai": "gemini", "google": "gemini", "gcp.gen_ai": "gemini",
    "gcp.vertex_ai": "vertex", "vertex_ai": "vertex", "vertexai": "vertex", "aws.bedrock": "bedrock",
    "bedrock": "bedrock", "aws_bedrock": "bedrock", "cohere": "cohere", "groq": "groq",
    "mistral_ai": "mistral", "mistralai": "mistral", "mistral": "mistral", "deepseek": "deepseek",
    "perplexity": "perplexity", "x_ai": "x-ai", "xai": "x-ai", "together": "together",
    "together_ai": "together", "openrouter": "openrouter", "fireworks": "fireworks", "cerebras": "cerebras",
}  # fmt: skip

_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
_TOOL_FIELD = re.compile(r"^tool_calls\.(\d+)\.(\w+)$")
_ERROR_CODE = re.compile(r"\b(?:Error code|status(?: code)?)[:= ]+(\d{3})\b", re.IGNORECASE)


@dataclass
class Call:
    """One LLM call as its span(s) describe it."""

    provider: str | None = None
    system: str | None = None  # gen_ai.provider.name / gen_ai.system as sent
    operation: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    url: str | None = None  # where the call went, when the span says
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    usage: dict[str, int] = field(default_factory=dict)  # input, output, total, cache_read, cache_write, reasoning
    usage_attrs: dict[str, Any] = field(default_factory=dict)  # the span's own usage attributes
    messages: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    first_chunk_at: float | None = None
    streamed: bool = False
    status: int | None = None
    error: str | None = None
    assoc: dict[str, str] = field(default_factory=dict)  # Traceloop association properties
    scopes: set[str] = field(default_factory=set)  # instrumentation scopes that described it


def is_llm(span: SpanView) -> bool:
    a = span.attrs
    if str(a.get("traceloop.span.kind") or "").lower() in STRUCTURE_KINDS:
        return False
    op = str(a.get("gen_ai.operation.name") or "").lower()
    if op in NOT_LLM_OPERATIONS:
        return False
    if op in LLM_OPERATIONS or "llm.request.type" in a:
        return True
    return bool(a.get("gen_ai.request.model") or a.get("gen_ai.response.model")) and bool(
        a.get("gen_ai.system") or a.get("gen_ai.provider.name")
    )


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


def _first(a: dict, *keys: str) -> Any:
    for k in keys:
        v = a.get(k)
        if v is not None and v != "":
            return v
    return None


_USAGE_KEYS = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens"),
    "output": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens"),
    "total": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    "cache_read": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                   "gen_ai.usage.cached_tokens", "gen_ai.usage.input_tokens_details.cached_tokens"),
    "cache_write": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
                    "gen_ai.usage.cache_write.input_tokens"),
    "reasoning": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                  "gen_ai.usage.output_tokens_details.reasoning_tokens"),
}  # fmt: skip


def _usage(a: dict) -> dict[str, int]:
    out = {}
    for name, keys in _USAGE_KEYS.items():
        v = _int(_first(a, *keys))
        if v is not None and v >= 0:
            out[name] = v
    # input counts the cached tokens (as the conventions ask); an instrumentation that reports the
    # uncached part only gives itself away when the cache parts are bigger than it
    cache = out.get("cache_read", 0) + out.get("cache_write", 0)
    if "input" in out and cache > out["input"]:
        out["input"] += cache
    return out


def provider_of(a: dict, url: str | None) -> str | None:
    host = urlsplit(url).hostname if url else _first(a, "server.address")
    known = providers.DEFAULT_MATCHER.provider_for(str(host)) if host else None
    if known:
        return known
    system = str(_first(a, "gen_ai.provider.name", "gen_ai.system") or "").strip().lower()
    if not system:
        return None
    return SYSTEMS.get(system, system.replace(" ", "-"))


def _url(a: dict) -> str | None:
    full = _first(a, "url.full", "http.url")
    if isinstance(full, str) and "://" in full:
        return full
    base = _first(a, "gen_ai.openai.api_base", "openai.api_base")
    if isinstance(base, str) and "://" in base:
        return base
    host = _first(a, "server.address")
    if isinstance(host, str) and host:
        port = _int(a.get("server.port"))
        return f"https://{host}" + (f":{port}" if port and port != 443 else "")
    return None


def _json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


# -- content: OpenLLMetry's indexed attributes --------------------------------------------------


def _indexed(a: dict) -> tuple[list[dict], list[dict]]:
    groups: dict[str, dict[int, dict]] = {"prompt": {}, "completion": {}}
    for k, v in a.items():
        m = _INDEXED.match(k)
        if not m:
            continue
        msg = groups[m.group(1)].setdefault(int(m.group(2)), {})
        rest = m.group(3)
        t = _TOOL_FIELD.match(rest)
        if t:
            calls = msg.setdefault("_tools", {})
            calls.setdefault(int(t.group(1)), {})[t.group(2)] = v
        elif rest.startswith("function_call."):
            msg.setdefault("_tools", {}).setdefault(0, {})[rest.split(".", 1)[1]] = v
        else:
            msg[rest] = v
    out: list[list[dict]] = []
    for part in ("prompt", "completion"):
        msgs = []
        for _, raw in sorted(groups[part].items()):
            msg: dict[str, Any] = {"role": raw.get("role") or ("assistant" if part == "completion" else "user")}
            if "content" in raw:
                msg["content"] = _json(raw["content"])
            tools = [t for _, t in sorted(raw.get("_tools", {}).items())]
            if tools:
                msg["tool_calls"] = [{k: t.get(k) for k in ("id", "name", "arguments")} for t in tools]
            if raw.get("tool_call_id"):
                msg["tool_call_id"] = raw["tool_call_id"]
            if raw.get("finish_reason"):
                msg["finish_reason"] = raw["finish_reason"]
            msgs.append(msg)
        out.append(msgs)
    return out[0], out[1]


# -- content: the semantic conventions' JSON messages -------------------------------------------


def _from_parts(m: dict) -> dict:
    """A conventions message ({role, parts: [...]} ) -> the neutral shape."""
    msg: dict[str, Any] = {"role": m.get("role") or "user"}
    texts, calls = [], []
    for p in m.get("parts") or []:
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind == "text" or (kind is None and "content" in p):
            texts.append(str(p.get("content") or ""))
        elif kind == "tool_call":
            args = p.get("arguments")
            calls.append({"id": p.get("id"), "name": p.get("name"),
                          "arguments": args if isinstance(args, str) else json.dumps(args)})  # fmt: skip
        elif kind == "tool_call_response":
            resp = p.get("response", p.get("result"))
            texts.append(resp if isinstance(resp, str) else json.dumps(resp))
            msg["tool_call_id"] = p.get("id")
            if msg["role"] not in ("tool",):
                msg["role"] = "tool"
    if texts:
        msg["content"] = "".join(texts)
    if calls:
        msg["tool_calls"] = calls
    if m.get("finish_reason"):
        msg["finish_reason"] = m["finish_reason"]
    return msg


def _semconv(a: dict) -> tuple[list[dict], list[dict]]:
    msgs: list[dict] = []
    sys_ins = _json(a.get("gen_ai.system_instructions"))
    if isinstance(sys_ins, list):
        text = "".join(str(p.get("content") or "") for p in sys_ins if isinstance(p, dict))
        msgs.append({"role": "system", "content": text})
    elif isinstance(sys_ins, str) and sys_ins:
        msgs.append({"role": "system", "content": sys_ins})
    inp = _json(a.get("gen_ai.input.messages"))
    if isinstance(inp, list):
        msgs += [_from_parts(m) for m in inp if isinstance(m, dict)]
    out = _json(a.get("gen_ai.output.messages"))
    outs = []
    if isinstance(out, list):
        outs = [_from_parts(m) | {"role": m.get("role") or "assistant"} for m in out if isinstance(m, dict)]
    return msgs, outs


# -- content: events -------------------------------------------------------------------------


def _event_payload(ev: EventView) -> dict:
    body = ev.body if isinstance(ev.body, dict) else None
    if body is None:
        body = _json(ev.attrs.get("gen_ai.event.content"))
        body = body if isinstance(body, dict) else dict(ev.attrs)
    return body


def _neutral(d: dict, role: str) -> dict:
    msg: dict[str, Any] = {"role": d.get("role") or role}
    if "content" in d:
        msg["content"] = _json(d["content"]) if not isinstance(d["content"], str) else d["content"]
    calls = d.get("tool_calls")
    if isinstance(calls, list) and calls:
        msg["tool_calls"] = []
        for c in calls:
            if not isinstance(c, dict):
                continue
            fn = c.get("function") if isinstance(c.get("function"), dict) else c
            args = fn.get("arguments")
            msg["tool_calls"].append({"id": c.get("id"), "name": fn.get("name"),
                                      "arguments": args if isinstance(args, str) or args is None else json.dumps(args)})
    if d.get("id") and msg["role"] == "tool":
        msg["tool_call_id"] = d["id"]
    if d.get("tool_call_id"):
        msg["tool_call_id"] = d["tool_call_id"]
    return msg


def messages_from_events(events: list[EventView]) -> tuple[list[dict], list[dict]]:
    msgs: list[dict] = []
    outs: list[tuple[int, dict]] = []
    for ev in events:
        name = ev.name
        if name in ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message"):
            msgs.append(_neutral(_event_payload(ev), name.split(".")[1]))
        elif name == "gen_ai.choice":
            p = _event_payload(ev)
            m = p.get("message") if isinstance(p.get("message"), dict) else p
            out = _neutral(m, "assistant")
            if p.get("finish_reason"):
                out["finish_reason"] = p["finish_reason"]
            outs.append((_int(p.get("index")) or 0, out))
        elif name == "gen_ai.content.prompt":
            prompt = _json(ev.attrs.get("gen_ai.prompt"))
            if isinstance(prompt, list):
                msgs += [_neutral(m, "user") for m in prompt if isinstance(m, dict)]
        elif name == "gen_ai.content.completion":
            comp = _json(ev.attrs.get("gen_ai.completion"))
            if isinstance(comp, list):
                outs += [(i, _neutral(m, "assistant")) for i, m in enumerate(comp) if isinstance(m, dict)]
    return msgs, [m for _, m in sorted(outs, key=lambda x: x[0])]


# -- the call ----------------------------------------------------------------------------------

_PARAMS = {
    "gen_ai.request.temperature": "temperature", "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k", "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.frequency_penalty": "frequency_penalty", "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.stop_sequences": "stop", "gen_ai.request.seed": "seed",
    "gen_ai.request.choice.count": "n",
}  # fmt: skip


def call_of(span: SpanView, events: Iterable[EventView] = ()) -> Call:
    """The Call an LLM span describes (`events`: log records tied to the span, if any)."""
    a = span.attrs
    url = _url(a)
    c = Call(
        provider=provider_of(a, url),
        system=_first(a, "gen_ai.provider.name", "gen_ai.system"),
        operation=str(_first(a, "gen_ai.operation.name", "llm.request.type") or "") or None,
        request_model=_first(a, "gen_ai.request.model"),
        response_model=_first(a, "gen_ai.response.model"),
        response_id=_first(a, "gen_ai.response.id"),
        url=url,
        start=span.start,
        end=span.end,
        scopes={span.scope},
    )
    for key, name in _PARAMS.items():
        if a.get(key) is not None:
            c.params[name] = a[key]
    c.usage = _usage(a)
    c.usage_attrs = {k: v for k, v in a.items() if ".usage." in k}
    prompts, completions = _indexed(a)
    sem_in, sem_out = _semconv(a)
    ev_in, ev_out = messages_from_events([*span.events, *events])
    c.messages = prompts or sem_in or ev_in
    c.outputs = completions or sem_out or ev_out
    reasons = a.get("gen_ai.response.finish_reasons")
    c.finish_reasons = [str(r) for r in reasons] if isinstance(reasons, list) else []
    chunks = [e.time for e in span.events if e.name in ("llm.content.completion.chunk", "gen_ai.content.completion.chunk")]
    first_token = _first(a, "gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token")
    if chunks:
        c.first_chunk_at = min(chunks)
    elif isinstance(first_token, (int, float)) and not isinstance(first_token, bool) and first_token >= 0:
        c.first_chunk_at = span.start + float(first_token)
    c.streamed = bool(_first(a, "llm.is_streaming", "gen_ai.is_streaming", "gen_ai.request.stream")) or bool(chunks)
    http_status = _int(_first(a, "http.response.status_code", "http.status_code"))
    if span.error:
        c.error = span.status_message or str(_first(a, "error.type") or "error")
        m = _ERROR_CODE.search(span.status_message or "")
        c.status = http_status or (int(m.group(1)) if m else None)
    else:
        c.status = http_status or 200
    c.assoc = {k[len(ASSOC_PREFIX) :]: str(v) for k, v in a.items() if k.startswith(ASSOC_PREFIX) and v is not None}
    for k, v in a.items():
        if k.startswith(HELICONE_PROPERTY) and v is not None:
            c.assoc.setdefault(k[len(HELICONE_PROPERTY) :], str(v))
        elif k in HELICONE_ATTRS and v is not None:
            c.assoc.setdefault(HELICONE_ATTRS[k], str(v))
    return c


def usage_fits(x: Call, y: Call) -> bool:
    """Do two descriptions agree on the tokens (where both say)?"""
    return all(x.usage.get(k) == y.usage.get(k) for k in ("input", "output") if k in x.usage and k in y.usage)


def merge(old: Call, new: Call) -> Call:
    """Two descriptions of the same call (two instrumentations, or a span and its log events) -> one:
    what either says, the richer content, the outer times."""
    out = Call(**{**old.__dict__})
    for k in ("provider", "system", "operation", "request_model", "response_model", "response_id", "url", "error"):
        if getattr(out, k) in (None, ""):
            setattr(out, k, getattr(new, k))
    out.params = {**new.params, **old.params}
    out.usage = {**new.usage, **old.usage}
    out.usage_attrs = {**new.usage_attrs, **old.usage_attrs}
    if len(new.messages) > len(old.messages):
        out.messages = new.messages
    if len(new.outputs) > len(old.outputs) or (new.outputs and not any(m.get("content") for m in old.outputs)):
        out.outputs = new.outputs
    out.finish_reasons = old.finish_reasons or new.finish_reasons
    out.start = min(old.start, new.start)
    out.end = max(old.end, new.end)
    firsts = [t for t in (old.first_chunk_at, new.first_chunk_at) if t is not None]
    out.first_chunk_at = min(firsts) if firsts else None
    out.streamed = old.streamed or new.streamed
    if old.status is None or (new.error and not old.error):  # an error seen by either is the outcome
        out.status = new.status if new.status is not None else old.status
    out.assoc = {**new.assoc, **old.assoc}
    out.scopes = old.scopes | new.scopes
    return out
