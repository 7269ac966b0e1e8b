"""The web view's door: the same token as the local API, and the same Host / Origin rules.

`helicone-addon ui` calls `configure(token)` before serving and puts `Guard` around the web view's
Starlette app. A browser opens the URL the command prints, `...?token=<token>`, once:
the token is checked, a cookie is set and the browser is sent on to the same URL without it (so it
does not linger in the address bar or in Referer headers). Programs may send
`Authorization: Bearer <token>` instead. Anything else gets 401; a foreign Host or Origin gets 403.

The cookie holds a value derived from the token (an HMAC), never the token itself: browsers send
a 127.0.0.1 cookie to every port of 127.0.0.1, and that value opens this view only, not the API.
Until `configure` is called every request is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..security import HostRules, bearer, token_matches

COOKIE = "helicone_ui"
TOKEN_PARAM = "token"

_PAGE = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<h1>{title}</h1><p>{message}</p>"""


@dataclass(frozen=True)
class _Config:
    token: str
    rules: HostRules

    @property
    def cookie_value(self) -> str:
        return hmac.new(self.token.encode(), b"helicone-addon ui cookie", hashlib.sha256).hexdigest()


_config: _Config | None = None


def configure(token: str, listen_host: str = "127.0.0.1", hosts: Iterable[str] = ()) -> None:
    """Admit requests carrying this token (or its cookie), reaching us by one of our names."""
    global _config
    if not token:
        raise ValueError("the web view needs a token")
    _config = _Config(token, HostRules(listen_host, hosts))


def _page(status: int, title: str, message: str) -> Response:
    return HTMLResponse(_PAGE.format(title=title, message=message), status)


def _check(cfg: _Config | None, request: Request) -> Response | None:
    """None when the request may go on to the web view, else the reply."""
    if cfg is None:
        return _page(503, "Not configured", "Start the web view with <code>helicone-addon ui</code>.")
    if not cfg.rules.host_ok(request.headers.get("host")):
        return _page(403, "Forbidden", "This Host is not accepted.")
    if not cfg.rules.origin_ok(request.headers.get("origin")):
        return _page(403, "Forbidden", "Cross-origin requests are not accepted.")
    given = request.query_params.get(TOKEN_PARAM)
    if given is not None:
        if not token_matches(given, [cfg.token]):
            return _page(401, "Wrong token", "Open the URL that <code>helicone-addon ui</code> printed.")
        rest = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != TOKEN_PARAM]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        reply = RedirectResponse(target, status_code=303)
        reply.set_cookie(COOKIE, cfg.cookie_value, httponly=True, samesite="strict", path="/")
        return reply
    if token_matches(request.cookies.get(COOKIE), [cfg.cookie_value]):
        return None
    if token_matches(bearer(request.headers.get("authorization")), [cfg.token]):
        return None
    return _page(
        401, "Token needed",
        "Open the URL that <code>helicone-addon ui</code> printed (it ends in <code>?token=...</code>); "
        "the token is in the <code>api-token</code> file of the data directory.",
    )  # fmt: skip


class Guard:
    """The check as Starlette middleware: `Middleware(Guard)` around the web view's app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def wrap(app: ASGIApp) -> ASGIApp:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        reply = _check(_config, Request(scope))
        if reply is None:
            await app(scope, receive, send)
        else:
            await reply(scope, receive, send)

    return guarded


