"""mitmproxy's per-connection DEBUG records, made only when somebody reads them.

mitmproxy sets the root logger to DEBUG, and every connection logs through one logger,
`mitmproxy.proxy.server`: "client connect", "server connect", "Streaming response from ...",
"client disconnect", ... Each record is built (a `LogRecord`, its `extra`), offered to every
handler on the root logger, and with default options every handler drops it: termlog keeps INFO
and up, the error check ERROR and up. Except one: the master's `LegacyLogEvents` handler, which
formats every record and wakes the event loop to dispatch a deprecated `add_log` event that no
addon of mitmproxy or of ours implements. On a burst of new connections that was ~9% of the
proxy's CPU, and 6% of a streamed call's.

* `LogEventGate`, a filter on that handler: the record stops there while no addon implements
  `add_log` (the dispatch plans know; while they are stale, records pass).
* `ConnectionLogLevel` sets the level of `mitmproxy.proxy.server` to the lowest level that a
  handler which would receive its records accepts (the gated handler counts only while some addon
  implements `add_log`), so unwanted records are not even built. It is recomputed whenever the
  addons change and after every `configure` (`termlog_verbosity`, a script loaded); mitmweb's
  event log and pytest's log capture accept DEBUG, and then so does the logger. A level set on
  that logger by somebody else is left alone. A handler added to the root logger later, by code
  that neither adds an addon nor changes an option, gets that logger's records from the next
  change on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

CONNECTION_LOGGER = "mitmproxy.proxy.server"

__all__ = ["CONNECTION_LOGGER", "ConnectionLogLevel", "LogEventGate"]


class LogEventGate(logging.Filter):
    """Filter on the master's `LegacyLogEvents` handler: no `add_log` handler, no event.

    `known_absent()` must be safe to call from any thread (records come from every thread)."""

    def __init__(self, known_absent: Callable[[], bool]) -> None:
        super().__init__()
        self.known_absent = known_absent
        self.handler: logging.Handler | None = None
        self.dropped = 0

    def attach(self, handler: object) -> None:
        self.handler = handler if isinstance(handler, logging.Handler) else None
        if self.handler is not None:
            self.handler.addFilter(self)

    def detach(self) -> None:
        if self.handler is not None:
            self.handler.removeFilter(self)
            self.handler = None

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            absent = self.known_absent()
        except Exception:  # noqa: BLE001 - never break a logging call: let the record through
            return True
        if absent:
            self.dropped += 1
            return False
        return True


class ConnectionLogLevel:
    """Keeps `mitmproxy.proxy.server` at the lowest level its handlers accept."""

    def __init__(self, gate: LogEventGate, name: str = CONNECTION_LOGGER) -> None:
        self.gate = gate
        self.logger = logging.getLogger(name)
        self._ours: int | None = None  # the level we set, while it is still the logger's

    def wanted(self, add_log_listened: bool) -> int:
        levels = []
        lg: logging.Logger | None = self.logger
        while lg is not None:
            for h in lg.handlers:
                if h is self.gate.handler and not add_log_listened:
                    continue
                levels.append(h.level)
            if not lg.propagate:
                break
            lg = lg.parent
        if not levels:  # records would go to logging.lastResort
            levels.append(logging.lastResort.level if logging.lastResort else logging.WARNING)
        return min(levels)

    def update(self, add_log_listened: bool) -> None:
        current = self.logger.level
        if current not in (logging.NOTSET, self._ours):
            return  # somebody else chose this logger's level
        want = self.wanted(add_log_listened)
        # NOTSET (a handler that takes everything): inherit the root's level, as before
        if want != current:
            self.logger.setLevel(want)
        self._ours = want

    def restore(self) -> None:
        if self._ours is not None and self.logger.level == self._ours:
            self.logger.setLevel(logging.NOTSET)
        self._ours = None
