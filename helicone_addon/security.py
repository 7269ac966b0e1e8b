"""Who may use the local API and the web view: the API token, and the Host / Origin rules.

The log holds every prompt and response, and its files are readable by their owner only. The local
API (api/) and the web view (`helicone-addon ui`) hand out the same data over loopback, so they
admit only requests that carry a secret the owner can read:

* the **token**: `<data dir>/api-token`, random, created on first use with mode 0600 in the 0700
  data dir (`ensure_token`). The proxy creates it when its API starts; our own clients (the async
  logger, `helicone-addon ui`, `helicone-addon env`) read it from the same place (`client_token`);
  `HELICONE_API_KEY` in the environment takes precedence for clients, as Helicone's SDKs use it.
* the **Host rule** (against DNS rebinding: a web page whose name resolves to 127.0.0.1 would
  otherwise be same-origin with the API): only `localhost`, `127.0.0.1`, `[::1]`, the address the
  server listens on and the names configured are accepted as `Host`, on any port (`HostRules`).
* the **Origin rule** (against cross-site requests from a browser): a request carrying an `Origin`
  header whose host is not one of those is refused.

No mitmproxy, Starlette or store import here: pure functions over strings and files.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import os
import secrets
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from . import config

logger = logging.getLogger("helicone_addon.security")

TOKEN_FILE = "api-token"
TOKEN_ENV = "HELICONE_API_KEY"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


# ---------------------------------------------------------------------------------------------
# the token file


def token_path(data_dir: str | os.PathLike | None = None) -> Path:
    return (Path(data_dir).expanduser() if data_dir else config.default_data_dir()) / TOKEN_FILE


def _read(path: Path) -> tuple[str | None, bool]:
    """(token, private): the file's stripped text (None when missing, empty or not a regular file),
    and whether it is private to us (ours, mode 0600 or stricter). Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.ENOTDIR):
            logger.warning("helicone: cannot read the API token %s: %s", path, e)
        return None, False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, False
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    private = st.st_uid == os.getuid() and st.st_mode & 0o077 == 0
    return text or None, private


def read_token(data_dir: str | os.PathLike | None = None) -> str | None:
    """The token in `<data dir>/api-token`, or None when there is none (or it cannot be read)."""
    return _read(token_path(data_dir))[0]


def ensure_token(data_dir: str | os.PathLike | None = None) -> str:
    """The API token of a data dir, created when missing (random, 0600, the dir 0700).

    Creation is atomic and never goes through a symlink: the token is written to a fresh private
    file, then hard-linked to `api-token` (which fails if anything, a symlink included, is already
    there; then that one is read). A token file others could read, or not ours, is replaced.
    """
    path = token_path(data_dir)
    config.ensure_private_dir(path.parent)
    looked_twice = False
    while True:
        token, private = _read(path)
        if token and private:
            return token
        if os.path.lexists(path):
            if looked_twice:  # not a race with another creator: something unusable is there
                break
            looked_twice = True
            continue
        try:
            return _write(path, replace=False)
        except FileExistsError:  # another process made it first: read theirs
            continue
    logger.warning("helicone: %s is not a private regular file of this user; writing a new token", path)
    return _write(path, replace=True)


def _write(path: Path, *, replace: bool) -> str:
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)  # replaces a symlink itself, never its target
        else:
            os.link(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return token


def client_token(data_dir: str | os.PathLike | None = None, *, env: bool = True) -> str | None:
    """What our own clients send as `Authorization: Bearer`: $HELICONE_API_KEY, else the token file."""
    if env:
        value = os.environ.get(TOKEN_ENV, "").strip()
        if value:
            return value
    return read_token(data_dir)


def env_export(data_dir: str | os.PathLike | None = None) -> str:
    """The `export HELICONE_API_KEY=<token>` line for `helicone-addon env` (creates the token if
    needed, so the line is right before the proxy first starts)."""
    return f"export {TOKEN_ENV}={shlex.quote(ensure_token(data_dir))}"


def bearer(value: str | None) -> str:
    """'Bearer abc' -> 'abc'; any other text as is (stripped)."""
    value = (value or "").strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else value


def token_matches(given: str | None, accepted: Iterable[str]) -> bool:
    """Constant-time comparison of a presented secret against every accepted one."""
    if not given:
        return False
    candidate = given.encode()
    ok = False
    for secret in accepted:
        if secret and hmac.compare_digest(candidate, secret.encode()):
            ok = True
    return ok


# ---------------------------------------------------------------------------------------------
# Host and Origin


def _norm(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def split_host(value: str) -> str | None:
    """The host part of a Host header value ('[::1]:8585' -> '::1'); None when malformed."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        return _norm(value[: end + 1])
    host, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return _norm(host)


def is_loopback(host: str) -> bool:
    host = _norm(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostRules:
    """The names a request may use to reach a local server: loopback names, the listen address
    (unless it is a wildcard such as 0.0.0.0) and configured names; '*' accepts any Host."""

    def __init__(self, listen_host: str = "127.0.0.1", extra: Iterable[str] = ()) -> None:
        names = {_norm(h) for h in (*LOOPBACK_NAMES, *extra) if h and h.strip()}
        listen = _norm(listen_host or "")
        if listen and listen not in ("0.0.0.0", "::"):
            names.add(listen)
        self.any = ANY_HOST in names
        self.names = frozenset(names - {ANY_HOST})

    def host_ok(self, host_header: str | None) -> bool:
        """Is this Host header value one of ours (any port)? A request without one is refused."""
        if self.any:
            return True
        host = split_host(host_header or "")
        return host is not None and host in self.names

    def origin_ok(self, origin: str | None) -> bool:
        """No Origin (not a browser, or a same-origin GET) is fine; else its host must be one of ours."""
        if origin is None:
            return True
        if self.any:
            return True
        try:
            parts = urlsplit(origin.strip())
            host = parts.hostname
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and host is not None and _norm(host) in self.names
