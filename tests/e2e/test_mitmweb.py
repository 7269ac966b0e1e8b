"""`helicone-addon web`: each LLM flow carries a one-line comment in mitmweb's flow list, and the
LLM content view renders a streamed response as conversation text."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
from conftest import ROOT, free_port, wait_port


def test_mitmweb_flow_comment_and_llm_view(fake, tmp_path):
    web_port, rev_port = free_port(), free_port()
    args = [sys.executable, "-m", "helicone_addon", "web", "-q", "--set", "web_open_browser=false",
            "--set", f"web_port={web_port}", "--set", "web_password=s3cret",
            "--mode", f"reverse:{fake.url}@{rev_port}", "--set", f"confdir={tmp_path / 'conf'}",
            "--set", f"helicone_data_dir={tmp_path / 'data'}", "--set", "helicone_api_port=0"]
    log = open(tmp_path / "web.log", "wb")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(web_port, proc=proc)
        wait_port(rev_port, proc=proc)
        rid = str(uuid.uuid4())
        with httpx.Client(base_url=f"http://127.0.0.1:{rev_port}") as c:
            r = c.post("/v1/chat/completions", headers={"Helicone-Request-Id": rid},
                       json={"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
        auth = {"Authorization": "Bearer s3cret"}
        flow = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            flows = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers=auth).json()
            flow = next((f for f in flows if f.get("comment")), None)
            if flow:
                break
            time.sleep(0.1)
        assert flow, "no comment on the flow"
        assert "gpt-4o-mini" in flow["comment"] and "12+6 tok" in flow["comment"] and "$" in flow["comment"]
        view = httpx.get(f"http://127.0.0.1:{web_port}/flows/{flow['id']}/response/content/llm.json", headers=auth)
        assert view.status_code == 200
        text = view.text
        assert "Hello from the fake upstream!" in text and "prompt 12, completion 6" in text
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
