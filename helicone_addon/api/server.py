"""ApiServer: the local API as a Starlette app, served by uvicorn on its own loopback port.

By default uvicorn runs its own event loop in a daemon thread, so nothing the API does (parsing,
JSON, SQLite reads in its worker threads) ever runs on the proxy's event loop. `in_thread=False`
serves it on the caller's running loop instead (measured: see README, "The local Helicone API").
The listening socket is bound in `start()` itself, so a port in use raises OSError right there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .. import asynclog, security
from . import ingest, otlp, routes
from .backend import Backend
from .guard import Guard
from .web import ENVELOPE, LOG, error_reply

logger = logging.getLogger("helicone_addon.api")


def _as_callable(v: Any) -> Callable[[], Any]:
    return v if callable(v) else (lambda: v)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 / 405, in the shape of the route family asked for."""
    assert isinstance(exc, HTTPException)
    path, method = request.url.path, request.method
    shape = LOG if path in asynclog.LOG_ROUTES else ENVELOPE
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        use = "POST" if shape == LOG else ", ".join(m for m in allowed.split(", ") if m != "HEAD")
        where = "" if shape == LOG else f" on {path}"
        return error_reply(shape, 405, f"Method {method} not allowed{where}; use {use}", exc.headers)
    if exc.status_code == 404:
        return error_reply(shape, 404, f"Not found: {method} {path}")
    return error_reply(shape, exc.status_code, exc.detail)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the proxy owns the process's signals


class ApiServer:
    """The local Helicone API on (host, port); port 0 picks a free one (see `.port`).

    ``auth_keys`` and ``price_overrides`` may be values or zero-argument callables (read per
    request, so option changes apply without a restart). ``submit`` is ``LogStore.submit``.
    ``row_wait`` is how long feedback / score / property / GET wait for a just-finished call's row.

    Security (see security.py): every request needs ``Authorization: Bearer <token>`` (or one of
    ``auth_keys``). ``token`` defaults to the one in ``<data_dir>/api-token`` (created if missing;
    ``data_dir`` defaults to the database's directory). ``open=True`` drops the token: then only
    ``auth_keys``, if any, are asked for. ``hosts``: names accepted in Host / Origin besides
    localhost, 127.0.0.1, [::1] and ``host`` ('*' for any). ``extra_routes`` are served behind the
    same checks (e.g. a /metrics route).
    """

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 8585,
        auth_keys: Iterable[str] | Callable[[], Iterable[str]] = (),
        submit: Callable[[Any], None] | None = None,
        price_overrides: dict | Callable[[], dict | None] | None = None,
        *,
        row_wait: float = 2.0,
        estimate: bool = True,
        extra_routes: Sequence[BaseRoute] = (),
        token: str | None = None,
        data_dir: str | Path | None = None,
        open: bool = False,  # noqa: A002 - the option's name
        hosts: Iterable[str] = (),
        in_thread: bool = True,
        fleet_url: str = "",
    ) -> None:
        self.db_path = Path(db_path)
        self.host = host
        self.requested_port = port
        self._auth_keys = _as_callable(auth_keys)
        self.backend = Backend(self.db_path, submit, _as_callable(price_overrides), row_wait, estimate, fleet_url)
        self.extra_routes = list(extra_routes)
        self.token = token
        self.data_dir = Path(data_dir) if data_dir else self.db_path.parent
        self.open = open
        self.rules = security.HostRules(host, hosts)
        self.in_thread = in_thread
        self._sock: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None

    # -- the app ---------------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """What a request may present: the token (unless open) and the configured keys."""
        keys = [k for k in (self._auth_keys() or ()) if k]
        return keys if self.open or not self.token else [self.token, *keys]

    def app(self) -> Starlette:
        app = Starlette(
            routes=[*routes.ROUTES, *ingest.ROUTES, *otlp.ROUTES, *self.extra_routes],
            middleware=[Middleware(Guard, rules=self.rules, secrets=self.secrets)],
            exception_handlers={HTTPException: _http_error},
        )
        app.router.redirect_slashes = False
        app.state.backend = self.backend
        return app

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ApiServer:
        from ..store import open_db

        try:
            open_db(self.db_path).conn.close()  # the schema exists before the first request
        except Exception as e:  # noqa: BLE001 - serve anyway; requests report the database error
            logger.error("helicone api: cannot open %s yet: %s", self.db_path, e)
        if self.open:
            logger.warning(
                "helicone: the local API on %s:%s is OPEN (helicone_api_open): any local program or user "
                "can read and write the log through it", self.host, self.requested_port,
            )  # fmt: skip
        elif self.token is None:
            self.token = security.ensure_token(self.data_dir)
        self._sock = self._bind()
        config = uvicorn.Config(
            self.app(), log_config=None, log_level="warning", access_log=False, lifespan="off", http="h11",
            ws="none", proxy_headers=False, server_header=False, timeout_graceful_shutdown=3,
        )  # fmt: skip
        self._server = _Uvicorn(config)
        if self.in_thread:
            self._thread = threading.Thread(target=self._run, name="helicone-api", daemon=True)
            self._thread.start()
            self._wait_started()
        else:
            self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._sock]))
        logger.info("helicone: local Helicone API on %s", self.url)
        return self

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException:  # noqa: BLE001 - the thread's end must be visible
            logger.exception("helicone api: the server stopped")

    def _wait_started(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self._server is not None and not self._server.started and time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                raise OSError("the local API server could not start (see the log)")
            time.sleep(0.002)

    @property
    def port(self) -> int:
        assert self._sock is not None, "ApiServer not started"
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving. In its own thread: waits for it (up to 5 s). On the caller's loop: the
        server task winds down there (and closes the socket) once the caller yields to the loop."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            if self._sock is not None:
                self._sock.close()
        self._task = None
        self._server = None
        self._sock = None
