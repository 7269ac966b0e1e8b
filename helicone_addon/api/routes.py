"""Helicone's REST routes (Jawn's), on the local log:

    POST /v1/request/{id}/feedback   {"rating": bool}                        -> 201 {"data": null, "error": null}
    POST /v1/request/{id}/score      {"scores": {"name": int | bool}}        -> 201
    PUT  /v1/request/{id}/property   {"key": str, "value": str}              -> 200
    GET  /v1/request/{id}[?includeBody=false]                                -> 200 {"data": HeliconeRequest}
    POST /v1/request/query           {filter, limit, offset, sort, ...}      -> 201 {"data": [HeliconeRequest]}
         (also /v1/request/query-clickhouse; POST /v1/request/query-ids {"requestIds": [...]} -> 200)
    POST /v1/feedback                {"helicone-id": id, "rating": bool}     -> 200 (the worker's legacy route)

Each endpoint checks its body here (ApiError 400 with a message) and does its database work in a
worker thread, so neither a slow query nor the wait for a row ever holds the server's event loop.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time

from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..filters import FilterError, json_type
from ..record import iso
from .backend import Backend, request_id
from .query import MAX_LIMIT, query_requests
from .records import placeholders, records_for
from .web import ApiError, endpoint, envelope, json_object, json_reply


def _backend(request: Request) -> Backend:
    return request.app.state.backend


def _now() -> str:
    return iso(time.time())


def _rating(body: dict) -> bool:
    rating = body.get("rating")
    if not isinstance(rating, bool):
        raise ApiError(400, f"'rating' must be true or false, got {json_type(rating)}")
    return rating


def _set_feedback(b: Backend, rid: str, rating: bool) -> None:
    with b.for_request(rid) as conn, conn:
        conn.execute(
            "INSERT OR REPLACE INTO feedback (request_id, rating, created_at) VALUES (?, ?, ?)",
            (rid, int(rating), _now()),
        )


def _request_write(name: str, parse, write):
    """POST /v1/request/{id}/<name>: the body checked by `parse`, then `write(backend, id, value)` off the loop."""

    async def route(request: Request) -> Response:
        rid = request_id(request.path_params["id"])
        value = parse(await json_object(request))
        await run_in_threadpool(write, _backend(request), rid, value)
        return envelope(201)

    route.__name__ = name
    return endpoint()(route)


feedback = _request_write("feedback", _rating, _set_feedback)


@endpoint()
async def legacy_feedback(request: Request) -> Response:
    body = await json_object(request)
    hid = body.get("helicone-id")
    if not isinstance(hid, str):
        raise ApiError(400, "'helicone-id' must be a request id string")
    rating = _rating(body)
    rid = request_id(hid)
    await run_in_threadpool(_set_feedback, _backend(request), rid, rating)
    return json_reply(200, {"message": "Feedback added successfully.", "helicone_id": rid})


def _score_values(body: dict) -> list[tuple[str, int]]:
    scores = body.get("scores")
    if not isinstance(scores, dict) or not scores:
        raise ApiError(400, "'scores' must be a non-empty object of {\"<name>\": integer | boolean}")
    values = []
    for name, v in scores.items():
        if not name:
            raise ApiError(400, "Score names must be non-empty strings")
        if isinstance(v, bool) or (isinstance(v, float) and math.isfinite(v) and v.is_integer()):
            v = int(v)
        elif not isinstance(v, int):
            raise ApiError(
                400,
                f"Score value for key '{name}' must be an integer or a boolean, got {v!r} (floats are not accepted)",
            )
        if not -(2**63) <= v < 2**63:
            raise ApiError(400, f"Score value for key '{name}' is out of range (64-bit integer)")
        values.append((name, v))
    return values


def _set_scores(b: Backend, rid: str, values: list[tuple[str, int]]) -> None:
    with b.for_request(rid) as conn, conn:
        now = _now()
        conn.executemany(
            "INSERT OR REPLACE INTO scores (request_id, name, value, created_at) VALUES (?, ?, ?, ?)",
            [(rid, name, v, now) for name, v in values],
        )


score = _request_write("score", _score_values, _set_scores)


def _set_property(b: Backend, rid: str, key: str, value: str) -> None:
    with b.for_request(rid) as conn, conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO properties (request_id, key, value) VALUES (?, ?, ?)", (rid, key, value))
        cur = conn.execute("SELECT properties FROM requests WHERE id = ?", (rid,)).fetchone()
        try:
            props = json.loads(cur["properties"]) if cur and cur["properties"] else {}
        except ValueError:
            props = {}
        if not isinstance(props, dict):
            props = {}
        props[key] = value
        conn.execute("UPDATE requests SET properties = ? WHERE id = ?", (json.dumps(props), rid))


@endpoint()
async def put_property(request: Request) -> Response:
    rid = request_id(request.path_params["id"])
    body = await json_object(request)
    key, value = body.get("key"), body.get("value")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "'key' must be a non-empty string")
    if not isinstance(value, str):
        raise ApiError(400, f"'value' must be a string, got {json_type(value)}")
    await run_in_threadpool(_set_property, _backend(request), rid, key, value)
    return envelope(200)


def _get(b: Backend, rid: str, include_body: bool) -> dict:
    with b.for_request(rid) as conn:
        rows = conn.execute("SELECT * FROM requests WHERE id = ?", (rid,)).fetchall()
        records = records_for(conn, rows, include_body=include_body)
    if not records:
        raise ApiError(404, "Request not found")
    return records[0]


@endpoint()
async def get_request(request: Request) -> Response:
    rid = request_id(request.path_params["id"])
    include = (request.query_params.get("includeBody") or "true").lower() != "false"
    b = _backend(request)
    return await run_in_threadpool(lambda: envelope(200, _get(b, rid, include)))


def _query(b: Backend, body: dict) -> list[dict]:
    conn = b.connect_for_query()
    try:
        return query_requests(conn, body)
    except FilterError as e:
        raise ApiError(400, str(e)) from None
    finally:
        conn.close()


@endpoint()
async def query(request: Request) -> Response:
    body = await json_object(request)
    b = _backend(request)
    return await run_in_threadpool(lambda: envelope(201, _query(b, body)))  # JSON encoded off the loop too


def _by_ids(b: Backend, ids: list[str]) -> list[dict]:
    conn = b.connect()
    try:
        sql = f"SELECT * FROM requests WHERE id IN ({placeholders(ids)})"
        rows: list[sqlite3.Row] = conn.execute(sql, ids).fetchall()
        by_id = {r["id"]: r for r in rows}
        return records_for(conn, [by_id[i] for i in ids if i in by_id], include_body=True)
    finally:
        conn.close()


@endpoint()
async def query_ids(request: Request) -> Response:
    ids = (await json_object(request)).get("requestIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "'requestIds' must be an array of request id strings")
    if len(ids) > MAX_LIMIT:
        raise ApiError(400, f"'requestIds' may hold at most {MAX_LIMIT} ids")
    clean = [request_id(i) for i in ids]
    b = _backend(request)
    return await run_in_threadpool(lambda: envelope(200, _by_ids(b, clean) if clean else []))


class _RequestIdSegment(Convertor):
    """A path segment naming a request: anything but the query routes' own names, so that
    `GET /v1/request/query` is a 405 (use POST), not a malformed id."""

    regex = r"(?!query(?:-clickhouse|-ids)?$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("request_id", _RequestIdSegment())

ROUTES = [
    Route("/v1/request/query", query, methods=["POST"]),
    Route("/v1/request/query-clickhouse", query, methods=["POST"]),
    Route("/v1/request/query-ids", query_ids, methods=["POST"]),
    Route("/v1/request/{id:request_id}/feedback", feedback, methods=["POST"]),
    Route("/v1/request/{id:request_id}/score", score, methods=["POST"]),
    Route("/v1/request/{id:request_id}/property", put_property, methods=["PUT"]),
    Route("/v1/request/{id:request_id}", get_request, methods=["GET"]),
    Route("/v1/feedback", legacy_feedback, methods=["POST"]),
]
