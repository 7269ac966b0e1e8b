"""The response byte-stream tee: copies chunks as the app reads them (no buffering, no extra await) and
hands the call over once the stream is consumed, closed, fails or is dropped."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .call import Call

if TYPE_CHECKING:
    from .owner import Owner


def _find_base(obj: Any, name: str) -> type | None:
    """The httpx / httpx2 class called `name` that `obj` belongs with (MRO first, then its package)."""
    for cls in type(obj).__mro__:
        if cls.__name__ == name:
            return cls
    mod = sys.modules.get(type(obj).__module__.partition(".")[0])
    base = getattr(mod, name, None)
    return base if isinstance(base, type) else None


_TEE_CLASSES: dict[tuple[type | None, bool], type] = {}


def tee_class(stream: Any, is_async: bool) -> type:
    """The tee class for `stream`: the sync / async tee, also a subclass of the stream's httpx base."""
    base = _find_base(stream, "AsyncByteStream" if is_async else "SyncByteStream")
    key = (base, is_async)
    cls = _TEE_CLASSES.get(key)
    if cls is None:
        mixin = _AsyncTee if is_async else _SyncTee
        cls = type(mixin.__name__, (mixin, base) if base is not None else (mixin,), {})
        _TEE_CLASSES[key] = cls
    return cls


class _TeeBase:
    def __init__(self, inner: Any, call: Call, owner: Owner) -> None:
        self._inner = inner
        self._call = call
        self._owner = owner

    def _chunk(self, data: bytes) -> None:
        try:
            if data:
                c = self._call
                if c.first_chunk_at is None:
                    c.first_chunk_at = time.time()
                if c.kept < self._owner.max_logged_bytes:
                    c.chunks.append(bytes(data))
                    c.kept += len(data)
        except Exception:  # never reaches the app; counted, not logged per chunk
            self._owner._count("internal_errors")

    def _finish(self, error: BaseException | None = None) -> None:
        self._owner._finish(self._call, error)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Around the read loop of either tee: a failure ends the call with its error, the end of the
        stream ends it as read to the end; an app that stops reading early (GeneratorExit) ends it
        through close() / aclose() or __del__."""
        try:
            yield
        except GeneratorExit:
            raise
        except BaseException as e:
            self._finish(e)
            raise
        self._call.exhausted = True
        self._finish()

    def __del__(self) -> None:  # an abandoned response still gets logged (_finish never raises)
        if not self._call.finished:
            self._finish()


class _SyncTee(_TeeBase):
    def __iter__(self) -> Iterator[bytes]:
        with self._reading():
            for chunk in self._inner:
                self._chunk(chunk)
                yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


class _AsyncTee(_TeeBase):
    async def __aiter__(self):
        with self._reading():
            async for chunk in self._inner:
                self._chunk(chunk)
                yield chunk

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._finish()
