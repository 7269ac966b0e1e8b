"""The pytest plugin on a small sample test suite (an app's own tests: plain OpenAI and Anthropic SDK
clients, no proxy settings in code). `pytest --llm-record` runs it through the REAL proxy against
the fake upstream and writes the cassette; `pytest --llm-replay` runs it again with every provider
host pointing at a dead port (it runs once the proxy has its replay options)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from functools import cache

import pytest

from helicone_addon.export.cassette import read_cassette

OPENAI_KEY = "sk-proj-PluginRecordRealLookingKey00000000000000000abc"
ANTHROPIC_KEY = "sk-ant-api03-PluginRecordRealLookingKey000000000-ZZ"

SAMPLE = '''
import os

import anthropic
import openai

TEXT = "Hello from the fake upstream!"
MARK = {"x-sample-mark": os.environ["SAMPLE_MARK"]}


def test_the_environment_points_at_the_proxy():
    assert os.environ["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert os.path.isfile(os.environ["SSL_CERT_FILE"])


def test_openai_json_gzip():
    r = openai.OpenAI(max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "json please"}],
        extra_headers={**MARK, "x-fake-gzip": "1"})
    assert r.choices[0].message.content == TEXT and r.usage.total_tokens == 18


def test_openai_stream():
    parts = [c.choices[0].delta.content or "" for c in openai.OpenAI(max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True,
        extra_headers={**MARK, "x-fake-delay-ms": "10"}) if c.choices]
    assert "".join(parts) == TEXT and len(parts) > 3


def test_anthropic_json():
    r = anthropic.Anthropic(max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "json please"}],
        extra_headers=MARK)
    assert r.content[0].text == TEXT


def test_anthropic_stream_gzip():
    with anthropic.Anthropic(max_retries=0).messages.stream(
            model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "stream please"}],
            extra_headers={**MARK, "x-fake-gzip": "1"}) as s:
        assert "".join(s.text_stream) == TEXT
'''


def write_suite(root, upstream: str) -> None:
    (root / "test_app.py").write_text(SAMPLE)
    (root / "pytest.ini").write_text(textwrap.dedent(f"""\
        [pytest]
        llm_proxy_args =
            --map-remote '|https://api\\.openai\\.com|{upstream}'
            --map-remote '|https://api\\.anthropic\\.com|{upstream}'
        """))


def run_suite(root, *args: str, mark: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "http_proxy", "ssl_cert_file",
                                                                    "requests_ca_bundle", "no_proxy")}
    env.update(OPENAI_API_KEY=OPENAI_KEY, ANTHROPIC_API_KEY=ANTHROPIC_KEY, SAMPLE_MARK=mark)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=root,
                          capture_output=True, text=True, timeout=300, env=env)


@cache
def proxy_has_replay() -> bool:
    r = subprocess.run([sys.executable, "-m", "helicone_addon", "run", "--options"], capture_output=True, text=True,
                       timeout=120)
    return "helicone_replay_file" in r.stdout


def test_record_a_suite_into_a_cassette(fake, tmp_path):
    write_suite(tmp_path, fake.url)
    mark = str(uuid.uuid4())
    r = run_suite(tmp_path, "--llm-record", mark=mark)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
    cassette = tmp_path / "tests" / "llm.cassette.yaml"  # the default place
    assert f"recorded 4 LLM call(s) into {cassette}" in r.stdout
    assert len(fake.received(mark)) == 4  # the calls really went out
    text = cassette.read_text()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, OPENAI_KEY[10:30], ANTHROPIC_KEY[14:34]):
        assert secret not in text
    recs = read_cassette(cassette)
    assert [r.streamed for r in recs] == [False, True, False, True]
    assert all(r.status == 200 for r in recs)
    assert b"Hello" in recs[0].body and recs[1].chunks and b"".join(c.data for c in recs[1].chunks) == recs[1].body
    assert os.environ.get("HTTPS_PROXY", "") == "" or "127.0.0.1" not in os.environ.get("HTTPS_PROXY", "")


def test_bad_invocations_are_usage_errors(tmp_path, fake):
    write_suite(tmp_path, fake.url)
    r = run_suite(tmp_path, "--llm-replay", mark="x")
    assert r.returncode == 4 and "no cassette at" in r.stderr
    r = run_suite(tmp_path, "--llm-record", "--llm-replay=x.yaml", mark="x")
    assert r.returncode == 4 and "cannot be used together" in r.stderr
    r = run_suite(tmp_path, "--llm-record", str(tmp_path), mark="x")
    assert r.returncode == 4 and "looks like a test path" in r.stderr


@pytest.mark.skipif("not proxy_has_replay()", reason="the proxy has no helicone_replay options yet (wired by the integrator)")
def test_replay_the_suite_with_the_providers_gone(fake, tmp_path):
    from conftest import free_port

    write_suite(tmp_path, fake.url)
    mark = str(uuid.uuid4())
    assert run_suite(tmp_path, "--llm-record=llm.yaml", mark=mark).returncode == 0
    assert len(fake.received(mark)) == 4
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    write_suite(tmp_path, dead)
    r = run_suite(tmp_path, "--llm-replay=llm.yaml", mark=mark)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
    assert len(fake.received(mark)) == 4  # nothing reached a provider
