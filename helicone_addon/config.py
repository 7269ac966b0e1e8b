"""Where things live by default. The environment variable HELICONE_ADDON_DATA_DIR overrides the data dir."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_API_PORT = int(os.environ.get("HELICONE_ADDON_API_PORT") or 8585)  # the local API's default port


def default_data_dir() -> Path:
    env = os.environ.get("HELICONE_ADDON_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".helicone-addon"


def db_path(data_dir: str | os.PathLike | None = None, db: str | None = None) -> Path:
    """The log database: `db` if given, else <data dir>/helicone.db."""
    if db:
        return Path(db).expanduser()
    return Path(data_dir).expanduser() / "helicone.db" if data_dir else default_data_dir() / "helicone.db"


def cache_dir(data_dir: str | os.PathLike | None = None, cache: str | None = None) -> Path:
    if cache:
        return Path(cache).expanduser()
    return (Path(data_dir).expanduser() if data_dir else default_data_dir()) / "cache"


def ratelimit_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return (Path(data_dir).expanduser() if data_dir else default_data_dir()) / "ratelimit"


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by the owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path


DISKCACHE_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")


def private_diskcache_dir(directory: str | os.PathLike) -> str:
    """Prepare a diskcache directory readable by the owner only: the directory 0700, and its
    SQLite file pre-created 0600 (never through a symlink) so that -wal/-shm inherit that mode."""
    directory = os.path.abspath(os.path.expanduser(str(directory)))
    ensure_private_dir(Path(directory))
    fd = os.open(
        os.path.join(directory, DISKCACHE_FILES[0]),
        os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
        0o600,
    )
    os.close(fd)
    restrict_files(directory)
    return directory


def restrict_files(directory: str) -> None:
    for name in DISKCACHE_FILES:
        path = os.path.join(directory, name)
        try:
            if os.path.exists(path) and os.stat(path).st_mode & 0o777 != 0o600:
                os.chmod(path, 0o600)
        except OSError:
            pass
