"""The fast paths of record.build_row give exactly what the plain code gives."""

from __future__ import annotations

import json
import math

import pytest

from helicone_addon import record

JSON_VALUES = [
    {},
    [],
    {"host": "api.openai.com", "authorization": "Bearer [REDACTED sha256:0123456789ab]"},
    {"x-note": "caf\u00e9 \u2713 \U0001f600 \"quoted\" back\\slash \n\t\x00\x1f \ud800"},
    {"prompt_tokens": 12, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}, "x": None,
     "ok": True, "no": False, "big": 2**70, "neg": -3, "f": 0.1, "e": 1e300, "tiny": 5e-324},
    [{"input_tokens": 3}, {"output_tokens": 4, "nested": [1, [2, [3, {}]]]}],
    [500, 200, None],
    {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    {1: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    "just a string \u00e9",
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=range(len(JSON_VALUES)))
def test_json_columns_are_json_dumps(value):
    assert record._dumps(value) == json.dumps(value)


def test_json_columns_refuse_what_json_dumps_refuses():
    with pytest.raises(TypeError) as ours:
        record._dumps({"a": object()})
    with pytest.raises(TypeError) as theirs:
        json.dumps({"a": object()})
    assert str(ours.value) == str(theirs.value)
    # and a failure leaves nothing behind that changes the next call
    assert record._dumps({"a": 1}) == '{"a": 1}'


@pytest.mark.parametrize("ts", [0, 0.0004, 0.0005, 0.9995, 0.99999949, 0.9999995, 1_700_000_123.4567,
                                1_700_000_123.9999996, 1_700_000_000, 2_000_000_000.123, 1e9 + 0.5e-6, 253402300799.999])
def test_iso_is_isoformat_in_milliseconds(ts):
    from datetime import UTC, datetime

    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert record.iso(ts) == expected


PATHS = [
    "/v1/chat/completions",
    "/v1beta/models/gemini-2.0-flash:generateContent?key=AIzaSECRET",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIza",
    "/v1/projects/p/locations/us/publishers/google/models/gemini-1.5-pro:streamGenerateContent",
    "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01",
    "/x&API_KEY=abc#frag",
    "/v1/models/m:embedContent",
    "",
]


@pytest.mark.parametrize("path", PATHS)
def test_redact_url_is_the_pattern_substitution(path):
    from helicone_addon import redact

    plain = redact._KEY_QUERY.sub(lambda m: f"{m.group(1)}REDACTED-{redact.fingerprint(m.group(2))}", path)
    assert redact.redact_url(path) == plain


@pytest.mark.parametrize("path", PATHS)
def test_request_facts_from_the_path_are_those_of_providers(path):
    from helicone_addon import providers
    from helicone_addon.usage import parse_request

    for _ in range(2):  # the second time from the kept answer
        info = parse_request("gemini", path, b'{"messages": []}')
        want_model = (providers.gemini_model_from_path(path) or providers.azure_deployment_from_path(path)) if path else None
        assert info.model == want_model
        assert info.stream == (bool(path) and providers.gemini_stream_from_path(path))


def test_a_redacted_value_is_the_same_from_the_cache():
    from helicone_addon.redact import fingerprint, redact_value

    for _ in range(2):
        assert redact_value("Bearer sk-abc ") == f"Bearer [REDACTED sha256:{fingerprint('sk-abc')}]"
        assert redact_value("sk-abc") == f"[REDACTED sha256:{fingerprint('sk-abc')}]"


def test_iso_matches_datetime_on_many_times_and_rounding_edges():
    import random
    from datetime import UTC, datetime

    rng = random.Random(7)
    times = [rng.uniform(0, 4e9) for _ in range(20000)] + [rng.randrange(0, 2**40) / 1e6 for _ in range(20000)]
    times += [math.nextafter(k + 0.9999995, d) for k in range(0, 2_000_000_000, 77_777_777) for d in (0, 1e10)]
    times += [k + f for k in (0, 1_700_000_000) for f in (0.0004995, 0.0005, 0.9995, 0.9999995, 2.5e-6)]
    for ts in times:
        assert record.iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z", ts
    with pytest.raises(ValueError):  # rounds up into the year 10000, as datetime refuses
        record.iso(253402300799.9999997)
    assert record.iso(1_700_000_000) == "2023-11-14T22:13:20.000Z"  # an int
