"""What a logged call says, as people read it: the one renderer from bodies to conversation and text.

A call's request body becomes a list of `Turn`s (system / user / assistant / tool calls and
results), its response body (JSON or a stream) becomes the answer's turns with a streamed answer
joined into its text. Everything that shows a call uses this module: mitmproxy's "LLM" content view
(contentview.py), `helicone-addon logs` (cli/logs.py), the web view (ui/), the searchable
`prompt_text` / `response_text` columns (`texts`) and mitmweb's one-line flow comment (`comment`).

Wire formats are read by helicone_addon/usage (responses, streams included, via its accumulators)
and usage/_base.py's `content_parts` (message content); requests are recognised by their shape
(`messages`, `contents`, `input`, `prompt`), so a body whose api is unknown still renders.
Pure: no mitmproxy, no web framework, no store.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import usage
from .usage._base import compact_json, content_parts
from .usage.types import ParsedResponse

logger = logging.getLogger(__name__)

MAX_TEXT = 200_000  # characters of a body kept as text when it is not understood

ROLE_ALIASES = {"model": "assistant", "human": "user", "ai": "assistant", "function": "tool"}


@dataclass(frozen=True)
class Turn:
    """One block of a conversation.

    role: system | developer | user | assistant | tool | error
    kind: text | reasoning | tool_call | tool_result | image | audio | file | other | error
    name: the tool's name (tool_call) or the call a result answers (tool_result), when known
    """

    role: str
    kind: str
    text: str
    name: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "tool_call":
            return f"tool call {self.name}" if self.name else "tool call"
        if self.kind == "tool_result":
            return f"tool result {self.name}" if self.name else "tool result"
        if self.kind == "reasoning":
            return "reasoning"
        return self.role


@dataclass
class Call:
    """A whole call rendered: the prompt's turns, the answer's turns and what the response said."""

    prompt: list[Turn] = field(default_factory=list)
    answer: list[Turn] = field(default_factory=list)
    model: str | None = None  # model named in the request
    stream: bool = False  # the request asked for a stream
    parsed: ParsedResponse = field(default_factory=ParsedResponse)


# ---------------------------------------------------------------------------------------------
# request -> turns


def _load(body: bytes | str | None) -> Any:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode("utf-8", "replace")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _role(v: Any, default: str = "user") -> str:
    if not isinstance(v, str) or not v:
        return default
    return ROLE_ALIASES.get(v, v)


def _message_turns(role: str, content: Any) -> list[Turn]:
    """Turns of one message: adjacent text parts joined; tool calls/results take their own role."""
    if isinstance(content, str):  # the common case, without the walk
        return [Turn(role, "text", content)] if content.strip() else []
    out: list[Turn] = []
    for kind, text, name in content_parts(content):
        if kind in ("text", "reasoning") and not text.strip():
            continue
        if kind == "tool_call":
            out.append(Turn("assistant", kind, text, name))
        elif kind == "tool_result":
            out.append(Turn("tool", kind, text, name))
        elif out and kind == "text" and out[-1].kind == "text" and out[-1].role == role:
            out[-1] = Turn(role, "text", out[-1].text + "\n" + text)
        else:
            out.append(Turn(role, kind, text, name))
    return out


def _chat_message(m: dict) -> list[Turn]:
    role = _role(m.get("role"))
    if len(m) == 2 and isinstance(m.get("content"), str):  # {"role", "content": "..."}: most messages
        return _message_turns(role, m["content"])
    if role == "tool":  # OpenAI tool answer
        name = m.get("tool_call_id") or m.get("name")
        text = "\n".join(t for _, t, _ in content_parts(m.get("content")) if t)
        return [Turn("tool", "tool_result", text, name if isinstance(name, str) else None)]
    turns = _message_turns(role, m.get("content"))
    for tc in m.get("tool_calls") or ():
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            args = fn.get("arguments")
            turns.append(Turn("assistant", "tool_call", args if isinstance(args, str) else compact_json(args),
                              fn.get("name") if isinstance(fn.get("name"), str) else None))
    fc = m.get("function_call")
    if isinstance(fc, dict):
        turns.append(Turn("assistant", "tool_call", str(fc.get("arguments") or ""), fc.get("name")))
    return turns


def _responses_item(item: Any) -> list[Turn]:
    if isinstance(item, str):
        return [Turn("user", "text", item)]
    if not isinstance(item, dict):
        return []
    if "role" in item and item.get("type") in (None, "message"):
        return _message_turns(_role(item.get("role")), item.get("content"))
    return _message_turns("user", [item])  # function_call, function_call_output, reasoning, ...


def request_turns(body: bytes | str | None, data: Any = None) -> list[Turn] | None:
    """The conversation a request body sends, or None when its shape is not an LLM request.

    data: the body already parsed as JSON, when the caller has it (saves a second parse)."""
    if data is None:
        data = _load(body)
    if not isinstance(data, dict):
        return None
    turns: list[Turn] = []
    for key in ("system", "instructions"):  # Anthropic, Responses
        if isinstance(data.get(key), (str, list)):
            turns += _message_turns("system", data[key])
    for key in ("systemInstruction", "system_instruction"):  # Gemini
        if isinstance(data.get(key), dict):
            turns += _message_turns("system", data[key].get("parts"))
    if isinstance(data.get("messages"), list):  # OpenAI chat, Anthropic
        for m in data["messages"]:
            if isinstance(m, dict):
                turns += _chat_message(m)
    elif isinstance(data.get("contents"), list):  # Gemini
        for c in data["contents"]:
            if isinstance(c, dict):
                turns += _message_turns(_role(c.get("role")), c.get("parts"))
    elif "input" in data:  # Responses, embeddings
        inp = data["input"]
        for item in inp if isinstance(inp, list) else [inp]:
            turns += _responses_item(item)
    elif isinstance(data.get("requests"), list):  # Gemini batch embeddings
        for r in data["requests"]:
            if isinstance(r, dict) and isinstance(r.get("content"), dict):
                turns += _message_turns("user", r["content"].get("parts"))
    elif isinstance(data.get("content"), dict):  # Gemini embedContent
        turns += _message_turns("user", data["content"].get("parts"))
    elif "prompt" in data:  # legacy completions
        p = data["prompt"]
        for item in p if isinstance(p, list) else [p]:
            turns.append(Turn("user", "text", item if isinstance(item, str) else compact_json(item)))
    elif not turns:
        return None
    return turns


# ---------------------------------------------------------------------------------------------
# response -> turns


def parse_response(api: str | None, body: bytes | str | None, content_type: str | None = None,
                   status: int | None = None) -> ParsedResponse:
    """usage.parse_response with a guess for bodies logged without a known wire format."""
    if not body:
        return ParsedResponse()
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
    return usage.parse_response(api or _guess_api(raw), raw, content_type, status)


def _guess_api(raw: bytes) -> str:
    head = raw.lstrip()[:1]
    if head == b"{":
        data = _load(raw)
        if isinstance(data, dict) and isinstance(data.get("output"), list):
            return "openai-responses"
    return "unknown"


def answer_turns(parsed: ParsedResponse) -> list[Turn]:
    """The answer as turns: reasoning, text (a stream joined), tool calls, then an error."""
    out: list[Turn] = []
    if parsed.reasoning_text:
        out.append(Turn("assistant", "reasoning", parsed.reasoning_text))
    if parsed.text:
        out.append(Turn("assistant", "text", parsed.text))
    if parsed.tool_text:
        out.append(Turn("assistant", "tool_call", parsed.tool_text))
    if parsed.error:
        out.append(Turn("error", "error", parsed.error))
    return out


def render_call(
    api: str | None,
    request_body: bytes | str | None,
    response_body: bytes | str | None,
    *,
    content_type: str | None = None,
    status: int | None = None,
) -> Call:
    """A logged call (wire format, bodies as logged, the response content-decoded) as a `Call`."""
    data = _load(request_body)
    turns = request_turns(request_body)
    if turns is None and request_body:
        turns = [Turn("user", "text", _raw_text(request_body))]
    parsed = parse_response(api, response_body, content_type, status)
    model = data.get("model") if isinstance(data, dict) and isinstance(data.get("model"), str) else None
    return Call(
        prompt=turns or [],
        answer=answer_turns(parsed),
        model=model,
        stream=bool(isinstance(data, dict) and data.get("stream") is True),
        parsed=parsed,
    )


# ---------------------------------------------------------------------------------------------
# text


def _raw_text(body: bytes | str) -> str:
    text = bytes(body).decode("utf-8", "replace") if not isinstance(body, str) else body
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def format_turns(turns: Sequence[Turn]) -> str:
    """Turns as plain text: a lone user message as itself, else `**role**: text` blocks."""
    if len(turns) == 1 and turns[0].role == "user" and turns[0].kind == "text":
        return turns[0].text
    return "\n\n".join(f"**{t.label}**: {t.text}" for t in turns)


def prompt_text(body: bytes | str | None, data: Any = None) -> str:
    """The prompt of a request body as text (the raw body when it is not an LLM request)."""
    if not body:
        return ""
    turns = request_turns(body, data)
    return _raw_text(body) if turns is None else format_turns(turns)


def answer_text(parsed: ParsedResponse, body: bytes | str | None) -> str:
    """The answer as text: its text and tool calls, else its error, else the raw body."""
    parts = [parsed.text] if parsed.text else []
    if parsed.tool_text:
        parts.append(f"[tool call] {parsed.tool_text}")
    if parts:
        return "\n\n".join(parts)
    if parsed.error:
        return f"[error] {parsed.error}"
    if not body:
        return ""
    data = _load(body)
    if isinstance(data, dict) and (isinstance(data.get("data"), list) or "embedding" in data or "embeddings" in data):
        n = len(data.get("data") or data.get("embeddings") or [data.get("embedding")])
        return f"[{n} embedding(s)]"
    return _raw_text(body)


def response_text(api: str | None, body: bytes | str | None, *, status: int | None = None) -> str:
    """The answer of a response body (JSON or stream, any wire format) as text."""
    if not body:
        return ""
    return answer_text(parse_response(api, body, None, status), body)


def texts(
    api: str | None,
    request_body: bytes | None,
    response_body: bytes | None,
    *,
    status: int | None = None,
    parsed: ParsedResponse | None = None,
    request_json: Any = None,
) -> tuple[str | None, str | None]:
    """(prompt_text, response_text) of a call, for the searchable columns of the same names.

    The bodies are as logged (the response content-decoded); None (an omitted body) gives None,
    so a Helicone-Omit-* body leaves no text either. A caller that has already parsed the
    response body (`parsed`, from usage.parse_response of that same body) or the request JSON
    (`request_json`) passes them to save the work."""
    try:
        p = prompt_text(request_body, request_json) if request_body is not None else None
        r = None
        if response_body:
            if parsed is None:
                parsed = parse_response(api, response_body, None, status)
            r = answer_text(parsed, response_body)
    except Exception:  # a rendering bug must not cost the row: the text columns stay empty
        logger.exception("rendering the text of a call failed")
        return None, None
    return p or None, r or None


def wrap(text: str, width: int = 100) -> str:
    """Long lines wrapped at `width` (existing line breaks and indentation kept)."""
    out = []
    for line in text.splitlines() or [""]:
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=True,
                             break_on_hyphens=False, replace_whitespace=False, drop_whitespace=True) or [line]
    return "\n".join(out)


def blocks(turns: Iterable[Turn], width: int = 100) -> list[str]:
    """Lines of a plain-text view: `[label]` then the wrapped text, a blank line between blocks."""
    lines: list[str] = []
    for t in turns:
        if lines:
            lines.append("")
        lines.append(f"[{t.label}]")
        lines.append(wrap(t.text, width) if t.text else "(empty)")
    return lines


# ---------------------------------------------------------------------------------------------
# one-line summaries


def usd(v: float | None) -> str:
    """A dollar amount for people: $0, $1,234.50, $0.0564, $0.000012 (two significant digits below a cent)."""
    if v is None:
        return ""
    if v == 0:
        return "$0"
    a = abs(v)
    if a >= 1:
        return f"${v:,.2f}"
    decimals = 4 if a >= 0.01 else min(12, 1 - math.floor(math.log10(a)))
    text = f"{v:.{decimals}f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{v:.2f}"
    return "$" + text


def tokens(row: dict[str, Any]) -> str:
    if row.get("prompt_tokens") is None and row.get("completion_tokens") is None:
        return ""
    est = "~" if row.get("usage_source") == "estimated" else ""
    return f"{est}{row.get('prompt_tokens') or 0}+{row.get('completion_tokens') or 0} tok"


def comment(row: dict[str, Any]) -> str:
    """One line for mitmweb's flow list: model, tokens, cost, user first; provider last.

    mitmweb cuts the comment column at its width, so what people scan for comes first."""
    parts = [str(row.get("model") or row.get("model_requested") or "?")]
    if row.get("error") and row.get("status") is not None and row["status"] >= 400:
        parts.append(f"HTTP {row['status']}")
    tok = tokens(row)
    if tok:
        parts.append(tok)
    if row.get("cost_usd") is not None:
        parts.append(usd(row["cost_usd"]))
    elif row.get("cost_note") and tok:
        parts.append("cost ?")
    if row.get("user_id"):
        parts.append(f"@{row['user_id']}")
    if row.get("session_id"):
        parts.append(f"session {row['session_id']}{row.get('session_path') or ''}")
    if row.get("cache_hit"):
        parts.append("cache HIT")
    if row.get("rate_limited"):
        parts.append("RATE LIMITED")
    if row.get("retries"):
        parts.append(f"retries={row['retries']}")
    if row.get("error"):
        parts.append(f"error: {' '.join(str(row['error']).split())[:60]}")
    parts.append(str(row.get("provider") or "?"))
    return " · ".join(parts)


HELICONE_SHOWN = ("helicone-user-id", "helicone-session-id", "helicone-session-path", "helicone-session-name")
HELICONE_VALUE_HIDDEN = frozenset(("helicone-auth", "helicone-fallbacks"))  # may carry keys


def helicone_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The Helicone-* headers a client sent, to show on a call (the proxy strips them upstream).

    User and session first, then properties, then the rest; values that may hold credentials
    (Helicone-Auth, Helicone-Fallbacks) are replaced by "(set)"."""
    items = []
    for k, v in headers:
        low = k.lower()
        if not low.startswith("helicone-"):
            continue
        if low in HELICONE_SHOWN:
            rank = HELICONE_SHOWN.index(low)
        else:
            rank = 10 if low.startswith("helicone-property-") else 20
        items.append((rank, len(items), k, "(set)" if low in HELICONE_VALUE_HIDDEN else v))
    return [(k, v) for _, _, k, v in sorted(items)]


