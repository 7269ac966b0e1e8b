"""Subcommands `export` and `rerun`; `register(subparsers)` adds them to helicone-addon's parser."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..cli import output
from ..cli.common import CLIError, add_db_args, add_filter_args, command, filters_from, open_db
from ..cli.env import DEFAULT_PROXY, default_confdir
from . import FORMATS, atomic_output, export_log


@command
def cmd_export(args: argparse.Namespace) -> int:
    """Write the matching calls to a file in one of the export formats."""
    filters = filters_from(args)
    db = open_db(args)
    try:
        with atomic_output(args.output) as out:
            result = export_log(db, args.format, out, filters)
    except OSError as e:
        raise CLIError(f"cannot write {args.output}: {e}") from None
    where = "stdout" if args.output == "-" else args.output
    note = f"; skipped {result.skipped} call(s) the format cannot use" if result.skipped else ""
    print(f"wrote {result.written} call(s) to {where} ({result.format}){note}", file=sys.stderr)
    return 0


def _find_row(db: Any, rid: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM requests WHERE id = ?", [rid]))
    if not rows and len(rid) >= 4:
        rows = list(db.query("SELECT * FROM requests WHERE id LIKE ? ORDER BY created_at LIMIT 2", [rid + "%"]))
        if len(rows) > 1:
            raise CLIError(f"id prefix {rid!r} matches several calls; give more of it", 2)
    if not rows:
        raise CLIError(f"no call with id {rid!r} in the log")
    return rows[0]


def _parse_set_header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name.strip():
        raise CLIError(f"bad --set-header {spec!r}: use NAME=VALUE (NAME= removes the header)", 2)
    return name.strip(), value


def _ca_file(args: argparse.Namespace) -> str | None:
    if args.ca:
        return args.ca
    ca = Path(args.confdir).expanduser() / "mitmproxy-ca-cert.pem"
    return str(ca) if ca.is_file() else None


def _original(row: dict[str, Any]) -> dict[str, Any]:
    from ..columns import USAGE_COLUMNS
    from .jsonl import response_text
    from .rows import header_dict

    ctype = header_dict(row.get("response_headers")).get("content-type")
    return {
        "id": row["id"], "status": row.get("status"), "model": row.get("model"),
        "latency_ms": row.get("latency_ms"), "ttft_ms": row.get("ttft_ms"),
        "usage": {c: row.get(c) for c in USAGE_COLUMNS if c != "cache_write_tokens"},
        "cost_usd": row.get("cost_usd"), "error": row.get("error"),
        "text": response_text(row.get("api"), row.get("response_body"), ctype, row.get("status")),
    }  # fmt: skip


def _side_by_side(old: dict[str, Any], new: dict[str, Any]) -> None:
    def status(d: dict) -> str:
        return "no response" if d.get("status") is None else str(d["status"])

    lines = [
        ("status", status(old), status(new)),
        ("model", old.get("model") or "?", new.get("model") or "?"),
        ("latency ms", output.fmt_ms(old.get("latency_ms")), output.fmt_ms(new.get("latency_ms"))),
        ("time to first token ms", output.fmt_ms(old.get("ttft_ms")), output.fmt_ms(new.get("ttft_ms"))),
    ]
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        lines.append((k.replace("_", " "), output.fmt_int(old["usage"].get(k)), output.fmt_int(new["usage"].get(k))))
    lines.append(("cost", output.fmt_usd(old.get("cost_usd")) or "?", output.fmt_usd(new.get("cost_usd")) or "?"))
    lines.append(("response", " ".join((old.get("text") or "").split())[:200], " ".join((new.get("text") or "").split())[:200]))
    output.render_table(
        ["", f"original {old['id'][:8]}", f"rerun {new['id'][:8]}"],
        [list(x) for x in lines],
        title="Re-run (the new call is logged with rerun_of = the original id)",
    )
    for title, d in (("original", old), ("rerun", new)):
        print(f"\n## {title} response ({d['id']})\n")
        print(d.get("text") or (f"[error] {d['error']}" if d.get("error") else "(empty)"))


@command
def cmd_rerun(args: argparse.Namespace) -> int:
    """Re-send a logged request through the proxy; show the new answer beside the old one."""
    from .rerun import RerunError, build_rerun, send

    sets = [_parse_set_header(s) for s in args.set_header]
    db = open_db(args)
    row = _find_row(db, args.id)
    try:
        req = build_rerun(row, model=args.model, set_headers=sets, env=os.environ, key_env=args.key_env)
    except RerunError as e:
        raise CLIError(str(e), 2) from None
    import httpx

    try:
        res = send(req, proxy=args.proxy, ca_file=_ca_file(args), timeout=args.timeout)
    except httpx.HTTPError as e:
        raise CLIError(f"re-run of {row['id']} through {args.proxy} failed: {e!r} (is the proxy running there?)") from None
    new = {
        "id": res.id, "status": res.status, "model": res.model, "latency_ms": res.latency_ms, "ttft_ms": res.ttft_ms,
        "usage": res.usage, "cost_usd": res.cost_usd, "error": res.error, "text": res.text,
    }  # fmt: skip
    old = _original(row)
    if args.json:
        output.write_json({"original": old, "rerun": new})
    else:
        _side_by_side(old, new)
    return 0 if res.status is not None and res.status < 400 else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` and `rerun` to a top-level parser's subparsers."""
    p = subparsers.add_parser(
        "export",
        help="write calls as jsonl, openai-chat, har, csv or a replay cassette",
        description="Export the calls matching the filters (the same as `report`), oldest first. "
        "jsonl: one call per line; openai-chat: fine-tuning/eval lines from successful chat calls "
        "of any provider; har: HTTP Archive 1.2; csv: the log's columns; cassette: recorded calls "
        "for replay (successful calls only).",
    )
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", default="-", metavar="PATH", help="file to write ('-' = stdout, the default)")
    add_filter_args(p)
    add_db_args(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "rerun",
        help="re-send a logged call through the proxy and compare the answers",
        description="Re-send the request of a logged call through a running proxy to the live provider. "
        "The API key comes from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, ... "
        "or --key-env), never from the log. The new call carries Helicone-Rerun-Of: ID.",
    )
    p.add_argument("id", metavar="ID", help="id of the call (or a unique prefix of 4+ characters)")
    p.add_argument("--model", "-m", metavar="MODEL", help="ask another model")
    p.add_argument("--set-header", action="append", default=[], metavar="NAME=VALUE", help="add or replace a request header (NAME= removes it)")
    p.add_argument("--proxy", default=os.environ.get("HELICONE_ADDON_PROXY", DEFAULT_PROXY), metavar="URL",
                   help="the running proxy (default: $HELICONE_ADDON_PROXY or http://127.0.0.1:8080)")
    p.add_argument("--key-env", metavar="VAR", help="environment variable holding the API key (default: by provider)")
    p.add_argument("--confdir", default=default_confdir(), help="the proxy's confdir (for its CA certificate)")
    p.add_argument("--ca", metavar="PEM", help="CA certificate to trust for the proxy (default: <confdir>/mitmproxy-ca-cert.pem)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds to wait for the answer (default 600)")
    p.add_argument("--json", action="store_true", help="output JSON")
    add_db_args(p)
    p.set_defaults(func=cmd_rerun)
