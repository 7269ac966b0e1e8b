"""The query API's filter AST -> SQL translation, and the async log payload validator (no server)."""

from __future__ import annotations

import json
import uuid

import pytest

from helicone_addon import asynclog, filters
from helicone_addon.api import query, records
from helicone_addon.store import open_db

T0 = "2025-01-10T10:00:00.000Z"


_IDS = {n: str(uuid.uuid4()) for n in range(1, 5)}
_NUM = {v: k for k, v in _IDS.items()}


def _id(n: int) -> str:
    return _IDS[n]


ROWS = [
    # n, created_at, user, model, model_requested, status, latency, cost, tokens, provider, body, session, cache_hit
    (1, "2025-01-10T10:00:00.000Z", "alice", "gpt-4o-mini", "gpt-4o-mini", 200, 100.0, 0.001, 18, "openai", "Hello World", "s1", 0),
    (2, "2025-01-10T11:00:00.000Z", "bob", "gpt-4o", "gpt-4o", 200, 900.0, 0.02, 300, "openai", "hello there", "s1", 0),
    (3, "2025-01-11T09:30:00.000Z", "alice", "claude-sonnet-4-0", "claude-sonnet-4-0", 429, 50.0, None, None, "anthropic",
     "it's a 'quoted' % value", None, 0),
    (4, "2025-01-12T00:00:00.000Z", None, "gpt-4o-mini", "gpt-4o-mini", 500, 20.0, 0.0, 0, "openai", None, None, 1),
]
PROPS = {1: {"feature": "search", "env": "prod"}, 2: {"feature": "chat"}, 3: {"feature": "Search"}}
FEEDBACK = {1: 1, 3: 0}
SCORES = {1: {"accuracy": 9, "ok": 1}, 2: {"accuracy": 4}}


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    path = tmp_path_factory.mktemp("apif") / "h.db"
    db = open_db(path)
    for n, created, user, model, req_model, status, lat, cost, tok, prov, body, sess, hit in ROWS:
        db["requests"].insert({
            "id": _id(n), "created_at": created, "user_id": user, "model": model, "model_requested": req_model,
            "status": status, "latency_ms": lat, "cost_usd": cost, "total_tokens": tok, "provider": prov,
            "request_body": body, "session_id": sess, "cache_hit": hit, "source": "proxy",
            "properties": json.dumps(PROPS.get(n, {})), "path": "/v1/chat/completions",
        })
    for n, props in PROPS.items():
        for k, v in props.items():
            db["properties"].insert({"request_id": _id(n), "key": k, "value": v})
    for n, rating in FEEDBACK.items():
        db["feedback"].insert({"request_id": _id(n), "rating": rating, "created_at": T0})
    for n, scores in SCORES.items():
        for k, v in scores.items():
            db["scores"].insert({"request_id": _id(n), "name": k, "value": v, "created_at": T0})
    db.conn.close()
    c = records.connect(path)
    yield c
    c.close()


