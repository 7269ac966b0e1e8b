"""HeliconeApi: the local Helicone-compatible API (feedback, scores, properties, query, async log
ingestion) served beside the proxy, on `helicone_api_host:helicone_api_port`.

Several proxies may share a data dir: when the *default* port is taken, this proxy runs without
its own API listener and says where the API already answers; a port the user chose and cannot
bind stops startup.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence

from mitmproxy import ctx, exceptions

from helicone_addon import config

logger = logging.getLogger("helicone_addon")


def describe_listener(host: str, port: int) -> str:
    """What already answers on host:port, in words (a short probe, at startup only)."""
    import httpx

    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        r = httpx.get(f"{url}/v1/request/query", timeout=0.5)
    except httpx.HTTPError:
        return f"something that does not speak HTTP holds {url}"
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and set(body) >= {"data", "error"}:
        return f"a helicone-addon API already answers at {url} (another proxy on this machine)"
    return f"another program holds {url}"


def _extra_routes() -> list:
    """Routes other addons serve on the API: GET /metrics (HeliconeExporters)."""
    exporters = ctx.master.addons.get("heliconeexporters")
    return exporters.routes() if exporters is not None else []


class HeliconeApi:
    def __init__(self) -> None:
        self.server = None

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_api_port", int, config.DEFAULT_API_PORT,
            "Port of the local Helicone API (feedback, scores, query, async log ingestion); 0 turns it off.",
        )
        loader.add_option("helicone_api_host", str, "127.0.0.1", "Listen address of the local Helicone API.")
        loader.add_option(
            "helicone_api_open", bool, False,
            "Serve the local API without its token (<data dir>/api-token); Host/Origin checks stay on.",
        )
        loader.add_option(
            "helicone_api_hosts", Sequence[str], [],
            "Extra names the local API accepts in Host/Origin besides localhost, 127.0.0.1, [::1] ('*': any).",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_api_port" in updated and not 0 <= ctx.options.helicone_api_port <= 65535:
            raise exceptions.OptionsError("helicone_api_port must be between 0 and 65535")
        if self.server is not None and updated & {"helicone_api_port", "helicone_api_host", "helicone_data_dir",
                                                 "helicone_db", "helicone_api_open", "helicone_api_hosts"}:
            self.done()
            self._start()

    async def running(self) -> None:
        """Import the API (Starlette, the OTLP decoder: about a second) on a thread: the proxy
        already listens, and its first calls must not wait for that. A port the user chose and cannot
        bind still stops startup: mitmproxy waits for this hook before it checks for errors."""
        if ctx.options.helicone_api_port:
            await asyncio.to_thread(importlib.import_module, "helicone_addon.api")
            self._start()

    def _start(self) -> None:
        from helicone_addon.api import ApiServer

        host, port = ctx.options.helicone_api_host, ctx.options.helicone_api_port
        log = ctx.master.addons.get("heliconelog")
        auth = ctx.master.addons.get("heliconeauth")
        if not port or log is None or log.store is None:
            return
        try:
            self.server = ApiServer(
                log.db_path, host, port,
                lambda: auth.keys if auth is not None else frozenset(),
                log.store.submit,
                lambda: log.price_overrides,
                data_dir=ctx.options.helicone_data_dir,
                open=ctx.options.helicone_api_open,
                hosts=ctx.options.helicone_api_hosts,
                extra_routes=_extra_routes(),
                fleet_url=getattr(ctx.options, "helicone_postgres", ""),  # the query route reads the fleet
            ).start()
        except OSError as e:
            if port == config.DEFAULT_API_PORT:
                logger.warning("helicone: local API not started on %s:%s (%s): %s; this proxy runs without it",
                               host, port, e.strerror or e, describe_listener(host, port))
            else:
                logger.error("helicone: local API not started on %s:%s: %s (choose another "
                             "--set helicone_api_port=N, or 0 for none)", host, port, e.strerror or e)

    def done(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
