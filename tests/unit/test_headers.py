import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helicone_addon import headers, providers
from helicone_addon.headers import HeaderError, parse
from helicone_addon.redact import redact_headers, redact_url


def test_properties_user_session_request_id():
    rid = "3f2c1b5e-8a9d-4c7e-9f1a-2b3c4d5e6f70"
    o = parse([
        ("Helicone-Property-Feature", "search"),
        ("helicone-property-ENV", "prod"),
        ("Helicone-User-Id", "u1"),
        ("Helicone-Session-Id", "s1"),
        ("Helicone-Session-Path", "/a/b"),
        ("Helicone-Session-Name", "Trip"),
        ("Helicone-Request-Id", rid.upper()),
        ("Helicone-Omit-Request", "true"),
        ("Helicone-Omit-Response", "False"),
    ])
    assert o.properties == {"feature": "search", "env": "prod"}
    assert (o.user_id, o.session_id, o.session_path, o.session_name) == ("u1", "s1", "/a/b", "Trip")
    assert o.request_id == rid and o.client_request_id is None
    assert o.omit_request and not o.omit_response


def test_non_uuid_request_id_replaced():
    o = parse([("Helicone-Request-Id", "abc")])
    assert o.request_id != "abc" and o.client_request_id == "abc"


@pytest.mark.parametrize(
    "name,value,needle",
    [
        ("Helicone-Cache-Bucket-Max-Size", "0", "1 to 20"),
        ("Helicone-Cache-Bucket-Max-Size", "21", "1 to 20"),
        ("Helicone-Cache-Bucket-Max-Size", "abc", "1 to 20"),
        ("Helicone-RateLimit-Policy", "10;w=10", "w="),
        ("Helicone-RateLimit-Policy", "ten;w=60", "quota"),
        ("Helicone-Fallbacks", "[{", "JSON"),
        ("Helicone-Fallbacks", '{"a": 1}', "array"),
        ("Helicone-Target-Url", "ftp://x", "http"),
    ],
)
def test_malformed_values_name_the_header(name, value, needle):
    extra = [("Helicone-Cache-Enabled", "true")] if "Cache" in name else []
    with pytest.raises(HeaderError) as e:
        parse([(name, value), *extra])
    assert e.value.header.lower() == name.lower()
    body = e.value.body()
    assert body["error"]["type"] == "invalid_helicone_header"
    assert body["error"]["header"] == name
    assert needle.lower() in body["error"]["message"].lower()


def test_retry_headers_need_true_and_validate():
    assert parse([("Helicone-Retry-Num", "3")]).retry is None
    r = parse([("Helicone-Retry-Enabled", "true"), ("Helicone-Retry-Num", "3"), ("Helicone-Retry-Factor", "1.5")]).retry
    assert (r.num, r.factor, r.min_ms, r.max_ms) == (3, 1.5, 1000, 10000)
    with pytest.raises(HeaderError):
        parse([("Helicone-Retry-Enabled", "true"), ("Helicone-Retry-Num", "x")])
    with pytest.raises(HeaderError):
        parse([("Helicone-Retry-Enabled", "true"), ("Helicone-Retry-Min-Timeout", "5000"), ("Helicone-Retry-Max-Timeout", "10")])


def test_lenient_mode_ignores_and_warns():
    o = parse([("Helicone-Cache-Bucket-Max-Size", "99"), ("Helicone-RateLimit-Policy", "nope")], strict=False)
    assert o.rate_limit is None and len(o.warnings) == 2


def test_cache_options():
    o = parse([("Helicone-Cache-Enabled", "TRUE"), ("Cache-Control", "max-age=60, s-maxage=30"),
               ("Helicone-Cache-Bucket-Max-Size", "3"), ("Helicone-Cache-Seed", "s"),
               ("Helicone-Cache-Ignore-Keys", "user, request_id,")])
    assert o.cache.read and o.cache.write
    assert (o.cache.ttl_s, o.cache.bucket_size, o.cache.seed, o.cache.ignore_keys) == (30, 3, "s", ("user", "request_id"))
    with pytest.raises(HeaderError) as e:
        parse([("Helicone-Cache-Enabled", "true"), ("Cache-Control", "max-age=-5")])
    assert e.value.header == "cache-control"


BOOLEANS = {  # header -> how to read it back from CallOptions
    "Helicone-Cache-Enabled": lambda o: (o.cache.read, o.cache.write),
    "Helicone-Cache-Read": lambda o: o.cache.read,
    "Helicone-Cache-Save": lambda o: o.cache.write,
    "Helicone-Retry-Enabled": lambda o: o.retry is not None,
    "Helicone-Omit-Request": lambda o: o.omit_request,
    "Helicone-Omit-Response": lambda o: o.omit_response,
    "Helicone-Stream-Usage": lambda o: o.stream_usage,
}


@pytest.mark.parametrize("name", list(BOOLEANS))
@pytest.mark.parametrize("value,expected", [("true", True), ("TRUE", True), ("True", True), (" tRuE ", True),
                                            ("false", False), ("FALSE", False), ("False", False), (" false", False)])
def test_boolean_headers_accept_true_false_any_case(name, value, expected):
    got = BOOLEANS[name](parse([(name, value)]))
    want = (expected, expected) if name == "Helicone-Cache-Enabled" else expected
    assert got == want
    assert BOOLEANS[name](parse([(name.lower(), value)])) == want  # header names are case-insensitive too


