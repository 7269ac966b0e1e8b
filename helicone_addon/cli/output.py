"""How the log-reading commands print: number formats, tables (rich when installed, else plain
aligned text; HELICONE_ADDON_PLAIN=1 forces plain), JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any


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
) -> None:
    """A readable table on stdout: rich when installed, else plain aligned text."""
    out = sys.stdout
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


def write_json(rows: Any) -> None:
    json.dump(rows, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def write_csv(rows: Sequence[dict], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    sys.stdout.write(buf.getvalue())