def ids(conn, flt, **kw) -> list[int]:
    out = query.query_requests(conn, {"filter": flt, "limit": 100, "sort": {"created_at": "asc"}, **kw})
    return [_NUM[r["request_id"]] for r in out]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("all", [1, 2, 3, 4]),
        # text operators
        ({"request": {"user_id": {"equals": "alice"}}}, [1, 3]),
        ({"request": {"user_id": {"not-equals": "alice"}}}, [2, 4]),  # NULL user counts as not-equal
        ({"request": {"prompt": {"like": "Hello%"}}}, [1]),  # like is case-sensitive
        ({"request": {"prompt": {"ilike": "hello%"}}}, [1, 2]),
        ({"request": {"prompt": {"contains": "WORLD"}}}, [1]),  # contains is case-insensitive
        ({"request": {"prompt": {"not-contains": "hello"}}}, [3, 4]),
        ({"request": {"prompt": {"contains": "'quoted' %"}}}, [3]),  # quotes and % are data, not SQL
        ({"request": {"model": {"equals": "gpt-4o-mini"}}}, [1, 4]),
        ({"response": {"model": {"equals": "gpt-4o"}}}, [2]),
        ({"request_response_rmt": {"model": {"contains": "claude"}}}, [3]),
        ({"request_response_rmt": {"provider": {"equals": "anthropic"}}}, [3]),
        # number operators
        ({"response": {"status": {"equals": 200}}}, [1, 2]),
        ({"response": {"status": {"not-equals": 200}}}, [3, 4]),
        ({"response": {"status": {"gte": 429}}}, [3, 4]),
        ({"response": {"status": {"gt": 429}}}, [4]),
        ({"response": {"status": {"lt": 429}}}, [1, 2]),
        ({"response": {"status": {"lte": 429}}}, [1, 2, 3]),
        ({"request_response_rmt": {"latency": {"gte": 100, "lte": 900}}}, [1, 2]),
        ({"request_response_rmt": {"cost": {"gt": 0.005}}}, [2]),
        ({"request_response_rmt": {"total_tokens": {"equals": "18"}}}, [1]),  # numeric strings accepted
        # timestamp operators
        ({"request": {"created_at": {"gte": "2025-01-10T10:30:00Z"}}}, [2, 3, 4]),
        ({"request": {"created_at": {"lt": "2025-01-11T00:00:00+00:00"}}}, [1, 2]),
        ({"request": {"created_at": {"lte": "2025-01-11T10:30:00+01:00"}}}, [1, 2, 3]),  # offset honoured
        ({"request": {"created_at": {"gt": "2025-01-11T09:30:00"}}}, [4]),  # naive = UTC
        ({"request": {"created_at": {"equals": "2025-01-10T11:00:00Z"}}}, [2]),
        ({"request_response_rmt": {"request_created_at": {"gte": 1736553600000}}}, [3, 4]),  # epoch ms
        # booleans, feedback, scores, properties
        ({"feedback": {"rating": {"equals": True}}}, [1]),
        ({"feedback": {"rating": {"equals": False}}}, [3]),
        ({"request_response_rmt": {"helicone-score-feedback": {"equals": True}}}, [1]),
        ({"request_response_rmt": {"cached": {"equals": True}}}, [4]),
        ({"request_response_rmt": {"scores": {"accuracy": {"gte": 5}}}}, [1]),
        ({"request_response_rmt": {"scores": {"accuracy": {"lt": 5}}}}, [2]),
        ({"properties": {"feature": {"equals": "search"}}}, [1]),
        ({"properties": {"FEATURE": {"ilike": "search"}}}, [1, 3]),  # property names are case-insensitive
        ({"properties": {"feature": {"not-equals": "search"}}}, [2, 3, 4]),
        ({"properties": {"feature": {"equals": "search"}, "env": {"equals": "prod"}}}, [1]),
        ({"request_response_rmt": {"properties": {"env": {"equals": "prod"}}}}, [1]),
        ({"properties": {"Helicone-Session-Id": {"equals": "s1"}}}, [1, 2]),
        ({"sessions_request_response_rmt": {"session_session_id": {"equals": "s1"}}}, [1, 2]),
        ({"properties_table": {"key": {"equals": "env"}}}, [1]),
        # branches
        ({"left": {"request": {"user_id": {"equals": "bob"}}}, "operator": "or",
          "right": {"response": {"status": {"equals": 500}}}}, [2, 4]),
        ({"left": {"request": {"user_id": {"equals": "alice"}}}, "operator": "and",
          "right": {"response": {"status": {"equals": 200}}}}, [1]),
        ({"left": {"left": {"request": {"user_id": {"equals": "alice"}}}, "operator": "and",
                   "right": {"properties": {"feature": {"ilike": "search"}}}},
          "operator": "or", "right": "all"}, [1, 2, 3, 4]),
        ({"left": {"request": {"user_id": {"equals": "nobody"}}}, "operator": "or",
          "right": {"left": {"response": {"status": {"equals": 429}}}, "operator": "and",
                    "right": {"feedback": {"rating": {"equals": False}}}}}, [3]),
    ],
)
def test_filter(conn, flt, expected):
    assert ids(conn, flt) == expected


def test_is_cached_and_is_scored(conn):
    assert ids(conn, "all", isCached=True) == [4]
    assert ids(conn, "all", isScored=True) == [1, 2, 3]
    assert ids(conn, "all", isScored=False) == [4]


def test_sort_limit_offset(conn):
    def q(**kw):
        return [_NUM[r["request_id"]] for r in query.query_requests(conn, {"filter": "all", **kw})]

    assert q(sort={"created_at": "desc"}, limit=2) == [4, 3]
    assert q(sort={"created_at": "desc"}, limit=2, offset=2) == [2, 1]
    assert q(sort={"latency": "asc"}) == [4, 3, 1, 2]
    assert q(sort={"cost": "desc"}, limit=1) == [2]
    assert q() == [4, 3, 2, 1]  # Helicone's default: newest first, limit 10
    assert q(limit=0) == []


