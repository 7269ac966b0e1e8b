"""JSON error bodies (Helicone's shape: {"error": {...}}) instead of mitmproxy's HTML page when an LLM call's upstream fails.

mitmproxy answers a failed upstream connection with an HTML 502 built inside its HTTP/1 server
layer, after the `error` hook has run. The addon's `error` hook registers the JSON body it wants
for that client connection (`expect`), and a small wrapper around `Http1Server.send` sends it
instead of the HTML page. The wrapper touches a private class, so it is installed only on the
mitmproxy versions it is tested on; elsewhere the stock HTML page stays (and the call is still logged).
"""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)

TESTED_VERSIONS = ("12.2.",)
SUPPORT = "helicone_addon runs locally: see its log and `helicone-addon logs` for details."

_pending: dict[str, tuple[int, bytes]] = {}
_installed = False


def error_body(status: int, cause: str) -> dict:
    """The B.12 JSON body for an upstream failure the proxy answers itself."""
    if status == 504:
        error, message = "Request timeout", "The request to the provider timed out"
    elif status == 502:
        error, message = "Network connection lost", "Unable to connect to the provider"
    else:
        error, message = "Unknown error", "An unknown error occurred"
    return {
        "error": error,
        "message": message,
        "helicone-message": f"helicone_addon could not complete the call to the provider: {cause}",
        "support": SUPPORT,
        "error-trace": cause,
    }


def classify(cause: str) -> int:
    low = cause.lower()
    return 504 if "timed out" in low or "timeout" in low else 502


def response_bytes(status: int, cause: str, request_id: str | None) -> bytes:
    body = json.dumps(error_body(status, cause)).encode()
    reason = {502: "Bad Gateway", 504: "Gateway Timeout"}.get(status, "Error")
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json;charset=UTF-8",
        f"content-length: {len(body)}",
        "helicone-error: true",
        "connection: close",
    ]
    if request_id:
        head.append(f"helicone-id: {request_id}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def expect(client_conn_id: str, status: int, cause: str, request_id: str | None) -> bool:
    """Ask for a JSON error page on this client connection's next protocol error. False if unsupported."""
    if not _installed:
        return False
    if len(_pending) > 10000:  # entries whose connection died before the page was sent
        _pending.clear()
    _pending[client_conn_id] = (status, response_bytes(status, cause, request_id))
    return True


def forget(client_conn_id: str) -> None:
    _pending.pop(client_conn_id, None)


def install() -> bool:
    global _installed
    if _installed:
        return True
    try:
        import mitmproxy.version
        from mitmproxy.connection import ConnectionState
        from mitmproxy.proxy import commands
        from mitmproxy.proxy.layers.http import _http1
        from mitmproxy.proxy.layers.http._events import ResponseProtocolError
    except Exception:  # pragma: no cover - other mitmproxy layouts
        return False
    if not mitmproxy.version.VERSION.startswith(TESTED_VERSIONS):
        logger.info("helicone: JSON error pages disabled on untested mitmproxy %s", mitmproxy.version.VERSION)
        return False
    original = _http1.Http1Server.send

    def send(self, event):
        if isinstance(event, ResponseProtocolError) and not self.response:
            pending = _pending.pop(self.conn.id, None)
            if pending is not None:
                if self.conn.state & ConnectionState.CAN_WRITE:
                    yield commands.SendData(self.conn, pending[1])
                    yield commands.CloseConnection(self.conn)
                return
        yield from original(self, event)

    send.__wrapped__ = original  # type: ignore[attr-defined]
    _http1.Http1Server.send = send
    _installed = True
    return True
