"""HeliconeUpstream: the last step before the provider. Calls with retries, fallbacks or an upstream
time-out go through the addon's own relay (relay.py); every other call goes as mitmproxy sends it."""

from __future__ import annotations

from mitmproxy import ctx, exceptions, http

from helicone_addon.proxy.calls import SIGNED_PROVIDERS
from helicone_addon.proxy.flowrecord import record_of


class HeliconeUpstream:
    def __init__(self) -> None:
        self.relay = None  # relay.Relay, made on first use (httpx costs ~0.3 s at startup)
        self.timeout_set = False

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_upstream_timeout", str, "",
            "Seconds (e.g. 30 or 0.5) to wait on the provider (connect, each read, each write) before a "
            "call is answered with a JSON 504. When set, every LLM call goes through the addon's own "
            "upstream client (as calls with retries or fallbacks always do, with 600 s when unset).",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_upstream_timeout" in updated:
            value = ctx.options.helicone_upstream_timeout.strip()
            try:
                self.timeout_set = bool(value) and float(value) == float(value)
            except ValueError:
                raise exceptions.OptionsError(
                    f"helicone_upstream_timeout must be a number of seconds (e.g. 30 or 0.5), not {value!r}"
                ) from None

    def running(self) -> None:
        # import the relay (httpx, h11: ~0.3 s) in the background now, so the first call with retries
        # does not pay for it, and startup does not either
        import asyncio
        import importlib

        asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "helicone_addon.proxy.relay")

    async def done(self) -> None:
        if self.relay is not None:
            await self.relay.aclose()
            self.relay = None

    async def request(self, flow: http.HTTPFlow) -> None:
        rec = record_of(flow)
        if rec is None or rec.call.options is None or rec.call.provider in SIGNED_PROVIDERS:
            return
        call = rec.call
        call.target_url = flow.request.url
        opts = call.options
        if opts.retry is not None or opts.fallbacks or self.timeout_set:
            if self.relay is None:
                from helicone_addon.proxy.relay import Relay

                self.relay = Relay()
            await self.relay.route(flow, call)
