"""Content-Encoding decoding: gzip, deflate (zlib or raw), br, zstd, identity, and stacks of them.

``BodyDecoder`` is incremental (feed the encoded chunks of a streamed body as they arrive);
``decode_body`` decodes a whole body. Both are tolerant: a truncated body gives what decodes, and
a body that does not decode at all is returned unchanged. Neither ever raises.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["BodyDecoder", "decode_body", "parse_content_encoding"]

_ALIASES = {"x-gzip": "gzip", "x-deflate": "deflate", "brotli": "br", "zstandard": "zstd"}
_IDENTITY = frozenset(("", "identity", "none", "chunked", "binary", "utf-8", "utf8"))
_SUPPORTED = frozenset(("gzip", "deflate", "br", "zstd"))


def parse_content_encoding(content_encoding: Any) -> list[str] | None:
    """Codings in the order they were APPLIED; None when one of them is unknown."""
    if content_encoding is None:
        return []
    if isinstance(content_encoding, bytes):
        content_encoding = content_encoding.decode("latin-1")
    if not isinstance(content_encoding, str):
        return None
    out = []
    for tok in content_encoding.split(","):
        tok = tok.strip().lower()
        tok = _ALIASES.get(tok, tok)
        if tok in _IDENTITY:
            continue
        if tok not in _SUPPORTED:
            return None
        out.append(tok)
    return out


class _Gzip:
    """gzip (also accepts a zlib header); handles multi-member bodies."""

    wbits = 32 + zlib.MAX_WBITS

    def __init__(self) -> None:
        self._d = zlib.decompressobj(self.wbits)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            if self._d.eof:
                data = self._d.unused_data
                if data.lstrip(b"\0"):
                    self._d = zlib.decompressobj(self.wbits)
                    data = data.lstrip(b"\0")  # some servers pad members with NULs
                else:
                    data = b""
            else:
                data = b""
        return b"".join(out)

    def flush(self) -> bytes:
        try:
            return self._d.flush()
        except zlib.error:
            return b""


class _Deflate:
    """HTTP "deflate" is zlib-wrapped, but many servers send raw deflate: decide from the header."""

    def __init__(self) -> None:
        self._d: Any = None
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            cmf, flg = self._head[0], self._head[1]
            zlib_header = (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and ((cmf << 8) | flg) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        if self._d.eof:
            return b""
        return self._d.decompress(data)

    def flush(self) -> bytes:
        if self._d is None:
            if not self._head:
                return b""
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            data, self._head = self._head, b""
            out = self._d.decompress(data)
        else:
            out = b""
        try:
            return out + self._d.flush()
        except zlib.error:
            return out


class _Brotli:
    def __init__(self) -> None:
        import brotli  # installed with mitmproxy

        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        if self._d.is_finished():
            return b""
        return self._d.process(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        import zstandard  # installed with mitmproxy

        self._d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def feed(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return b""


_PENDING_MAX = 8 << 20

_LAYERS = {"gzip": _Gzip, "deflate": _Deflate, "br": _Brotli, "zstd": _Zstd}


class BodyDecoder:
    """Incremental decoder for one body. ``feed(chunk) -> bytes``, ``flush() -> bytes``.

    Until the first decoded byte comes out, the raw input is kept; if decoding then fails, that
    raw input is returned as-is and the rest passes through unchanged (the body was not really
    encoded the way the header said). A failure after some output ends the output there.
    """

    __slots__ = ("_layers", "_pending", "_produced", "_state")

    def __init__(self, content_encoding: Any = None) -> None:
        codings = parse_content_encoding(content_encoding)
        self._layers: list[Any] = []
        self._state = "decode"  # decode | passthrough | broken
        if codings is None:
            self._state = "passthrough"
        else:
            try:
                self._layers = [_LAYERS[c]() for c in reversed(codings)]
            except Exception:  # noqa: BLE001 - missing optional module: the body is kept as it came
                logger.debug("no decoder for content-encoding %s", codings, exc_info=True)
                self._layers = []
                self._state = "passthrough"
        if not self._layers and self._state == "decode":
            self._state = "passthrough"
        self._pending = bytearray()
        self._produced = False

    @property
    def active(self) -> bool:
        """True when bytes are being decoded (not passed through)."""
        return self._state == "decode"

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._state == "passthrough":
            return bytes(data)
        if self._state == "broken":
            return b""
        if not self._produced:
            self._pending += data
            if len(self._pending) > _PENDING_MAX:  # never decoded anything: stop keeping a copy
                self._produced = True
                self._pending = bytearray()
        try:
            out = bytes(data)
            for layer in self._layers:
                if not out:
                    break
                out = layer.feed(out)
        except Exception:  # noqa: BLE001 - zlib.error, brotli.error, ZstdError, ...: keep it raw
            logger.debug("body did not decode", exc_info=True)
            return self._fail()
        if out:
            self._produced = True
            self._pending = bytearray()
        return out

    def flush(self) -> bytes:
        if self._state != "decode":
            return b""
        out = b""
        try:
            # what layer i still holds is flushed, then decoded by the layers inside it
            for layer in self._layers:
                out = (layer.feed(out) if out else b"") + layer.flush()
        except Exception:  # noqa: BLE001 - a truncated or corrupt body: keep what decoded
            logger.debug("body did not decode to its end", exc_info=True)
            return self._fail()
        self._state = "broken"  # finished: further input is ignored
        if out:
            self._produced = True
        return out

    def _fail(self) -> bytes:
        if self._produced:
            self._state = "broken"
            return b""
        self._state = "passthrough"
        raw = bytes(self._pending)
        self._pending = bytearray()
        return raw


def decode_body(raw: bytes, content_encoding: str | None) -> bytes:
    """Decode a whole body according to its Content-Encoding; never raises.

    A truncated body gives what decodes; a body that does not decode is returned unchanged.
    """
    try:
        if raw is None:
            return b""
        raw = bytes(raw)
        dec = BodyDecoder(content_encoding)
        if not dec.active:
            return raw
        return dec.feed(raw) + dec.flush()
    except Exception:  # noqa: BLE001 - a body that does not decode is returned unchanged
        logger.debug("body not decoded (%s)", content_encoding, exc_info=True)
        return raw if isinstance(raw, bytes) else b""
