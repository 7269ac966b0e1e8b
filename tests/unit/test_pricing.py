"""helicone_addon.pricing: genai-prices lookup, Usage conversion, overrides."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import genai_prices
import pytest
from genai_prices import data_snapshot

from helicone_addon import pricing
from helicone_addon.pricing import PRICES_VERSION, PriceResult, parse_overrides, price
from helicone_addon.usage.types import Usage

VERSION = genai_prices.__version__


def _gp_model_prices(gp_provider: str | None, model: str):
    """genai-prices' own ModelPrice for a model (the per-MTok rates we check against)."""
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, gp_provider, None)
    return info.get_prices(datetime.now(tz=UTC))


# ------------------------------------------------------------------------------- Usage semantics


def test_genai_prices_input_tokens_include_cache_tokens():
    """Evidence for the conversion: genai-prices subtracts cache read/write from input_tokens."""
    mp = _gp_model_prices("anthropic", "claude-sonnet-4-20250514")
    calc = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, cache_read_tokens=200, cache_write_tokens=100, output_tokens=0),
        "claude-sonnet-4-20250514",
        provider_id="anthropic",
    )
    expected = (700 * mp.input_mtok + 200 * mp.cache_read_mtok + 100 * mp.cache_write_mtok) / 1_000_000
    assert calc.total_price == expected


@pytest.mark.parametrize("fast", [True, False])
def test_anthropic_cache_read_and_write_against_hand_computation(fast):
    model = "claude-sonnet-4-20250514"
    mp = _gp_model_prices("anthropic", model)
    # Anthropic API: input_tokens=1500 (uncached), cache_read_input_tokens=20000,
    # cache_creation_input_tokens=3000, output_tokens=700 -> our normalised Usage:
    usage = Usage(
        prompt_tokens=1500 + 20000 + 3000,
        completion_tokens=700,
        total_tokens=1500 + 20000 + 3000 + 700,
        cached_tokens=20000,
        cache_write_tokens=3000,
        raw={"input_tokens": 1500, "cache_read_input_tokens": 20000, "cache_creation_input_tokens": 3000, "output_tokens": 700},
    )
    hand = (
        1500 * float(mp.input_mtok)
        + 20000 * float(mp.cache_read_mtok)
        + 3000 * float(mp.cache_write_mtok)
        + 700 * float(mp.output_mtok)
    ) / 1e6
    r = price("anthropic", model, usage, fast=fast)
    assert r.cost_usd == pytest.approx(hand, rel=1e-12)
    assert r.note is None
    assert r.prices_version == PRICES_VERSION
    assert VERSION in r.prices_version
    # sanity: cache write is dearer than input, cache read cheaper: the split matters
    assert mp.cache_write_mtok > mp.input_mtok > mp.cache_read_mtok


def test_anthropic_1h_cache_write_from_raw_usage():
    model = "claude-sonnet-4-20250514"
    mp = _gp_model_prices("anthropic", model)
    assert mp.cache_write_1h_mtok is not None
    raw = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 5,
    }
    usage = Usage(prompt_tokens=3010, completion_tokens=5, cached_tokens=0, cache_write_tokens=3000, raw=raw)
    hand = (
        10 * mp.input_mtok + 1000 * mp.cache_write_mtok + 2000 * mp.cache_write_1h_mtok + 5 * mp.output_mtok
    ) / 1_000_000
    for fast in (True, False):
        assert price("anthropic", model, usage, fast=fast).cost_usd == pytest.approx(float(hand), rel=1e-12)
    # a stream keeps a list of usage objects: the max is used
    usage.raw = [{"input_tokens": 10, "cache_creation": {"ephemeral_1h_input_tokens": 0}}, raw, {"output_tokens": 5}]
    assert price("anthropic", model, usage).cost_usd == pytest.approx(float(hand), rel=1e-12)


def test_openai_cached_prompt_tokens():
    mp = _gp_model_prices("openai", "gpt-4o")
    usage = Usage(prompt_tokens=2000, completion_tokens=100, cached_tokens=1024)
    hand = ((2000 - 1024) * mp.input_mtok + 1024 * mp.cache_read_mtok + 100 * mp.output_mtok) / 1_000_000
    assert price("openai", "gpt-4o-2024-08-06", usage).cost_usd == pytest.approx(float(hand), rel=1e-12)


def test_reasoning_tokens_are_part_of_completion_not_extra():
    mp = _gp_model_prices("openai", "o3-mini")
    base = Usage(prompt_tokens=100, completion_tokens=1000)
    with_reasoning = Usage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=800)
    hand = (100 * mp.input_mtok + 1000 * mp.output_mtok) / 1_000_000
    assert price("openai", "o3-mini", base).cost_usd == pytest.approx(float(hand))
    assert price("openai", "o3-mini", with_reasoning).cost_usd == pytest.approx(float(hand))


