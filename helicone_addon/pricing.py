"""Cost of a call in USD, from the ``genai-prices`` package.

Pure module (no mitmproxy). Prices come ONLY from the snapshot bundled with the installed
``genai-prices`` wheel; nothing here fetches prices over the network (``genai_prices.UpdatePrices``
is never started) and no price table is written by hand.

- ``price(provider, model, usage, overrides=...) -> PriceResult``
- ``parse_overrides(text) -> dict``: user-set prices (option string, JSON), which win over genai-prices.

Provider mapping (our ids from ``providers.py`` -> genai-prices provider ids)::

    openai->openai  azure->azure  anthropic->anthropic  gemini->google  vertex->google
    groq, mistral, deepseek, together, openrouter, x-ai, fireworks, perplexity, cerebras, cohere -> same id
    bedrock->aws
    deepinfra, nvidia, openai-compatible, None: not in genai-prices -> the provider is guessed from the
    model name (genai-prices' own ``model_match`` rules) and the note says so.
    Any other id is used as-is when genai-prices knows that exact id (e.g. 'novita', 'moonshotai'
    given through ``helicone_hosts`` as ``host=provider``), else guessed from the model.

Usage conversion (our ``Usage`` -> ``genai_prices.Usage``): genai-prices' ``input_tokens`` is the TOTAL
input, cache reads and cache writes included ("Do not pass only the uncached count as `input_tokens`",
genai-prices README; ``decompose.compute_leaf_values`` subtracts ``cache_read_tokens`` and
``cache_write_tokens`` from ``input_tokens`` because they are descendants of it in ``data_units``).
That is exactly our ``prompt_tokens``, so::

    input_tokens = prompt_tokens          cache_read_tokens  = cached_tokens
    output_tokens = completion_tokens     cache_write_tokens = cache_write_tokens
    output_reasoning_tokens = reasoning_tokens   (a part of output_tokens; priced apart only by
                                                  the rare models that have a reasoning rate)
    cache_write_1h_tokens = Anthropic raw usage cache_creation.ephemeral_1h_input_tokens, when present
                            (a part of cache_write_tokens, priced at the 1-hour write rate)

Speed: the resolution of a (provider, model) is memoised (hits and misses), with the per-token
rates of a model that has a single price set, so a call costs a dict lookup and a few multiplications. genai-prices' own ``calc_price`` costs ~70 µs
per call (unit-registry validation on every call); for a price set that is linear (no token tiers),
the cost is ``base + sum(rate_k * count_k)``, so the per-token rates are derived ONCE per price set by
asking genai-prices for the price of unit usages, and later calls cost a few µs. Tiered prices (and
anything unusual) go through genai-prices directly.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import genai_prices
from genai_prices import data_snapshot as _gp_snapshot
from genai_prices import types as _gp_types

from helicone_addon.usage.types import Usage

logger = logging.getLogger(__name__)

__all__ = [
    "warm",
    "PriceResult",
    "price",
    "parse_overrides",
    "PROVIDER_MAP",
    "PRICES_VERSION",
    "OVERRIDE_KEYS",
    "OVERRIDES_FORM",
]

GENAI_PRICES_VERSION: str = genai_prices.__version__
PRICES_VERSION: str = f"genai-prices {GENAI_PRICES_VERSION} (bundled snapshot)"

# our provider id -> genai-prices provider id (None: genai-prices has no such provider; guess from model)
PROVIDER_MAP: dict[str, str | None] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex": "google",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "together": "together",
    "openrouter": "openrouter",
    "x-ai": "x-ai",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "cohere": "cohere",
    "bedrock": "aws",
    "deepinfra": None,
    "nvidia": None,
    "openai-compatible": None,
}

OVERRIDE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
OVERRIDES_FORM = (
    'a JSON object {"<model or glob>": {"input_mtok": 2.5, "output_mtok": 10, '
    '"cache_read_mtok": 1.25, "cache_write_mtok": 3.75}} with prices in USD per million tokens; '
    "input_mtok and output_mtok are required, cache_read_mtok and cache_write_mtok default to input_mtok"
)


@dataclass(frozen=True)
class PriceResult:
    cost_usd: float | None  # None when no price is known (never a silent 0)
    note: str | None  # why cost_usd is None, or how the price was found when not straightforward
    prices_version: str  # e.g. "genai-prices 0.2.3 (bundled snapshot)"


# ---------------------------------------------------------------------------------------------
# overrides


def parse_overrides(text: str | None) -> dict[str, dict[str, float]]:
    """Parse the price-override option. Empty/blank -> {}.

    Returns ``{model-or-glob (lower-cased): {input_mtok, output_mtok, cache_read_mtok,
    cache_write_mtok}}`` with all four keys filled in (floats, USD per million tokens).
    Raises ValueError naming the accepted form.
    """
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"price overrides are not valid JSON ({e.msg} at char {e.pos}); expected {OVERRIDES_FORM}") from None
    if not isinstance(data, dict):
        raise ValueError(f"price overrides must be a JSON object, got {type(data).__name__}; expected {OVERRIDES_FORM}")
    out: dict[str, dict[str, float]] = {}
    for pattern, spec in data.items():
        name = pattern.strip().lower()
        if not name:
            raise ValueError(f"price override with an empty model name; expected {OVERRIDES_FORM}")
        if not isinstance(spec, dict):
            raise ValueError(
                f"price override for {pattern!r} must be an object of prices, got {type(spec).__name__}; "
                f"expected {OVERRIDES_FORM}"
            )
        unknown = sorted(set(spec) - set(OVERRIDE_KEYS))
        if unknown:
            raise ValueError(
                f"price override for {pattern!r} has unknown key(s) {', '.join(unknown)}; "
                f"accepted keys: {', '.join(OVERRIDE_KEYS)}; expected {OVERRIDES_FORM}"
            )
        vals: dict[str, float] = {}
        for key, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"price override for {pattern!r}: {key} must be a non-negative number (USD per million "
                    f"tokens), got {value!r}; expected {OVERRIDES_FORM}"
                )
            vals[key] = float(value)
        for key in ("input_mtok", "output_mtok"):
            if key not in vals:
                raise ValueError(f"price override for {pattern!r} lacks {key}; expected {OVERRIDES_FORM}")
        vals.setdefault("cache_read_mtok", vals["input_mtok"])
        vals.setdefault("cache_write_mtok", vals["input_mtok"])
        out[name] = {k: vals[k] for k in OVERRIDE_KEYS}
    return out


def _find_override(overrides: dict[str, dict[str, float]], model: str) -> tuple[str, dict[str, float]] | None:
    m = model.lower()
    hit = overrides.get(m)
    if hit is not None:
        return m, hit
    for pattern, rates in overrides.items():
        if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(m, pattern):
            return pattern, rates
    return None


# ---------------------------------------------------------------------------------------------
# model lookup (memoised, hits and misses)


def _normalise_model(model: str) -> str:
    m = model.strip()
    # Gemini / Vertex resource names: "models/gemini-2.5-flash", "publishers/google/models/x",
    # "projects/p/locations/l/publishers/google/models/x"
    if m.startswith(("models/", "publishers/", "projects/")) and "models/" in m:
        tail = m.rpartition("models/")[2]
        if tail:
            m = tail
    return m


@lru_cache(maxsize=4096)
def _gp_provider_for(provider: str | None) -> tuple[str | None, str | None]:
    """(genai-prices provider id or None, note when the provider will be guessed)."""
    if provider is None or not provider.strip():
        return None, "provider unknown; genai-prices guessed it from the model name"
    p = provider.strip().lower()
    if p in PROVIDER_MAP:
        gp = PROVIDER_MAP[p]
        if gp is None:
            return None, f"provider {p!r} is not in genai-prices; it guessed the provider from the model name"
        return gp, None
    # an id we do not map: use it if genai-prices knows that exact id
    if any(prov.id == p for prov in _snapshot().providers):
        return p, None
    return None, f"provider {p!r} is not in genai-prices; it guessed the provider from the model name"


def _snapshot() -> _gp_snapshot.DataSnapshot:
    # the snapshot bundled with the wheel; a custom one only if someone in-process set it explicitly
    return _gp_snapshot.get_snapshot()


def warm() -> None:
    """Load genai-prices' tables now rather than at the first priced call (a proxy at start-up)."""
    _snapshot()


