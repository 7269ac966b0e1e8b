"""HeliconeAddon: mitmproxy options and hooks. It only orchestrates the pure modules.

Load it with `helicone-addon run` (or `mitmdump -s path/to/helicone_addon/addon.py`).

    requestheaders  is this an LLM call? provider from the host the client asked for; start clock
    request         Helicone-* -> CallOptions (400 on a bad header), auth, strip Helicone-*,
                    gateway target, cache lookup (HIT short-circuit), rate limit (429 short-circuit)
    responseheaders Helicone-Id & co. added before the first byte; SSE -> streamed through a tee
    response/error  hand the finished call to the store's writer thread (usage, cost, row, cache
                    save and cents accounting all happen there, never on the event loop)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import mode_specs

from helicone_addon import config, headers, providers
from helicone_addon.record import CallState, build_row, comment

logger = logging.getLogger("helicone_addon")

META = "helicone"
NEVER_MODIFIED = frozenset({"bedrock"})  # providers whose requests are signed over their headers
MAX_LOGGED_STREAM = 128 * 1024 * 1024  # bytes of a stream kept for the log


def json_response(status: int, body: Any, extra: Sequence[tuple[str, str]] = ()) -> http.Response:
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        [(b"content-type", b"application/json; charset=utf-8")]
        + [(k.encode(), v.encode()) for k, v in extra],
    )


_NOT_REPLAYED = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date"})
_FINAL_EVENTS = (b"[DONE]", b"message_stop", b"response.completed", b'"finishReason"')


def _replayable(name: str) -> bool:
    """Response headers a cache hit replays: not hop-by-hop/encoding ones, not our own Helicone-*."""
    return name.lower() not in _NOT_REPLAYED and not headers.is_helicone(name)


def _stream_finished(chunks: list[bytes] | None) -> bool:
    """Did the stream's last bytes carry the provider's final event? (cheap: looks at the tail only)"""
    if not chunks:
        return False
    tail = b"".join(chunks[-3:])[-512:]
    return any(m in tail for m in _FINAL_EVENTS)


class HeliconeAddon:
    def __init__(self) -> None:
        self.store = None
        self.cache = None
        self.cache_reader = None
        self.ratelimiter = None
        self.matcher = providers.DEFAULT_MATCHER
        self.price_overrides: dict | None = None
        self.auth_keys: frozenset[str] = frozenset()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._opened: tuple | None = None
        self.api_server = None
        self.relay = None
        self.upstream_timeout_set = False
        self.web = False
        self.exporters = None  # exporters.hub.Exporters: row subscribers (metrics, OTLP spans)

    # -- options ------------------------------------------------------------------------------
    def load(self, loader) -> None:
        from mitmproxy import contentviews

        from helicone_addon.contentview import llm_view

        contentviews.add(llm_view)
        loader.add_option(
            "helicone_data_dir", str, str(config.default_data_dir()),
            "Directory for the log database, the response cache and rate-limit state.",
        )
        loader.add_option(
            "helicone_db", str, "", "Path of the SQLite log database (default: <helicone_data_dir>/helicone.db).",
        )
        loader.add_option(
            "helicone_cache_dir", str, "", "Directory of the response cache (default: <helicone_data_dir>/cache).",
        )
        loader.add_option(
            "helicone_cache_size_limit", int, 1 << 30, "Size limit of the response cache in bytes (evicts beyond).",
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
        loader.add_option(
            "helicone_auth_keys", Sequence[str], [],
            "Accepted Helicone-Auth keys. When set, LLM calls without 'Helicone-Auth: Bearer <key>' get 401.",
        )
        loader.add_option(
            "helicone_price_overrides", str, "",
            'Price overrides as JSON: {"model-or-glob": {"input_mtok": 2.5, "output_mtok": 10, '
            '"cache_read_mtok": 1.25, "cache_write_mtok": 3.75}} (USD per million tokens).',
        )
        loader.add_option(
            "helicone_estimate_usage", bool, True,
            "Estimate tokens with tiktoken when a stream reports no usage (rows marked usage_source='estimated').",
        )
        loader.add_option(
            "helicone_api_port", int, config.DEFAULT_API_PORT,
            "Port of the local Helicone API (feedback, scores, query, async log ingestion); 0 turns it off.",
        )
        loader.add_option("helicone_api_host", str, "127.0.0.1", "Listen address of the local Helicone API.")
        loader.add_option(
            "helicone_retention_days", int, 0,
            "Delete logged calls older than this many days (0: keep everything). Applied in the background.",
        )
        loader.add_option(
            "helicone_max_db_mb", int, 0,
            "Keep the log database under this size in MiB by deleting the oldest calls (0: no limit).",
        )
        loader.add_option(
            "helicone_upstream_timeout", str, "",
            "Seconds (e.g. 30 or 0.5) to wait on the provider (connect, each read, each write) before a "
            "call is answered with a JSON 504. When set, every LLM call goes through the addon's own "
            "upstream client (as calls with retries or fallbacks always do, with 600 s when unset).",
        )
        # -- exporters (helicone_addon/exporters) ------------------------------------------------
        loader.add_option(
            "helicone_otlp_endpoint", str, "",
            "OTLP/HTTP collector to send one OpenTelemetry GenAI span per LLM call to, e.g. "
            "http://localhost:4318 (/v1/traces is added when the URL has no path). Empty: off.",
        )
        loader.add_option(
            "helicone_otlp_headers", str, "",
            "Headers for the OTLP collector as name=value pairs separated by commas (values "
            "percent-decoded), e.g. 'Authorization=Bearer%20abc,x-tenant=acme'.",
        )
        loader.add_option(
            "helicone_otlp_content", bool, False,
            "Also export prompts and completions in the spans (gen_ai.input.messages / output.messages).",
        )

    def configure(self, updated: set[str]) -> None:
        if "helicone_hosts" in updated:
            self.matcher = providers.HostMatcher(ctx.options.helicone_hosts)
        if "helicone_auth_keys" in updated:
            keys = set()
            for k in ctx.options.helicone_auth_keys:
                k = k.strip()
                keys.add(k[7:].strip() if k.lower().startswith("bearer ") else k)
            self.auth_keys = frozenset(k for k in keys if k)
        if "helicone_price_overrides" in updated:
            text = ctx.options.helicone_price_overrides.strip()
            if text:
                from helicone_addon import pricing

                try:
                    self.price_overrides = pricing.parse_overrides(text)
                except ValueError as e:
                    raise exceptions.OptionsError(f"helicone_price_overrides: {e}") from e
            else:
                self.price_overrides = None
        if "helicone_cache_size_limit" in updated and ctx.options.helicone_cache_size_limit < 0:
            raise exceptions.OptionsError("helicone_cache_size_limit must be >= 0")
        if "helicone_upstream_timeout" in updated:
            value = ctx.options.helicone_upstream_timeout.strip()
            try:
                self.upstream_timeout_set = bool(value) and float(value) == float(value)
            except ValueError:
                raise exceptions.OptionsError(
                    f"helicone_upstream_timeout must be a number of seconds (e.g. 30 or 0.5), not {value!r}"
                ) from None
        if "helicone_retention_days" in updated and ctx.options.helicone_retention_days < 0:
            raise exceptions.OptionsError("helicone_retention_days must be >= 0")
        if "helicone_max_db_mb" in updated and ctx.options.helicone_max_db_mb < 0:
            raise exceptions.OptionsError("helicone_max_db_mb must be >= 0")
        if self.store is not None and updated & {"helicone_retention_days", "helicone_max_db_mb"}:
            self.store.retention_days = ctx.options.helicone_retention_days
            self.store.max_db_bytes = ctx.options.helicone_max_db_mb * 1024 * 1024
        if "helicone_api_port" in updated and not 0 <= ctx.options.helicone_api_port <= 65535:
            raise exceptions.OptionsError("helicone_api_port must be between 0 and 65535")
        if self.loop is not None and updated & {"helicone_data_dir", "helicone_db", "helicone_cache_dir"}:
            self._open()
        if updated & {"helicone_otlp_endpoint", "helicone_otlp_headers", "helicone_otlp_content"}:
            self._configure_exporters()

    # -- exporters (helicone_addon/exporters): row subscribers ------------------------------------
    def _configure_exporters(self) -> None:
        if self.exporters is None:
            from helicone_addon.exporters.hub import Exporters

            self.exporters = Exporters(store_counters=lambda: self.store.counters if self.store else {})
        try:
            self.exporters.set_otlp(ctx.options.helicone_otlp_endpoint, ctx.options.helicone_otlp_headers,
                                    ctx.options.helicone_otlp_content)
        except ValueError as e:
            raise exceptions.OptionsError(f"helicone_otlp_endpoint / helicone_otlp_headers: {e}") from e

    def _api_extra(self) -> dict:
        """The /metrics route for the local API, when the API takes extra routes (Starlette)."""
        import inspect

        from helicone_addon.api import ApiServer

        if self.exporters is None or "extra_routes" not in inspect.signature(ApiServer).parameters:
            return {}
        return {"extra_routes": self.exporters.routes()}

    def running(self) -> None:
        from helicone_addon import errorpages

        self.loop = asyncio.get_running_loop()
        self.web = ctx.master.addons.get("view") is not None  # mitmweb: push flow comments
        # The log writer thread is CPU-bound Python: with the default 5 ms GIL switch interval it can
        # hold the event loop off for that long (p99 latency). Hand the GIL back sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        errorpages.install()
        self._open()

    def _paths(self) -> tuple[Path, Path, Path]:
        data_dir = ctx.options.helicone_data_dir
        return (
            config.db_path(data_dir, ctx.options.helicone_db),
            config.cache_dir(data_dir, ctx.options.helicone_cache_dir),
            config.ratelimit_dir(data_dir),
        )

    def _open(self) -> None:
        paths = self._paths()
        if self._opened == paths:
            return
        self._close()
        from helicone_addon.store import LogStore

        db, cache_dir, rl_dir = paths
        config.ensure_private_dir(Path(ctx.options.helicone_data_dir).expanduser())
        self.store = LogStore(
            db,
            retention_days=ctx.options.helicone_retention_days,
            max_db_bytes=ctx.options.helicone_max_db_mb * 1024 * 1024,
        ).start()
        self._cache_dir, self._rl_dir = cache_dir, rl_dir
        self.cache = self.cache_reader = None
        self.ratelimiter = None
        self._opened = paths
        logger.info("helicone: logging LLM calls to %s", db)
        if ctx.options.helicone_api_port:
            from helicone_addon.api import ApiServer

            try:
                self.api_server = ApiServer(db, ctx.options.helicone_api_host, ctx.options.helicone_api_port,
                                            lambda: self.auth_keys, self.store.submit,
                                            lambda: self.price_overrides, **self._api_extra()).start()
            except OSError as e:
                logger.error("helicone: local API not started on %s:%s: %s",
                             ctx.options.helicone_api_host, ctx.options.helicone_api_port, e)

    def _get_cache(self):
        if self.cache is None:
            from helicone_addon.cache import ResponseCache

            self.cache = ResponseCache(str(self._cache_dir), size_limit=ctx.options.helicone_cache_size_limit)
        return self.cache

    def _get_cache_reader(self):
        if self.cache_reader is None:
            from helicone_addon.cache import ResponseCache

            self.cache_reader = ResponseCache(
                str(self._cache_dir), size_limit=ctx.options.helicone_cache_size_limit, timeout=0.05
            )
        return self.cache_reader

    def _get_ratelimiter(self):
        if self.ratelimiter is None:
            from helicone_addon.ratelimit import RateLimiter

            self.ratelimiter = RateLimiter(str(self._rl_dir))
        return self.ratelimiter

    def _get_relay(self):
        if self.relay is None:
            from helicone_addon.relay import Relay

            self.relay = Relay()
        return self.relay

    def _close(self) -> None:
        if self.api_server is not None:
            self.api_server.stop()
            self.api_server = None
        if self.store is not None:
            self.store.close()
            self.store = None
        for obj in (self.cache, self.cache_reader, self.ratelimiter):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        self.cache = self.cache_reader = self.ratelimiter = None
        self._opened = None

    async def done(self) -> None:
        if self.relay is not None:
            await self.relay.aclose()
            self.relay = None
        self._close()
        if self.exporters is not None:
            self.exporters.close()

    # -- which connections to intercept ----------------------------------------------------------
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """In regular (HTTPS_PROXY) mode, only LLM hosts are intercepted; the rest is tunnelled."""
        mode = data.context.client.proxy_mode
        if not isinstance(mode, mode_specs.RegularMode):
            return
        host = data.client_hello.sni or (data.context.server.address or ("",))[0]
        if self.matcher.provider_for(host) is None:
            data.ignore_connection = True

    # -- hooks -----------------------------------------------------------------------------------
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
        state = CallState(
            id="",
            started_at=req.timestamp_start or time.time(),
            provider=provider,
            api=providers.api_for(provider, path),
            method=req.method,
            host=host,
            path=path,
            url_parts=(req.scheme, host, req.port),  # the URL as asked; built only if the cache needs it
            request_headers=list(req.headers.items(multi=True)),  # as the client sent them
        )
        flow.metadata[META] = state

    async def request(self, flow: http.HTTPFlow) -> None:
        state: CallState | None = flow.metadata.get(META)
        if state is None or flow.response or flow.error:
            return
        req = flow.request
        state.request_body = req.raw_content
        try:
            opts = headers.parse(state.request_headers, strict=ctx.options.helicone_strict)
        except headers.HeaderError as e:
            state.id = headers.new_request_id()
            state.options = headers.CallOptions(request_id=state.id)
            self._short_circuit(flow, state, "header", json_response(400, e.body(), [(headers.R_ERROR, "true")]), str(e))
            return
        state.options = opts
        state.id = opts.request_id
        for w in opts.warnings:
            logger.warning("helicone: ignored header (lenient mode): %s", w)
        if opts.target_provider and state.provider in (None, "openai-compatible"):
            state.provider = opts.target_provider.lower()

        if self.auth_keys:
            given = (opts.auth or "").strip()
            key = given[7:].strip() if given.lower().startswith("bearer ") else None
            if key not in self.auth_keys:
                msg = "Helicone-Auth is missing or not accepted; send 'Helicone-Auth: Bearer <key>' with a configured key"
                self._short_circuit(
                    flow, state, "auth",
                    json_response(401, {"error": {"type": "invalid_helicone_auth", "header": "Helicone-Auth", "message": msg}},
                                  [(headers.R_ERROR, "true")]),
                    msg,
                )
                return

        if state.provider in NEVER_MODIFIED:
            # SigV4-signed (Bedrock): any change breaks the signature. Logged, never modified.
            state.target_url = req.url
            return

        # Helicone-* never goes upstream. (The names come from the copy taken in requestheaders:
        # iterating mitmproxy's Headers costs more than the whole check.)
        for name in {n for n, _ in state.request_headers if headers.is_helicone(n)}:
            req.headers.pop(name, None)

        if opts.target_url:
            target = headers.parse_target(headers.H_TARGET_URL, opts.target_url)  # validated by parse()
            req.scheme, req.host, req.port = target.scheme, target.host, target.port
            state.provider = (
                opts.target_provider.lower() if opts.target_provider
                else providers.provider_from_url(opts.target_url, self.matcher)
                or providers.provider_from_path(state.path)
                or state.provider
            )
            state.api = providers.api_for(state.provider, state.path)

        if opts.stream_usage:
            self._add_include_usage(flow, state)

        if opts.cache.read or opts.cache.write:
            if await self._cache_lookup(flow, state):
                return
        if opts.rate_limit is not None:
            if await self._rate_limit(flow, state):
                return
        state.target_url = req.url
        if opts.retry is not None or opts.fallbacks or self.upstream_timeout_set:
            await self._get_relay().route(flow, state)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: CallState | None = flow.metadata.get(META)
        if state is None or state.short_circuit or flow.response is None:
            return
        resp = flow.response
        self._add_response_headers(state, resp)
        state.status = resp.status_code
        ctype = resp.headers.get("content-type", "")
        state.content_type = ctype
        if "text/event-stream" in ctype or "streamGenerateContent" in state.path:
            state.streamed = True
            state.chunks = chunks = []
            state.content_encoding = resp.headers.get("content-encoding")
            kept = 0

            def tee(data: bytes) -> bytes:
                nonlocal kept
                if data:
                    if state.first_chunk_at is None:
                        state.first_chunk_at = time.time()
                    if kept < MAX_LOGGED_STREAM:
                        chunks.append(data)
                        kept += len(data)
                else:
                    state.ended_at = time.time()
                return data

            resp.stream = tee

    def response(self, flow: http.HTTPFlow) -> None:
        state: CallState | None = flow.metadata.get(META)
        if state is None or not state.id:
            return
        resp = flow.response
        if resp is not None and not state.short_circuit:
            state.status = resp.status_code
            state.response_headers = list(resp.headers.items(multi=True))
            if not state.streamed:
                state.content_encoding = resp.headers.get("content-encoding")
                state.response_body = resp.raw_content
                state.ended_at = resp.timestamp_end or time.time()
            elif state.ended_at is None:
                state.ended_at = time.time()
        elif resp is not None:
            state.response_headers = list(resp.headers.items(multi=True))
        self._finish(flow, state)

    def error(self, flow: http.HTTPFlow) -> None:
        state: CallState | None = flow.metadata.get(META)
        if state is None or not state.id or state.row is not None:
            return
        msg = flow.error.msg if flow.error else "unknown error"
        state.ended_at = time.time()
        if flow.response is not None and state.status is not None:
            # the response had started: the client went away, or the upstream broke mid-stream
            state.response_headers = list(flow.response.headers.items(multi=True))
            if _stream_finished(state.chunks):
                pass  # the client hung up after the final event (SDKs close on [DONE]): complete
            elif "client" in msg.lower() and "disconnect" in msg.lower():
                state.cancelled = True
                state.error = f"cancelled: {msg}"
            else:
                state.error = msg
        else:
            # the provider never answered: the client gets a JSON 502/504 (SPEC B.12), the row has
            # status NULL and the cause in `error`
            from helicone_addon import errorpages

            code = errorpages.classify(msg)
            sent = errorpages.expect(flow.client_conn.id, code, msg, state.id)
            state.status = None
            state.no_answer = True
            state.error = f"upstream failed: {msg}" + (f" (client got a {code})" if sent else "")
        self._finish(flow, state)

    # -- helpers ---------------------------------------------------------------------------------
    def _add_response_headers(self, state: CallState, resp: http.Response) -> None:
        resp.headers[headers.R_ID] = state.id
        resp.headers[headers.R_STATUS] = "success"
        opts = state.options
        if opts is not None and opts.cache.read and not state.cache_hit:
            resp.headers[headers.R_CACHE] = "MISS"
        for k, v in state.extra_response_headers:
            resp.headers[k] = v

    def _short_circuit(self, flow: http.HTTPFlow, state: CallState, kind: str, resp: http.Response, error: str | None) -> None:
        state.short_circuit = kind
        state.error = error
        state.status = resp.status_code
        resp.headers[headers.R_ID] = state.id
        if kind != "cache":
            resp.headers.setdefault(headers.R_STATUS, "success")
        state.ended_at = time.time()
        flow.metadata["helicone_short_circuit"] = kind
        flow.response = resp

    def _add_include_usage(self, flow: http.HTTPFlow, state: CallState) -> None:
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
            state.request_body = flow.request.raw_content

    async def _cache_lookup(self, flow: http.HTTPFlow, state: CallState) -> bool:
        from helicone_addon import cache as cache_mod

        opts = state.options
        assert opts is not None
        try:
            state.cache_key = cache_mod.cache_key(
                seed=opts.cache.seed,
                url=state.incoming_url(),
                body=state.request_body or b"",
                headers=state.request_headers,
                ignore_keys=opts.cache.ignore_keys,
            )
            if not opts.cache.read:
                return False
            # inline: a WAL read of tens of microseconds (a thread hop costs more than the read); the
            # reader gives up after 50 ms of lock contention and the call is a miss
            hit = self._get_cache_reader().lookup(state.cache_key, opts.cache.bucket_size)
        except Exception:
            logger.exception("helicone: cache lookup failed; treating as a miss")
            return False
        if hit is None:
            return False
        entry, idx = hit
        hdrs = [(k, v) for k, v in entry.headers if _replayable(k)]
        hdrs += [
            (headers.R_CACHE, "HIT"),
            (headers.R_CACHE_BUCKET_IDX, str(idx)),
            (headers.R_CACHE_LATENCY, str(int(round(entry.latency_ms or 0)))),
            (headers.R_STATUS, "success"),
        ]
        try:
            resp = http.Response.make(
                200, entry.body,
                [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in hdrs],
            )
        except Exception:
            logger.exception("helicone: unusable cache entry; treating as a miss")
            return False
        state.cache_hit = True
        state.cache_entry = entry
        state.cache_reference_id = entry.request_id
        state.streamed = bool(entry.streamed)
        state.content_type = resp.headers.get("content-type")
        self._short_circuit(flow, state, "cache", resp, None)
        return True

    async def _rate_limit(self, flow: http.HTTPFlow, state: CallState) -> bool:
        from helicone_addon import ratelimit, usage

        opts = state.options
        assert opts is not None
        policy = opts.rate_limit
        user = opts.user_id
        if user is None and policy.segment == "user":
            state.request_info = usage.parse_request(state.api, state.path, state.request_body)
            user = state.request_info.user
        try:
            key = ratelimit.segment_key(policy, user, opts.properties)
        except ValueError as e:
            if not ctx.options.helicone_strict:
                logger.warning("helicone: rate limit skipped: %s", e)
                return False
            err = headers.HeaderError(headers.H_RATE_LIMIT, str(e))
            self._short_circuit(flow, state, "header", json_response(400, err.body(), [(headers.R_ERROR, "true")]), str(err))
            return True
        try:
            decision = await asyncio.to_thread(self._get_ratelimiter().check_and_consume, key, policy)
        except Exception:
            logger.exception("helicone: rate limiter failed; letting the call through")
            return False
        state.rate_limit_key = key
        hdrs = ratelimit.headers_for(decision)
        if decision.allowed:
            state.extra_response_headers = hdrs
            return False
        state.rate_limited = True
        resp = http.Response.make(
            429, ratelimit.rate_limited_body(),
            [(b"content-type", b"application/json;charset=UTF-8"), (b"X-Helicone-Error", b"rate_limited")]
            + [(k.encode(), v.encode()) for k, v in hdrs],
        )
        self._short_circuit(flow, state, "ratelimit", resp, "rate limited by Helicone-RateLimit-Policy")
        return True

    def _finish(self, flow: http.HTTPFlow, state: CallState) -> None:
        """Hand the call to the writer thread. Cheap: no parsing, no I/O here."""
        if self.store is None or state.row is not None:
            return
        state.row = {}  # finished once, even if both response and error fire
        overrides = self.price_overrides
        estimate = ctx.options.helicone_estimate_usage
        web = self.web
        exporters = self.exporters

        def job():
            row, props = build_row(state, price_overrides=overrides, estimate=estimate)
            self._after_row(state, row)
            if exporters is not None:
                exporters.on_row(row, props)  # metrics, OTLP spans: in memory only, never raises
            if web and self.loop is not None:
                self.loop.call_soon_threadsafe(self._set_comment, flow, comment(row))
            return row, props

        self.store.submit(job)

    def _after_row(self, state: CallState, row: dict) -> None:
        """Side effects that need the priced row: cache save, cents accounting. Writer thread."""
        opts = state.options
        if opts is None:
            return
        if (
            opts.cache.write
            and not state.cache_hit
            and state.cache_key
            and state.status == 200
            and not state.error
            and not state.cancelled
        ):
            try:
                self._cache_save(state, row)
            except Exception:
                logger.exception("helicone: cache save failed")
        policy = opts.rate_limit
        if policy is not None and state.rate_limit_key and not state.rate_limited and not state.cache_hit:
            if policy.unit == "cents" and row.get("cost_usd"):
                try:
                    self._get_ratelimiter().record(state.rate_limit_key, policy, row["cost_usd"] * 100)
                except Exception:
                    logger.exception("helicone: rate-limit accounting failed")

    def _cache_save(self, state: CallState, row: dict) -> None:
        from helicone_addon import cache as cache_mod
        from helicone_addon.columns import USAGE_COLUMNS
        from helicone_addon.record import response_bytes

        opts = state.options
        assert opts is not None and state.cache_key
        body = state.decoded_body if state.decoded_body is not None else response_bytes(state)
        entry = cache_mod.CachedResponse(
            status=200,
            headers=[(k, v) for k, v in state.response_headers if _replayable(k)],
            body=body,
            streamed=bool(row.get("streamed")),
            chunks=None,
            chunk_offsets_ms=None,
            latency_ms=row.get("latency_ms") or 0.0,
            request_id=state.id,
            model=row.get("model"),
            provider=row.get("provider"),
            usage_source=row.get("usage_source"),
            cost_usd=row.get("cost_usd"),
            created_at=time.time(),
            **{c: row.get(c) for c in USAGE_COLUMNS},
        )
        self._get_cache().store(state.cache_key, opts.cache.bucket_size, entry, opts.cache.ttl_s)

    def _set_comment(self, flow: http.HTTPFlow, text: str) -> None:
        flow.comment = text
        try:
            from mitmproxy import hooks

            ctx.master.addons.trigger(hooks.UpdateHook([flow]))
        except Exception:
            pass


addons = [HeliconeAddon()]
