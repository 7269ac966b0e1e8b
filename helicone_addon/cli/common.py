"""What every command that reads the log shares: its options (--db/--data-dir, the filters,
--json/--csv), the Filters they make, opening the log, and `command`, the wrapper that turns a
handler's errors into exit codes: 0 ok, 1 runtime problem (no database, unknown session, web view
missing), 2 bad arguments (unknown group-by, malformed filter)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from .. import config, reports
from ..reports import Filters, ReportError


class CLIError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_db_args(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--db", metavar="PATH", default=default,
                   help="log database (default: <data dir>/helicone.db), or postgresql://... for the fleet's log")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="data directory (default: $HELICONE_ADDON_DATA_DIR or ~/.helicone-addon)",
    )


def add_filter_args(p: argparse.ArgumentParser, model_short: bool = True) -> None:
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


def add_format_args(p: argparse.ArgumentParser, csv_ok: bool = True) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="output JSON")
    if csv_ok:
        fmt.add_argument("--csv", action="store_true", help="output CSV")


def filters_from(args: argparse.Namespace) -> Filters:
    """The Filters of the options add_filter_args added."""
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
    from ..fleet import is_postgres_url

    if is_postgres_url(getattr(args, "db", None)):
        from ..fleet.pgread import FleetReadError, open_report_db

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
    from ..store import migrations

    try:
        migrations.migrate(db)
    except Exception as e:  # a read-only file, a locked db: reading still works without FTS; say so
        print(f"warning: could not apply migrations to {path}: {e}", file=sys.stderr)
    return db


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: a CLIError or ReportError becomes `error: ...` on stderr and its exit code;
    a closed stdout (`... | head`) ends quietly with 0."""

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
