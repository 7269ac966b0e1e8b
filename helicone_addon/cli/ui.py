"""`helicone-addon ui`: serve the web view (helicone_addon/ui) of a local log, read-only, on
127.0.0.1, behind the local API's token."""

from __future__ import annotations

import argparse
import sys

from .common import CLIError, add_db_args, command, open_db, resolve_db_path

DEFAULT_UI_PORT = 8001


@command
def cmd_ui(args: argparse.Namespace) -> int:
    """Browse the log in the web view (read-only, on 127.0.0.1, behind the local API's token)."""
    if not 0 <= args.port <= 65535:
        raise CLIError(f"bad port {args.port}", 2)
    from ..fleet import is_postgres_url

    if is_postgres_url(getattr(args, "db", None)):
        raise CLIError("ui browses a local SQLite log; read the fleet's log with report, logs or sessions --db", 2)
    open_db(args).close()  # exists, is a log, migrations (the text index) applied; then read-only
    path = resolve_db_path(args).resolve()
    try:
        from ..ui import serve
    except ImportError as e:
        raise CLIError(f"the web view needs the 'ui' extra ({e.name} missing): pip install 'helicone-addon[ui]'") from None
    from starlette.middleware import Middleware

    from .. import security
    from ..ui import guard

    token = security.ensure_token(getattr(args, "data_dir", None))
    guard.configure(token, "127.0.0.1")
    print(f"Serving {path} read-only on\n    http://127.0.0.1:{args.port}/?token={token}", file=sys.stderr, flush=True)
    try:
        serve(path, "127.0.0.1", args.port, open_browser=args.open, middleware=[Middleware(guard.Guard)])
    except KeyboardInterrupt:  # Ctrl-C is how the server is stopped
        pass
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui",
        help="browse the log in the web view (needs the 'ui' extra)",
        description="Serve the web view of the log, read-only, on 127.0.0.1: overview, requests, calls, sessions. "
        "It needs the local API's token (<data dir>/api-token): open the URL it prints, which carries it.",
    )
    p.add_argument("--port", "-p", type=int, default=DEFAULT_UI_PORT, help=f"port (default {DEFAULT_UI_PORT})")
    p.add_argument("--open", "-o", action="store_true", help="open a browser")
    add_db_args(p)
    p.set_defaults(func=cmd_ui)
