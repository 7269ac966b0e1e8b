"""HeliconeGateway: what goes upstream. Helicone-* headers stripped, `Helicone-Target-Url` routing,
`Helicone-Stream-Usage` (asks an OpenAI-style stream for its usage). Signed (Bedrock) calls pass
untouched: any change would break their signature."""

from __future__ import annotations

import json

from mitmproxy import ctx, http

from helicone_addon import headers, providers
from helicone_addon.proxy.calls import SIGNED_PROVIDERS
from helicone_addon.proxy.flowrecord import FlowRecord, record_of


class HeliconeGateway:
    def __init__(self) -> None:
        self.matcher = providers.DEFAULT_MATCHER

    def configure(self, updated: set[str]) -> None:
        if "helicone_hosts" in updated:  # declared by HeliconeCalls
            self.matcher = providers.HostMatcher(ctx.options.helicone_hosts)

    def request(self, flow: http.HTTPFlow) -> None:
        rec = record_of(flow)
        if rec is None or rec.call.options is None:
            return
        call, req = rec.call, flow.request
        if call.provider in SIGNED_PROVIDERS:
            call.target_url = req.url
            return
        # the names come from the copy taken in requestheaders: iterating mitmproxy's Headers
        # costs more than the whole check
        for name in {n for n, _ in call.request_headers if headers.is_helicone(n)}:
            req.headers.pop(name, None)
        opts = call.options
        if opts.target_url:
            target = headers.parse_target(headers.H_TARGET_URL, opts.target_url)  # validated by parse()
            req.scheme, req.host, req.port = target.scheme, target.host, target.port
            call.provider = (
                opts.target_provider.lower() if opts.target_provider
                else providers.provider_from_url(opts.target_url, self.matcher)
                or providers.provider_from_path(call.path)
                or call.provider
            )
            call.api = providers.api_for(call.provider, call.path)
        if opts.stream_usage:
            add_include_usage(flow, rec)


def add_include_usage(flow: http.HTTPFlow, rec: FlowRecord) -> None:
    try:
        body = json.loads(flow.request.content or b"{}")
    except ValueError:
        return
    if isinstance(body, dict):
        opts = body.get("stream_options")
        if not isinstance(opts, dict):
            opts = body["stream_options"] = {}
        opts["include_usage"] = True
        flow.request.content = json.dumps(body).encode()
        rec.call.request_body = flow.request.raw_content
