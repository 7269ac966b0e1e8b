"""Incremental Server-Sent Events decoder (WHATWG "event stream interpretation").

Pure Python, no I/O: feed it the response body in whatever pieces the network delivered and it
returns the complete events. The result does not depend on where the bytes were split:

* lines may end in ``\\r\\n``, ``\\n`` or ``\\r`` (a ``\\r`` ending one chunk and a ``\\n`` starting the
  next count as one line ending);
* UTF-8 sequences split across chunks are reassembled (invalid bytes become U+FFFD);
* a UTF-8 BOM at the very start is dropped;
* ``field:value`` and ``field: value`` are the same (one leading space is stripped);
* several ``data:`` lines are joined with ``\\n``; ``:comment`` lines are ignored;
* an event is dispatched at a blank line, and only if it had at least one ``data`` line;
* ``id`` persists across events (as in the spec); ``retry`` is ignored.

``close()`` flushes a last event that was not terminated by a blank line (the spec would drop it;
a proxy wants it, e.g. when the upstream connection was cut).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEDecoder"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None  # the `event:` name, None when the event had none ("message")
    data: str  # the data lines joined with "\n"
    id: str | None = None  # the last event id seen so far (persists, as in the spec)


class SSEDecoder:
    """Bytes in, :class:`SSEEvent` objects out. Never raises on any input."""

    __slots__ = ("_utf8", "_partial", "_skip_lf", "_started", "_data", "_event", "_last_id", "_closed")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []  # pieces of the current, not yet terminated line
        self._skip_lf = False  # the previous text ended in "\r": a leading "\n" belongs to it
        self._started = False  # first character seen (BOM handling)
        self._data: list[str] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode one chunk of the body; return the events it completed (possibly none)."""
        if self._closed or not data:
            return []
        return self._feed_text(self._utf8.decode(bytes(data)))

    def close(self) -> list[SSEEvent]:
        """End of body: flush the decoder, the last unterminated line and a pending event."""
        if self._closed:
            return []
        out = self._feed_text(self._utf8.decode(b"", True))
        self._closed = True
        if self._partial:
            line = "".join(self._partial)
            self._partial = []
            self._line(line, out)
        if self._data:
            self._dispatch(out)
        return out

    # -- internals ------------------------------------------------------------------------

    def _feed_text(self, text: str) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        if not text:
            return out
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return out
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return out
        if "\r" in text:
            if text[-1] == "\r":
                self._skip_lf = True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial.append(text)
            return out
        lines = text.split("\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial = []
        rest = lines.pop()
        if rest:
            self._partial.append(rest)
        line_fn = self._line
        for line in lines:
            line_fn(line, out)
        return out

    def _line(self, line: str, out: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                self._dispatch(out)
            else:
                self._event = None
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        # "retry" and unknown fields are ignored

    def _dispatch(self, out: list[SSEEvent]) -> None:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        out.append(SSEEvent(self._event or None, data, self._last_id))
        self._data = []
        self._event = None
