"""HeliconeCalls: which flows are LLM calls, and what each one asked and got.

    tls_clienthello  regular (HTTPS_PROXY) mode: intercept LLM hosts only, tunnel the rest
    requestheaders   an LLM call? -> a FlowRecord in flow.metadata (provider from the host as asked)
    request          Helicone-* -> CallOptions (400 on a malformed header, strict mode)
    responseheaders  Helicone-Id & co. before the first byte; SSE streamed through a tee
    response, error  the response (or what went wrong) is written into the record

It is the first addon of the chain: every other one reads the record it creates.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Sequence

from mitmproxy import ctx, http, tls
from mitmproxy.proxy import mode_specs

from helicone_addon import config, headers, providers
from helicone_addon.proxy import errorpages
from helicone_addon.proxy.flowrecord import META, FlowRecord, error_response, record_of, short_circuit
from helicone_addon.record import CallState

logger = logging.getLogger("helicone_addon")

MAX_LOGGED_STREAM = 128 * 1024 * 1024  # bytes of a stream kept for the log
SIGNED_PROVIDERS = frozenset({"bedrock"})  # requests signed over their headers: logged, never modified
# The provider's last event of a stream: a client that hangs up after it finished normally.
FINAL_EVENTS = (b"[DONE]", b"message_stop", b"response.completed", b'"finishReason"')


def stream_finished(chunks: list[bytes] | None) -> bool:
    """Did the stream's last bytes carry the provider's final event? (looks at the tail only)"""
    if not chunks:
        return False
    tail = b"".join(chunks[-3:])[-512:]
    return any(m in tail for m in FINAL_EVENTS)


class HeliconeCalls:
    def __init__(self) -> None:
        self.matcher = providers.DEFAULT_MATCHER

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_data_dir", str, str(config.default_data_dir()),
            "Directory for the log database, the response cache and rate-limit state.",
        )
        loader.add_option(
            "helicone_hosts", Sequence[str], [],
            "Extra LLM hosts to intercept and log in regular (HTTPS_PROXY) mode, as 'host' or 'host=provider'; "
            "'*' wildcards allowed. Repeat the option for several.",
        )
        loader.add_option(
            "helicone_strict", bool, True,
            "Answer 400 to a malformed Helicone-* header (false: ignore it, as Helicone does).",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_hosts" in updated:
            self.matcher = providers.HostMatcher(ctx.options.helicone_hosts)

    def running(self) -> None:
        unknown = [name for name in ctx.options.deferred if name.startswith("helicone_")]
        for name in unknown:
            known = [n for n in ctx.options.keys() if n.startswith("helicone_")]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            # an error during startup stops mitmproxy ("Error logged during startup, exiting")
            logger.error("helicone: unknown option %s%s", name, hint)
        errorpages.install()

    # -- which connections ------------------------------------------------------------------------
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if not isinstance(data.context.client.proxy_mode, mode_specs.RegularMode):
            return
        host = data.client_hello.sni or (data.context.server.address or ("",))[0]
        if self.matcher.provider_for(host) is None:
            data.ignore_connection = True

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay == "request":
            return
        req = flow.request
        mode = flow.client_conn.proxy_mode
        host = req.pretty_host
        provider = self.matcher.provider_for(host)
        if isinstance(mode, mode_specs.ReverseMode):
            if provider is None:
                provider = self.matcher.provider_for(mode.address[0])
        elif provider is None and headers.H_TARGET_URL not in req.headers and headers.H_OPENAI_API_BASE not in req.headers:
            return  # not an LLM call: untouched, unlogged
        path = req.path
        if provider is None:
            provider = providers.detect(None, path, req.headers.get(headers.H_TARGET_PROVIDER), self.matcher)
        call = CallState(
            id="",
            started_at=req.timestamp_start or time.time(),
            provider=provider,
            api=providers.api_for(provider, path),
            method=req.method,
            host=host,
            path=path,
            request_headers=list(req.headers.items(multi=True)),  # as the client sent them
        )
        flow.metadata[META] = FlowRecord(call=call, url_parts=(req.scheme, host, req.port))

    def request(self, flow: http.HTTPFlow) -> None:
        rec = record_of(flow)
        if rec is None:
            return
        call = rec.call
        call.request_body = flow.request.raw_content
        try:
            opts = headers.parse(call.request_headers, strict=ctx.options.helicone_strict)
        except headers.HeaderError as e:
            call.id = headers.new_request_id()
            call.options = headers.CallOptions(request_id=call.id)
            short_circuit(flow, rec, "header", error_response(400, e), str(e))
            return
        call.options = opts
        call.id = opts.request_id
        for w in opts.warnings:
            logger.warning("helicone: ignored header (lenient mode): %s", w)
        if opts.target_provider and call.provider in (None, "openai-compatible"):
            call.provider = opts.target_provider.lower()

    # -- the answer -------------------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)
        if rec is None or rec.short_circuit or flow.response is None or not rec.id:
            return
        resp, call = flow.response, rec.call
        resp.headers[headers.R_ID] = call.id
        resp.headers[headers.R_STATUS] = "success"
        for k, v in rec.response_headers:
            resp.headers[k] = v
        call.status = resp.status_code
        ctype = resp.headers.get("content-type", "")
        call.content_type = ctype
        if "text/event-stream" in ctype or "streamGenerateContent" in call.path:
            call.streamed = True
            call.chunks = chunks = []
            call.chunk_offsets_ms = offsets = []
            call.content_encoding = resp.headers.get("content-encoding")
            kept = 0

            def tee(data: bytes) -> bytes:
                nonlocal kept
                if data:
                    now = time.time()
                    if call.first_chunk_at is None:
                        call.first_chunk_at = now
                    if kept < MAX_LOGGED_STREAM:
                        chunks.append(data)
                        offsets.append(int((now - call.first_chunk_at) * 1000))
                        kept += len(data)
                else:
                    call.ended_at = time.time()
                return data

            resp.stream = tee

    def response(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)
        if rec is None or not rec.id or rec.finished:
            return
        resp, call = flow.response, rec.call
        if resp is None:
            return
        call.response_headers = list(resp.headers.items(multi=True))
        if rec.short_circuit:
            return
        call.status = resp.status_code
        if not call.streamed:
            call.content_encoding = resp.headers.get("content-encoding")
            call.response_body = resp.raw_content
            call.ended_at = resp.timestamp_end or time.time()
        elif call.ended_at is None:
            call.ended_at = time.time()

    def error(self, flow: http.HTTPFlow) -> None:
        rec: FlowRecord | None = flow.metadata.get(META)
        if rec is None or not rec.id or rec.finished:
            return
        call = rec.call
        msg = flow.error.msg if flow.error else "unknown error"
        call.ended_at = time.time()
        if flow.response is not None and call.status is not None:
            # the response had started: the client went away, or the upstream broke mid-stream
            call.response_headers = list(flow.response.headers.items(multi=True))
            if stream_finished(call.chunks):
                pass  # the client hung up after the final event (SDKs close on [DONE]): complete
            elif "client" in msg.lower() and "disconnect" in msg.lower():
                call.cancelled = True
                call.error = f"cancelled: {msg}"
            else:
                call.error = msg
        else:
            # the provider never answered: the client gets a JSON 502/504 (see errorpages.py), the
            # row has status NULL and the cause in `error`
            code = errorpages.classify(msg)
            sent = errorpages.expect(flow.client_conn.id, code, msg, call.id)
            call.status = None
            call.no_answer = True
            call.error = f"upstream failed: {msg}" + (f" (client got a {code})" if sent else "")
