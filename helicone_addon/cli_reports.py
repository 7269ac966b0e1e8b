"""Subcommands that read the log: `report`, `logs`, `sessions` and `ui`.

`register(subparsers)` adds them to the top-level parser of helicone_addon.cli; `main(argv)` runs
them on their own (`python -m helicone_addon.cli_reports report --by model`). Each handler takes the
parsed args and returns an exit code: 0 ok, 1 runtime problem (no database, unknown session, web view
missing), 2 bad arguments (unknown group-by, malformed filter).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from . import config, render, reports
from .reports import Filters, ReportError

DEFAULT_UI_PORT = 8001


class CLIError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# argument plumbing


def _add_db_args(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--db", metavar="PATH", default=default,
                   help="log database (default: <data dir>/helicone.db), or postgresql://... for the fleet's log")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="data directory (default: $HELICONE_ADDON_DATA_DIR or ~/.helicone-addon)",
    )


def _add_filter_args(p: argparse.ArgumentParser, model_short: bool = True) -> None:
    g = p.add_argument_group("filters (repeat a filter to OR its values; different filters are AND-ed)")
    g.add_argument("--since", metavar="WHEN", help="from this time on: 2025-05-01, 2025-05-01T12:00, 7d, 12h, 30m, today")
    g.add_argument("--until", metavar="WHEN", help="before this time (a bare date includes that day)")
    g.add_argument("--user", action="append", default=[], metavar="ID", help="user id")
    model_flags = ["-m", "--model"] if model_short else ["--model"]
    g.add_argument(*model_flags, dest="model", action="append", default=[], metavar="MODEL", help="model (glob allowed: 'gpt-4o*')")
    g.add_argument("--provider", action="append", default=[], metavar="NAME", help="provider (openai, anthropic, ...)")
    g.add_argument("--session", action="append", default=[], metavar="ID", help="session id")
    g.add_argument("--property", action="append", default=[], metavar="KEY=VALUE", help="custom property (Helicone-Property-*)")
    g.add_argument("--status", action="append", default=[], metavar="S", help=reports.STATUS_HELP)


def _filters(args: argparse.Namespace) -> Filters:
    try:
        return Filters(
            since=reports.parse_time(args.since, where="--since") if args.since else None,
            until=reports.parse_time(args.until, end=True, where="--until") if args.until else None,
            users=list(args.user),
            models=list(args.model),
            providers=list(args.provider),
            sessions=list(args.session),
            properties=[reports.parse_property(p) for p in args.property],
            statuses=[reports.parse_status(s) for s in args.status],
        )
    except ReportError as e:
        raise CLIError(str(e), 2) from None


def resolve_db_path(args: argparse.Namespace) -> Path:
    return config.db_path(getattr(args, "data_dir", None), getattr(args, "db", None))


def open_db(args: argparse.Namespace, *, filters: Filters | None = None, bodies: bool = True,
            newest: int | None = None) -> sqlite_utils.Database:
    """Open an existing log and apply pending migrations (as `llm logs` does): the FTS index is one.

    `--db postgresql://...` reads the fleet's log instead: an in-memory copy of the part that
    `filters` selects (see helicone_addon.fleet.pgread); `bodies` and `newest` only narrow it."""
    from .fleet import is_postgres_url

    if is_postgres_url(getattr(args, "db", None)):
        from .fleet.pgread import FleetReadError, open_report_db

        try:
            return open_report_db(args.db, filters=filters, bodies=bodies, newest=newest)
        except FleetReadError as e:
            raise CLIError(str(e)) from None
    path = resolve_db_path(args)
    if not path.is_file():
        raise CLIError(f"no log database at {path} (run the proxy first, or pass --db / --data-dir)")
    db = sqlite_utils.Database(path)
    if not db["requests"].exists():
        raise CLIError(f"{path} has no 'requests' table: is it a helicone-addon log?")
    from .store import migrations

    try:
        migrations.migrate(db)
    except Exception as e:  # a read-only file, a locked db: reading still works without FTS
        print(f"warning: could not apply migrations to {path}: {e}", file=sys.stderr)
    return db


def _run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CLIError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.code
        except ReportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `... | head`
            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            except OSError:
                pass
            return 0

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


# ---------------------------------------------------------------------------------------------
# output


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("HELICONE_ADDON_PLAIN") in (None, "", "0")


def fmt_int(v: Any) -> str:
    return "" if v is None else f"{int(v):,}"


def fmt_usd(v: Any) -> str:
    if v is None:
        return ""
    if v == 0:
        return "$0"
    return f"${v:,.4f}" if abs(v) >= 0.01 else f"${v:.6f}"


def fmt_ms(v: Any) -> str:
    return "" if v is None else f"{v:,.0f}"


def fmt_key(v: Any) -> str:
    return "(none)" if v is None or v == "" else str(v)


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[bool] | None = None,
    footer: Sequence[str] | None = None,
    title: str | None = None,
    out=None,
) -> None:
    """A readable table: rich when installed, else plain aligned text."""
    out = out or sys.stdout
    right = list(right or [False] * len(headers))
    if rich_available():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, show_footer=footer is not None, header_style="bold", title_justify="left")
        for i, h in enumerate(headers):
            table.add_column(
                h,
                justify="right" if right[i] else "left",
                footer=Text(footer[i]) if footer is not None else "",
                no_wrap=right[i],
            )
        for row in rows:
            table.add_row(*[Text(c) for c in row])
        is_tty = hasattr(out, "isatty") and out.isatty()
        console = Console(file=out, width=None if is_tty else 400, soft_wrap=False, highlight=False)
        console.print(table)
        return
    all_rows = [list(headers), *[list(r) for r in rows]]
    if footer is not None:
        all_rows.append(list(footer))
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    if title:
        print(title, file=out)
    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)
    if footer is not None:
        print("  ".join("-" * w for w in widths), file=out)
        print(line(footer), file=out)


def write_json(rows: Any, out=None) -> None:
    out = out or sys.stdout
    json.dump(rows, out, indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def write_csv(rows: Sequence[dict], columns: Sequence[str], out=None) -> None:
    out = out or sys.stdout
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    out.write(buf.getvalue())


def _add_format_args(p: argparse.ArgumentParser, csv_ok: bool = True) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="output JSON")
    if csv_ok:
        fmt.add_argument("--csv", action="store_true", help="output CSV")


# ---------------------------------------------------------------------------------------------
# report

REPORT_TABLE = [
    # (metric, header, formatter)
    ("calls", "calls", fmt_int),
    ("errors", "errors", fmt_int),
    ("cache_hits", "cache hits", fmt_int),
    ("prompt_tokens", "prompt tok", fmt_int),
    ("completion_tokens", "compl. tok", fmt_int),
    ("total_tokens", "total tok", fmt_int),
    ("cost_usd", "cost", fmt_usd),
    ("cache_saved_usd", "cache saved", fmt_usd),
    ("latency_p50_ms", "p50 ms", fmt_ms),
    ("latency_p95_ms", "p95 ms", fmt_ms),
]


@_run
def cmd_report(args: argparse.Namespace) -> int:
    """Tokens, cost, calls, errors, cache hits and latency, grouped."""
    try:
        groups = reports.parse_group_by(args.by or ["model"])
    except ReportError as e:
        raise CLIError(str(e), 2) from None
    filters = _filters(args)
    db = open_db(args, filters=filters, bodies=False)
    rows = reports.report(db, groups, filters, sort=args.sort)
    columns = [*groups, *reports.METRICS]
    if args.json:
        write_json(rows)
        return 0
    if args.csv:
        write_csv(rows, columns)
        return 0
    if not rows:
        print("No calls match.", file=sys.stderr)
        return 0
    total = reports.report(db, [], filters)[0]
    headers = [*groups, *[h for _, h, _ in REPORT_TABLE]]
    body = [[fmt_key(r[g]) for g in groups] + [f(r[m]) for m, _, f in REPORT_TABLE] for r in rows]
    footer = None
    if groups:
        footer = ["TOTAL"] + [""] * (len(groups) - 1) + [f(total[m]) for m, _, f in REPORT_TABLE]
    right = [False] * len(groups) + [True] * len(REPORT_TABLE)
    render_table(headers, body, right=right, footer=footer)
    if total.get("unpriced"):
        print(f"note: {total['unpriced']} successful call(s) have no known price; cost is a lower bound.", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# logs: prompt / response text


def prompt_text(body: str | None) -> str:
    """Human-readable prompt of a logged request body (render.py; the raw body otherwise)."""
    return render.prompt_text(body)


def response_text(body: str | None, api: str | None = None, status: int | None = None) -> str:
    """Human-readable answer of a logged response body: JSON or a stream joined (render.py)."""
    return render.response_text(api, body, status=status)


def _truncate(text: str, n: int | None) -> str:
    if n and len(text) > n:
        return text[:n].rstrip() + "…"
    return text


def _props(row: dict) -> str:
    raw = row.get("properties")
    if not raw:
        return ""
    try:
        d = json.loads(raw)
        return ", ".join(f"{k}={v}" for k, v in d.items())
    except (ValueError, AttributeError):
        return str(raw)


def _usage_line(r: dict) -> str:
    bits = [f"prompt {fmt_int(r.get('prompt_tokens')) or '?'}"]
    if r.get("cached_tokens"):
        bits[-1] += f" (cached {fmt_int(r['cached_tokens'])})"
    if r.get("cache_write_tokens"):
        bits[-1] += f" (cache write {fmt_int(r['cache_write_tokens'])})"
    bits.append(f"completion {fmt_int(r.get('completion_tokens')) or '?'}")
    if r.get("reasoning_tokens"):
        bits[-1] += f" (reasoning {fmt_int(r['reasoning_tokens'])})"
    bits.append(f"total {fmt_int(r.get('total_tokens')) or '?'}")
    if r.get("usage_source") == "estimated":
        bits.append("estimated")
    return " · ".join(bits)


def _status_str(r: dict) -> str:
    return "no response" if r.get("status") is None else str(r["status"])


def format_log_entry(r: dict, *, usage: bool = False, truncate: int | None = None) -> str:
    head = [
        f"**{r.get('model') or '?'}** ({r.get('provider') or '?'})",
        f"status {_status_str(r)}",
    ]
    if r.get("latency_ms") is not None:
        head.append(f"{fmt_ms(r['latency_ms'])} ms")
    if r.get("cost_usd") is not None:
        head.append(fmt_usd(r["cost_usd"]))
    if r.get("cache_hit"):
        head.append(f"cache hit (saved {fmt_usd(r.get('cache_saved_usd')) or '?'})")
    if r.get("retries"):
        head.append(f"retries {r['retries']}")
    lines = [f"# {r.get('created_at')}    id: {r.get('id')}", "", "Model: " + " · ".join(head)]
    who = []
    if r.get("user_id"):
        who.append(f"User: {r['user_id']}")
    if r.get("session_id"):
        s = f"Session: {r['session_id']}"
        if r.get("session_name"):
            s += f" ({r['session_name']})"
        if r.get("session_path"):
            s += f" {r['session_path']}"
        who.append(s)
    if _props(r):
        who.append(f"Properties: {_props(r)}")
    if who:
        lines.append(" · ".join(who))
    if r.get("error"):
        lines.append(f"Error: {r['error']}")
    lines += ["", "## Prompt", "", _truncate(prompt_text(r.get("request_body")), truncate) or "(not logged)"]
    lines += ["", "## Response", "", _truncate(response_text(r.get("response_body"), r.get("api"), r.get("status")), truncate) or "(not logged)"]
    if usage:
        lines += ["", "## Token usage", "", _usage_line(r)]
    return "\n".join(lines) + "\n"


def format_log_short(r: dict, truncate: int = 80) -> str:
    prompt = " ".join(prompt_text(r.get("request_body")).split())
    bits = [
        r.get("created_at") or "",
        (r.get("id") or "")[:8],
        r.get("provider") or "?",
        r.get("model") or "?",
        _status_str(r),
        f"{fmt_ms(r.get('latency_ms'))}ms" if r.get("latency_ms") is not None else "-",
        f"{fmt_int(r.get('total_tokens'))}tok" if r.get("total_tokens") is not None else "-",
        fmt_usd(r.get("cost_usd")) or "-",
    ]
    if r.get("cache_hit"):
        bits.append("HIT")
    return "  ".join(bits) + "  " + json.dumps(_truncate(prompt, truncate), ensure_ascii=False)


@_run
def cmd_logs(args: argparse.Namespace) -> int:
    """Show the latest calls, like `llm logs`."""
    filters = _filters(args)
    if args.count is not None and args.count < 0:
        raise CLIError("-n must be >= 0 (0 shows all)", 2)
    db = open_db(args, filters=filters, newest=None if args.query else args.count)
    rows = reports.logs(db, filters, limit=args.count, query=args.query)
    if args.json:
        for r in rows:
            for k in ("properties",):
                if isinstance(r.get(k), str):
                    try:
                        r[k] = json.loads(r[k])
                    except ValueError:
                        pass
        write_json(rows)
        return 0
    if not rows:
        print("No calls match.", file=sys.stderr)
        return 0
    if args.short:
        for r in rows:
            print(format_log_short(r, truncate=args.truncate or 80))
        return 0
    for i, r in enumerate(rows):
        if i:
            print()
        sys.stdout.write(format_log_entry(r, usage=args.usage, truncate=args.truncate))
    return 0


@_run
def cmd_logs_path(args: argparse.Namespace) -> int:
    """Print the path of the log database."""
    print(resolve_db_path(args))
    return 0


# ---------------------------------------------------------------------------------------------
# sessions


@_run
def cmd_sessions(args: argparse.Namespace) -> int:
    """List sessions, or show one session as a tree by session_path."""
    filters = _filters(args)
    db = open_db(args, filters=filters, bodies=False)
    if args.session_id:
        return _show_session(db, args, filters)
    rows = reports.sessions(db, filters, limit=args.count or None)
    if args.json:
        write_json(rows)
        return 0
    if args.csv:
        write_csv(rows, ["session_id", "session_name", "calls", "errors", "total_tokens", "cost_usd", "first_at", "last_at"])
        return 0
    if not rows:
        print("No sessions match.", file=sys.stderr)
        return 0
    headers = ["session", "name", "calls", "errors", "tokens", "cost", "first", "last"]
    body = [
        [
            fmt_key(r["session_id"]),
            r["session_name"] or "",
            fmt_int(r["calls"]),
            fmt_int(r["errors"]),
            fmt_int(r["total_tokens"]),
            fmt_usd(r["cost_usd"]),
            (r["first_at"] or "")[:19].replace("T", " "),
            (r["last_at"] or "")[:19].replace("T", " "),
        ]
        for r in rows
    ]
    render_table(headers, body, right=[False, False, True, True, True, True, False, False])
    return 0


def _show_session(db: sqlite_utils.Database, args: argparse.Namespace, filters: Filters) -> int:
    sid = args.session_id
    nodes = reports.session_tree(db, sid, filters)
    if not nodes:
        raise CLIError(f"no calls found for session {sid!r}")
    calls = reports.session_calls(db, sid, filters) if (args.calls or args.json) else []
    if args.json:
        write_json({"session_id": sid, "nodes": nodes, "calls": calls})
        return 0
    if args.csv:
        write_csv(nodes, ["path", "depth", "own_calls", "calls", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms", "first_at", "last_at"])
        return 0
    name = _session_name(db, sid)
    title = f"Session {sid}" + (f" — {name}" if name else "")
    headers = ["path", "calls", "errors", "prompt tok", "compl. tok", "total tok", "cost", "latency ms"]
    body: list[list[str]] = []
    labels = render.tree_labels(nodes)
    by_path: dict[str, list[dict]] = {}
    for c in calls:
        by_path.setdefault(c["path"], []).append(c)
    for i, (label, n) in enumerate(zip(labels, nodes)):
        calls_cell = fmt_int(n["calls"]) + (f" ({n['own_calls']} own)" if n["own_calls"] and n["own_calls"] != n["calls"] else "")
        body.append(
            [
                label,
                calls_cell,
                fmt_int(n["errors"]) if n["errors"] else "",
                fmt_int(n["prompt_tokens"]),
                fmt_int(n["completion_tokens"]),
                fmt_int(n["total_tokens"]),
                fmt_usd(n["cost_usd"]),
                fmt_ms(n["latency_ms"]),
            ]
        )
        own = by_path.get(n["path"], [])
        if own:
            prefix = render.call_prefix(nodes, i)
        for c in own:
            body.append(
                [
                    f"{prefix}· {c['created_at'][11:19]} {c['model'] or '?'} {'no response' if c['status'] is None else c['status']}",
                    "",
                    "✗" if c["is_error"] else "",
                    fmt_int(c["prompt_tokens"]),
                    fmt_int(c["completion_tokens"]),
                    fmt_int(c["total_tokens"]),
                    fmt_usd(c["cost_usd"]),
                    fmt_ms(c["latency_ms"]),
                ]
            )
    render_table(headers, body, right=[False] + [True] * 7, title=title)
    return 0


def _session_name(db: sqlite_utils.Database, sid: str) -> str | None:
    row = db.execute(
        "SELECT session_name FROM requests WHERE session_id = ? AND coalesce(session_name, '') != '' "
        "ORDER BY created_at DESC LIMIT 1",
        [sid],
    ).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------
# ui (the web view, helicone_addon/ui)


@_run
def cmd_ui(args: argparse.Namespace) -> int:
    """Browse the log in the web view (read-only, on 127.0.0.1, behind the local API's token)."""
    if not 0 <= args.port <= 65535:
        raise CLIError(f"bad port {args.port}", 2)
    from .fleet import is_postgres_url

    if is_postgres_url(getattr(args, "db", None)):
        raise CLIError("ui browses a local SQLite log; read the fleet's log with report, logs or sessions --db", 2)
    open_db(args).close()  # exists, is a log, migrations (the text index) applied; then read-only
    path = resolve_db_path(args).resolve()
    try:
        from .ui import serve
    except ImportError as e:
        raise CLIError(f"the web view needs the 'ui' extra ({e.name} missing): pip install 'helicone-addon[ui]'") from None
    from starlette.middleware import Middleware

    from . import security
    from .ui import guard

    token = security.ensure_token(getattr(args, "data_dir", None))
    guard.configure(token, "127.0.0.1")
    print(f"Serving {path} read-only on\n    http://127.0.0.1:{args.port}/?token={token}", file=sys.stderr, flush=True)
    try:
        serve(path, "127.0.0.1", args.port, open_browser=args.open, middleware=[Middleware(guard.Guard)])
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# registration


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add report, logs (and logs path), sessions and ui to a top-level parser's subparsers."""
    p = subparsers.add_parser(
        "report",
        help="tokens, cost, calls, errors, cache and latency, grouped",
        description="Aggregate the log: calls, errors, cache hits and savings, tokens, cost and "
        "latency p50/p95 (nearest rank), grouped by one or more keys.",
    )
    p.add_argument(
        "--by", "-b", action="append", metavar="KEY",
        help=f"group by {reports.GROUP_HELP}; repeat or comma-separate for several (default: model; 'none' for totals only)",
    )  # fmt: skip
    p.add_argument("--sort", metavar="METRIC", help="sort descending by a metric (calls, cost_usd, total_tokens, latency_p95_ms, ...)")
    _add_filter_args(p)
    _add_format_args(p)
    _add_db_args(p)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "logs",
        help="show the latest calls (like llm logs); 'logs path' prints the database path",
        description="Show the latest logged calls, oldest first. Full-text search with -q.",
    )
    p.add_argument("-n", "--count", type=int, default=3, metavar="N", help="how many calls (default 3; 0 for all)")
    p.add_argument("-q", "--query", metavar="TEXT", help="full-text search in prompts and responses")
    p.add_argument("-u", "--usage", action="store_true", help="include token usage")
    p.add_argument("-s", "--short", action="store_true", help="one line per call")
    p.add_argument("-t", "--truncate", type=int, nargs="?", const=200, metavar="CHARS", help="truncate prompts and responses (default 200)")
    _add_filter_args(p)
    _add_format_args(p, csv_ok=False)
    _add_db_args(p)
    p.set_defaults(func=cmd_logs)
    sub = p.add_subparsers(dest="logs_command", metavar="{path}")
    pp = sub.add_parser("path", help="print the path of the log database")
    _add_db_args(pp, suppress=True)
    pp.set_defaults(func=cmd_logs_path)

    p = subparsers.add_parser(
        "sessions",
        help="list sessions, or show one as a tree by session path",
        description="Without ID: sessions with their calls, cost and first/last time. With ID: that "
        "session's calls as a tree by Helicone-Session-Path; node totals include children.",
    )
    p.add_argument("session_id", nargs="?", metavar="ID", help="session id to show")
    p.add_argument("-n", "--count", type=int, default=20, metavar="N", help="how many sessions to list (default 20; 0 for all)")
    p.add_argument("--calls", action="store_true", help="with ID: list each call under its node")
    _add_filter_args(p)
    _add_format_args(p)
    _add_db_args(p)
    p.set_defaults(func=cmd_sessions)

    p = subparsers.add_parser(
        "ui",
        help="browse the log in the web view (needs the 'ui' extra)",
        description="Serve the web view of the log, read-only, on 127.0.0.1: overview, requests, calls, sessions. "
        "It needs the local API's token (<data dir>/api-token): open the URL it prints, which carries it.",
    )
    p.add_argument("--port", "-p", type=int, default=DEFAULT_UI_PORT, help=f"port (default {DEFAULT_UI_PORT})")
    p.add_argument("--open", "-o", action="store_true", help="open a browser")
    _add_db_args(p)
    p.set_defaults(func=cmd_ui)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helicone-addon", description="Analytics over the helicone-addon log.")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
