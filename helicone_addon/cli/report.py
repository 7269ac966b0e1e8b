"""`helicone-addon report`: tokens, cost, calls, errors, cache hits and latency, grouped."""

from __future__ import annotations

import argparse
import sys

from .. import reports
from ..reports import ReportError
from .common import CLIError, add_db_args, add_filter_args, add_format_args, command, filters_from, open_db
from .output import fmt_int, fmt_key, fmt_ms, fmt_usd, render_table, write_csv, write_json

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


@command
def cmd_report(args: argparse.Namespace) -> int:
    """Tokens, cost, calls, errors, cache hits and latency, grouped."""
    try:
        groups = reports.parse_group_by(args.by or ["model"])
    except ReportError as e:
        raise CLIError(str(e), 2) from None
    filters = filters_from(args)
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


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_filter_args(p)
    add_format_args(p)
    add_db_args(p)
    p.set_defaults(func=cmd_report)
