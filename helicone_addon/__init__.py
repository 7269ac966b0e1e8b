"""helicone_addon: a local, Helicone-compatible LLM observability proxy built on mitmproxy.

Importing this package does not import mitmproxy; the pure core (headers, providers, usage,
pricing, cache, rate limits, store) is usable on its own, e.g. by the async logger.
"""

__version__ = "0.1.0"
