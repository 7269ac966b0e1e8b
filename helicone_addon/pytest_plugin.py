"""pytest plugin (entry point `pytest11`): record a test session's LLM calls once, replay them offline.

    pytest --llm-record                # real providers; the calls are written to the cassette
    pytest --llm-replay                # no provider needed: answers come from the cassette
    pytest --llm-replay=other.yaml     # (a path needs the '=' form)

For the session it starts `helicone-addon run` on a free port (its data directory under the
session's temp dir) and points the test process at it through the environment: HTTPS_PROXY /
HTTP_PROXY, and SSL_CERT_FILE / REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / NODE_EXTRA_CA_CERTS naming a
bundle of the usual CAs plus the proxy's own. SDK clients created during the session (OpenAI,
Anthropic, httpx, requests, ...) then go through the proxy without code changes. At the end of a
record session the proxy stops and the successful calls of its log become the cassette.

ini options: `llm_cassette` (default tests/llm.cassette.yaml, relative to the rootdir),
`llm_proxy_args` (extra arguments for `helicone-addon run`, e.g. a --map-remote). Replay passes
`--set helicone_replay=only --set helicone_replay_file=<cassette> --set helicone_replay_speed=N`.

Inert unless one of the options is given (only argument registration happens otherwise). With
pytest-xdist the controller starts the proxy and the workers inherit the environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

DEFAULT = "\0default"  # the option was given without a path
ENV_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")  # fmt: skip
_STASH = pytest.StashKey["LLMSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("llm", "record and replay LLM calls (helicone-addon)")
    g.addoption("--llm-record", nargs="?", const=DEFAULT, default=None, metavar="PATH",
                help="send LLM calls to the providers through helicone-addon and write them to the cassette "
                     "(default: the llm_cassette ini value)")
    g.addoption("--llm-replay", nargs="?", const=DEFAULT, default=None, metavar="PATH",
                help="answer LLM calls from the cassette, never from a provider")
    g.addoption("--llm-replay-speed", default="1", metavar="N",
                help="replayed streams: speed factor of the recorded pacing (0 = no delays; default 1)")
    g.addoption("--llm-proxy-arg", action="append", default=[], metavar="ARG",
                help="extra argument for `helicone-addon run` (repeat; use --llm-proxy-arg=--flag)")
    parser.addini("llm_cassette", "cassette for --llm-record / --llm-replay (relative to the rootdir)",
                  default="tests/llm.cassette.yaml")
    parser.addini("llm_proxy_args", "extra arguments for `helicone-addon run`", type="args", default=[])


class LLMSession:
    """The proxy of one test session and the environment it changed."""

    def __init__(self, config: pytest.Config, mode: str, cassette: Path) -> None:
        self.config, self.mode, self.cassette = config, mode, cassette
        self.proc: subprocess.Popen | None = None
        self.saved_env: dict[str, str | None] = {}
        self.dir = self._data_dir()
        self.data_dir = self.dir / "data"
        self.confdir = self.dir / "conf"
        self.port = _free_port()
        self.log_path = self.dir / "proxy.log"

    def _data_dir(self) -> Path:
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            return factory.mktemp("helicone-llm", numbered=True)
        return Path(tempfile.mkdtemp(prefix="helicone-llm-"))

    def argv(self) -> list[str]:
        args = [
            sys.executable, "-m", "helicone_addon", "run", "-q",
            "--mode", f"regular@{self.port}",
            "--set", f"confdir={self.confdir}",
            "--set", f"helicone_data_dir={self.data_dir}",
            "--set", "helicone_api_port=0",
            # connect upstream only when a request needs it: a replayed call never does (offline CI)
            "--set", "connection_strategy=lazy",
        ]  # fmt: skip
        if self.mode == "replay":
            args += [
                "--set", "helicone_replay=only",
                "--set", f"helicone_replay_file={self.cassette}",
                "--set", f"helicone_replay_speed={self.config.getoption('llm_replay_speed')}",
            ]  # fmt: skip
        return args + list(self.config.getini("llm_proxy_args")) + list(self.config.getoption("llm_proxy_arg"))

    def start(self, timeout: float = 60.0) -> None:
        if self.mode == "replay" and not self.cassette.is_file():
            raise pytest.UsageError(f"--llm-replay: no cassette at {self.cassette} (record one with --llm-record)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={k: v for k, v in os.environ.items() if k not in ENV_VARS})
        ca = self.confdir / "mitmproxy-ca-cert.pem"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise pytest.UsageError(f"helicone-addon run exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ca.is_file() and _listening(self.port):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise pytest.UsageError(f"helicone-addon run did not start in {timeout:.0f} s:\n{self.log_tail()}")
        self._set_env(self._ca_bundle(ca))

    def _ca_bundle(self, ca: Path) -> Path:
        """The usual public CAs plus the proxy's: other HTTPS traffic keeps working."""
        parts = []
        try:
            import certifi

            parts.append(Path(certifi.where()).read_text())
        except (ImportError, OSError):
            pass
        parts.append(ca.read_text())
        bundle = self.dir / "ca-bundle.pem"
        bundle.write_text("\n".join(parts))
        return bundle

    def _set_env(self, bundle: Path) -> None:
        url = f"http://127.0.0.1:{self.port}"
        values = {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
                  "SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle), "CURL_CA_BUNDLE": str(bundle),
                  "NODE_EXTRA_CA_CERTS": str(self.confdir / "mitmproxy-ca-cert.pem")}  # fmt: skip
        for k, v in values.items():
            self.saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def restore_env(self) -> None:
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.saved_env.clear()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no proxy output)"

    def write_cassette(self) -> tuple[int, int]:
        """The successful calls of the session's log -> the cassette (written atomically)."""
        import sqlite_utils

        from .export import atomic_output, export_log

        db_path = self.data_dir / "helicone.db"
        if not db_path.is_file():
            return 0, 0
        db = sqlite_utils.Database(db_path)
        try:
            with atomic_output(self.cassette) as out:
                res = export_log(db, "cassette", out)
        finally:
            db.close()
        return res.written, res.skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _cassette_path(config: pytest.Config, value: str) -> Path:
    if value == DEFAULT:
        return Path(config.rootpath) / config.getini("llm_cassette")
    p = Path(value)
    if p.is_dir() or p.suffix == ".py" or "::" in value:
        raise pytest.UsageError(f"{value!r} looks like a test path: give the cassette as --llm-record=PATH / --llm-replay=PATH")
    return p if p.is_absolute() else Path(config.invocation_params.dir) / p


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path set-up: the data dir goes under the session's temp dir
def pytest_configure(config: pytest.Config) -> None:
    record, replay = config.getoption("llm_record", None), config.getoption("llm_replay", None)
    if record is None and replay is None:
        return
    if record is not None and replay is not None:
        raise pytest.UsageError("--llm-record and --llm-replay cannot be used together")
    if hasattr(config, "workerinput"):  # an xdist worker: the controller's proxy and environment
        return
    try:
        float(config.getoption("llm_replay_speed"))
    except ValueError:
        raise pytest.UsageError("--llm-replay-speed must be a number (0 = no delays)") from None
    mode = "record" if record is not None else "replay"
    session = LLMSession(config, mode, _cassette_path(config, record if record is not None else replay))
    session.start()
    config.stash[_STASH] = session


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash.get(_STASH, None)
    if session is None:
        return None
    return f"llm: {session.mode} via helicone-addon on 127.0.0.1:{session.port}, cassette {session.cassette}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _finish(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _finish(config)  # when the session never ran (a usage error after configure)


def _finish(config: pytest.Config) -> None:
    """Stop the proxy, restore the environment; after a record session, write the cassette."""
    session = config.stash.get(_STASH, None)
    if session is None:
        return
    del config.stash[_STASH]
    session.restore_env()
    session.stop()
    if session.mode != "record":
        return
    written, skipped = session.write_cassette()
    msg = f"helicone-addon: recorded {written} LLM call(s) into {session.cassette}"
    if skipped:
        msg += f" ({skipped} failed call(s) left out)"
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(msg)
    else:
        print(msg, file=sys.stderr)
