"""`helicone-addon`: run | web | env | report | logs | sessions | ui | export | rerun.

`main` sends run and web to mitmproxy (proxy.py) before argparse sees their arguments; every other
command is a subparser that its module adds with `register(subparsers)`: env.py, report.py,
logs.py (logs, logs path), sessions.py, ui.py, and helicone_addon/export/cli.py (export, rerun).
The log-reading commands share common.py (options, opening the log, exit codes) and output.py.
"""

from __future__ import annotations

import argparse
import sys

from . import env, proxy
from .env import env_exports

__all__ = ["build_parser", "env_exports", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every command; imported on demand, off the proxy's start path."""
    from ..export import cli as export_cli
    from . import logs, report, sessions, ui

    parser = argparse.ArgumentParser(
        prog="helicone-addon",
        description="Local LLM observability proxy. 'run'/'web' take any mitmdump/mitmweb options.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (proxy, env, report, logs, sessions, ui, export_cli):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in proxy.COMMANDS:
        if from_command_line:
            proxy.optimized_reexec(argv)
        return proxy.launch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
