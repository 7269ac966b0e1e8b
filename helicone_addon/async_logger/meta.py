"""Helicone metadata of a logger's calls: its defaults, the ``meta()`` blocks around a call (per thread /
task context), the call's request id, and the id of the last call started in the context."""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .. import headers as hdrs

Pairs = tuple[tuple[str, str], ...]


def meta_pairs(
    user_id: str | None = None,
    session_id: str | None = None,
    session_path: str | None = None,
    session_name: str | None = None,
    properties: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Pairs:
    pairs: list[tuple[str, str]] = []
    for name, value in (("Helicone-User-Id", user_id), ("Helicone-Session-Id", session_id),
                        ("Helicone-Session-Path", session_path), ("Helicone-Session-Name", session_name)):
        if value is not None:
            pairs.append((name, str(value)))
    for k, v in (properties or {}).items():
        pairs.append((f"Helicone-Property-{k}", str(v)))
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for k, v in items:
        if not hdrs.is_helicone(k):
            raise ValueError(f"meta headers must be Helicone-* headers, got {k!r}")
        pairs.append((k, str(v)))
    return tuple(pairs)


def request_id(pairs: Iterable[tuple[str, str]]) -> str:
    """The last valid Helicone-Request-Id among `pairs` (lower-cased), else a new UUID."""
    rid = None
    for k, v in pairs:
        if k.lower() == hdrs.H_REQUEST_ID and hdrs.UUID_RE.match(v.strip()):
            rid = v.strip().lower()
    return rid or str(uuid.uuid4())


class MetaContext:
    """One logger's metadata: defaults for every call, then the enclosing ``scope()`` blocks'."""

    def __init__(self, key: int, defaults: Pairs) -> None:
        self._defaults = defaults
        self._pairs: contextvars.ContextVar[Pairs] = contextvars.ContextVar(f"helicone_meta_{key}", default=())
        self._last_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"helicone_last_id_{key}", default=None
        )

    @contextlib.contextmanager
    def scope(self, pairs: Pairs) -> Iterator[None]:
        token = self._pairs.set(self._pairs.get() + pairs)
        try:
            yield
        finally:
            self._pairs.reset(token)

    def pairs(self, own: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """A call's Helicone-* pairs: defaults, the context's, then the call's `own` (later ones win)."""
        return [*self._defaults, *self._pairs.get(), *own]

    @property
    def last_id(self) -> str | None:
        return self._last_id.get()

    @last_id.setter
    def last_id(self, rid: str) -> None:
        self._last_id.set(rid)
