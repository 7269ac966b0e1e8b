"""`HeliconeAsyncLogger`, the public facade: settings, counters, ``meta()``, and the hand-over of finished
calls to the sink (store_sink.py or sender.py)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

from .. import config
from .call import Call
from .meta import MetaContext, meta_pairs
from .sender import HttpSender
from .store_sink import StoreSink
from .transport import instrument

logger = logging.getLogger(__package__)

MAX_LOGGED_BYTES = 128 * 1024 * 1024  # bytes of one response kept for the log (the app gets all of them)


class HeliconeAsyncLogger:
    """Logs SDK calls after the fact. Give ``db_path`` (default: the proxy's database) or ``endpoint``.

    ``endpoint``: base URL of a Helicone-style log API (``http://127.0.0.1:8585``, or Helicone's own
    ``https://api.worker.helicone.ai``); the path (``/oai/v1/log``, ``/anthropic/v1/log``, ...) is picked
    per call, unless the URL already ends in ``/log``. ``api_key`` is sent as ``Authorization: Bearer``;
    without it, ``$HELICONE_API_KEY``, else (for a loopback endpoint only) the local API's token from
    ``<data_dir>/api-token`` (``data_dir`` defaults to the proxy's, see config.py).
    ``provider`` forces the provider id of every call (else: known host, then the SDK, then the path).
    ``user_id`` / ``properties`` / ``session_*`` are defaults for every call.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        endpoint: str | None = None,
        *,
        api_key: str | None = None,
        data_dir: str | Path | None = None,
        provider: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        session_path: str | None = None,
        session_name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        price_overrides: dict | None = None,
        estimate: bool = True,
        timeout: float = 10.0,
        max_queue: int = 10000,
        max_logged_bytes: int = MAX_LOGGED_BYTES,
    ) -> None:
        if db_path is not None and endpoint is not None:
            raise ValueError("give db_path or endpoint, not both")
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.db_path = None if endpoint else Path(db_path).expanduser() if db_path else config.db_path()
        self.api_key = api_key
        self.data_dir = data_dir
        self.provider = provider.lower() if provider else None
        self.price_overrides = price_overrides
        self.estimate = estimate
        self.timeout = timeout
        self.max_logged_bytes = max_logged_bytes
        self.counters = {"logged": 0, "sent": 0, "failed": 0, "dropped": 0, "internal_errors": 0}
        self._lock = threading.Lock()
        self._meta = MetaContext(id(self), meta_pairs(user_id, session_id, session_path, session_name, properties))
        self._closed = False
        self._sink: HttpSender | StoreSink = HttpSender(self, max_queue) if self.endpoint else StoreSink(self)

    # -- public API ------------------------------------------------------------------------------
    def instrument(self, client: Any) -> Any:
        """Wrap an openai / anthropic client (sync or async), or an httpx / httpx2 client, in place."""
        return instrument(client, self)

    @contextlib.contextmanager
    def meta(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        session_path: str | None = None,
        session_name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[None]:
        """Helicone metadata for the calls made inside the block (nests; inner values win)."""
        with self._meta.scope(meta_pairs(user_id, session_id, session_path, session_name, properties, headers)):
            yield

    def stats(self) -> dict[str, int]:
        """The logger's counters plus, in database mode, the log store's (prefixed ``store_``)."""
        with self._lock:
            out = dict(self.counters)
        out.update(self._sink.stats())
        return out

    @property
    def last_request_id(self) -> str | None:
        """The Helicone id of the last call started in this thread / task context."""
        return self._meta.last_id

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every call finished so far is written / sent. True when all were handled."""
        return self._sink.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._sink.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the transports and tees (transport.py, tee.py) and the sinks ---------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def _finish(self, call: Call, error: BaseException | None = None) -> None:
        """End `call` (once) and hand it over. Never raises: this runs on the app's calls."""
        try:
            if call.end(error):
                self._emit(call)
        except Exception:
            self._count("internal_errors")
            logger.exception("helicone async logger: could not hand over a finished call")

    def _emit(self, call: Call) -> None:
        """Hand a finished call over. Never blocks, never raises."""
        try:
            if self._closed:
                self._count("dropped")
                return
            self._sink.submit(call)
        except Exception:
            self._count("internal_errors")
            logger.exception("helicone async logger: could not queue a call")
