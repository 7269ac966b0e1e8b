"""The mitmproxy shell: everything here imports mitmproxy; nothing outside this package (and the
content view) does.

An LLM call meets the addons in this order, each one concern, talking to the others only through
the flow's record (`flowrecord.FlowRecord` in `flow.metadata["helicone"]`):

    HeliconeConnections  out of file descriptors: new connections refused, open streams kept
    HeliconeCalls      is it an LLM call? its record; Helicone-* -> CallOptions (400 when malformed);
                       Helicone-Id on the answer; the stream tee; what came back or went wrong
    HeliconeAuth       Helicone-Auth against helicone_auth_keys (401)
    HeliconeGateway    Helicone-* stripped; Helicone-Target-Url routing; Helicone-Stream-Usage
    HeliconeReplay     replay mode: answer from recordings (the log or a cassette), streams paced
    HeliconeCache      Helicone-Cache-*: a HIT answers at once; a 200 is saved before the client has it
    HeliconeRateLimit  Helicone-RateLimit-Policy (429); u=cents charged once the call is priced
    HeliconeUpstream   retries, fallbacks and time-outs through the relay
    HeliconeMitmweb    the LLM content view; flow comments in mitmweb
    HeliconeExporters  Prometheus metrics (GET /metrics on the API) and OTLP spans of each finished call
    HeliconeLog        the finished call -> the writer thread -> one row (and the row listeners)
    HeliconeApi        the local Helicone API beside the proxy
    HeliconeGcFreeze   once started: what lives as long as the proxy leaves the collector's walks
"""

from __future__ import annotations


def make_addons() -> list:
    from helicone_addon.proxy.auth import HeliconeAuth
    from helicone_addon.proxy.caching import HeliconeCache
    from helicone_addon.proxy.calls import HeliconeCalls
    from helicone_addon.proxy.connections import HeliconeConnections
    from helicone_addon.proxy.exporters import HeliconeExporters
    from helicone_addon.proxy.gateway import HeliconeGateway
    from helicone_addon.proxy.gcfreeze import HeliconeGcFreeze
    from helicone_addon.proxy.localapi import HeliconeApi
    from helicone_addon.proxy.logwriter import HeliconeLog
    from helicone_addon.proxy.mitmweb import HeliconeMitmweb
    from helicone_addon.proxy.ratelimiting import HeliconeRateLimit
    from helicone_addon.proxy.replay import HeliconeReplay
    from helicone_addon.proxy.upstream import HeliconeUpstream

    return [
        HeliconeConnections(),
        HeliconeCalls(),
        HeliconeAuth(),
        HeliconeGateway(),
        HeliconeReplay(),
        HeliconeCache(),
        HeliconeRateLimit(),
        HeliconeUpstream(),
        HeliconeMitmweb(),
        HeliconeExporters(),  # before HeliconeLog: it subscribes to the row HeliconeLog builds
        HeliconeLog(),
        HeliconeApi(),
        HeliconeGcFreeze(),  # last: its `running` comes after everybody else's start-up
    ]
