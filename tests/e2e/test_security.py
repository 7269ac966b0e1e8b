"""Provider secrets never appear in clear anywhere under the data dir; files 0600, directories 0700;
omitted bodies are stored nowhere in the log."""

from __future__ import annotations

import os
import stat
import uuid


def test_no_secret_in_any_file_and_private_modes(make_proxy):
    p = make_proxy(["--set", "helicone_max_db_mb=0"])
    tag = uuid.uuid4().hex
    secrets = {
        "authorization": f"sk-proj-auth-{tag}",
        "x-api-key": f"sk-ant-xkey-{tag}",
        "api-key": f"azure-key-{tag}",
        "x-goog-api-key": f"AIza-goog-{tag}",
        "query": f"AIza-query-{tag}",
        "helicone-auth": f"sk-helicone-{tag}",
    }
    omitted = f"omit-me-{tag}"
    with p.httpx() as c:
        for cache in ("true", "false"):
            r = c.post("https://api.openai.com/v1/chat/completions",
                       headers={"Authorization": f"Bearer {secrets['authorization']}", "x-api-key": secrets["x-api-key"],
                                "api-key": secrets["api-key"], "x-goog-api-key": secrets["x-goog-api-key"],
                                "Helicone-Auth": f"Bearer {secrets['helicone-auth']}",
                                "Helicone-Cache-Enabled": cache, "Helicone-RateLimit-Policy": "100;w=60"},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            p.row(r.headers["helicone-id"])
        r = c.post(f"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?key={secrets['query']}",
                   headers={"x-fake-corpus": "041-gemini-generate-content"},
                   json={"contents": [{"parts": [{"text": "hi"}]}]})
        assert r.status_code == 200
        gem = p.row(r.headers["helicone-id"])
        assert "REDACTED" in gem["path"] and secrets["query"] not in gem["path"]
        r = c.post("https://api.openai.com/v1/chat/completions",
                   headers={"Helicone-Omit-Request": "true", "Helicone-Omit-Response": "true",
                            "Helicone-Cache-Enabled": "true"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": omitted}]})
        assert r.status_code == 200
        p.row(r.headers["helicone-id"])
    p.stop()  # flush and close every file
    files = [f for f in p.data_dir.rglob("*") if f.is_file()]
    assert any(f.name == "helicone.db" for f in files) and any("cache" in str(f) for f in files)
    for f in files:
        data = f.read_bytes()
        for name, s in secrets.items():
            assert s.encode() not in data, f"{name} secret found in {f}"
        if f.is_relative_to(p.data_dir / "cache"):
            continue  # the cache may keep what it needs to replay
        assert omitted.encode() not in data, f"omitted body found in {f}"
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f"{f} is readable by others"
    for d in [p.data_dir, *[x for x in p.data_dir.rglob("*") if x.is_dir()]]:
        assert stat.S_IMODE(os.stat(d).st_mode) & 0o077 == 0, f"{d} is open to others"


def test_api_binds_loopback_by_default():
    from helicone_addon.proxy.localapi import HeliconeApi

    class Loader:
        def __init__(self):
            self.opts = {}

        def add_option(self, name, typespec, default, help):
            self.opts[name] = default

    loader = Loader()
    HeliconeApi().load(loader)
    assert loader.opts["helicone_api_host"] == "127.0.0.1"
    assert loader.opts["helicone_api_port"] == 8585