# ---------------------------------------------------------------------------------------------
# session trees (`helicone-addon sessions ID` and the web view's session page)


def tree_labels(nodes: list[dict]) -> list[str]:
    """Box-drawing prefixes for a depth-first node list (parents before children)."""
    labels = []
    for i, n in enumerate(nodes):
        if n["depth"] == 0:
            labels.append(n["name"])
            continue
        prefix = ""
        # for each ancestor level, draw a bar if that ancestor has a later sibling
        for level in range(1, n["depth"]):
            prefix += "│  " if _has_later_sibling(nodes, i, level) else "   "
        prefix += "├─ " if _has_later_sibling(nodes, i, n["depth"]) else "└─ "
        labels.append(prefix + n["name"])
    return labels


def call_prefix(nodes: list[dict], i: int) -> str:
    """Prefix of the call lines listed under nodes[i]: continue the bars of its ancestors (and
    its own, when it has children below)."""
    n = nodes[i]
    prefix = ""
    for level in range(1, n["depth"] + 1):
        prefix += "│  " if _has_later_sibling(nodes, i, level) else "   "
    has_children = i + 1 < len(nodes) and nodes[i + 1]["depth"] > n["depth"]
    return prefix + ("│  " if has_children else "   ")


def _has_later_sibling(nodes: list[dict], i: int, depth: int) -> bool:
    """Does the ancestor of nodes[i] at `depth` (or the node itself) have a later sibling?"""
    for later in nodes[i + 1:]:
        if later["depth"] < depth:
            return False
        if later["depth"] == depth:
            return True
    return False
