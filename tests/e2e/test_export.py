"""Exports over a log written by the REAL proxy: openai and anthropic SDKs (JSON and streamed, gzip
and not) against the fake upstream, plus recorded OpenAI Responses and Gemini calls (the corpus,
Gemini with its `?key=` credential). Then every format is read back with a real reader: HAR with
haralyzer and mitmproxy's HAR loader, openai-chat lines with the OpenAI SDK's message types, JSONL
and CSV compared number by number with the log, the cassette with the replay loader."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid

import pytest
from corpus import CASES, load, request_bytes

from helicone_addon import replay
from helicone_addon.columns import BY_NAME, USAGE_COLUMNS
from helicone_addon.export.cassette import read_cassette

OPENAI_KEY = "sk-proj-Abc123RealLookingKey0000000000000000000000xyz"
ANTHROPIC_KEY = "sk-ant-api03-RealLookingAnthropicKey0000000000000000-QQ"
GEMINI_KEY = "AIzaSyRealLookingGeminiKey000000000000"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY)
FAKE_TEXT = "Hello from the fake upstream!"
NUMBERS = (*USAGE_COLUMNS, "cost_usd", "latency_ms", "ttft_ms", "status", "streamed", "cache_hit", "retries")


CORPUS_CALLS = ("014-openai-responses-stream-basic", "041-gemini-generate-content", "046-gemini-stream-json-array-tool-call")
HAVE_CORPUS = all(c in CASES for c in CORPUS_CALLS)
N_CALLS = 10 if HAVE_CORPUS else 7


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


@pytest.fixture(scope="module")
def logged(fake, tmp_path_factory):
    """A proxy, and a log of 10 calls made through it (ids in call order; 7 without the corpus:
    ids[6:9] are then missing and the anthropic tool round is ids[6])."""
    from conftest import Proxy

    proxy = Proxy(tmp_path_factory.mktemp("export"), fake.url).start()
    ids = _ids(10)
    oa = proxy.openai(api_key=OPENAI_KEY)
    an = proxy.anthropic(api_key=ANTHROPIC_KEY)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    # 0: openai JSON, gzip, user + property
    oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, extra_headers={
        "Helicone-Request-Id": ids[0], "Helicone-User-Id": "alice", "Helicone-Property-Team": "blue", "x-fake-gzip": "1"})
    # 1: openai stream with usage, gzip
    for _ in oa.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True, stream_options={"include_usage": True},
                                        extra_headers={"Helicone-Request-Id": ids[1], "x-fake-gzip": "1"}):
        pass
    # 2: openai stream, not gzip, paced
    for _ in oa.chat.completions.create(model="gpt-4o", messages=msgs, stream=True,
                                        extra_headers={"Helicone-Request-Id": ids[2], "x-fake-delay-ms": "15"}):
        pass
    # 3: anthropic JSON
    an.messages.create(model="claude-sonnet-4-5", max_tokens=50, system="Be brief.",
                       messages=[{"role": "user", "content": "Say hello"}], extra_headers={"Helicone-Request-Id": ids[3]})
    # 4: anthropic stream, gzip
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "Say hello"}],
                            extra_headers={"Helicone-Request-Id": ids[4], "x-fake-gzip": "1"}) as s:
        for _ in s.text_stream:
            pass
    # 5: an error (429)
    import openai

    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="gpt-4o-mini", messages=msgs,
                                   extra_headers={"Helicone-Request-Id": ids[5], "x-fake-status": "429"})
    # 6-8: recorded provider answers (Responses stream, Gemini JSON with ?key=, Gemini JSON-array stream)
    with proxy.httpx() as c:
        for rid, case in zip(ids[6:9], CORPUS_CALLS if HAVE_CORPUS else ()):  # noqa: B905 (none without the corpus)
            req, *_ = load(case)
            url = f"https://{req['host']}{req['path']}"
            hdrs = {"x-fake-corpus": case, "Helicone-Request-Id": rid, "content-type": "application/json"}
            if "googleapis" in url:
                url += ("&" if "?" in url else "?") + "key=" + GEMINI_KEY
            else:
                hdrs["authorization"] = f"Bearer {OPENAI_KEY}"
            r = c.request(req["method"], url, headers=hdrs, content=request_bytes(req))
            assert r.status_code == 200
    # 9: anthropic tool use answer through the JSON path, with a tool_result in the prompt
    an.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"}]},
    ], tools=[{"name": "weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        extra_headers={"Helicone-Request-Id": ids[9]})
    if not HAVE_CORPUS:
        del ids[6:9]
    proxy.wait_rows("SELECT id FROM requests", n=N_CALLS)
    yield proxy, ids
    proxy.stop()


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "helicone_addon", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def export(proxy, fmt: str, tmp_path, *filters: str) -> str:
    out = tmp_path / f"out.{fmt}"
    r = run_cli("export", "--format", fmt, "-o", str(out), "--db", str(proxy.db_path), *filters)
    assert "wrote" in r.stderr
    with open(out, encoding="utf-8", newline="") as f:  # bodies keep their \r\n
        text = f.read()
    for s in SECRETS:
        assert s not in text, f"{fmt} export holds a secret in clear"
    return text


def db_rows(proxy) -> dict[str, dict]:
    return {r["id"]: r for r in proxy.query("SELECT * FROM requests")}


def test_jsonl_round_trips_the_numbers_of_the_log(logged, tmp_path):
    proxy, ids = logged
    lines = [json.loads(line) for line in export(proxy, "jsonl", tmp_path).splitlines()]
    assert [d["id"] for d in lines] == ids  # oldest first
    rows = db_rows(proxy)
    for d in lines:
        row = rows[d["id"]]
        for c in USAGE_COLUMNS:
            assert d["usage"][c] == row[c]
        assert d["cost_usd"] == row["cost_usd"]
        assert d["status"] == row["status"] == d["response"]["status"]
        assert d["metadata"]["latency_ms"] == row["latency_ms"] and d["metadata"]["ttft_ms"] == row["ttft_ms"]
        assert d["response"]["body"] == row["response_body"]
        assert d["request"]["url"].startswith("https://")
    by_id = {d["id"]: d for d in lines}
    for i in (0, 1, 2, 3, 4):
        assert by_id[ids[i]]["response"]["text"] == FAKE_TEXT
    assert by_id[ids[0]]["metadata"]["properties"] == {"team": "blue"}  # parsed, names lower-cased by the proxy
    assert by_id[ids[0]]["metadata"]["user_id"] == "alice"
    assert by_id[ids[0]]["request"]["body"]["messages"][1]["content"] == "Say hello"
    assert by_id[ids[1]]["response"]["streamed"] is True
    assert by_id[ids[0]]["usage"]["prompt_tokens"] == 12 and by_id[ids[3]]["usage"]["prompt_tokens"] == 28
    if HAVE_CORPUS:
        assert "key=REDACTED-" in by_id[ids[7]]["request"]["url"]


def test_csv_round_trips_the_numbers_of_the_log(logged, tmp_path):
    proxy, ids = logged
    reader = csv.DictReader(io.StringIO(export(proxy, "csv", tmp_path)))
    got = list(reader)
    assert reader.fieldnames[: len(BY_NAME)] == [c for c in BY_NAME if c in reader.fieldnames]
    assert [r["id"] for r in got] == ids
    rows = db_rows(proxy)
    for r in got:
        row = rows[r["id"]]
        for c in reader.fieldnames:
            want = row[c]
            cell = r[c]
            if want is None:
                assert cell == "", (c, cell)
            elif BY_NAME[c].type is float:
                assert float(cell) == want, c
            elif BY_NAME[c].type is int:
                assert int(cell) == want, c
            else:
                assert cell == want, c


def test_csv_and_jsonl_apply_report_filters(logged, tmp_path):
    proxy, ids = logged
    assert [json.loads(x)["id"] for x in export(proxy, "jsonl", tmp_path, "--user", "alice").splitlines()] == [ids[0]]
    assert [json.loads(x)["id"] for x in export(proxy, "jsonl", tmp_path, "--status", "4xx").splitlines()] == [ids[5]]
    got = [json.loads(x)["id"] for x in export(proxy, "jsonl", tmp_path, "-m", "claude*").splitlines()]
    assert got == [ids[3], ids[4], ids[-1]]
    got = [json.loads(x)["id"] for x in export(proxy, "jsonl", tmp_path, "--property", "team=blue").splitlines()]
    assert got == [ids[0]]
    got = [json.loads(x)["id"] for x in export(proxy, "jsonl", tmp_path, "--since", "1h", "--provider", "anthropic").splitlines()]
    assert got == [ids[3], ids[4], ids[-1]]
    assert export(proxy, "jsonl", tmp_path, "--until", "2000-01-01") == ""


def test_bad_filter_is_a_clear_error_and_keeps_an_existing_file(logged, tmp_path):
    proxy, _ = logged
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    r = run_cli("export", "--format", "jsonl", "-o", str(out), "--db", str(proxy.db_path), "--status", "teapot", check=False)
    assert r.returncode == 2 and "unknown status filter" in r.stderr
    assert out.read_text() == "precious\n"
    r = run_cli("export", "--format", "jsonl", "-o", str(out), "--db", str(tmp_path / "nope.db"), check=False)
    assert r.returncode == 1 and "no log database" in r.stderr
    assert out.read_text() == "precious\n"


def test_har_loads_with_har_parsers(logged, tmp_path):
    from haralyzer import HarParser
    from mitmproxy import io as mio

    proxy, ids = logged
    text = export(proxy, "har", tmp_path)
    har = json.loads(text)
    parser = HarParser.from_file(str(tmp_path / "out.har"))
    assert har["log"]["version"] == "1.2" and har["log"]["creator"]["name"] == "helicone-addon"
    assert len(parser.har_data["entries"]) == len(ids)
    entries = har["log"]["entries"]
    assert [e["_heliconeId"] for e in entries] == ids
    rows = db_rows(proxy)
    from haralyzer import HarEntry

    required = {  # HAR 1.2: the fields every entry must have
        "entry": {"startedDateTime", "time", "request", "response", "cache", "timings"},
        "request": {"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize", "bodySize"},
        "response": {"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                     "headersSize", "bodySize"},
        "timings": {"send", "wait", "receive"},
    }
    for e in entries:
        assert required["entry"] <= set(e) and required["timings"] <= set(e["timings"])
        assert required["request"] <= set(e["request"]) and required["response"] <= set(e["response"])
        assert {"size", "mimeType"} <= set(e["response"]["content"])
        he = HarEntry(e)  # haralyzer's own reading of every entry
        row = rows[e["_heliconeId"]]
        assert he.status == row["status"] and he.request.method == "POST"
        assert he.response.text == row["response_body"]
        assert he.startTime.isoformat(timespec="milliseconds").replace("+00:00", "Z") == row["created_at"]
        assert e["time"] == pytest.approx(sum(v for v in e["timings"].values() if v >= 0))
        assert e["time"] == pytest.approx(row["latency_ms"] or 0)
        if row["status"] == 200:
            assert HarParser.match_headers(e, "response", "content-type", "json|event-stream")
            assert he.request.text == row["request_body"]
    # mitmproxy's HAR import (what `mitmproxy -r file.har` does)
    path = tmp_path / "out.har"
    with open(path, "rb") as f:
        flows = list(mio.FlowReader(f).stream())
    assert len(flows) == len(ids)
    for fl, e in zip(flows, entries, strict=True):
        row = rows[e["_heliconeId"]]
        assert fl.response.status_code == row["status"]
        assert fl.response.get_text() == row["response_body"]
        assert fl.request.host in ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com")


def test_openai_chat_lines_validate(logged, tmp_path):
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
    from pydantic import TypeAdapter

    proxy, ids = logged
    msgs_t = TypeAdapter(list[ChatCompletionMessageParam])
    tools_t = TypeAdapter(list[ChatCompletionToolParam])
    lines = [json.loads(x) for x in export(proxy, "openai-chat", tmp_path).splitlines()]
    # every successful chat call, of every provider; not the 429
    assert len(lines) == N_CALLS - 1
    for ex in lines:
        assert set(ex) <= {"messages", "tools"}
        msgs_t.validate_python(ex["messages"])
        if "tools" in ex:
            tools_t.validate_python(ex["tools"])
        roles = [m["role"] for m in ex["messages"]]
        assert set(roles) <= {"system", "user", "assistant", "tool"}
        assert roles[-1] == "assistant"
        assert "user" in roles
        last = ex["messages"][-1]
        assert isinstance(last.get("content"), str) or last.get("tool_calls")
    # the five fake calls: same prompt shape, same answer, streamed answers joined
    for ex in lines[:5]:
        assert ex["messages"][-1] == {"role": "assistant", "content": FAKE_TEXT}
        assert ex["messages"][-2] == {"role": "user", "content": "Say hello"}
    assert lines[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert lines[3]["messages"][0] == {"role": "system", "content": "Be brief."}  # anthropic `system`
    tool_round = lines[-1]
    if HAVE_CORPUS:
        responses, gemini, gemini_tool = lines[5:8]
        assert responses["messages"] == [{"role": "user", "content": "Reply with exactly: pong"},
                                         {"role": "assistant", "content": "pong"}]
        assert gemini["messages"][0] == {"role": "system", "content": "You are a chatbot."}
        assert gemini["messages"][1] == {"role": "user", "content": "Hello!"}
        assert gemini["messages"][-1]["content"]
        calls = gemini_tool["messages"][-1]["tool_calls"]
        assert calls and all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    assert tool_round["messages"][1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert tool_round["messages"][2] == {"role": "tool", "tool_call_id": "tu_1", "content": "sunny"}
    assert tool_round["tools"][0]["function"]["name"] == "weather"


def test_cassette_from_the_log(logged, tmp_path):
    proxy, ids = logged
    text = export(proxy, "cassette", tmp_path)
    assert "Bearer" not in text and "x-api-key" not in text  # no credential header at all
    recs = read_cassette(tmp_path / "out.cassette")
    assert [r.id for r in recs] == [i for i in ids if i != ids[5]]  # successful calls only
    rows = db_rows(proxy)
    for r in recs:
        row = rows[r.id]
        assert r.key == replay.key_of_row(row)
        assert r.body == row["response_body"].encode()
        assert r.status == row["status"] and r.streamed == bool(row["streamed"])
        if r.streamed:
            assert b"".join(c.data for c in r.chunks) == r.body
            offsets = [c.offset_ms for c in r.chunks]
            assert offsets == sorted(offsets)
        assert not any(k.lower() in ("content-encoding", "content-length", "transfer-encoding") for k, _ in r.headers)
    # the same recordings straight from the log
    from_log = replay.Recordings.from_log(proxy.db_path)
    assert sorted(r.id for r in from_log) == sorted(r.id for r in recs)
    by_id = {r.id: r for r in recs}
    for r in from_log:
        assert (r.key, r.body, r.status) == (by_id[r.id].key, by_id[r.id].body, by_id[r.id].status)
    # the openai stream with its 8 data events + [DONE], cut at events, paced as the fake sent them
    s = by_id[ids[2]]
    assert len(s.chunks) == 9 and all(c.data.endswith(b"\n\n") for c in s.chunks)
    assert rows[ids[2]]["stream_offsets"] and rows[ids[1]]["stream_offsets"]  # recorded by the proxy, gzip or not
    offsets = [c.offset_ms for c in s.chunks]
    assert offsets[0] == pytest.approx(rows[ids[2]]["ttft_ms"], abs=1.5)  # the first event at the time to first token
    assert offsets == sorted(offsets) and offsets[-1] <= rows[ids[2]]["latency_ms"]
    # the fake waits 15 ms before sending each event: event k cannot have arrived before 15 * (k + 1) ms
    assert all(at >= 15 * (k + 1) for k, at in enumerate(offsets)), offsets


def test_rerun_through_the_proxy(logged, fake, tmp_path):
    proxy, ids = logged
    env = {"OPENAI_API_KEY": "sk-rerun-key-0123456789", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    marker = f"rerun-{uuid.uuid4()}"
    r = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "rerun", ids[0][:8], "--db", str(proxy.db_path),
         "--proxy", proxy.url, "--confdir", str(proxy.confdir), "--model", "gpt-4o",
         "--set-header", f"x-marker={marker}", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["original"]["id"] == ids[0] and out["original"]["text"] == FAKE_TEXT
    new = out["rerun"]
    assert new["status"] == 200 and new["text"] == FAKE_TEXT and new["model"] == "gpt-4o"
    assert new["usage"]["prompt_tokens"] == 12 and new["cost_usd"] > 0
    got = fake.received(marker)
    assert len(got) == 1
    assert got[0].headers["authorization"] == "Bearer sk-rerun-key-0123456789"  # from the environment
    assert json.loads(got[0].body)["model"] == "gpt-4o"
    assert json.loads(got[0].body)["messages"][1]["content"] == "Say hello"
    assert not any(k.startswith("helicone-") for k in got[0].headers)
    row = proxy.row(new["id"])  # the proxy logged the new call, marked as a re-run
    assert json.loads(row["request_headers"])["helicone-rerun-of"] == ids[0]
    assert row["rerun_of"] == ids[0]
    assert row["user_id"] == "alice" and row["model"] == "gpt-4o"
    # the human form shows both answers
    r = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "rerun", ids[3], "--db", str(proxy.db_path), "--proxy", proxy.url,
         "--confdir", str(proxy.confdir)],
        capture_output=True, text=True, timeout=120, env={**env, "ANTHROPIC_API_KEY": "sk-ant-rerun", "HELICONE_ADDON_PLAIN": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "original" in r.stdout and "rerun" in r.stdout and r.stdout.count(FAKE_TEXT) >= 2


def test_rerun_needs_the_key_from_the_environment(logged, tmp_path):
    proxy, ids = logged
    r = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "rerun", ids[3], "--db", str(proxy.db_path), "--proxy", proxy.url],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 2 and "ANTHROPIC_API_KEY" in r.stderr and "never taken from the log" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "helicone_addon", "rerun", "nosuchid", "--db", str(proxy.db_path)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 1 and "no call with id" in r.stderr
