"""The API token file and the Host / Origin rules (security.py), without a server."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from helicone_addon import security
from helicone_addon.security import HostRules


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_token_is_created_once_private_and_random(tmp_path):
    data = tmp_path / "data"
    token = security.ensure_token(data)
    assert len(token) >= 40 and token == security.ensure_token(data) == security.read_token(data)
    assert mode(data / "api-token") == 0o600 and mode(data) == 0o700
    assert security.ensure_token(tmp_path / "other") != token
    assert [p.name for p in data.iterdir()] == ["api-token"]  # no temp file left behind


def test_concurrent_creation_agrees_on_one_token(tmp_path):
    got: list[str] = []
    barrier = threading.Barrier(8)

    def make():
        barrier.wait()
        got.append(security.ensure_token(tmp_path))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and len(set(got)) == 1 and security.read_token(tmp_path) == got[0]


def test_never_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "api-token").symlink_to(victim)
    assert security.read_token(data) is None  # a symlink is not read
    token = security.ensure_token(data)
    assert victim.read_text() == "keep me"  # its target is untouched
    assert not (data / "api-token").is_symlink() and mode(data / "api-token") == 0o600
    assert security.read_token(data) == token
    dangling = tmp_path / "d2"
    dangling.mkdir(mode=0o700)
    (dangling / "api-token").symlink_to(tmp_path / "nowhere")
    security.ensure_token(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_a_token_others_could_read_is_replaced(tmp_path):
    path = tmp_path / "api-token"
    path.write_text("leaked-token\n")
    os.chmod(path, 0o644)
    token = security.ensure_token(tmp_path)
    assert token != "leaked-token" and mode(path) == 0o600


def test_client_token_prefers_the_environment(tmp_path, monkeypatch):
    token = security.ensure_token(tmp_path)
    monkeypatch.delenv("HELICONE_API_KEY", raising=False)
    assert security.client_token(tmp_path) == token
    monkeypatch.setenv("HELICONE_API_KEY", "from-env")
    assert security.client_token(tmp_path) == "from-env"
    monkeypatch.setenv("HELICONE_ADDON_DATA_DIR", str(tmp_path))
    assert security.env_export() == f"export HELICONE_API_KEY={token}"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8585", True), ("localhost:8585", True), ("LOCALHOST", True), ("[::1]:8585", True),
        ("127.0.0.1", True), ("localhost.", True), ("box.lan:1", True),  # configured
        ("attacker.example.com", False), ("attacker.example.com:8585", False), ("127.0.0.1.nip.io", False),
        ("", False), (None, False), ("[::1", False), ("127.0.0.1:x", False), ("10.0.0.5:8585", False),
    ],
)  # fmt: skip
def test_host_rule(host, ok):
    assert HostRules("127.0.0.1", ["box.lan"]).host_ok(host) is ok


def test_listen_address_and_wildcards():
    assert HostRules("10.0.0.5").host_ok("10.0.0.5:8585")
    assert not HostRules("0.0.0.0").host_ok("0.0.0.0:8585")  # a wildcard is not a name
    assert HostRules("127.0.0.1", ["*"]).host_ok("anything.example")


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        (None, True), ("http://127.0.0.1:8001", True), ("http://localhost", True), ("https://[::1]:3000", True),
        ("http://attacker.example.com", False), ("null", False), ("file://", False), ("", False),
        ("http://127.0.0.1.attacker.example.com", False),
    ],
)  # fmt: skip
def test_origin_rule(origin, ok):
    assert HostRules().origin_ok(origin) is ok


def test_token_matching():
    assert security.bearer("Bearer abc ") == "abc" and security.bearer("abc") == "abc"
    assert security.token_matches("abc", ["x", "abc"]) and not security.token_matches("abd", ["abc"])
    assert not security.token_matches("", [""]) and not security.token_matches(None, ["abc"])