def test_tiered_price_uses_genai_prices_directly():
    # gemini-1.5-pro has token tiers: the tier depends on the TOTAL prompt (cache included)
    small = Usage(prompt_tokens=1000, completion_tokens=10)
    big = Usage(prompt_tokens=300_000, completion_tokens=10)
    for u in (small, big):
        want = float(
            genai_prices.calc_price(
                genai_prices.Usage(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens),
                "gemini-1.5-pro",
                provider_id="google",
            ).total_price
        )
        assert price("gemini", "gemini-1.5-pro", u).cost_usd == pytest.approx(want, rel=1e-12)
    assert price("gemini", "gemini-1.5-pro", big).cost_usd / 300 > price("gemini", "gemini-1.5-pro", small).cost_usd


def test_fast_path_matches_genai_prices_for_every_bundled_model():
    """The memoised linear rates give the same result as genai-prices' own calc_price."""
    rng = random.Random(1234)
    snap = data_snapshot.get_snapshot()
    checked = 0
    for prov in snap.providers:
        for info in prov.models:
            ref = info.id
            for _ in range(3):
                prompt = rng.randint(0, 300_000)
                cr = rng.randint(0, prompt // 2)
                cw = rng.randint(0, prompt - cr)
                out = rng.randint(0, 20_000)
                u = Usage(prompt_tokens=prompt, completion_tokens=out, cached_tokens=cr, cache_write_tokens=cw,
                          reasoning_tokens=rng.randint(0, out))
                slow = price(prov.id, ref, u, fast=False)
                fast = price(prov.id, ref, u, fast=True)
                if slow.cost_usd is None:
                    assert fast.cost_usd is None
                    continue
                assert fast.cost_usd == pytest.approx(slow.cost_usd, rel=1e-9, abs=1e-12), (prov.id, ref, u)
                checked += 1
    assert checked > 1000


# ------------------------------------------------------------------------------- provider mapping


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("openai", "openai"), ("azure", "azure"), ("anthropic", "anthropic"), ("gemini", "google"),
        ("vertex", "google"), ("groq", "groq"), ("mistral", "mistral"), ("deepseek", "deepseek"),
        ("together", "together"), ("openrouter", "openrouter"), ("x-ai", "x-ai"), ("fireworks", "fireworks"),
        ("perplexity", "perplexity"), ("cerebras", "cerebras"), ("cohere", "cohere"), ("bedrock", "aws"),
        ("deepinfra", None), ("nvidia", None), ("openai-compatible", None),
    ],
)
def test_provider_map(ours, theirs):
    assert pricing.PROVIDER_MAP[ours] == theirs
    if theirs is not None:
        assert any(p.id == theirs for p in data_snapshot.get_snapshot().providers)


def test_every_provider_id_of_ours_is_mapped():
    from helicone_addon.providers import KNOWN_HOSTS

    assert set(KNOWN_HOSTS.values()) | {"openai-compatible"} <= set(pricing.PROVIDER_MAP)


U = Usage(prompt_tokens=1000, completion_tokens=100)


@pytest.mark.parametrize(
    "provider, model",
    [
        ("gemini", "gemini-2.5-flash"),
        ("gemini", "models/gemini-2.5-flash"),
        ("vertex", "projects/p/locations/us/publishers/google/models/gemini-2.5-flash"),
        ("vertex", "claude-3-5-sonnet-v2@20241022"),
        ("azure", "gpt-4o"),
        ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
        ("openrouter", "openai/gpt-4o"),
        ("groq", "llama-3.3-70b-versatile"),
        ("x-ai", "grok-3"),
        ("deepseek", "deepseek-chat"),
    ],
)
def test_known_provider_models_are_priced(provider, model):
    r = price(provider, model, U)
    assert r.cost_usd is not None and r.cost_usd > 0, r.note
    assert r.note is None


def test_gemini_and_vertex_use_google_prices():
    assert price("gemini", "gemini-2.5-flash", U).cost_usd == price("vertex", "gemini-2.5-flash", U).cost_usd
    mp = _gp_model_prices("google", "gemini-2.5-flash")
    assert price("gemini", "gemini-2.5-flash", U).cost_usd == pytest.approx(
        float((1000 * mp.input_mtok + 100 * mp.output_mtok) / 1_000_000)
    )


@pytest.mark.parametrize("provider", ["openai-compatible", None, "nvidia", "some-local-thing"])
def test_unknown_provider_is_guessed_from_model_and_said_so(provider):
    r = price(provider, "gpt-4o", U)
    assert r.cost_usd == price("openai", "gpt-4o", U).cost_usd
    assert "guessed" in r.note and "openai/gpt-4o" in r.note


def test_unmapped_but_known_genai_prices_id_is_used():
    # e.g. helicone_hosts "api.novita.ai=novita"
    snap = data_snapshot.get_snapshot()
    novita = next(p for p in snap.providers if p.id == "novita")
    model = novita.models[0].id
    r = price("novita", model, U)
    assert r.note is None
    assert r.cost_usd == price("novita", model, U, fast=False).cost_usd


