"""The local Helicone API: feedback, scores, properties, query, and async log ingestion.

Started with the proxy on its own loopback port (option ``helicone_api_port``, default 8585), it
speaks Helicone's REST API (routes.py) and the async log endpoints (ingest.py), so code written for
Helicone works against the local log by changing its base URL. Every request passes the door in
guard.py (Host, Origin, token). Modules:

    server.py   ApiServer: the Starlette app, served by uvicorn in its own thread
    guard.py    the Host / Origin / token checks in front of every route
    routes.py   /v1/request/... and /v1/feedback
    ingest.py   the async log routes (the payload format itself is asynclog.py)
    otlp.py     OTLP/HTTP traces and GenAI log events (the decoding is helicone_addon/otlp)
    query.py    the query body (sort, paging) around the filter compiler (filters.py)
    records.py  rows -> HeliconeRequest records, derived from columns.py
    backend.py  the database and log writer the routes act on
    web.py      replies, errors and request bodies shared by the routes
"""

from .server import ApiServer

__all__ = ["ApiServer"]
