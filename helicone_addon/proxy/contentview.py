"""An "LLM" content view for mitmweb / mitmproxy: a call's request and response as conversation text.

The text comes from helicone_addon/render.py (the one renderer of calls); this module lays it out
for mitmproxy's text pane: a short header (model, tokens, cost, the client's Helicone-* headers,
which the proxy strips before the provider sees them), then one `[role]` block per turn with a
blank line between blocks and long lines wrapped. An error body is shown as the error it is.

`render_request` / `render_response` are plain functions; `LLMContentview` adapts them to
mitmproxy 12's contentview API and is registered by the addon.

What the view reads from a flow (all optional): `flow.metadata["helicone"].call`, the call's facts
in the addon's per-flow record, for `api` (wire format) and `request_headers` (the headers as the
client sent them); `flow.metadata["helicone_row"]`, the logged row once built (for its cost);
`flow.metadata["helicone_client_headers"]` (name, value pairs), which wins over `request_headers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mitmproxy import contentviews, http

from helicone_addon import providers, render, usage

WIDTH = 80  # mitmweb shows the text in a <pre> that does not wrap: about 85 columns at half a 1,400 px window


def _text(lines: list[str]) -> str:
    """mitmweb draws each line as a <div>; an empty one has no height, so a blank line between
    blocks is a single space."""
    return "\n".join(line if line else " " for line in "\n".join(lines).rstrip().split("\n")) + "\n"


def _helicone_lines(headers: Iterable[tuple[str, str]] | None) -> list[str]:
    shown = render.helicone_headers(headers or ())
    if not shown:
        return []
    return ["Helicone headers (sent by the client, not forwarded):"] + [f"  {k}: {v}" for k, v in shown]


def render_request(api: str, path: str, body: bytes, headers: Iterable[tuple[str, str]] | None = None) -> str:
    info = usage.parse_request(api, path, body)  # the model may be in the URL (Gemini, Azure)
    head = [f"model: {info.model or '?'}{'   (stream)' if info.stream else ''}", *_helicone_lines(headers)]
    turns = render.request_turns(body)
    if turns is None:
        turns = [render.Turn("user", "text", render.prompt_text(body))]
    return _text([*head, "", *render.blocks(turns, WIDTH)])


def render_response(
    api: str,
    body: bytes,
    content_type: str | None,
    status: int | None,
    row: Mapping[str, Any] | None = None,
) -> str:
    parsed = render.parse_response(api, body, content_type, status)
    failed = (status is not None and status >= 400) or (parsed.error and not parsed.text and not parsed.tool_text)
    head: list[str] = []
    if failed:
        head.append(f"error: HTTP {status}" if status is not None else "error")
    if parsed.model:
        head.append(f"model: {parsed.model}{'   (streamed)' if parsed.streamed else ''}")
    elif parsed.streamed:
        head.append("(streamed)")
    u = parsed.usage
    if u is not None:
        head.append(
            f"tokens: prompt {u.prompt_tokens}, completion {u.completion_tokens}, total {u.total_tokens}"
            + (f", cached {u.cached_tokens}" if u.cached_tokens else "")
            + (f", reasoning {u.reasoning_tokens}" if u.reasoning_tokens else "")
        )
    if row and row.get("cost_usd") is not None:
        head.append(f"cost: {render.usd(row['cost_usd'])}")
    turns = render.answer_turns(parsed)
    if failed and not parsed.error:  # an error page that is not JSON: show what it says
        turns.append(render.Turn("error", "error", render.answer_text(parsed, body) or f"HTTP {status}"))
    if not turns:
        turns = [render.Turn("assistant", "text", "")]
    return _text([*head, "", *render.blocks(turns, WIDTH)])


def _state(flow: Any) -> Any:
    """The call's facts on a flow: the addon's record keeps them as `.call` (a record.CallState)."""
    if not isinstance(flow, http.HTTPFlow):
        return None
    rec = flow.metadata.get("helicone")
    return getattr(rec, "call", rec)


def _api_of(metadata: contentviews.Metadata) -> str | None:
    flow = metadata.flow
    if not isinstance(flow, http.HTTPFlow):
        return None
    state = _state(flow)
    if state is not None and getattr(state, "api", None):
        return state.api
    provider = providers.detect(flow.request.pretty_host, flow.request.path)
    return providers.api_for(provider, flow.request.path) if provider else None


def _client_headers(flow: Any) -> list[tuple[str, str]]:
    if not isinstance(flow, http.HTTPFlow):
        return []
    given = flow.metadata.get("helicone_client_headers")
    if given is None:
        given = getattr(_state(flow), "request_headers", None)
    if given is None:
        given = flow.request.headers.items(multi=True)
    return [(str(k), str(v)) for k, v in given]


class LLMContentview(contentviews.Contentview):
    name = "LLM"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        api = _api_of(metadata) or providers.API_UNKNOWN
        msg = metadata.http_message
        flow = metadata.flow
        if isinstance(msg, http.Request):
            return render_request(api, msg.path, data, _client_headers(flow))
        status = msg.status_code if isinstance(msg, http.Response) else None
        if isinstance(flow, http.HTTPFlow) and api == providers.API_UNKNOWN:
            api = providers.api_for(None, flow.request.path)
        row = flow.metadata.get("helicone_row") if isinstance(flow, http.HTTPFlow) else None
        return render_response(api, data, metadata.content_type, status, row if isinstance(row, Mapping) else None)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        """The default view of an LLM call's bodies (above JSON's 1): the conversation, the
        client's Helicone headers and the answer are what people open a call for; the JSON and
        raw views stay one click away. -1 (never chosen) for anything else."""
        if not data or _api_of(metadata) in (None, providers.API_UNKNOWN):
            return -1
        return 2


llm_view = LLMContentview()