# ------------------------------------------------------------------------------- no price -> None


def test_unknown_model_gives_none_with_reason():
    r = price("openai", "my-fine-model", U)
    assert r.cost_usd is None
    assert f"no price for model 'my-fine-model' (provider 'openai') in genai-prices {VERSION}" in r.note
    r = price("openai-compatible", "llama3:8b", U)
    assert r.cost_usd is None and "no price for model 'llama3:8b'" in r.note


def test_azure_deployment_name_is_not_guessed():
    r = price("azure", "my-prod-deployment", U)
    assert r.cost_usd is None and "my-prod-deployment" in r.note


def test_no_usage_or_model():
    r = price("openai", "gpt-4o", None)
    assert r.cost_usd is None and "no usage" in r.note
    r = price("openai", None, U)
    assert r.cost_usd is None and "no model" in r.note
    r = price("openai", "gpt-4o", Usage())
    assert r.cost_usd is None and "no token counts" in r.note
    assert r.prices_version == PRICES_VERSION


def test_zero_usage_is_zero_not_none():
    assert price("openai", "gpt-4o", Usage(prompt_tokens=0, completion_tokens=0)).cost_usd == 0


def test_inconsistent_usage_is_reported():
    r = price("anthropic", "claude-sonnet-4-20250514", Usage(prompt_tokens=10, completion_tokens=1, cached_tokens=50))
    assert r.cost_usd is None and "inconsistent usage" in r.note


def test_prices_version():
    assert PRICES_VERSION.startswith(f"genai-prices {VERSION}")


def test_price_result_fields():
    assert [f for f in PriceResult.__dataclass_fields__] == ["cost_usd", "note", "prices_version"]


def test_never_fetches_over_the_network(monkeypatch):
    import socket

    def boom(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", boom)
    pricing._lookup.cache_clear()
    assert price("openai", "gpt-4o-mini", U).cost_usd > 0


# ------------------------------------------------------------------------------- overrides


def test_parse_overrides_valid():
    o = parse_overrides(
        '{"My-Model": {"input_mtok": 2.5, "output_mtok": 10, "cache_read_mtok": 1.25, "cache_write_mtok": 3.75},'
        ' "llama*": {"input_mtok": 0.1, "output_mtok": 0.2}}'
    )
    assert o == {
        "my-model": {"input_mtok": 2.5, "output_mtok": 10.0, "cache_read_mtok": 1.25, "cache_write_mtok": 3.75},
        "llama*": {"input_mtok": 0.1, "output_mtok": 0.2, "cache_read_mtok": 0.1, "cache_write_mtok": 0.1},
    }
    assert parse_overrides("") == {} and parse_overrides("   ") == {}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"m": 3}', "must be an object of prices"),
        ('{"m": {"input_mtok": 1}}', "lacks output_mtok"),
        ('{"m": {"input_mtok": 1, "output_mtok": -2}}', "non-negative number"),
        ('{"m": {"input_mtok": "1", "output_mtok": 2}}', "non-negative number"),
        ('{"m": {"input_mtok": 1, "output_mtok": 2, "prompt": 3}}', "unknown key(s) prompt"),
        ('{"": {"input_mtok": 1, "output_mtok": 2}}', "empty model name"),
    ],
)
def test_parse_overrides_errors_name_the_form(text, fragment):
    with pytest.raises(ValueError) as e:
        parse_overrides(text)
    assert fragment in str(e.value)
    assert '{"<model or glob>": {"input_mtok": 2.5' in str(e.value)


def test_override_wins_over_genai_prices_and_exact_beats_glob():
    o = parse_overrides(
        '{"gpt-4*": {"input_mtok": 1, "output_mtok": 2}, '
        '"gpt-4o": {"input_mtok": 2.5, "output_mtok": 10, "cache_read_mtok": 1.25, "cache_write_mtok": 3.75}}'
    )
    u = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cached_tokens=400_000, cache_write_tokens=100_000)
    r = price("openai", "GPT-4o", u, overrides=o)
    assert r.cost_usd == pytest.approx(0.5 * 2.5 + 0.4 * 1.25 + 0.1 * 3.75 + 10)
    assert r.note == "price override 'gpt-4o'"
    r = price("openai", "gpt-4.1", u, overrides=o)
    assert r.cost_usd == pytest.approx(1 + 2)  # cache rates default to the input rate
    assert r.note == "price override 'gpt-4*'"
    # a model genai-prices does not know becomes priced
    r = price("openai-compatible", "llama3:8b", U, overrides=parse_overrides('{"llama3*": {"input_mtok": 1, "output_mtok": 1}}'))
    assert r.cost_usd == pytest.approx(1100 / 1e6)
    # no match -> genai-prices
    assert price("openai", "gpt-3.5-turbo", U, overrides=o).note is None
