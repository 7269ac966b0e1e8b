"""Every recorded corpus case through the REAL proxy: the fake upstream serves the recorded bytes
(as recorded, then re-chunked at random byte boundaries, then gzip-encoded and re-chunked), and
the logged row must carry the model and all six normalised usage numbers, and a cost equal to
genai-prices' own calculation (or NULL with a reason)."""

from __future__ import annotations

import uuid

import genai_prices
import pytest
from corpus import CASES, expected_normalised, load, request_bytes

from helicone_addon import pricing

VARIANTS = {"recorded": {}, "rechunked": {"x-fake-chunks": "23"}, "gzip-rechunked": {"x-fake-chunks": "7", "x-fake-gzip": "1"}}


@pytest.fixture(scope="module")
def corpus_proxy(fake, tmp_path_factory):
    from conftest import Proxy

    # every intercepted (LLM) host goes to the fake upstream
    p = Proxy(tmp_path_factory.mktemp("corpus"), fake.url, ["--map-remote", rf"|https://[^/]+|{fake.url}"]).start()
    yield p
    p.stop()


def genai_cost(provider: str, model: str, row: dict) -> float | None:
    gp = pricing.PROVIDER_MAP.get(provider, provider)
    usage = genai_prices.Usage(
        input_tokens=row["prompt_tokens"], output_tokens=row["completion_tokens"],
        cache_read_tokens=row["cached_tokens"], cache_write_tokens=row["cache_write_tokens"],
    )
    try:
        kw = {"provider_id": gp} if gp else {}
        return float(genai_prices.calc_price(usage, model, **kw).total_price)
    except LookupError:
        return None


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", CASES)
def test_corpus_case_through_proxy(corpus_proxy, case, variant):
    req, hdr, exp, _ = load(case)
    rid = str(uuid.uuid4())
    headers = {"x-fake-corpus": case, "Helicone-Request-Id": rid, "content-type": "application/json",
               "authorization": "Bearer sk-corpus-test", **VARIANTS[variant]}
    with corpus_proxy.httpx() as c:
        r = c.request(req["method"], f"https://{req['host']}{req['path']}", headers=headers,
                      content=request_bytes(req))
    assert r.status_code == exp["status_code"]
    row = corpus_proxy.row(rid)
    assert row["status"] == exp["status_code"]
    if exp["model"] is not None:
        assert row["model"] == exp["model"]
    numbers = (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["cached_tokens"],
               row["cache_write_tokens"], row["reasoning_tokens"])
    want = expected_normalised(exp)
    if want is None and exp["streamed"] and not exp["is_error"]:
        # a stream that reports no usage: estimated with tiktoken, and marked so
        assert row["usage_source"] == "estimated"
        assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    else:
        assert numbers == (want or (None,) * 6)
        assert row["usage_source"] == ("provider" if want else None)
    if exp["is_error"]:
        assert row["error"] and exp["error"]["message"][:60] in row["error"]
    # cost: genai-prices' own calculation for that usage, or NULL with a reason
    if row["prompt_tokens"] is not None:
        expected_cost = genai_cost(row["provider"], row["model"], row)
        if expected_cost is None:
            assert row["cost_usd"] is None and row["cost_note"]
        else:
            assert row["cost_usd"] == pytest.approx(expected_cost, rel=1e-9, abs=1e-12)
            assert row["prices_version"].startswith("genai-prices")
