"""render.py: the one renderer from a logged call to conversation and text, for every wire format."""

from __future__ import annotations

import json

import pytest
import sqlite_utils

from helicone_addon import render, reports
from helicone_addon.columns import COLUMNS
from helicone_addon.headers import CallOptions
from helicone_addon.record import CallState, build_row
from helicone_addon.render import Turn
from helicone_addon.store import migrations
from helicone_addon.usage._base import content_parts


def sse(events: list[dict], named: bool = False) -> bytes:
    out = []
    for e in events:
        head = f"event: {e.get('type')}\n" if named else ""
        out.append(f"{head}data: {json.dumps(e)}\n\n")
    return "".join(out).encode()


def kinds(turns: list[Turn]) -> list[tuple[str, str, str]]:
    return [(t.role, t.kind, t.text) for t in turns]


# ---------------------------------------------------------------------------------------------
# requests -> turns


def test_openai_chat_request_with_tools():
    body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18°C, sunny"},
    ]})
    turns = render.request_turns(body)
    assert kinds(turns) == [
        ("system", "text", "Be brief."),
        ("user", "text", "Weather in Paris?"),
        ("user", "image", "[image]"),
        ("assistant", "tool_call", '{"city":"Paris"}'),
        ("tool", "tool_result", "18°C, sunny"),
    ]
    assert turns[3].name == "weather" and turns[4].name == "c1"
    assert "base64" not in render.prompt_text(body)  # images never become text


def test_anthropic_request_blocks():
    body = json.dumps({"model": "claude", "system": [{"type": "text", "text": "You are terse."}], "messages": [
        {"role": "user", "content": "Two names"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"},
                                          {"type": "tool_use", "id": "t1", "name": "names", "input": {"n": 2}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "Pip, Pop"}]}]},
    ]})
    assert kinds(render.request_turns(body)) == [
        ("system", "text", "You are terse."),
        ("user", "text", "Two names"),
        ("assistant", "reasoning", "hmm"),
        ("assistant", "tool_call", '{"n":2}'),
        ("tool", "tool_result", "Pip, Pop"),
    ]


def test_responses_request_items():
    body = json.dumps({"model": "gpt-5", "instructions": "Be exact.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "1231 * 2331?"}]},
        {"type": "function_call", "call_id": "f1", "name": "multiply", "arguments": '{"a":1231,"b":2331}'},
        {"type": "function_call_output", "call_id": "f1", "output": "2869461"},
    ]})
    turns = render.request_turns(body)
    assert kinds(turns) == [
        ("system", "text", "Be exact."),
        ("user", "text", "1231 * 2331?"),
        ("assistant", "tool_call", '{"a":1231,"b":2331}'),
        ("tool", "tool_result", "2869461"),
    ]
    assert turns[2].label == "tool call multiply"
    assert render.prompt_text(json.dumps({"model": "m", "input": "ping"})) == "ping"


def test_gemini_request_parts():
    body = json.dumps({"systemInstruction": {"parts": [{"text": "You are a chatbot."}]}, "contents": [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"r": 1}}}]},
    ]})
    assert kinds(render.request_turns(body)) == [
        ("system", "text", "You are a chatbot."),
        ("user", "text", "Hello"),
        ("assistant", "tool_call", '{"q":"x"}'),
        ("tool", "tool_result", '{"r":1}'),
    ]


def test_other_request_shapes():
    assert render.prompt_text(json.dumps({"model": "m", "prompt": ["a", "b"]})) == "**user**: a\n\n**user**: b"
    assert render.prompt_text(json.dumps({"model": "text-embedding-3", "input": ["x", "y"]})) == "**user**: x\n\n**user**: y"
    assert render.request_turns(json.dumps({"model": "m"})) is None  # not an LLM request
    assert render.prompt_text(json.dumps({"model": "m"})) == '{"model": "m"}'
    assert render.prompt_text(b"not json") == "not json"
    assert render.prompt_text(None) == "" and render.request_turns(b"") is None


# ---------------------------------------------------------------------------------------------
# responses -> the answer, streams joined