@lru_cache(maxsize=8192)
def _lookup(gp_provider: str | None, model: str) -> tuple[Any, Any, str | None]:
    """(Provider, ModelInfo, None) or (None, None, reason)."""
    try:
        prov, info = _snapshot().find_provider_model(model, None, gp_provider, None)
    except LookupError as e:
        return None, None, str(e)
    return prov, info, None


# ---------------------------------------------------------------------------------------------
# usage conversion


def _raw_1h_cache_write(raw: Any) -> int:
    """Anthropic: usage.cache_creation.ephemeral_1h_input_tokens (dict, or the max over a list)."""
    items = raw if isinstance(raw, list) else [raw]
    best = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        cc = item.get("cache_creation")
        if isinstance(cc, dict):
            v = cc.get("ephemeral_1h_input_tokens")
            if isinstance(v, int) and not isinstance(v, bool) and v > best:
                best = v
    return best


@dataclass(slots=True)
class _Counts:
    input: int
    output: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    reasoning: int

    def as_gp_kwargs(self) -> dict[str, int]:
        kw = {"input_tokens": self.input, "output_tokens": self.output}
        if self.cache_read:
            kw["cache_read_tokens"] = self.cache_read
        if self.cache_write:
            kw["cache_write_tokens"] = self.cache_write
        if self.cache_write_1h:
            kw["cache_write_1h_tokens"] = self.cache_write_1h
        if self.reasoning:
            kw["output_reasoning_tokens"] = self.reasoning
        return kw


