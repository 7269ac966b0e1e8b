"""The web view's routes: a small Starlette app over the log, read-only.

    /                   overview: spend, calls, errors, cache, latency and TTFT, per model; charts
    /requests           calls, newest first, with facets and full-text search
    /call/{id}          one call: summary, the conversation as chat, raw request and response
    /sessions           sessions, most recent first
    /session/{id}       a session's tree and timeline
    /static/...         the CSS (shipped in the package: nothing is fetched from elsewhere)

Every page opens its own read-only connection (queries.connect); Starlette runs the handlers in
its thread pool.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import render, reports
from ..columns import DESCRIPTIONS
from . import chart, queries

UI_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# formatting for the templates


def fmt_ms(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v / 1000:,.2f} s" if v >= 10_000 else f"{v:,.0f} ms"


def fmt_int(v: Any) -> str:
    return "" if v is None else f"{int(v):,}"


def fmt_pct(v: float | None) -> str:
    if v is None:
        return ""
    return f"{100 * v:.1f}%" if v < 0.995 or v == 1 else "99.5%+"


def fmt_when(ts: str | None, seconds: bool = True) -> str:
    """'2025-05-03T10:00:02.123Z' -> '2025-05-03 10:00:02' (UTC)."""
    if not ts:
        return ""
    return ts[:19 if seconds else 16].replace("T", " ")


def pretty_json(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def status_class(row: dict[str, Any]) -> str:
    status = row.get("status")
    if status is None or status >= 500:
        return "bad"
    if status >= 400 or row.get("error"):
        return "warn"
    return "ok"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(UI_DIR / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(usd=render.usd, ms=fmt_ms, num=fmt_int, pct=fmt_pct, when=fmt_when, pretty=pretty_json,
                       label=chart.bucket_label)
    env.globals.update(ranges=queries.RANGES, status_class=status_class, tokens=render.tokens, desc=DESCRIPTIONS)
    return env


ENV = _env()


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(request=request, nav=template.split(".")[0], **context)
    return HTMLResponse(html, status_code=status)


@contextmanager
def _db(request: Request) -> Iterator[Any]:
    db = queries.connect(request.app.state.db_path)
    try:
        yield db
    finally:
        db.close()


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    return page(request, "error.html", status=status, message=message)


# ---------------------------------------------------------------------------------------------
# pages


def overview(request: Request) -> Response:
    range_key = request.query_params.get("range") or queries.DEFAULT_RANGE
    if range_key not in queries.RANGES:
        return _error(request, 400, f"unknown range {range_key!r}: use one of {', '.join(queries.RANGES)}")
    with _db(request) as db:
        data = queries.overview(db, range_key)
    s = data["series"]
    cost = chart.top_series({n: v for n, v in s.cost.items() if sum(v.values()) > 0})  # no "$0" series
    colors = chart.colors_for(list(cost))
    charts = {
        "cost": chart.stacked_bars(s.buckets, cost, colors, chart.fmt_usd, hourly=s.hourly,
                                   title="Cost by model"),
        "cost_legend": [(n, colors[n], sum(v.values())) for n, v in cost.items()],
        "calls": chart.stacked_bars(
            s.buckets,
            {"ok": {b: s.calls.get(b, 0) - s.errors.get(b, 0) for b in s.buckets}, "errors": s.errors},
            {"ok": chart.PALETTE[0], "errors": chart.ERROR_COLOR}, chart.fmt_count, hourly=s.hourly,
            title="Calls and errors", width=600, height=240),
        "latency": chart.lines(s.buckets, {"p50": s.p50, "p95": s.p95},
                               {"p50": chart.PALETTE[0], "p95": chart.PALETTE[1]}, chart.fmt_ms,
                               hourly=s.hourly, title="Latency p50 / p95"),
        "colors": {"ok": chart.PALETTE[0], "errors": chart.ERROR_COLOR, "p50": chart.PALETTE[0], "p95": chart.PALETTE[1]},
    }
    return page(request, "overview.html", data=data, charts=charts, range_key=range_key,
                per="hour" if s.hourly else "day")


def _toggle(query: queries.Query, key: str, value: str) -> str:
    """The URL of the requests page with `key=value` added, or removed when it is already set."""
    items = query.items()
    pair = (key, value)
    items = [i for i in items if i != pair] if pair in items else [*items, pair]
    return "/requests" + ("?" + urlencode(items) if items else "")


def requests_list(request: Request) -> Response:
    try:
        query = queries.Query.from_params(request.query_params)
        with _db(request) as db:
            data = queries.requests_page(db, query)
    except reports.ReportError as e:
        return _error(request, 400, str(e))

    def page_url(n: int) -> str:
        return "/requests?" + urlencode([*query.items(), ("page", n)])

    def range_url(key: str) -> str:
        items = [("range", key)] if key != "all" else []
        return "/requests?" + urlencode(items + [i for i in query.items() if i[0] != "range"])

    active = [(k, v, _toggle(query, k, v)) for k, v in query.items() if k not in ("q", "range")]
    return page(request, "requests.html", data=data, query=query, toggle=lambda k, v: _toggle(query, k, str(v)),
                active=active, page_url=page_url, range_url=range_url)


def call_page(request: Request) -> Response:
    rid = request.path_params["id"]
    with _db(request) as db:
        row = queries.call(db, rid)
    if row is None:
        return _error(request, 404, f"no call with id {rid!r} in the log")
    conv = render.render_call(row.get("api"), row.get("request_body"), row.get("response_body"),
                              status=row.get("status"))
    if not conv.answer and row.get("error"):
        conv.answer = [render.Turn("error", "error", row["error"])]
    return page(request, "call.html", row=row, conv=conv)


def sessions_list(request: Request) -> Response:
    range_key = request.query_params.get("range") or "all"
    if range_key not in queries.RANGES:
        return _error(request, 400, f"unknown range {range_key!r}")
    with _db(request) as db:
        rows = queries.sessions(db, range_key)
    return page(request, "sessions.html", rows=rows, range_key=range_key)


def session_page(request: Request) -> Response:
    sid = request.path_params["id"]
    with _db(request) as db:
        data = queries.session(db, sid)
    if data is None:
        return _error(request, 404, f"no calls logged for session {sid!r}")
    ticks = _time_ticks(data["span_ms"])
    return page(request, "session.html", s=data, ticks=ticks)


def _time_ticks(span_ms: float) -> list[tuple[float, str]]:
    """(left %, label) of round time marks across a session's span."""
    top, step, _ = chart.nice_scale(span_ms, ticks=5)
    out = []
    v = 0.0
    while v <= span_ms + 1e-9:
        out.append((100 * v / span_ms, chart.fmt_ms(v, 0)))
        v += step
    return out


def create_app(db_path: str | Path, *, middleware: Sequence[Middleware] = ()) -> Starlette:
    """The web view as an ASGI app over the log at `db_path` (which must exist and be migrated).

    middleware: Starlette middleware wrapped around every route (e.g. an access-token check)."""
    routes = [
        Route("/", overview),
        Route("/requests", requests_list),
        Route("/call/{id}", call_page),
        Route("/sessions", sessions_list),
        Route("/session/{id:path}", session_page),
        Mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=list(middleware))
    app.state.db_path = str(db_path)
    return app