OPENAI_STREAM = sse([{"model": "gpt-4o", "choices": [{"delta": {"content": w}}]} for w in ("The ", "otters ", "sleep.")])
RESPONSES_STREAM = sse([
    {"type": "response.created", "response": {"model": "gpt-5", "usage": None}},
    {"type": "response.output_text.delta", "delta": "The "},
    {"type": "response.output_text.delta", "delta": "otters sleep."},
    {"type": "response.completed", "response": {"model": "gpt-5", "usage": {"input_tokens": 3, "output_tokens": 4}}},
], named=True)
ANTHROPIC_STREAM = sse([
    {"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 3, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The otters "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "sleep."}},
    {"type": "message_stop"},
], named=True)
GEMINI_SSE = sse([{"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}}]} for t in ("The otters", " sleep.")])
GEMINI_ARRAY = json.dumps([{"candidates": [{"content": {"parts": [{"text": t}]}}]} for t in ("The otters", " sleep.")]).encode()


@pytest.mark.parametrize("api,body", [
    ("openai-chat", OPENAI_STREAM), ("openai-responses", RESPONSES_STREAM), ("anthropic-messages", ANTHROPIC_STREAM),
    ("gemini", GEMINI_SSE), ("gemini", GEMINI_ARRAY), (None, OPENAI_STREAM), (None, ANTHROPIC_STREAM),
])
def test_streamed_answers_are_joined(api, body):
    call = render.render_call(api, None, body)
    assert call.parsed.streamed
    assert kinds(call.answer) == [("assistant", "text", "The otters sleep.")]
    assert render.texts(api, None, body) == (None, "The otters sleep.")


def test_answer_parts_and_errors():
    tool = json.dumps({"choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}}]}).encode()
    assert render.response_text("openai-chat", tool) == '[tool call] weather{"city":"Paris"}'
    err = json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode()
    assert render.response_text("openai-chat", err, status=429) == "[error] Rate limit reached"
    assert kinds(render.render_call("openai-chat", None, err, status=429).answer) == [("error", "error", "Rate limit reached")]
    emb = json.dumps({"object": "list", "data": [{"embedding": [0.1] * 1000}, {"embedding": [0.2] * 1000}]}).encode()
    assert render.response_text("openai-embeddings", emb) == "[2 embedding(s)]"
    assert render.response_text("unknown", b"<html>oops</html>") == "<html>oops</html>"
    thinking = sse([{"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hmm"}},
                    {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ok"}}], named=True)
    assert kinds(render.render_call("anthropic-messages", None, thinking).answer) == [
        ("assistant", "reasoning", "hmm"), ("assistant", "text", "ok")]


def test_texts_of_omitted_bodies_are_none_and_reuse_gives_the_same():
    req = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    assert render.texts("openai-chat", None, None) == (None, None)
    assert render.texts("openai-chat", req, b"") == ("hi", None)
    parsed = render.parse_response("openai-chat", OPENAI_STREAM)
    assert render.texts("openai-chat", req, OPENAI_STREAM, parsed=parsed, request_json=json.loads(req)) == \
        render.texts("openai-chat", req, OPENAI_STREAM) == ("hi", "The otters sleep.")


def test_content_parts_is_the_one_walker():
    parts = [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "t"}, {"type": "input_audio"},
             {"type": "mystery"}, {"inlineData": {"data": "x"}}, {"text": "g", "thought": True}, "s"]
    assert [(k, t) for k, t, _ in content_parts(parts)] == [
        ("text", "a"), ("reasoning", "t"), ("audio", "[audio]"), ("other", "[mystery]"), ("image", "[image]"),
        ("reasoning", "g"), ("text", "s")]
    assert list(content_parts(None)) == [] and list(content_parts("x")) == [("text", "x", None)]


# ---------------------------------------------------------------------------------------------
# one-line summaries


def test_comment_leads_with_model_tokens_cost_and_user():
    row = {"provider": "openai-compatible", "model": "gpt-4o-mini", "prompt_tokens": 12, "completion_tokens": 6,
           "total_tokens": 18, "cost_usd": 0.0000054, "user_id": "alice", "cache_hit": 1}
    text = render.comment(row)
    assert text == "gpt-4o-mini · 12+6 tok · $0.0000054 · @alice · cache HIT · openai-compatible"
    failed = render.comment({"provider": "openai", "model": "gpt-4o", "status": 429, "error": "Rate limit\nreached",
                             "user_id": "bob", "usage_source": None})
    assert failed == "gpt-4o · HTTP 429 · @bob · error: Rate limit reached · openai"
    est = render.comment({"model": "m", "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                          "usage_source": "estimated", "cost_usd": None, "cost_note": "unknown model"})
    assert est == "m · ~3+4 tok · cost ? · ?"


@pytest.mark.parametrize("value,text", [
    (None, ""), (0, "$0"), (0.0, "$0"), (1234.5, "$1,234.50"), (0.5, "$0.50"), (0.0564, "$0.0564"), (0.05, "$0.05"),
    (0.0000054, "$0.0000054"), (0.0000115, "$0.000012"), (0.005, "$0.005"), (2.805e-05, "$0.000028"),
])
def test_usd(value, text):
    assert render.usd(value) == text


def test_helicone_headers_hide_credentials():
    got = render.helicone_headers([("helicone-property-team", "a"), ("Authorization", "Bearer sk"),
                                   ("Helicone-Fallbacks", '[{"headers": {"Authorization": "Bearer sk-x"}}]'),
                                   ("Helicone-Session-Id", "s"), ("Helicone-User-Id", "u")])
    assert got == [("Helicone-User-Id", "u"), ("Helicone-Session-Id", "s"), ("helicone-property-team", "a"),
                   ("Helicone-Fallbacks", "(set)")]


# ---------------------------------------------------------------------------------------------
# the searchable columns: build_row fills them, m007 back-fills and re-indexes


def _state(stream: bool, omit: bool = False) -> CallState:
    req = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "tell me about otters"}]}
    st = CallState(id="00000000-0000-4000-8000-000000000001", started_at=1_700_000_000.0, provider="openai",
                   api="openai-chat", path="/v1/chat/completions", request_body=json.dumps(req).encode(),
                   status=200, streamed=stream, content_type="text/event-stream" if stream else "application/json",
                   options=CallOptions(request_id="r", omit_request=omit, omit_response=omit), ended_at=1_700_000_001.0)
    if stream:
        st.chunks = [OPENAI_STREAM[:40], OPENAI_STREAM[40:]]
    else:
        st.response_body = json.dumps({"model": "gpt-4o", "choices": [{"message": {"content": "They sleep."}}]}).encode()
    return st


def test_build_row_fills_the_text_columns():
    row, _ = build_row(_state(stream=True))
    assert (row["prompt_text"], row["response_text"]) == ("tell me about otters", "The otters sleep.")
    row, _ = build_row(_state(stream=False))
    assert row["response_text"] == "They sleep."
    row, _ = build_row(_state(stream=True, omit=True))  # Helicone-Omit-*: no body, no text either
    assert row["prompt_text"] is None and row["response_text"] is None and row["request_body"] is None


def _old_log(path) -> sqlite_utils.Database:
    """A log as it was before m007: migrations up to m005 only."""
    db = sqlite_utils.Database(path)
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    for fn in migrations.MIGRATIONS:
        if fn.__name__ < "m006":
            fn(db)
            db["_migrations"].insert({"name": fn.__name__, "applied_at": "2025-01-01T00:00:00.000Z"})
    assert "prompt_text" not in db["requests"].columns_dict
    return db


def test_m007_backfills_and_finds_a_phrase_in_streamed_answers(tmp_path):
    db = _old_log(tmp_path / "old.db")
    rows = []
    for i, stream in enumerate([True, True, False]):
        st = _state(stream)
        st.id = f"00000000-0000-4000-8000-00000000000{i}"
        row, _ = build_row(st)
        for name in [c.name for c in COLUMNS if c.since >= 7]:  # written by a proxy from before m007
            row.pop(name)
        rows.append(row)
    rows.append(dict(rows[0], id="00000000-0000-4000-8000-000000000009", request_body=None, response_body=None))
    db["requests"].insert_all(rows)
    # the old index holds raw SSE: the phrase spans two events and is never found
    assert reports.logs(db, limit=0, query='"otters sleep"') == []
    assert "m007_text_search" in migrations.migrate(db)
    found = {r["id"] for r in reports.logs(db, limit=0, query='"otters sleep"')}
    assert found == {rows[0]["id"], rows[1]["id"]}  # both streams, not the JSON answer ("They sleep.")
    assert {r["id"] for r in reports.logs(db, limit=0, query="otters")} == {r["id"] for r in rows[:3]}
    texts = dict(db.execute("SELECT id, response_text FROM requests").fetchall())
    assert texts[rows[3]["id"]] is None and texts[rows[2]["id"]] == "They sleep."
    # new rows are indexed by the triggers
    st = _state(True)
    st.id = "00000000-0000-4000-8000-000000000100"
    db["requests"].insert(build_row(st)[0])
    assert st.id in {r["id"] for r in reports.logs(db, limit=0, query='"otters sleep"')}
    assert migrations.migrate(db) == []
    db.execute("INSERT INTO requests_fts(requests_fts, rank) VALUES('integrity-check', 1)")
