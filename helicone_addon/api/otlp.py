"""OTLP/HTTP trace ingestion routes: OpenLLMetry / OpenTelemetry GenAI exporters log here.

    POST /v1/trace/log-python, /v1/trace/log, /v1/traces   ExportTraceServiceRequest
    POST /v1/logs                                          ExportLogsServiceRequest (GenAI content events)

Bodies are protobuf or JSON (by Content-Type), gzip or not. A readable body is answered at once,
200 with an empty export response in the request's encoding; its spans become rows afterwards, on
one ingest thread (in arrival order, off the request's way, so an exporter that sends span by span
never waits for the previous span's processing): helicone_addon/otlp's `TraceBook`, then one
`row_job` per call through the log writer. A body that
cannot be read answers 400 (415 for an unsupported Content-Type / Content-Encoding)
``{"code": 3, "message": ..., "error": ...}`` naming the problem; nothing of it is logged.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import otlp
from .backend import Backend
from .web import logger, read_body

TRACE_PATHS = ("/v1/trace/log-python", "/v1/trace/log", "/v1/traces")
LOGS_PATH = "/v1/logs"


def _reply_error(status: int, message: str) -> Response:
    body = {"code": 3 if status == 400 else 2, "message": message, "error": message}  # google.rpc.Status + ours
    return Response(json.dumps(body).encode(), status, media_type="application/json")


@dataclass
class Ingest:
    """The app's TraceBook and the one thread that feeds it."""

    book: otlp.TraceBook = field(default_factory=otlp.TraceBook)
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "helicone-otlp"))


def ingest_of(request: Request) -> Ingest:
    """Made on first use (only the event loop's thread runs this, so no race)."""
    state = request.app.state
    ing = getattr(state, "otlp_ingest", None)
    if ing is None:
        ing = state.otlp_ingest = Ingest()
    return ing


def _submit(backend: Backend, calls: list) -> None:
    if backend.submit is None:
        logger.error("helicone api: OTLP: no log store to write %d call(s) to", len(calls))
        return
    overrides, estimate = backend.price_overrides(), backend.estimate
    for state, call in calls:
        backend.submit(otlp.row_job(state, call, price_overrides=overrides, estimate=estimate))


def _ingest_spans(backend: Backend, b: otlp.TraceBook, msg) -> None:
    try:
        _submit(backend, b.add_spans(otlp.spans(msg)))
    except Exception:  # a bug here must not go unseen, nor take the server down
        logger.exception("helicone api: OTLP spans could not be logged")


def _ingest_events(backend: Backend, b: otlp.TraceBook, msg) -> None:
    try:
        _submit(backend, b.add_events(otlp.log_events(msg)))
    except Exception:
        logger.exception("helicone api: OTLP log events could not be logged")


async def _read(request: Request, decode) -> tuple[object, str]:
    ctype = request.headers.get("content-type")
    media = otlp.media_type(ctype, required=True)
    raw = await read_body(request)
    if raw is None:
        raise otlp.OtlpError("Payload too large", 413)
    msg = await run_in_threadpool(decode, raw, ctype, request.headers.get("content-encoding"))
    return msg, media or otlp.PROTOBUF


async def _export(request: Request, signal: str, decode, ingest) -> Response:
    """An OTLP/HTTP export request: decoded, answered at once, its contents logged on the worker."""
    try:
        msg, media = await _read(request, decode)
    except otlp.OtlpError as e:
        return _reply_error(e.status, e.message)
    except Exception as e:  # a bug: answered and logged, never a dropped connection
        logger.exception("helicone api: OTLP %s body could not be read", signal)
        return _reply_error(500, f"Internal error: {e}")
    ing = ingest_of(request)
    ing.worker.submit(ingest, request.app.state.backend, ing.book, msg)
    body, ctype = otlp.empty_response(signal, media)
    return Response(body, 200, media_type=ctype)


async def traces(request: Request) -> Response:
    return await _export(request, "traces", otlp.decode_traces, _ingest_spans)


async def logs(request: Request) -> Response:
    return await _export(request, "logs", otlp.decode_logs, _ingest_events)


ROUTES = [*(Route(p, traces, methods=["POST"]) for p in TRACE_PATHS), Route(LOGS_PATH, logs, methods=["POST"])]
