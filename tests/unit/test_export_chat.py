"""openai-chat export: prompts of every wire format normalised to OpenAI chat messages (checked with
the OpenAI SDK's own message types), answers from JSON bodies and streams, tool calls included."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import TypeAdapter

from helicone_addon.export.chat import chat_example

MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])


def row(api: str, req: dict, resp: str, status: int = 200, ctype: str = "application/json", **kw) -> dict:
    return {"api": api, "status": status, "request_body": json.dumps(req), "response_body": resp,
            "response_headers": json.dumps({"content-type": ctype}), **kw}


def sse(*objs: dict, named: bool = False) -> str:
    out = []
    for o in objs:
        out.append((f"event: {o['type']}\n" if named else "") + f"data: {json.dumps(o)}\n\n")
    return "".join(out)


def check(ex: dict) -> list[dict]:
    MESSAGES.validate_python(ex["messages"])
    assert ex["messages"][-1]["role"] == "assistant"
    return ex["messages"]


def test_openai_chat_with_images_tools_and_developer_role():
    req = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
    }
    resp = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}}]}
    ex = chat_example(row("openai-chat", req, json.dumps(resp)))
    msgs = check(ex)
    assert msgs[0] == {"role": "system", "content": "Rules."}
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    assert msgs[2]["tool_calls"][0]["function"]["name"] == "look"
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": "a cat"}
    assert msgs[4] == {"role": "assistant", "content": "A cat."}
    assert ex["tools"] == req["tools"]


def test_openai_chat_stream_with_tool_call_pieces():
    base = {"object": "chat.completion.chunk", "model": "gpt-4o"}
    body = sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get", "arguments": ""}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' 1}'}}]}}]},
    ) + "data: [DONE]\n\n"
    ex = chat_example(row("openai-chat", {"messages": [{"role": "user", "content": "q"}]}, body, ctype="text/event-stream"))
    last = check(ex)[-1]
    assert last == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get", "arguments": '{"q": 1}'}}]}


def test_anthropic_stream_text_and_tool_use():
    body = sse(
        {"type": "message_start", "message": {"type": "message", "role": "assistant", "model": "claude", "content": [],
                                              "usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu_1", "name": "w", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"c":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"P"}'}},
        {"type": "message_stop"},
        named=True,
    )
    req = {"system": [{"type": "text", "text": "Sys."}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]}],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]}
    ex = chat_example(row("anthropic-messages", req, body, ctype="text/event-stream"))
    msgs = check(ex)
    assert msgs[0] == {"role": "system", "content": "Sys."}
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
    assert msgs[-1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "tu_1", "type": "function", "function": {"name": "w", "arguments": '{"c":"P"}'}}]}
    assert ex["tools"] == [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]


def test_responses_items_and_instructions():
    req = {"instructions": "Be terse.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "fc1", "name": "calc", "arguments": '{"e":"2+2"}'},
        {"type": "function_call_output", "call_id": "fc1", "output": "4"},
    ], "tools": [{"type": "function", "name": "calc", "parameters": {"type": "object"}}, {"type": "web_search"}]}
    resp = {"object": "response", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]}]}
    ex = chat_example(row("openai-responses", req, json.dumps(resp)))
    msgs = check(ex)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"][0]["id"] == "fc1" and msgs[3]["tool_call_id"] == "fc1"
    assert msgs[-1] == {"role": "assistant", "content": "4"}
    assert [t["function"]["name"] for t in ex["tools"]] == ["calc"]
    assert chat_example(row("openai-responses", {"input": "hello"}, json.dumps(resp)))["messages"][0] == {
        "role": "user", "content": "hello"}


def test_gemini_contents_function_round_and_thoughts():
    req = {"systemInstruction": {"parts": [{"text": "Sys"}]}, "contents": [
        {"role": "user", "parts": [{"text": "Weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"c": "P"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 20}}}]},
    ], "tools": [{"functionDeclarations": [{"name": "w", "parameters": {"type": "OBJECT"}}]}]}
    resp = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}, {"text": "20 C"}]}}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2}}
    ex = chat_example(row("gemini", req, json.dumps(resp)))
    msgs = check(ex)
    assert msgs[2]["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"c": "P"}'}
    assert msgs[3] == {"role": "tool", "tool_call_id": msgs[2]["tool_calls"][0]["id"], "content": '{"t": 20}'}
    assert msgs[-1] == {"role": "assistant", "content": "20 C"}
    assert ex["tools"][0]["function"]["name"] == "w"


@pytest.mark.parametrize("changes", [
    {"status": 429}, {"status": None}, {"error": "cancelled: client disconnected"}, {"api": "openai-embeddings"},
    {"replayed_from": "abc"}, {"request_body": None}, {"request_body": "not json"}, {"response_body": None},
    {"response_body": json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]})},
])
def test_calls_that_make_no_example_are_skipped(changes):
    base = row("openai-chat", {"messages": [{"role": "user", "content": "q"}]},
               json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}}]}))
    assert chat_example(base) is not None
    assert chat_example({**base, **changes}) is None
