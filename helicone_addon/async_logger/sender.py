"""Endpoint mode: a sender thread POSTs each finished call, as Helicone's async log payload (payload.py),
to a Helicone-style log API (``source='async'`` there)."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import security
from .call import Call
from .payload import build_payload

if TYPE_CHECKING:
    from .owner import Owner

logger = logging.getLogger(__package__)


class HttpSender:
    """Sends the calls of `owner` (its endpoint, api_key, data_dir, timeout, provider; counts in its counters)."""

    def __init__(self, owner: Owner, max_queue: int) -> None:
        self._owner = owner
        self._queue: queue.Queue[Call | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="helicone-async-log-sender", daemon=True)
        self._thread.start()

    def submit(self, call: Call) -> None:
        """Queue `call` for the sender thread; never blocks (a full queue drops it, counted)."""
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self._owner._count("dropped")
            logger.warning("helicone async logger: send queue full; a call was not logged")

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the thread is a daemon: it dies with the process
        self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {}

    def _api_key(self) -> str | None:
        """The key sent to the endpoint: api_key, else $HELICONE_API_KEY, else the local API's token
        file when the endpoint is on this machine (read per send: the proxy may start later)."""
        owner = self._owner
        if owner.api_key:
            return owner.api_key
        if security.is_loopback(urlsplit(owner.endpoint or "").hostname or ""):
            return security.client_token(owner.data_dir)
        return os.environ.get(security.TOKEN_ENV) or None

    def _loop(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        warned = 0
        while True:
            call = self._queue.get()
            try:
                if call is None:
                    return
                url, err = self._send(opener, call)
                if err is None:
                    self._owner._count("sent")
                else:
                    self._owner._count("failed")
                    if warned < 5 or warned % 100 == 0:
                        logger.warning("helicone async logger: could not send a log to %s: %s", url, err)
                    warned += 1
            except Exception:
                self._owner._count("internal_errors")
                logger.exception("helicone async logger: sender error")
            finally:
                self._queue.task_done()

    def _send(self, opener: urllib.request.OpenerDirector, call: Call) -> tuple[str, str | None]:
        """POST one call (one retry on a connection error or a 5xx): (url, error or None)."""
        owner = self._owner
        url, payload, extra = build_payload(call, owner.endpoint or "", owner.provider)
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        api_key = self._api_key()
        if api_key:
            req.add_header("Authorization", f"Bearer {api_key}")
        for k, v in extra:
            req.add_header(k, v)
        err = None
        for attempt in range(2):
            try:
                with opener.open(req, timeout=owner.timeout) as resp:
                    reply = resp.read(4096)
                if resp.status == 200 and reply.strip().startswith(b"{"):
                    err = f"the endpoint answered 200 {reply[:200]!r}"  # Helicone: logging failed
                else:
                    err = None
                break
            except urllib.error.HTTPError as e:
                err = f"HTTP {e.code}: {e.read(300)!r}"
                if e.code < 500:
                    break
            except (OSError, ValueError) as e:
                err = f"{type(e).__name__}: {e}"
            time.sleep(0.2 * (attempt + 1))
        return url, err
