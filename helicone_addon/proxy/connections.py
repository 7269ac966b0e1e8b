"""HeliconeConnections: when file descriptors run low, new client connections are refused at once
(each proxied stream holds two descriptors) instead of being accepted and then dropped, with the
streams already open, when their upstream connection cannot be made."""

from __future__ import annotations

import logging

from mitmproxy import connection

from helicone_addon.limits import ConnectionBudget

logger = logging.getLogger("helicone_addon")


class HeliconeConnections:
    def __init__(self) -> None:
        self.budget = ConnectionBudget()
        self.counters = {"connections_refused_no_fd": 0}

    def client_connected(self, client: connection.Client) -> None:
        if not self.budget.admit(client.id):
            if not self.counters["connections_refused_no_fd"]:
                logger.warning("helicone: out of file descriptors; refusing new connections until some close")
            self.counters["connections_refused_no_fd"] += 1
            client.error = "out of file descriptors: new connection refused"  # mitmproxy closes it at once

    def client_disconnected(self, client: connection.Client) -> None:
        self.budget.release(client.id)
