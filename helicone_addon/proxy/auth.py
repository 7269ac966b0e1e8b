"""HeliconeAuth: when `helicone_auth_keys` is set, an LLM call needs `Helicone-Auth: Bearer <key>`."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from helicone_addon import headers
from helicone_addon.proxy.flowrecord import json_response, record_of, short_circuit

logger = logging.getLogger("helicone_addon")

MESSAGE = "Helicone-Auth is missing or not accepted; send 'Helicone-Auth: Bearer <key>' with a configured key"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_listeners(modes: Sequence[str], listen_host: str) -> list[str]:
    """The proxy listeners reachable from other machines ('' listens on every interface)."""
    found = []
    for spec in modes:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy reports it
        host = mode.listen_host(listen_host)
        if not is_loopback(host):
            found.append(f"{spec} on {host or 'every interface'}")
    return found


def bearer_value(value: str) -> str:
    """'Bearer k' -> 'k'; a bare key stays as it is."""
    value = value.strip()
    return value[7:].strip() if value.lower().startswith("bearer ") else value


class HeliconeAuth:
    def __init__(self) -> None:
        self.keys: frozenset[str] = frozenset()

    def load(self, loader) -> None:
        loader.add_option(
            "helicone_auth_keys", Sequence[str], [],
            "Accepted Helicone-Auth keys. When set, LLM calls without 'Helicone-Auth: Bearer <key>' get 401.",
        )
        loader.add_option(
            "helicone_allow_open_proxy", bool, False,
            "Allow listening on a non-loopback address without helicone_auth_keys or proxyauth (an open "
            "proxy on a network relays anyone's traffic to the tunnelled hosts).",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"helicone_auth_keys", "helicone_data_dir"}:
            keys = {k for k in (bearer_value(k) for k in ctx.options.helicone_auth_keys) if k}
            if keys:  # the data dir's API token (HELICONE_API_KEY of `helicone-addon env`) is the owner's too
                from helicone_addon import security

                try:
                    keys.add(security.ensure_token(ctx.options.helicone_data_dir))
                except OSError as e:  # an unwritable data dir: the configured keys still work
                    logger.warning("helicone: the API token is not a Helicone-Auth key: %s", e)
            self.keys = frozenset(keys)

    def running(self) -> None:
        opts = ctx.options
        if self.keys or getattr(opts, "proxyauth", None) or opts.helicone_allow_open_proxy:
            return
        exposed = open_listeners(opts.mode, opts.listen_host)
        if exposed:  # an error during startup stops the proxy
            logger.error(
                "helicone: refusing to run an open proxy (%s): set helicone_auth_keys or proxyauth, listen on "
                "127.0.0.1 (--listen-host 127.0.0.1), or --set helicone_allow_open_proxy=true",
                "; ".join(exposed),
            )

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.keys:
            return
        rec = record_of(flow)
        if rec is None or rec.call.options is None:
            return
        given = (rec.call.options.auth or "").strip()
        if not given.lower().startswith("bearer ") or bearer_value(given) not in self.keys:
            body = {"error": {"type": "invalid_helicone_auth", "header": "Helicone-Auth", "message": MESSAGE}}
            short_circuit(flow, rec, "auth", json_response(401, body, [(headers.R_ERROR, "true")]), MESSAGE)