def _n(v: Any) -> int:
    """A usable token count: a positive int or float (not a bool), else 0."""
    if type(v) is int:
        return v if v > 0 else 0
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else 0


def _counts(usage: Usage) -> _Counts | str:
    """Our Usage -> counts in genai-prices' meaning, or a reason string when unusable."""
    if usage.prompt_tokens is None and usage.completion_tokens is None:
        return "usage has no token counts"
    cr, cw, out = _n(usage.cached_tokens), _n(usage.cache_write_tokens), _n(usage.completion_tokens)
    # prompt_tokens includes cache read + write; when absent, the cache parts are all we know
    inp = _n(usage.prompt_tokens) if usage.prompt_tokens is not None else cr + cw
    if cr + cw > inp:
        return (
            f"inconsistent usage: cached_tokens ({cr}) + cache_write_tokens ({cw}) exceed "
            f"prompt_tokens ({inp}), which must include them"
        )
    reasoning = _n(usage.reasoning_tokens)
    if reasoning > out:  # a parser that did not fold reasoning into completion_tokens: do not price it apart
        reasoning = 0
    w1h = _raw_1h_cache_write(usage.raw) if cw else 0
    if w1h > cw:
        w1h = 0
    return _Counts(inp, out, cr, cw, w1h, reasoning)


# ---------------------------------------------------------------------------------------------
# fast linear evaluation of a genai-prices ModelPrice


_M = 1_000_000
_DIGITS = 12  # costs are rounded to 1e-12 USD (float noise of the fast path; Helicone keeps 1e-9)
_linear_lock = threading.Lock()
# id(ModelPrice) -> (ModelPrice (kept alive so the id is not reused), rates tuple or None)
_linear_cache: dict[int, tuple[Any, tuple[float, ...] | None]] = {}


def _linear_rates(model_price: Any) -> tuple[float, ...] | None:
    """(base, input, output, cache_read, cache_write, cache_write_1h, reasoning) USD per token, derived
    from genai-prices itself; None when the price set is not linear (token tiers) or anything fails."""
    entry = _linear_cache.get(id(model_price))
    if entry is not None and entry[0] is model_price:
        return entry[1]
    rates: tuple[float, ...] | None
    try:
        if any(isinstance(v, _gp_types.TieredPrices) for v in model_price.__dict__.values()):
            rates = None
        else:

            def total(**kw: int) -> Decimal:
                return model_price.calc_price(genai_prices.Usage(**kw))["total_price"]

            base = total()
            t_in = total(input_tokens=_M)
            t_cr = total(input_tokens=_M, cache_read_tokens=_M)
            t_cw = total(input_tokens=_M, cache_write_tokens=_M)
            t_1h = total(input_tokens=_M, cache_write_tokens=_M, cache_write_1h_tokens=_M)
            t_out = total(output_tokens=_M)
            t_rs = total(output_tokens=_M, output_reasoning_tokens=_M)
            # per token: the increment of the total when one unit of that leaf is added
            rates = (
                float(base),
                float(t_in - base) / _M,
                float(t_out - base) / _M,
                float(t_cr - base) / _M,
                float(t_cw - base) / _M,
                float(t_1h - base) / _M,
                float(t_rs - base) / _M,
            )
    except Exception:  # noqa: BLE001 - not linear after all: every call goes through genai-prices
        logger.debug("no per-token rates for %s", getattr(model_price, "id", model_price), exc_info=True)
        rates = None
    with _linear_lock:
        _linear_cache[id(model_price)] = (model_price, rates)
    return rates


def _fast_total(rates: tuple[float, ...], c: _Counts) -> float:
    base, r_in, r_out, r_cr, r_cw, r_1h, r_rs = rates
    # input leaf = input - cr - cw; cache-write leaf = cw - cw1h; output leaf = out - reasoning.
    # r_cr is the price of a token moved from plain input to cache read (i.e. already net), etc.
    return (
        base
        + r_in * (c.input - c.cache_read - c.cache_write)
        + r_cr * c.cache_read
        + r_cw * (c.cache_write - c.cache_write_1h)
        + r_1h * c.cache_write_1h
        + r_out * (c.output - c.reasoning)
        + r_rs * c.reasoning
    )


