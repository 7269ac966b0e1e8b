"""The API's door (an ASGI middleware in front of every route, extra routes included):

1. `Host` must be one of ours (security.HostRules), else 403: defeats DNS rebinding;
2. an `Origin`, when present, must be one of ours too, else 403: no cross-site browser requests;
3. `Authorization: Bearer <secret>` (or `Helicone-Auth: Bearer <secret>`) must carry an accepted
   secret, the API token or one of the configured keys, else 401. With no accepted secret at all
   (the API opened with `helicone_api_open` and no keys) this check is off.

Refusals happen before the body is read, so a refused request writes nothing. It also drops a
trailing '/' from the path, as the routes are matched without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import asynclog
from .. import headers as hdrs
from ..security import HostRules, bearer, token_matches
from .web import envelope, text

TEXT_401_PATHS = frozenset({*asynclog.LOG_ROUTES, "/v1/feedback"})  # Helicone answers these in text
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="helicone-addon"'}


class Guard:
    def __init__(self, app: ASGIApp, rules: HostRules, secrets: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.rules = rules
        self.secrets = secrets

    def authorized(self, headers: Headers) -> bool:
        accepted = [s for s in self.secrets() if s]
        if not accepted:
            return True
        return any(token_matches(bearer(headers.get(name)), accepted) for name in ("authorization", hdrs.H_AUTH))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
            path = scope["path"]
        headers = Headers(scope=scope)
        if not self.rules.host_ok(headers.get("host")):
            reply = envelope(403, error="Forbidden: this Host is not accepted (see helicone_api_hosts)")
        elif not self.rules.origin_ok(headers.get("origin")):
            reply = envelope(403, error="Forbidden: cross-origin requests are not accepted")
        elif not self.authorized(headers):
            if path in TEXT_401_PATHS:
                reply = text(401, "Unauthorized", WWW_AUTHENTICATE)
            else:
                reply = envelope(401, error="Unauthorized", headers=WWW_AUTHENTICATE)
        else:
            await self.app(scope, receive, send)
            return
        await reply(scope, receive, send)
