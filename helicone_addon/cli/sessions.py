"""`helicone-addon sessions`: the sessions with their calls and cost, or one session as a tree by
Helicone-Session-Path (the tree's labels come from render.py, as in the web view)."""

from __future__ import annotations

import argparse
import sys

import sqlite_utils

from .. import render, reports
from ..reports import Filters
from .common import CLIError, add_db_args, add_filter_args, add_format_args, command, filters_from, open_db
from .output import fmt_int, fmt_key, fmt_ms, fmt_usd, render_table, write_csv, write_json


@command
def cmd_sessions(args: argparse.Namespace) -> int:
    """List sessions, or show one session as a tree by session_path."""
    filters = filters_from(args)
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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sessions",
        help="list sessions, or show one as a tree by session path",
        description="Without ID: sessions with their calls, cost and first/last time. With ID: that "
        "session's calls as a tree by Helicone-Session-Path; node totals include children.",
    )
    p.add_argument("session_id", nargs="?", metavar="ID", help="session id to show")
    p.add_argument("-n", "--count", type=int, default=20, metavar="N", help="how many sessions to list (default 20; 0 for all)")
    p.add_argument("--calls", action="store_true", help="with ID: list each call under its node")
    add_filter_args(p)
    add_format_args(p)
    add_db_args(p)
    p.set_defaults(func=cmd_sessions)
