"""Real Redis and PostgreSQL servers for the fleet tests, in the style of pytest-redis/pytest-postgresql
but over the Debian binaries: `redis-server` (package redis-server) and PostgreSQL's `initdb`/`postgres`
from /usr/lib/postgresql/<version>/bin (package postgresql).

Each server listens on a free loopback port, keeps its files in a temporary directory, and is stopped
at the end. A test can stop, kill, pause or restart a server in the middle (`stop()`, `kill()`,
`pause()`/`resume()`, `start()`, `down_for(seconds)`). Without the binaries the tests are skipped with
the name of the missing Debian package.

PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres` run as the
unprivileged user `helicone-pg` (created with useradd when missing) and the cluster lives in a
directory owned by that user; the socket directory is inside it.

Fixtures (import them into a test module: `from servers import redis_server, pg_url  # noqa: F401`):

- `redis_server`: a fresh RedisServer per test (starting one takes milliseconds);
- `pg_server`: one PostgresServer for the whole session (never stopped by tests);
- `pg_url`: a fresh, empty database on `pg_server`, as a postgresql:// URL;
- `pg_private`: a PostgresServer of the test's own (copied from a session template cluster, so it
  starts in about a second), which the test may stop and restart.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

PG_USER = "helicone-pg"  # the unix user running PostgreSQL when the tests run as root
PG_ROLE = "helicone"  # the database superuser created by initdb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- redis


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


class RedisServer:
    """`redis-server` on 127.0.0.1:<port>, no persistence, files in `directory`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            pytest.skip("redis-server not found: install the Debian package redis-server")
        self.binary = binary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.directory / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--databases", "4",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self._tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer: {self._tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once (connections reset, data lost)."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def _signal_and_wait(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def down_for(self, seconds: float, *, kill: bool = True) -> threading.Thread:
        """Take the server down now and bring it back on the same port after `seconds` (in a thread)."""
        (self.kill if kill else self.stop)()
        t = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        t.start()
        return t


# ----------------------------------------------------------------------------------------- postgres


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, pg_ctl and postgres."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            try:
                found.append((int(Path(d).parent.name.split(".")[0]), Path(d)))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _run_as() -> dict:
    """Popen arguments that drop root to PG_USER (created if missing); {} when not root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True, capture_output=True,
        )  # fmt: skip
    return {"user": PG_USER, "group": pwd.getpwnam(PG_USER).pw_gid, "extra_groups": []}


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(PG_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


def init_cluster(target: Path) -> Path:
    """initdb into `target`/data (a new directory owned by the PostgreSQL user). Returns the data dir."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: install the Debian package postgresql")
    run_as = _run_as()
    target.mkdir(parents=True, exist_ok=True)
    _chown_tree(target)
    data = target / "data"
    res = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_ROLE, "-A", "trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, text=True, cwd=str(target), **run_as,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed: {res.stderr[-2000:]}")
    return data


class PostgresServer:
    """`postgres` on 127.0.0.1:<port> with its data, socket and log under `root` (a private temp dir)."""

    def __init__(self, root: Path, data: Path, port: int | None = None) -> None:
        bindir = pg_bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found: install the Debian package postgresql")
        self.bindir = bindir
        self.root = Path(root)
        self.data = Path(data)
        self.port = port or free_port()
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir(exist_ok=True)
        _chown_tree(self.sockdir)
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def create(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="helicone-pg-"))
        os.chmod(root, 0o755)
        return cls(root, init_cluster(root))

    @classmethod
    def copy_of(cls, template: Path) -> PostgresServer:
        """A new server on a copy of an initialised (stopped) data directory."""
        root = Path(tempfile.mkdtemp(prefix="helicone-pg-"))
        os.chmod(root, 0o755)
        shutil.copytree(template, root / "data", symlinks=True)
        os.chmod(root / "data", 0o700)
        _chown_tree(root)
        return cls(root, root / "data")

    def url_for(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_ROLE}@127.0.0.1:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def start(self, timeout: float = 30) -> PostgresServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockdir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=60", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning",
        ]  # fmt: skip
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=str(self.root), **_run_as())
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self._tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"postgres on port {self.port} did not start: {self._tail()}")

    def ready(self) -> bool:
        if not _port_open(self.port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are cut, committed data kept."""
        self._signal_and_wait(signal.SIGINT)

    def kill(self) -> None:
        """Immediate shutdown (SIGQUIT), like a crash; PostgreSQL recovers on the next start."""
        self._signal_and_wait(signal.SIGQUIT)

    def _signal_and_wait(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def down_for(self, seconds: float, *, kill: bool = False) -> threading.Thread:
        """Take the server down now and start it again on the same port after `seconds` (in a thread)."""
        (self.kill if kill else self.stop)()
        t = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        t.start()
        return t

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template():
    """An initialised, stopped data directory that private servers copy."""
    root = Path(tempfile.mkdtemp(prefix="helicone-pg-template-"))
    os.chmod(root, 0o755)
    try:
        data = init_cluster(root)
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pg_template):
    server = PostgresServer.copy_of(pg_template).start()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A fresh empty database on the shared server."""
    return pg_server.create_database()


@pytest.fixture
def pg_private(pg_template):
    """A server of this test's own: it may be stopped, killed and restarted."""
    server = PostgresServer.copy_of(pg_template).start()
    yield server
    server.cleanup()