def test_records_carry_feedback_scores_properties(conn):
    (rec,) = query.query_requests(conn, {"filter": {"request": {"id": {"equals": _id(1)}}}})
    assert rec["feedback_rating"] is True
    assert rec["scores"] == {"accuracy": 9, "ok": 1}
    assert rec["properties"] == rec["request_properties"] == {"feature": "search", "env": "prod",
                                                              "Helicone-Session-Id": "s1"}
    assert rec["request_user_id"] == "alice" and rec["model"] == "gpt-4o-mini" and rec["response_status"] == 200
    assert rec["delay_ms"] == 100.0 and rec["cost"] == 0.001 and rec["total_tokens"] == 18
    assert rec["cache_reference_id"] == records.DEFAULT_UUID
    assert rec["response_created_at"] == "2025-01-10T10:00:00.100Z"
    (rec4,) = query.query_requests(conn, {"filter": {"request": {"id": {"equals": _id(4)}}}})
    assert rec4["feedback_rating"] is None and rec4["scores"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"filter": {"nope": {"x": {"equals": 1}}}}, "unknown table 'nope'"),
        ({"filter": {"request": {"user_id; DROP TABLE requests": {"equals": "x"}}}}, "unknown column"),
        ({"filter": {"request": {"user_id": {"gte": "x"}}}}, "operator 'gte' is not allowed on a text column"),
        ({"filter": {"request": {"user_id": {"equals": None}}}}, "expected a string, got null"),
        ({"filter": {"request": {"user_id": "alice"}}}, "expected an operator object"),
        ({"filter": {"response": {"status": {"equals": "two hundred"}}}}, "is not a number"),
        ({"filter": {"response": {"status": {"equals": True}}}}, "expected a number, got bool"),
        ({"filter": {"request": {"created_at": {"gte": "yesterday"}}}}, "is not an ISO-8601 timestamp"),
        ({"filter": {"feedback": {"rating": {"equals": "maybe"}}}}, "expected true or false"),
        ({"filter": {"left": "all", "operator": "xor", "right": "all"}}, "expected \"and\" or \"or\""),
        ({"filter": {"left": "all", "operator": "and"}}, "needs both"),
        ({"filter": {}}, "empty filter object"),
        ({"filter": "everything"}, "expected \"all\""),
        ({"filter": "all", "limit": 100000}, "limit: 100000 is out of range"),
        ({"filter": "all", "limit": "10"}, "limit: expected an integer"),
        ({"filter": "all", "offset": -1}, "offset: must be >= 0"),
        ({"filter": "all", "sort": {"created_at; DROP": "asc"}}, "sort: unknown key"),
        ({"filter": "all", "sort": {"created_at": "sideways"}}, "expected \"asc\" or \"desc\""),
        ({"filter": {"properties": {"k": {"gt": "1"}}}}, "operator 'gt' is not allowed"),
    ],
)
def test_bad_queries_are_rejected_with_a_message(conn, body, message):
    with pytest.raises(filters.FilterError, match=None) as e:
        query.query_requests(conn, body)
    assert message in str(e.value)


def test_deep_filter_is_refused():
    node: object = "all"
    for _ in range(filters.MAX_FILTER_DEPTH + 2):
        node = {"left": node, "operator": "and", "right": "all"}
    with pytest.raises(filters.FilterError, match="deeper"):
        filters.build_filter(node, [])


def test_sql_holds_no_user_values():
    params: list = []
    sql = filters.build_filter({"request": {"user_id": {"equals": "x' OR '1'='1"}},
                            "properties": {"a'b": {"contains": "%_"}}}, params)
    assert "x'" not in sql and "a'b" not in sql and "%_" not in sql
    assert params == ["x' OR '1'='1", "a'b", "%_"]


# -- async log payload validation (Helicone worker's messages, message for message) ---------------------------


def good() -> dict:
    return {
        "providerRequest": {"url": "custom-model-nopath", "json": {"model": "gpt-4o-mini"}, "meta": {}},
        "providerResponse": {"json": {"ok": True}, "status": 200, "headers": {}},
        "timing": {"startTime": {"seconds": 1700000000, "milliseconds": 0},
                   "endTime": {"seconds": 1700000001, "milliseconds": 5}},
    }


def without(path: str, value=asynclog.MISSING):
    d = good()
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is asynclog.MISSING:
        del node[last]
    else:
        node[last] = value
    return d


