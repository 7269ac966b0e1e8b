"""The corpus of recorded provider payloads (tests/data/corpus, see its README.md), and the
normalised usage each case must produce — derived here, independently of helicone_addon.usage (see the rules in
tests/unit/test_usage_corpus.py's docstring)."""

from __future__ import annotations

import json
from pathlib import Path

from helicone_addon import providers

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
CASES_DIR = CORPUS / "cases"

CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())


def load(name: str):
    d = CASES_DIR / name
    req = json.loads((d / "request.json").read_text())
    hdr = json.loads((d / "response.headers.json").read_text())
    exp = json.loads((d / "expected.json").read_text())
    body = (d / "response.body").read_bytes()
    return req, hdr, exp, body


def api_of(req: dict) -> str:
    return providers.api_for(providers.detect(req["host"], req["path"]), req["path"])


def request_bytes(req: dict) -> bytes | None:
    body = req.get("body")
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _plus(*vals):
    known = [v for v in vals if v is not None]
    return sum(known) if known else None


def expected_normalised(exp: dict) -> tuple | None:
    """(prompt, completion, total, cached, cache_write, reasoning) or None when nothing reported."""
    u = exp["usage"]
    inp, out, tot = u["input_tokens"], u["output_tokens"], u["total_tokens"]
    cached, creation, reasoning = u["cached_input_tokens"], u["cache_creation_input_tokens"], u["reasoning_tokens"]
    if all(v is None for v in u.values()):
        return None
    api = exp["api"]
    raw = exp.get("usage_raw")
    if api == "anthropic-messages":
        final = raw[-1] if isinstance(raw, list) else raw
        iterations = final.get("iterations") if isinstance(final, dict) else None
        if iterations:
            inp = sum(i["input_tokens"] for i in iterations)
            out = sum(i["output_tokens"] for i in iterations)
            cached = sum(i["cache_read_input_tokens"] for i in iterations)
            creation = sum(i["cache_creation_input_tokens"] for i in iterations)
        prompt = _plus(inp, cached, creation)
        completion = out
        cache_write = creation
    elif api in ("gemini", "gemini-embeddings"):
        tool_prompt = raw.get("toolUsePromptTokenCount") if isinstance(raw, dict) else None
        prompt = _plus(inp, tool_prompt)
        completion = _plus(out, reasoning)
        cache_write = None
    else:
        prompt, completion, cache_write = inp, out, None
    total = prompt + completion if prompt is not None and completion is not None else tot
    return (prompt, completion, total, cached, cache_write, reasoning)
