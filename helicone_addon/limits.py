"""File descriptors: raise the soft limit at start, and refuse new clients cleanly before running out.

Pure module (no mitmproxy). Every proxied call holds two descriptors (the client's connection and
the upstream one), so a proxy with a shell's default soft limit (1,024 on many Linux shells, 256 on
macOS) runs out at a few hundred open streams, while the hard limit is usually far higher. Servers
raise their soft limit to the hard one at start; `raise_nofile_limit` does that.

When descriptors do run out anyway, the damage is done to calls already accepted: asyncio's accept
loop copes with EMFILE by pausing the listener for a second, but a client accepted with the last
free descriptor then fails to open its upstream connection, and mitmproxy closes it without an
answer. `ConnectionBudget` lets the proxy turn such clients away at once, at connect time, while
there are still descriptors for the calls already under way.
"""

from __future__ import annotations

import os
import sys

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = ["NOFILE_CAP", "ConnectionBudget", "nofile_limit", "open_fd_count", "raise_nofile_limit"]

NOFILE_CAP = 1 << 20  # the soft limit we aim at when the hard limit is "unlimited" (or higher)
_MACOS_OPEN_MAX = 10240  # OPEN_MAX in <sys/syslimits.h>: macOS refuses a soft limit above it


def _macos_max_files() -> int:
    """macOS: setrlimit(RLIMIT_NOFILE) fails (EINVAL) above kern.maxfilesperproc, and above
    OPEN_MAX when the hard limit is RLIM_INFINITY (the default)."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(b"kern.maxfilesperproc", ctypes.byref(value), ctypes.byref(size), None, 0) == 0:
            return min(value.value, _MACOS_OPEN_MAX) if value.value > 0 else _MACOS_OPEN_MAX
    except (OSError, AttributeError, TypeError):  # no libc or no such sysctl: the documented constant
        pass
    return _MACOS_OPEN_MAX


def nofile_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE; RLIM_INFINITY as `resource.RLIM_INFINITY`. (-1, -1) if unknown."""
    if resource is None:
        return -1, -1
    try:
        return resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return -1, -1


def raise_nofile_limit(cap: int = NOFILE_CAP) -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, at most `cap` (and at most what macOS accepts).

    Returns (old_soft, new_soft, hard); new_soft == old_soft when nothing changed (already high
    enough, or the system said no). Never lowers the limit, never raises an exception.
    """
    soft, hard = nofile_limit()
    if resource is None or soft == -1 and hard == -1:
        return soft, soft, hard
    inf = resource.RLIM_INFINITY
    target = cap if hard == inf else min(hard, cap)
    if sys.platform == "darwin":
        target = min(target, _macos_max_files())
    if soft != inf and target > soft:
        for attempt in (target, min(target, _MACOS_OPEN_MAX)):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (attempt, hard))
                return soft, attempt, hard
            except (OSError, ValueError):
                continue
    return soft, soft, hard


def open_fd_count() -> int | None:
    """How many descriptors this process has open (Linux /proc, macOS /dev/fd); None if unknown."""
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(d)) - 1  # listdir itself holds one while it reads the directory
        except OSError:
            continue
    return None


class ConnectionBudget:
    """Admit a new client connection only while descriptors remain for it and its upstream.

    `admit(key)` at connect time, `release(key)` at disconnect (a refused key is ignored). The
    count of open descriptors is only read (a directory listing) when the connections admitted so
    far could have brought the process near its limit, so the common case costs a set insertion.
    `reserve` keeps descriptors for everything else the process opens (log database, cache,
    certificates, the local API).
    """

    def __init__(self, per_connection: int = 2, reserve: int = 64, soft_limit: int | None = None) -> None:
        self.per_connection = per_connection
        self.reserve = reserve
        self._soft_limit = soft_limit
        self._admitted: set = set()
        self._baseline: int | None = None
        self.refused = 0

    @property
    def soft_limit(self) -> int | None:
        if self._soft_limit is None:
            soft, _ = nofile_limit()
            inf = getattr(resource, "RLIM_INFINITY", -1)
            return None if soft in (-1, inf) else soft
        return self._soft_limit

    def admit(self, key: object) -> bool:
        limit = self.soft_limit
        if limit is None:
            self._admitted.add(key)
            return True
        if self._baseline is None:
            self._baseline = open_fd_count() or 0
        # as if every admitted client (this one too) held its upstream connection as well
        estimate = self._baseline + self.per_connection * (len(self._admitted) + 1)
        if estimate + 2 * self.reserve <= limit:  # far from the limit: no need to count
            self._admitted.add(key)
            return True
        used = open_fd_count()
        worst = estimate if used is None else max(estimate, used + self.per_connection)
        if worst + self.reserve <= limit:
            self._admitted.add(key)
            return True
        self.refused += 1
        return False

    def release(self, key: object) -> None:
        self._admitted.discard(key)

    @property
    def active(self) -> int:
        return len(self._admitted)