@pytest.mark.parametrize("name", list(BOOLEANS))
@pytest.mark.parametrize("value", ["yes", "1", "on", "", "no", "0", "truee", "t", "true,false"])
def test_boolean_headers_reject_anything_else_in_strict_mode(name, value):
    with pytest.raises(HeaderError) as e:
        parse([(name, value)])
    body = e.value.body()["error"]
    assert body["type"] == "invalid_helicone_header" and body["header"] == name
    assert "accepted: true or false" in body["message"] and repr(value) in body["message"]


@pytest.mark.parametrize("name", list(BOOLEANS))
def test_boolean_headers_are_ignored_with_a_warning_in_lenient_mode(name):
    o = parse([(name, "yes"), ("Helicone-Omit-Request", "true") if name != "Helicone-Omit-Request"
               else ("Helicone-Stream-Usage", "true")], strict=False)
    off = (False, False) if name == "Helicone-Cache-Enabled" else False
    assert BOOLEANS[name](o) == off
    assert len(o.warnings) == 1 and name in o.warnings[0] and "true or false" in o.warnings[0]
    # the neighbouring, well-formed boolean still counts
    assert o.omit_request if name != "Helicone-Omit-Request" else o.stream_usage


def test_bad_cache_enabled_is_an_error_even_with_cache_read_true():
    with pytest.raises(HeaderError) as e:
        parse([("Helicone-Cache-Enabled", "yes"), ("Helicone-Cache-Read", "true")])
    assert e.value.header == "helicone-cache-enabled"
    o = parse([("Helicone-Cache-Enabled", "yes"), ("Helicone-Cache-Read", "true")], strict=False)
    assert o.cache.read and not o.cache.write and len(o.warnings) == 1


def test_fallbacks_parse():
    value = json.dumps([{"target-url": "https://a.example", "headers": {"Authorization": "Bearer k"}, "onCodes": [429, {"from": 500, "to": 599}]},
                        {"target-url": "https://b.example", "headers": {}, "onCodes": []}])
    fb = parse([("Helicone-Fallbacks", value)]).fallbacks
    assert len(fb) == 2 and fb[0].matches(503) and fb[0].matches(429) and not fb[0].matches(400)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([
    "Helicone-Cache-Enabled", "Helicone-Cache-Bucket-Max-Size", "Cache-Control", "Helicone-Cache-Ignore-Keys",
    "Helicone-RateLimit-Policy", "Helicone-Retry-Enabled", "Helicone-Retry-Num", "Helicone-Retry-Factor",
    "Helicone-Retry-Min-Timeout", "Helicone-Retry-Max-Timeout", "Helicone-Fallbacks", "Helicone-Target-Url",
    "Helicone-Request-Id", "Helicone-Property-X", "Helicone-User-Id", "Helicone-Omit-Request", "Helicone-Omit-Response",
    "Helicone-Cache-Read", "Helicone-Cache-Save", "Helicone-Stream-Usage"]), st.text(max_size=40)), max_size=6),
    st.booleans())
def test_parse_never_raises_anything_but_header_error(pairs, strict):
    try:
        parse(pairs, strict=strict)
    except HeaderError as e:
        assert strict and e.header and e.message


def test_redaction():
    h = redact_headers([("Authorization", "Bearer sk-secret-123"), ("x-api-key", "sk-ant-zzz"), ("api-key", "az"),
                        ("x-goog-api-key", "AIzaXYZ"), ("Helicone-Auth", "Bearer sk-helicone-1"), ("content-type", "a")])
    text = json.dumps(h)
    for s in ("sk-secret-123", "sk-ant-zzz", '"az"', "AIzaXYZ", "sk-helicone-1"):
        assert s not in text
    assert h["content-type"] == "a"
    assert h["authorization"].startswith("Bearer [REDACTED sha256:")
    assert "AIzaKEY" not in redact_url("/v1beta/models/g:generateContent?alt=sse&key=AIzaKEY")


@pytest.mark.parametrize("host,provider", [
    ("api.openai.com", "openai"), ("myres.openai.azure.com", "azure"), ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gemini"), ("us-central1-aiplatform.googleapis.com", "vertex"),
    ("openrouter.ai", "openrouter"), ("example.com", None), ("API.OPENAI.COM.", "openai"),
])
def test_known_hosts(host, provider):
    assert providers.DEFAULT_MATCHER.provider_for(host) == provider


def test_extra_hosts_and_path_shapes():
    m = providers.HostMatcher(["llm.internal=vllm", "*.corp.example"])
    assert m.provider_for("llm.internal") == "vllm"
    assert m.provider_for("a.corp.example") == "openai-compatible"
    assert providers.provider_from_path("/v1/messages") == "anthropic"
    assert providers.provider_from_path("/v1beta/models/gemini-2.0-flash:generateContent") == "gemini"
    assert providers.provider_from_path("/v1/chat/completions") == "openai-compatible"
    assert providers.api_for("openai", "/v1/responses") == providers.API_OPENAI_RESPONSES
    assert headers.canonical("helicone-cache-bucket-max-size") == "Helicone-Cache-Bucket-Max-Size"


@pytest.mark.parametrize("value,origin", [
    ("https://api.groq.com/openai/v1", "https://api.groq.com"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("https://[::1]:8443/x", "https://[::1]:8443"),
    ("HTTPS://Example.COM:443", "https://example.com"),
])
def test_target_url_keeps_only_the_origin(value, origin):
    assert parse([("Helicone-Target-Url", value)]).target_url == origin


@pytest.mark.parametrize("value", ["http://host:notaport", "http://user:pw@host", "ftp://x", "https://", "host.com"])
def test_bad_target_url_is_a_header_error(value):
    with pytest.raises(HeaderError) as e:
        parse([("Helicone-Target-Url", value)])
    assert e.value.header == "helicone-target-url" and "origin" in e.value.message
