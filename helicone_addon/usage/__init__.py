"""Pure parsing core: request facts, response model/usage/text/error, body decoding, estimates.

No mitmproxy import here. Public interface::

    parse_request(api, path, body) -> RequestInfo
    parse_response(api, body, content_type, status) -> ParsedResponse
    StreamParser(api, content_type=None, status=None, content_encoding=None)
        .feed(bytes) / .finish() -> ParsedResponse          (incremental form of parse_response)
    decode_body(raw, content_encoding) -> bytes
    BodyDecoder(content_encoding).feed(bytes) / .flush()    (incremental form of decode_body)
    estimate(req, parsed, model) -> Usage                    (source='estimated')
    count_tokens(text, model) -> int

Normalised usage (``Usage``) has one meaning for every provider: prompt_tokens = all input
(uncached + cache read + cache write), completion_tokens = all output including reasoning,
cached_tokens = cache read, cache_write_tokens = cache creation, total = prompt + completion.
"""

from __future__ import annotations

from .decode import BodyDecoder, decode_body
from .estimation import count_tokens, estimate
from .request import parse_request
from .stream import StreamParser, parse_response
from .types import ParsedResponse, RequestInfo, Usage

__all__ = [
    "BodyDecoder",
    "ParsedResponse",
    "RequestInfo",
    "StreamParser",
    "Usage",
    "count_tokens",
    "decode_body",
    "estimate",
    "parse_request",
    "parse_response",
]