VALIDATION_CASES = [
    (without("providerRequest"), asynclog.MSG_REQUIRED),
    (without("providerResponse"), asynclog.MSG_REQUIRED),
    (without("providerRequest", None), asynclog.MSG_REQUIRED),
    (without("providerResponse", ""), asynclog.MSG_REQUIRED),
    ([], asynclog.MSG_REQUIRED),
    (without("providerRequest.url"), "Invalid providerRequest: 'url' should be a string"),
    (without("providerRequest.url", 5), "Invalid providerRequest: 'url' should be a string"),
    (without("providerRequest.meta"), "Invalid providerRequest: 'meta' should be an object"),
    (without("providerRequest.meta", "x"), "Invalid providerRequest: 'meta' should be an object"),
    (without("providerRequest.json"), "Invalid providerRequest: 'json' is undefined"),
    (without("providerResponse.json"), "Invalid providerResponse: 'json' is undefined"),
    (without("providerResponse.status"), "Invalid providerResponse: 'status' should be a number"),
    (without("providerResponse.status", "200"), "Invalid providerResponse: 'status' should be a number"),
    (without("providerResponse.headers"), "Invalid providerResponse: 'headers' should be an object"),
    (without("providerResponse.headers", 1), "Invalid providerResponse: 'headers' should be an object"),
    (without("timing.startTime.seconds"), "Invalid timing: 'startTime.seconds' should be a number"),
    (without("timing.startTime.milliseconds", "0"), "Invalid timing: 'startTime.milliseconds' should be a number"),
    (without("timing.endTime.seconds", None), "Invalid timing: 'endTime.seconds' should be a number"),
    (without("timing.endTime.milliseconds"), "Invalid timing: 'endTime.milliseconds' should be a number"),
    (without("timing.startTime"), "Invalid timing: 'startTime.seconds' should be a number"),
    (without("timing.startTime.seconds", 1700000002), "startTime cannot be greater than endTime"),
    (without("timing.startTime.seconds", -5), "startTime and endTime cannot be negative"),
    (without("timing.endTime.seconds", float("nan")), "Invalid timing structure or value type"),
]


@pytest.mark.parametrize(("payload", "message"), VALIDATION_CASES)
def test_validate_async_log(payload, message):
    assert asynclog.validate(payload) == message


@pytest.mark.parametrize(
    "payload",
    [good(), without("timing"), without("timing", None), without("providerRequest.json", None),
     without("providerRequest.meta", None), without("providerResponse.json", None)],
)
def test_valid_async_logs(payload):
    assert asynclog.validate(payload) is None


def test_async_log_state_merges_meta_and_headers():
    d = good()
    d["providerRequest"]["url"] = "https://api.openai.com/v1/chat/completions"
    d["providerRequest"]["meta"] = {"Helicone-User-Id": "meta-user", "Helicone-Property-A": "meta",
                                    "Helicone-Property-B": "meta", "Helicone-Session-Id": "s9"}
    d["providerResponse"]["json"] = {"streamed_data": [{"choices": [{"delta": {"content": "hi"}}]}]}
    d["providerRequest"]["json"] = {"model": "gpt-4o-mini", "stream": True}
    d["timing"]["timeToFirstToken"] = 250
    st = asynclog.to_call_state(d, [("Helicone-Property-A", "http"), ("helicone-user-id", "http-user"),
                                      ("Authorization", "Bearer k")], "openai")
    assert st.options.user_id == "http-user"
    assert st.options.properties == {"a": "http", "b": "meta"}
    assert st.options.session_id == "s9"
    assert (st.provider, st.api, st.host, st.path, st.source) == ("openai", "openai-chat", "api.openai.com",
                                                                  "/v1/chat/completions", "async")
    assert st.streamed and st.content_type == "text/event-stream"
    assert st.response_body.startswith(b'data: {"choices"')
    assert st.started_at == 1700000000.0 and st.ended_at == 1700000001.005
    assert st.first_chunk_at == pytest.approx(1700000000.25)
    assert all(k.lower() != "authorization" for k, _ in st.request_headers)


def test_async_log_state_custom_provider_from_url_and_text_body():
    d = good()
    d["providerRequest"]["url"] = "https://api.anthropic.com/v1/messages"
    d["providerResponse"]["textBody"] = "event: message_stop\ndata: {}\n\n"
    st = asynclog.to_call_state(d, [], None)
    assert st.provider == "anthropic" and st.api == "anthropic-messages"
    assert st.response_body == b"event: message_stop\ndata: {}\n\n"
    d2 = good()  # "custom-model-nopath": provider unknown, format guessed from the body
    d2["providerRequest"]["json"] = {"model": "gpt-4o-mini", "messages": []}
    st2 = asynclog.to_call_state(d2, [], None)
    assert st2.provider == "custom" and st2.api == "openai-chat" and st2.host == ""
