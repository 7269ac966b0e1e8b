"""Database mode: finished calls go to a `LogStore`, whose writer thread turns each into a row with
``record.build_row``, as for a proxied call (``source='logger'``)."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from .. import headers as hdrs
from .. import providers
from .call import Call

if TYPE_CHECKING:
    from .owner import Owner

logger = logging.getLogger(__package__)


class StoreSink:
    """Writes the calls of `owner` (its db_path, provider, price_overrides, estimate; counts in its counters)."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        try:
            from ..store import LogStore

            self.store = LogStore(owner.db_path).start()
        except Exception as e:  # a broken destination must not break the app
            self.store = None
            logger.error("helicone async logger: cannot open %s (%s); calls will NOT be logged", owner.db_path, e)

    def submit(self, call: Call) -> None:
        """Queue `call` for the writer thread; never blocks."""
        if self.store is None:
            self._owner._count("dropped")
            return
        self.store.submit(lambda: self.row(call))

    def row(self, call: Call) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The row of `call` (on the writer thread)."""
        from ..record import CallState, build_row

        owner = self._owner
        opts = dataclasses.replace(hdrs.parse(call.helicone, strict=False), request_id=call.id)
        host, path, provider = call.route(opts, owner.provider)
        ctype = call.header("content-type") or ""
        streamed = "event-stream" in ctype.lower()
        state = CallState(
            id=call.id,
            started_at=call.started_at,
            source="logger",
            provider=provider,
            api=providers.api_for(provider, path),
            method=call.method,
            host=host,
            path=path,
            url=call.url,
            target_url=call.url,
            options=opts,
            request_headers=call.request_headers,
            request_body=call.request_body,
            status=call.status,
            response_headers=call.response_headers,
            response_body=None if streamed else b"".join(call.chunks) if call.status is not None else None,
            chunks=list(call.chunks) if streamed else None,
            content_encoding=call.header("content-encoding"),
            content_type=ctype or None,
            first_chunk_at=call.first_chunk_at if streamed else None,
            ended_at=call.ended_at,
            streamed=streamed,
            error=call.error,
            cancelled=call.cancelled,
        )
        row, props = build_row(state, price_overrides=owner.price_overrides, estimate=owner.estimate)
        owner._count("logged")
        return row, props

    def flush(self, timeout: float) -> bool:
        return self.store.flush(timeout) if self.store is not None else True

    def close(self, timeout: float) -> None:
        if self.store is not None:
            self.store.close(timeout)
            self.store = None

    def stats(self) -> dict[str, int]:
        """The store's counters, prefixed ``store_``."""
        store = self.store
        return {f"store_{k}": v for k, v in store.counters.items()} if store is not None else {}
