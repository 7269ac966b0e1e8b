"""scripts/bootstrap.sh finds a Python >= 3.12 where users keep one (`--find-python` runs only the finder).

Each test builds a machine in a temp dir: an empty HOME, a PATH holding only the shell tools the script
needs plus fakes (a pyenv `python3.12` shim that fails because pyenv's global is 3.11, a `python3`
that is 3.11, a `pyenv` or `uv` that answers where their Pythons live). The "real" Python is this
test's own interpreter (>= 3.12), linked into the place being tested.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bootstrap.sh"
TOOLS = ["bash", "sh", "env", "dirname", "sort", "cut", "cat", "grep", "printf", "rm", "echo"]

PYENV_SHIM = """#!/usr/bin/env bash
echo "pyenv: python3.12: command not found" >&2
echo "The \\`python3.12' command exists in these Python versions:" >&2
echo "  3.12.1" >&2
echo "Note: See 'pyenv help global' for tips on allowing both python2 and python3 to be found." >&2
exit 127
"""

PYTHON_311 = """#!/bin/sh
# a Python 3.11: too old
case "$*" in *--version*) echo "Python 3.11.7"; exit 0;; esac
exit 1
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def machine(tmp_path):
    """(env, bin dir, home): PATH = a shim dir with failing pythons, then a dir of shell tools only."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for t in TOOLS:
        found = shutil.which(t)
        if found:
            (tools / t).symlink_to(found)
    shims = tmp_path / "shims"
    _script(shims / "python3.12", PYENV_SHIM)
    _script(shims / "python3", PYTHON_311)
    _script(shims / "python", PYTHON_311)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": f"{shims}:{tools}", "LANG": "C.UTF-8"}
    return env, shims, home


def find(env: dict[str, str]) -> subprocess.CompletedProcess:
    # `bash` by absolute path: the test's own PATH is not the one under test
    return subprocess.run([shutil.which("bash"), str(SCRIPT), "--find-python"], env=env,
                          capture_output=True, text=True, timeout=60)


def _pyenv_python(root: Path, version: str) -> Path:
    exe = root / "versions" / version / "bin" / "python3"
    exe.parent.mkdir(parents=True)
    exe.symlink_to(sys.executable)
    return exe


def _common_prefixes_have_no_python() -> bool:
    """The finder's last resort (/usr/local/bin, /usr/bin, ...) cannot be faked: know when it would answer."""
    for d in ("/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"):
        for n in ("python3.12", "python3.13", "python3.14", "python3.15", "python3"):
            exe = Path(d) / n
            if exe.exists():
                r = subprocess.run([exe, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"], capture_output=True)
                if r.returncode == 0:
                    return False
    return True


def test_failing_pyenv_shim_is_skipped_and_pyenv_root_is_asked(machine, tmp_path):
    env, shims, home = machine
    root = tmp_path / "elsewhere" / "pyenv"  # not ~/.pyenv: only `pyenv root` knows it
    _pyenv_python(root, "3.11.7").unlink()  # a too-old version directory without a working python
    good = _pyenv_python(root, "3.12.9")
    _script(shims / "pyenv", f'#!/bin/sh\n[ "$1" = root ] && echo "{root}" && exit 0\nexit 1\n')
    r = find(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(good)


def test_pyenv_root_above_the_failing_shims_dir(machine, tmp_path):
    """No `pyenv` command, no PYENV_ROOT, HOME elsewhere: the shims directory on PATH says where pyenv is."""
    env, _, _ = machine
    root = tmp_path / "opt-pyenv"
    _script(root / "shims" / "python3.12", PYENV_SHIM)
    good = _pyenv_python(root, "3.12.1")
    r = find({**env, "PATH": f"{root / 'shims'}:{env['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(good)


def test_pyenv_root_from_the_environment(machine, tmp_path):
    env, _, _ = machine
    root = tmp_path / "pyenv-root"
    good = _pyenv_python(root, "3.12.9")
    r = find({**env, "PYENV_ROOT": str(root)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(good)


def test_home_pyenv_prefers_312_over_newer(machine):
    env, _, home = machine
    root = home / ".pyenv"
    newer = _pyenv_python(root, "3.13.0")
    good = _pyenv_python(root, "3.12.1")
    r = find(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(good) != str(newer)


def test_a_later_python_on_path_after_a_failing_shim(machine, tmp_path):
    env, _, _ = machine
    later = tmp_path / "later-bin"
    later.mkdir()
    (later / "python3.12").symlink_to(sys.executable)
    shims, tools = env["PATH"].split(":")
    r = find({**env, "PATH": f"{shims}:{later}:{tools}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(later / "python3.12")


def test_uv_python_find(machine, tmp_path):
    env, shims, _ = machine
    uv_python = tmp_path / "uv" / "cpython-3.12.8" / "bin" / "python3.12"
    uv_python.parent.mkdir(parents=True)
    uv_python.symlink_to(sys.executable)
    _script(shims / "uv", f'#!/bin/sh\n[ "$1 $2" = "python find" ] && echo "{uv_python}" && exit 0\nexit 2\n')
    r = find(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(uv_python)


def test_python_env_var_wins_and_a_bad_one_is_named(machine, tmp_path):
    env, _, home = machine
    _pyenv_python(home / ".pyenv", "3.12.1")
    chosen = tmp_path / "mine" / "python"
    chosen.parent.mkdir()
    chosen.symlink_to(sys.executable)
    r = find({**env, "PYTHON": str(chosen)})
    assert r.returncode == 0 and r.stdout.strip() == str(chosen)
    r = find({**env, "PYTHON": "python3.12"})  # the failing shim
    assert r.returncode == 1 and "PYTHON=python3.12" in r.stderr and ">= 3.12" in r.stderr


@pytest.mark.skipif(not _common_prefixes_have_no_python(), reason="this machine has a Python >= 3.12 in /usr/bin or /usr/local/bin")
def test_nothing_found_says_how_to_point_at_one(machine):
    env, _, _ = machine
    r = find(env)
    assert r.returncode == 1 and r.stdout == ""
    assert "no working Python >= 3.12" in r.stderr
    assert "PYTHON=/path/to/python3.12 bash scripts/bootstrap.sh" in r.stderr


def test_editable_build_says_nothing(tmp_path):
    """What `pip install -e .` runs (the build backend's build_editable), with every warning shown:
    no setuptools notice block ("!!" ... "!!") comes out of our pyproject.toml."""
    code = "import setuptools.build_meta as b, sys; print(b.build_editable(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / r.stdout.strip().splitlines()[-1]).is_file()
    for noise in ("!!", "Warning", "Editable installation", "Deprecat"):
        assert noise not in r.stderr, r.stderr


@pytest.mark.parametrize(("compiled", "no_bytecode", "writable", "reexec"), [
    (True, True, False, True),  # bootstrap.sh compiled it for -O
    (False, True, True, False),  # PYTHONDONTWRITEBYTECODE and nothing compiled: every start would compile
    (False, False, False, False),  # a read-only site-packages, nothing compiled: the same
    (False, False, True, True),  # the first start writes the -O bytecode
])
def test_the_proxy_runs_under_python_O_only_when_its_bytecode_is_there(monkeypatch, tmp_path, compiled, no_bytecode,
                                                                        writable, reexec):
    from helicone_addon.cli import proxy

    source = tmp_path / "mitmproxy" / "proxy" / "layers" / "http" / "__init__.py"
    source.parent.mkdir(parents=True)
    source.write_text("")
    if compiled:
        import importlib.util

        cached = Path(importlib.util.cache_from_source(str(source), optimization=1))
        cached.parent.mkdir()
        cached.write_bytes(b"")
    calls = []
    monkeypatch.delenv("HELICONE_ADDON_NO_OPTIMIZE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", no_bytecode)
    monkeypatch.setattr(proxy, "_mitmproxy_http_source", lambda: str(source))
    monkeypatch.setattr(proxy.os, "access", lambda path, mode: writable)  # tests run as root: may write anywhere
    monkeypatch.setattr(proxy.os, "execv", lambda exe, argv: calls.append(argv))
    proxy.optimized_reexec(["run", "-q"])
    assert calls == ([[sys.executable, "-O", "-m", "helicone_addon", "run", "-q"]] if reexec else [])


def test_bootstrap_compiled_the_proxy_for_python_O():
    """README's install command ran bootstrap.sh for this venv: mitmproxy's bytecode for -O is there."""
    import importlib.util

    from helicone_addon.cli import proxy

    assert Path(importlib.util.cache_from_source(proxy._mitmproxy_http_source(), optimization=1)).exists()
