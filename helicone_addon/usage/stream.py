"""Response parsing: one incremental entry point (``StreamParser``) used for whole bodies too.

The body shape is decided from its first non-blank bytes (and the Content-Type):

* ``{`` or ``[``      -> JSON: one object, a Gemini JSON-array stream, or NDJSON; parsed at finish()
                        (leniently: a truncated array still yields its complete elements);
* SSE field / comment -> SSE, decoded incrementally; one JSON parse per event;
  (``data:``, ``event:``, ``id:``, ``retry:``, ``:``) or Content-Type text/event-stream
* anything else       -> kept (first 64 KiB) as the error text of an HTTP error.

Every object is handed to the accumulator of the wire format (``api``). If the first object
clearly belongs to another format (an Anthropic body on a path that looked like Gemini, ...), the
accumulator for that format is used instead. Nothing here raises.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..sse import SSEDecoder
from ._base import Accumulator, _decode, loads
from .anthropic import _STREAM_TYPES as _ANTHROPIC_TYPES
from .anthropic import AnthropicAccumulator
from .decode import BodyDecoder
from .gemini import GeminiAccumulator
from .openai_chat import ChatAccumulator
from .openai_responses import ResponsesAccumulator
from .types import ParsedResponse

logger = logging.getLogger(__name__)

__all__ = ["StreamParser", "parse_response", "accumulator_for", "sniff_family", "sse_events"]

# wire format (providers.API_*) -> accumulator class
_BY_API: dict[str, type[Accumulator]] = {
    "openai-chat": ChatAccumulator,
    "openai-completions": ChatAccumulator,
    "openai-embeddings": ChatAccumulator,
    "openai-responses": ResponsesAccumulator,
    "anthropic-messages": AnthropicAccumulator,
    "gemini": GeminiAccumulator,
    "gemini-embeddings": GeminiAccumulator,
}
_BY_FAMILY: dict[str, type[Accumulator]] = {
    "openai": ChatAccumulator,
    "responses": ResponsesAccumulator,
    "anthropic": AnthropicAccumulator,
    "gemini": GeminiAccumulator,
}

_SSE_PREFIXES = (b"data:", b"event:", b"id:", b"retry:", b":")
_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_RAW_KEEP = 64 * 1024


def accumulator_for(api: str | None) -> type[Accumulator] | None:
    return _BY_API.get(api or "")


def sniff_family(obj: Any) -> str | None:
    """Which wire-format family a response object belongs to, when it is unmistakable."""
    if not isinstance(obj, dict):
        return None
    t = obj.get("type")
    if isinstance(t, str):
        if t.startswith("response."):
            return "responses"
        if t in _ANTHROPIC_TYPES or (t == "message" and isinstance(obj.get("content"), list)):
            return "anthropic"
    o = obj.get("object")
    if o == "response":
        return "responses"
    if isinstance(o, str) and (o.startswith("chat.completion") or o in ("text_completion", "list")):
        return "openai"
    if "candidates" in obj or "usageMetadata" in obj or "modelVersion" in obj:
        return "gemini"
    if "choices" in obj:
        return "openai"
    return None


class StreamParser:
    """Feed a response body chunk by chunk; ``finish()`` returns the :class:`ParsedResponse`.

    ``content_encoding`` (optional): give the raw Content-Encoding when feeding undecoded bytes.
    """

    def __init__(
        self,
        api: str | None,
        content_type: str | None = None,
        status: int | None = None,
        content_encoding: str | None = None,
    ) -> None:
        self.api = api
        self.status = status if isinstance(status, int) else None
        ct = content_type.lower() if isinstance(content_type, str) else ""
        self._ct_sse = "event-stream" in ct
        self._decoder = BodyDecoder(content_encoding) if content_encoding else None
        self._mode: str | None = None  # None (undecided) | sse | json | raw
        self._head = bytearray()
        self._json = bytearray()
        self._raw = bytearray()  # first bytes of an HTTP error body, for its error message
        self._keep_raw = self.status is not None and self.status >= 400
        self._sse: SSEDecoder | None = None
        self._acc: Accumulator | None = None
        self._sniffing = False  # format not yet confirmed by a non-error object
        self._events = 0
        self._bad_events = 0
        self._streamed = False
        self._finished: ParsedResponse | None = None
        self.nbytes = 0
        self._whole = False  # parse_all(): the body is complete, SSE is split in one go

    # -- public API -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add the next piece of the body. Never raises."""
        if self._finished is not None or not data:
            return
        try:
            if self._decoder is not None:
                data = self._decoder.feed(data)
                if not data:
                    return
            self._feed(bytes(data))
        except Exception:  # noqa: BLE001 - a parser must never break the proxy: the rest is kept raw
            logger.debug("response body not understood (%s); kept raw", self._mode, exc_info=True)
            self._mode = "raw"

    def parse_all(self, body: bytes) -> ParsedResponse:
        """The whole body at once: the same result as ``feed(body)`` then ``finish()``, sooner."""
        self._whole = True
        if (type(body) is bytes and body[:1] in (b"{", b"[") and self._mode is None and self._decoder is None
                and not self._keep_raw and self._finished is None):
            # JSON from its first byte, nothing to decode or keep: what feed() would conclude
            self._mode = "json"
            self.nbytes = len(body)
            self._json = body  # read (not changed) by _parse_json
            return self.finish()
        self.feed(body)
        return self.finish()

    def finish(self) -> ParsedResponse:
        """End of body: parse what is left and return the result (idempotent)."""
        if self._finished is not None:
            return self._finished
        out = ParsedResponse()
        try:
            if self._decoder is not None:
                tail = self._decoder.flush()
                if tail:
                    self._feed(tail)
            if self._mode is None:
                self._decide(final=True)
            if self._mode == "sse" and self._sse is not None:
                for ev in self._sse.close():
                    self._event(ev.event, ev.data)
            elif self._mode == "json":
                self._parse_json()
        except Exception:  # noqa: BLE001 - a body we cannot parse: usage stays unknown, the row is still written
            logger.debug("response body not understood at its end (%s)", self._mode, exc_info=True)
        try:
            out.streamed = self._streamed
            if self._acc is not None:
                self._acc.fill(out)
            if self.status is not None and self.status >= 400 and not out.error:
                out.error = self._raw_error_text()
            if out.error:
                out.extra["error_in_stream"] = bool(self._streamed)
        except Exception:  # noqa: BLE001 - as above
            logger.debug("response summary failed (%s)", self._mode, exc_info=True)
        self._finished = out
        return out

    # -- shape detection ------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self.nbytes += len(data)
        if self._keep_raw and len(self._raw) < _RAW_KEEP:
            self._raw += data[: _RAW_KEEP - len(self._raw)]
        mode = self._mode
        if mode == "sse":
            self._sse_feed(data)
        elif mode == "json":
            self._json += data
        elif mode is None:
            self._head += data
            self._decide(final=False)

    def _decide(self, final: bool) -> None:
        head = bytes(self._head)
        stripped = head.lstrip(_WS)
        if stripped.startswith(_BOM):
            stripped = stripped[3:].lstrip(_WS)
        if not stripped and not final:
            return
        first = stripped[:1]
        if first in (b"{", b"["):
            mode = "json"
        elif self._ct_sse or stripped.startswith(_SSE_PREFIXES):
            mode = "sse"
        elif not final and any(p.startswith(stripped) for p in _SSE_PREFIXES):
            return  # could still become "data:" / "event:": wait for more bytes
        else:
            mode = "raw"
        self._mode = mode
        self._head = bytearray()
        if mode == "sse":
            self._streamed = True
            if self._whole:
                self._events_of_whole_body(sse_events(head.decode("utf-8", "replace")))
                return
            self._sse = SSEDecoder()
            self._sse_feed(head)
        elif mode == "json":
            self._json += head

    # -- SSE ------------------------------------------------------------------------------

    def _sse_feed(self, data: bytes) -> None:
        assert self._sse is not None
        for ev in self._sse.feed(data):
            self._event(ev.event, ev.data)

    def _event(self, name: str | None, data: str) -> None:
        self._events += 1
        if not data or data == "[DONE]":
            return
        try:
            obj = loads(data)
        except ValueError:
            self._bad_events += 1
            if name == "error" and data.strip():  # `event: error` with a plain-text payload
                self._object({"error": {"message": data.strip()}}, name)
            return
        self._object(obj, name)

    def _events_of_whole_body(self, events: list[tuple[str | None, str]]) -> None:
        """``_event`` for each event, the common case (valid JSON, the format settled) done here
        without the calls in between."""
        decode = _decode
        for name, data in events:
            if not data or data == "[DONE]":
                self._events += 1
                continue
            try:
                obj = decode(data)
            except (ValueError, RecursionError):  # whatever msgspec refuses: as _event does it
                self._event(name, data)
                continue
            self._events += 1
            acc = self._acc
            if acc is None or self._sniffing:
                self._object(obj, name)
            else:
                acc.feed(obj, name)

    # -- JSON -----------------------------------------------------------------------------

    def _parse_json(self) -> None:
        raw = bytes(self._json)
        self._json = bytearray()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
        try:
            doc = loads(text)
        except ValueError:
            self._parse_json_lenient(text)
            return
        if isinstance(doc, list):
            self._streamed = True
            for item in doc:
                self._object(item, None)
        else:
            self._object(doc, None)

    def _parse_json_lenient(self, text: str) -> None:
        """Truncated array / NDJSON / concatenated objects: take every complete value."""
        dec = json.JSONDecoder()
        n = len(text)
        i = 0
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        in_array = i < n and text[i] == "["
        if in_array:
            i += 1
        count = 0
        while i < n:
            while i < n and text[i] in " \t\r\n,":
                i += 1
            if i >= n or text[i] == "]":
                break
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                break
            count += 1
            self._object(obj, None)
        if in_array or count > 1:
            self._streamed = True

    # -- dispatch -------------------------------------------------------------------------

    def _object(self, obj: Any, event: str | None) -> None:
        acc = self._acc
        if acc is None or self._sniffing:
            if isinstance(obj, list):  # e.g. one SSE event holding an array of chunks
                for item in obj:
                    self._object(item, event)
                return
            acc = self._choose(obj)
        acc.feed(obj, event)

    def _choose(self, obj: Any) -> Accumulator:
        """Pick the accumulator from the api, unless the payload clearly speaks another format.

        Objects that say nothing about their format (error objects) keep the decision open.
        """
        fam = sniff_family(obj)
        acc = self._acc
        if acc is None:
            cls = accumulator_for(self.api)
            if fam is not None and (cls is None or cls.family != fam):
                cls = _BY_FAMILY[fam]
            acc = self._acc = (cls or ChatAccumulator)()
        elif fam is not None and fam != acc.family:
            new = _BY_FAMILY[fam]()
            if acc.error is not None:
                new.set_error(acc.error, acc.error_type, acc.error_code)
            acc = self._acc = new
        self._sniffing = fam is None
        return acc

    def _raw_error_text(self) -> str:
        text = bytes(self._raw).decode("utf-8", "replace").strip()
        if len(text) > 2000:
            text = text[:2000] + "…"
        if text:
            return text
        return f"HTTP {self.status}" if self.status is not None else "HTTP error"


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of every event of a whole SSE body, exactly as ``SSEDecoder`` gives them
    for that body fed at once and closed, but quicker: an event of a single ``data:`` line (what
    LLM APIs send) skips the line-by-line work.

    Splitting at blank lines ("\n\n") leaves blocks whose only possible empty lines are leading
    ones (a run of 3+ line ends); the end of every block is a blank line, which dispatches the
    pending data and resets the event name, and the last block is flushed as ``close()`` does.
    """
    if text[:1] == "\ufeff":
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[tuple[str | None, str]] = []
    append = out.append
    for block in text.split("\n\n"):
        if block[:5] == "data:" and "\n" not in block:
            append((None, block[6:] if block[5:6] == " " else block[5:]))
            continue
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line:
                if data:
                    append((event or None, "\n".join(data)))
                    data = []
                event = None
            elif line[0] != ":":
                field, sep, value = line.partition(":")
                if sep and value[:1] == " ":
                    value = value[1:]
                if field == "data":
                    data.append(value)
                elif field == "event":
                    event = value
        if data:
            append((event or None, "\n".join(data)))
    return out


def parse_response(api: str, body: bytes, content_type: str | None, status: int | None) -> ParsedResponse:
    """Parse a whole (already content-decoded) response body. Never raises."""
    try:
        p = StreamParser(api, content_type, status)
        if not body:
            return p.finish()
        return p.parse_all(
            body if isinstance(body, (bytes, bytearray, memoryview)) else str(body).encode("utf-8", "replace")
        )
    except Exception:  # noqa: BLE001 - never raises (see above)
        logger.debug("response body not parsed (api %s)", api, exc_info=True)
        return ParsedResponse()
