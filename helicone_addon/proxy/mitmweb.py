"""HeliconeMitmweb: the "LLM" content view, and in mitmweb a one-line comment on each LLM flow
(provider, model, tokens, cost, cache status) once its row is built."""

from __future__ import annotations

from mitmproxy import contentviews, ctx, hooks, http

from helicone_addon.proxy.contentview import llm_view
from helicone_addon.proxy.flowrecord import META, FlowRecord
from helicone_addon.render import comment


class HeliconeMitmweb:
    def __init__(self) -> None:
        self.web = False
        self.loop = None

    def load(self, loader) -> None:
        contentviews.add(llm_view)

    def running(self) -> None:
        import asyncio

        self.web = ctx.master.addons.get("view") is not None  # mitmweb keeps a view of the flows
        self.loop = asyncio.get_running_loop()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)  # made by HeliconeCalls for LLM calls
        if not self.web or rec is None or self.loop is None:
            return
        loop = self.loop

        def show(row: dict, props: list) -> None:  # writer thread -> the event loop
            loop.call_soon_threadsafe(self._set_comment, flow, row)

        rec.on_row.append(show)

    def _set_comment(self, flow: http.HTTPFlow, row: dict) -> None:
        flow.comment = comment(row)
        flow.metadata["helicone_row"] = row  # the LLM view shows its cost
        ctx.master.addons.trigger(hooks.UpdateHook([flow]))
