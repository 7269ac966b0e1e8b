"""Known LLM hosts, provider detection and which wire format (API) a call speaks.

The provider is decided from the host the client asked for (before any ``--map-remote``), else
from the path shape, else from ``Helicone-Target-Provider``. Provider hosts are spelled here only.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

# wire formats ("api") understood by helicone_addon.usage
API_OPENAI_CHAT = "openai-chat"
API_OPENAI_RESPONSES = "openai-responses"
API_OPENAI_COMPLETIONS = "openai-completions"
API_OPENAI_EMBEDDINGS = "openai-embeddings"
API_ANTHROPIC = "anthropic-messages"
API_GEMINI = "gemini"
API_GEMINI_EMBEDDINGS = "gemini-embeddings"
API_UNKNOWN = "unknown"

# host pattern -> provider id. Patterns are fnmatch-style on the lower-cased host.
KNOWN_HOSTS: dict[str, str] = {
    "api.openai.com": "openai",
    "*.openai.azure.com": "azure",
    "*.cognitiveservices.azure.com": "azure",
    "*.services.ai.azure.com": "azure",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "aiplatform.googleapis.com": "vertex",
    "*-aiplatform.googleapis.com": "vertex",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.deepseek.com": "deepseek",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "openrouter.ai": "openrouter",
    "api.x.ai": "x-ai",
    "api.fireworks.ai": "fireworks",
    "api.perplexity.ai": "perplexity",
    "api.cerebras.ai": "cerebras",
    "api.deepinfra.com": "deepinfra",
    "integrate.api.nvidia.com": "nvidia",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "bedrock-runtime.*.amazonaws.com": "bedrock",
}

_GEMINI_PATH = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)")
_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/(?P<deployment>[^/]+)/")


class HostMatcher:
    """Matches hosts against KNOWN_HOSTS plus user-supplied extra patterns (option helicone_hosts)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.exact: dict[str, str] = {}
        self.wild: list[tuple[str, str]] = []
        for pattern, provider in list(KNOWN_HOSTS.items()) + [_split_extra(e) for e in extra]:
            pattern = pattern.lower().strip()
            if any(c in pattern for c in "*?["):
                self.wild.append((pattern, provider))
            else:
                self.exact[pattern] = provider

    def provider_for(self, host: str | None) -> str | None:
        """Provider id for a host, or None when the host is not a known LLM host."""
        if not host:
            return None
        host = host.lower().rstrip(".")
        hit = self.exact.get(host)
        if hit is not None:
            return hit
        for pattern, provider in self.wild:
            if fnmatch.fnmatchcase(host, pattern):
                return provider
        return None


def _split_extra(entry: str) -> tuple[str, str]:
    """'host' or 'host=provider' (provider defaults to 'openai-compatible')."""
    host, _, provider = entry.partition("=")
    return host.strip(), (provider.strip() or "openai-compatible")


def provider_from_path(path: str) -> str | None:
    """Guess the provider from the path shape alone (reverse proxies to unknown hosts)."""
    p = path.split("?", 1)[0]
    if p.endswith("/v1/messages") or p.endswith("/v1/complete"):
        return "anthropic"
    if _GEMINI_PATH.search(p):
        return "vertex" if "/publishers/google/" in p else "gemini"
    if "/openai/deployments/" in p:
        return "azure"
    if p.endswith(("/chat/completions", "/completions", "/embeddings", "/responses")):
        return "openai-compatible"
    return None


def api_for(provider: str | None, path: str) -> str:
    """Which wire format a call speaks, from its provider and path."""
    p = path.split("?", 1)[0].rstrip("/")
    m = _GEMINI_PATH.search(p)
    if m and "/publishers/anthropic/" in p:
        return API_ANTHROPIC  # Claude on Vertex: rawPredict / streamRawPredict
    if m:
        method = m.group("method")
        if method in ("embedContent", "batchEmbedContents"):
            return API_GEMINI_EMBEDDINGS
        return API_GEMINI
    if p.endswith("/messages") and provider in ("anthropic", "bedrock", None):
        return API_ANTHROPIC
    if p.endswith("/v1/messages"):
        return API_ANTHROPIC
    if p.endswith("/chat/completions"):
        return API_OPENAI_CHAT
    if p.endswith("/responses"):
        return API_OPENAI_RESPONSES
    if p.endswith("/embeddings"):
        return API_OPENAI_EMBEDDINGS
    if p.endswith("/completions"):
        return API_OPENAI_COMPLETIONS
    return API_UNKNOWN


def gemini_model_from_path(path: str) -> str | None:
    m = _GEMINI_PATH.search(path.split("?", 1)[0])
    return m.group("model") if m else None


def gemini_stream_from_path(path: str) -> bool:
    p, _, query = path.partition("?")
    m = _GEMINI_PATH.search(p)
    return bool(m and m.group("method") == "streamGenerateContent") or "alt=sse" in query


def azure_deployment_from_path(path: str) -> str | None:
    m = _AZURE_DEPLOYMENT.search(path)
    return m.group("deployment") if m else None


def detect(host: str | None, path: str, target_provider: str | None = None,
           matcher: HostMatcher | None = None) -> str | None:
    """The provider of a call: from the host asked for, else the path shape, else the
    `Helicone-Target-Provider` label."""
    return (
        (matcher or DEFAULT_MATCHER).provider_for(host)
        or provider_from_path(path)
        or (target_provider.lower() if target_provider else None)
    )


def provider_from_url(url: str, matcher: HostMatcher | None = None) -> str | None:
    """Provider for a full URL (used for Helicone-Target-Url gateways and fallbacks)."""
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)", url)
    if not m:
        return None
    return (matcher or DEFAULT_MATCHER).provider_for(m.group(1))


DEFAULT_MATCHER = HostMatcher()
