"""`helicone-addon logs` (the latest calls, like `llm logs`) and `logs path` (the database's path).

A call's prompt and answer come from render.py, the one content→text renderer."""

from __future__ import annotations

import argparse
import json
import sys

from .. import render, reports
from .common import CLIError, add_db_args, add_filter_args, add_format_args, command, filters_from, open_db, resolve_db_path
from .output import fmt_int, fmt_ms, fmt_usd, write_json


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
    prompt = render.prompt_text(r.get("request_body"))
    answer = render.response_text(r.get("api"), r.get("response_body"), status=r.get("status"))
    lines += ["", "## Prompt", "", _truncate(prompt, truncate) or "(not logged)"]
    lines += ["", "## Response", "", _truncate(answer, truncate) or "(not logged)"]
    if usage:
        lines += ["", "## Token usage", "", _usage_line(r)]
    return "\n".join(lines) + "\n"


def format_log_short(r: dict, truncate: int = 80) -> str:
    prompt = " ".join(render.prompt_text(r.get("request_body")).split())
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


@command
def cmd_logs(args: argparse.Namespace) -> int:
    """Show the latest calls, like `llm logs`."""
    filters = filters_from(args)
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


@command
def cmd_logs_path(args: argparse.Namespace) -> int:
    """Print the path of the log database."""
    print(resolve_db_path(args))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_filter_args(p)
    add_format_args(p, csv_ok=False)
    add_db_args(p)
    p.set_defaults(func=cmd_logs)
    sub = p.add_subparsers(dest="logs_command", metavar="{path}")
    pp = sub.add_parser("path", help="print the path of the log database")
    add_db_args(pp, suppress=True)
    pp.set_defaults(func=cmd_logs_path)
