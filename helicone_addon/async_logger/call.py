"""One captured call: what the wrapper saw of it, raw, until a sink turns it into a row or a payload."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import headers as hdrs
from .. import providers

# SSE events that end a stream: SDKs close the response right after them, before the HTTP body's end
_TERMINAL = (b"[DONE]", b"message_stop", b"response.completed", b"response.failed", b"response.incomplete")


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


@dataclass
class Call:
    """What the wrapper saw of one call (raw; turned into a row off the app's thread)."""

    id: str
    started_at: float
    method: str
    url: str
    sdk: str | None
    request_headers: list[tuple[str, str]]  # as the app sent them, Helicone-* included
    helicone: list[tuple[str, str]]  # Helicone-* pairs: logger defaults, meta() context, then the call's own
    request_body: bytes | None
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    kept: int = 0
    first_chunk_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    cancelled: bool = False
    exhausted: bool = False
    finished: bool = False

    def header(self, name: str) -> str | None:
        """A response header's value (first one, any case)."""
        name = name.lower()
        return next((v for k, v in self.response_headers if k.lower() == name), None)

    def end(self, error: BaseException | None = None) -> bool:
        """Mark the call finished, once: its error, or a cancellation when the app closed the response
        before its end. False when it was already finished (then nothing changes)."""
        if self.finished:
            return False
        self.finished = True
        self.ended_at = time.time()
        if error is not None and self.error is None:
            self.error = _error_text(error)
        elif not self.exhausted and self.error is None and not self._looks_complete():
            self.cancelled = True
            self.error = "cancelled: the response was closed before it was read to the end"
        return True

    def _looks_complete(self) -> bool:
        """Was a response closed early only after its last event (then it is not a cancellation)?"""
        if not self.chunks or "event-stream" not in (self.header("content-type") or "").lower():
            return False
        if (self.header("content-encoding") or "identity").lower() != "identity":
            return True  # cannot look inside cheaply; do not guess a cancellation
        tail = b"".join(self.chunks[-3:])[-512:]
        return any(t in tail for t in _TERMINAL)

    def route(self, opts: hdrs.CallOptions, forced: str | None) -> tuple[str, str, str | None]:
        """(host, path with query, provider id). The provider: `forced`, else Helicone-Target-Provider,
        else the known host, the SDK, then the path."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if forced:
            provider = forced
        elif opts.target_provider:
            provider = opts.target_provider.lower()
        else:
            provider = providers.DEFAULT_MATCHER.provider_for(host) or self.sdk or providers.provider_from_path(path)
        return host, path, provider
