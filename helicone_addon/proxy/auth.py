"""HeliconeAuth: when `helicone_auth_keys` is set, an LLM call needs `Helicone-Auth: Bearer <key>`."""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import ctx, http

from helicone_addon import headers
from helicone_addon.proxy.flowrecord import json_response, record_of, short_circuit

MESSAGE = "Helicone-Auth is missing or not accepted; send 'Helicone-Auth: Bearer <key>' with a configured key"


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

    def configure(self, updated: set[str]) -> None:
        if "helicone_auth_keys" in updated:
            self.keys = frozenset(k for k in (bearer_value(k) for k in ctx.options.helicone_auth_keys) if k)

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
