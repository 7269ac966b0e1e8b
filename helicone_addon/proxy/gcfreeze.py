"""HeliconeGcFreeze: once the proxy is up, what lives as long as it does leaves the collector's reach.

Every connection mitmproxy handles leaves cyclic garbage behind (its layers, context and
connection objects point at each other), so CPython's cyclic collector runs all the time, and
each *full* collection walks every tracked object of the process: the modules, mitmproxy's option
and addon objects, the price tables. On a burst of new connections that was 19% of the proxy's
CPU, ~200 ms per full collection, during which no stream moves.

At `running`, the tables that are otherwise loaded by the first logged call (genai-prices'
snapshot) are loaded, a last full collection runs, and `gc.freeze()` moves everything alive into
the permanent generation (what servers do after start-up, see the `gc.freeze` docs). Full
collections then walk only what came after: flows and connections. Nothing is unfrozen later. A
frozen object is still freed when its last reference goes; only a cycle among frozen objects is
kept to the end, and what is alive at start lives that long anyway.
`--set helicone_gc_freeze=false` turns it off.
"""

from __future__ import annotations

import gc
import logging
import time

from mitmproxy import ctx

from helicone_addon import pricing

logger = logging.getLogger("helicone_addon")


class HeliconeGcFreeze:
    def __init__(self) -> None:
        self.frozen = 0

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_gc_freeze", bool, True,
            "Once started, move the objects that live as long as the proxy out of the cyclic garbage "
            "collector's reach (gc.freeze): full collections then walk only flows and connections.",
        )

    def running(self) -> None:
        if not ctx.options.helicone_gc_freeze:
            return
        t0 = time.perf_counter()
        try:
            pricing.warm()  # what the first logged call would load, so that it is frozen too
        except Exception:  # noqa: BLE001 - a table that cannot load now will fail (and be handled) later
            logger.debug("helicone: could not pre-load the price tables", exc_info=True)
        gc.collect()
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        logger.debug("helicone: %d objects frozen out of the garbage collector's walks (%.0f ms)",
                     self.frozen, (time.perf_counter() - t0) * 1000)
