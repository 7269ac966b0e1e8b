"""HeliconeAsyncLogger: log openai / anthropic SDK calls from inside the app, off the call's path.

    from helicone_addon.async_logger import HeliconeAsyncLogger

    hlog = HeliconeAsyncLogger()                                  # straight into the SQLite log
    hlog = HeliconeAsyncLogger(endpoint="http://127.0.0.1:8585")  # or to a Helicone-style /v1/log endpoint
    client = hlog.instrument(openai.OpenAI())                     # also anthropic.Anthropic(), Async*, httpx clients

    client.chat.completions.create(..., extra_headers={"Helicone-User-Id": "alice",
                                                       "Helicone-Property-Feature": "search"})
    with hlog.meta(user_id="alice", session_id="s-1", properties={"feature": "search"}):
        client.chat.completions.create(...)
    hlog.last_request_id   # id of the last call logged in this context (for feedback / scores)
    hlog.flush(); hlog.close()

How: ``instrument`` wraps the transport(s) of the client's httpx / httpx2 client (openai >= 3 and
anthropic >= 2 use ``httpx2``; classes are found by duck typing, nothing here imports either). The
wrapper strips ``Helicone-*`` headers before the request leaves, adds ``Helicone-Id`` to the response
headers, and wraps the response byte stream in a tee that copies chunks as the app reads them (no
buffering, no extra await). When the stream is consumed or closed, the finished call is handed over
without blocking: to a ``LogStore`` writer thread (usage, cost and the row are built there by
``record.build_row``, as for a proxied call; ``source='logger'``) or to a sender thread that POSTs
Helicone's async log payload (asynclog.py) to ``endpoint`` (``source='async'`` there). Logging failures
are counted in ``counters`` and logged; they never reach the call.

Modules: ``logger`` (the facade: settings, counters, hand-over), ``transport`` (the httpx wrapping),
``tee`` (the byte-stream tee), ``call`` (the captured call), ``meta`` (Helicone metadata, contextvars),
``store_sink`` (database mode), ``sender`` + ``payload`` (endpoint mode).

This package must not import mitmproxy.
"""

from __future__ import annotations

from .logger import MAX_LOGGED_BYTES, HeliconeAsyncLogger

__all__ = ["MAX_LOGGED_BYTES", "HeliconeAsyncLogger"]