# ---------------------------------------------------------------------------------------------
# memoised resolution of (provider, model): everything about a price that does not depend on the call

_resolved_lock = threading.Lock()
_resolved: dict[tuple[str | None, str], tuple[Any, Any, str | None, str | None, tuple[float, ...] | None]] = {}
_RESOLVED_MAX = 8192


def _resolve(provider: str | None, model_s: str) -> tuple[Any, Any, str | None, str | None, tuple[float, ...] | None]:
    """(Provider, ModelInfo, miss reason, note, linear rates) for a (provider, normalised model).

    The rates are kept only when the model has ONE price set (no start dates or time-of-day
    prices): then they do not depend on when the call was made; otherwise they are None and each
    call picks its price set by time.
    """
    key = (provider, model_s)
    hit = _resolved.get(key)
    if hit is not None:
        return hit
    gp_provider, guess_note = _gp_provider_for(provider)
    prov, info, miss = _lookup(gp_provider, model_s)
    if prov is None:
        out = (None, None, miss, None, None)
    else:
        prices = info.prices
        rates = _linear_rates(prices) if isinstance(prices, _gp_types.ModelPrice) else None
        out = (prov, info, None, _guess_note(guess_note, prov, info), rates)
    with _resolved_lock:
        if len(_resolved) >= _RESOLVED_MAX:  # a flood of made-up model names: start over
            _resolved.clear()
        _resolved[key] = out
    return out


# ---------------------------------------------------------------------------------------------
# public entry point


def price(
    provider: str | None,
    model: str | None,
    usage: Usage | None,
    *,
    overrides: dict[str, dict[str, float]] | None = None,
    when: datetime | None = None,
    fast: bool = True,
) -> PriceResult:
    """Cost in USD of one call. Never raises for bad data; cost_usd None comes with a reason in note.

    ``overrides`` is the dict from ``parse_overrides`` (exact model name first, then globs, in order).
    ``when`` is the time of the call (prices can change over time); default now.
    ``fast=False`` forces genai-prices' own ``calc_price`` path (used by tests to cross-check).
    """
    if not model or not str(model).strip():
        return PriceResult(None, f"no model known for this call (provider {provider!r}); no price", PRICES_VERSION)
    model_s = _normalise_model(str(model))
    if usage is None:
        return PriceResult(
            None, f"no usage reported for model {model!r} (provider {provider!r}); no price", PRICES_VERSION
        )
    counts = _counts(usage)
    if isinstance(counts, str):
        return PriceResult(None, f"{counts} for model {model!r} (provider {provider!r}); no price", PRICES_VERSION)

    if overrides:
        found = _find_override(overrides, model_s) or (
            _find_override(overrides, str(model)) if model_s != str(model) else None
        )
        if found is not None:
            pattern, r = found
            cost = (
                (counts.input - counts.cache_read - counts.cache_write) * r["input_mtok"]
                + counts.cache_read * r["cache_read_mtok"]
                + counts.cache_write * r["cache_write_mtok"]
                + counts.output * r["output_mtok"]
            ) / _M
            return PriceResult(round(cost, _DIGITS), f"price override {pattern!r}", PRICES_VERSION)

    prov, info, miss, note, rates = _resolve(provider, model_s)
    if prov is None:
        return PriceResult(
            None,
            f"no price for model {model!r} (provider {provider!r}) in genai-prices {GENAI_PRICES_VERSION}: {miss}",
            PRICES_VERSION,
        )
    if fast and rates is not None:  # one linear price set: no clock, no genai-prices call
        return PriceResult(round(_fast_total(rates, counts), _DIGITS), note, PRICES_VERSION)

    ts = when or datetime.now(tz=UTC)
    try:
        if fast:
            rates = _linear_rates(info.get_prices(ts))
            if rates is not None:
                return PriceResult(round(_fast_total(rates, counts), _DIGITS), note, PRICES_VERSION)
        calc = info.calc_price(genai_prices.Usage(**counts.as_gp_kwargs()), prov, genai_request_timestamp=ts)
        cost = round(float(calc.total_price), _DIGITS)
    except Exception as e:  # genai-prices validation errors: report, never a silent 0
        return PriceResult(
            None,
            f"genai-prices {GENAI_PRICES_VERSION} could not price model {model!r} (provider {provider!r}): {e}",
            PRICES_VERSION,
        )
    return PriceResult(cost, note, PRICES_VERSION)


def _guess_note(guess_note: str | None, prov: Any, info: Any) -> str | None:
    if guess_note is None:
        return None
    return f"{guess_note} (matched {prov.id}/{info.id})"
