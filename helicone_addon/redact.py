"""Secrets never reach the log in clear: provider keys become a short fingerprint."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

from .headers import SECRET_HEADERS

_KEY_QUERY = re.compile(r"([?&](?:key|api-key|api_key)=)([^&#]*)", re.IGNORECASE)


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


# A client sends the same key on every call: its redacted form is kept for the next one. The cache
# lives in this process only (which holds the keys anyway, in the calls it forwards).
@functools.lru_cache(maxsize=256)
def redact_value(value: str) -> str:
    """'Bearer sk-abc' -> 'Bearer [REDACTED sha256:…]' (the scheme word is kept, the secret is not)."""
    scheme, sep, rest = value.partition(" ")
    if sep and rest and scheme.isalpha() and len(scheme) <= 10:
        return f"{scheme} [REDACTED sha256:{fingerprint(rest.strip())}]"
    return f"[REDACTED sha256:{fingerprint(value)}]"


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs -> a JSON-able dict with secrets redacted (repeated headers joined by ', ')."""
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        v = redact_value(value) if low in SECRET_HEADERS else value
        out[low] = f"{out[low]}, {v}" if low in out else v
    return out


def redact_url(url: str) -> str:
    """Replace `?key=` style query values (Gemini) with a fingerprint."""
    if "=" not in url:  # nothing the pattern can match (most paths)
        return url
    return _KEY_QUERY.sub(lambda m: f"{m.group(1)}REDACTED-{fingerprint(m.group(2))}", url)
