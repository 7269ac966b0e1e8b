"""A self-contained stacked bar chart as inline SVG (rendered on the server: works offline, no JS).

Used by the Datasette plugin for "cost per day by model"; plain function of its data, so it can be
tested without Datasette.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, timedelta
from html import escape

PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
]  # fmt: skip
CHART_ID = "helicone-cost-chart"


def _days(first: str, last: str, max_days: int) -> list[str]:
    try:
        d0, d1 = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError:
        return []
    if (d1 - d0).days >= max_days:
        d0 = d1 - timedelta(days=max_days - 1)
    return [(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _usd(v: float) -> str:
    if v == 0:
        return "$0"
    if v >= 100:
        return f"${v:,.0f}"
    if v >= 1:
        return f"${v:,.2f}"
    return f"${v:.4f}".rstrip("0").rstrip(".") if v >= 0.0001 else f"${v:.2g}"


def cost_chart_svg(
    points: Iterable[tuple[str | None, str | None, float | None]],
    *,
    title: str = "Cost per day by model (USD)",
    max_series: int = 8,
    max_days: int = 90,
    width: int = 820,
    height: int = 320,
) -> str:
    """points: (day 'YYYY-MM-DD', series name e.g. model, cost). Returns an <svg> element.

    Days between the first and last are filled in (empty bars); the max_series-1 costliest series
    are shown, the rest summed as 'other'. Each bar segment has a <title> tooltip."""
    data: dict[tuple[str, str], float] = {}
    for day, series, cost in points:
        if not day:
            continue
        key = (str(day)[:10], "(none)" if series in (None, "") else str(series))
        data[key] = data.get(key, 0.0) + float(cost or 0)
    head = (
        f'<svg id="{CHART_ID}" class="helicone-chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" style="font-family: sans-serif; font-size: 11px; max-width: 100%">'
        f'<title>{escape(title)}</title>'
        f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>'
    )
    if not data:
        return head + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="#666">No calls logged yet.</text></svg>'

    all_days = sorted({d for d, _ in data})
    days = _days(all_days[0], all_days[-1], max_days) or all_days[-max_days:]
    shown = set(days)
    data = {k: c for k, c in data.items() if k[0] in shown}
    totals: dict[str, float] = {}
    for (_, s), c in data.items():
        totals[s] = totals.get(s, 0.0) + c
    ranked = sorted(totals, key=lambda s: (-totals[s], s))
    if len(ranked) > max_series:
        keep = ranked[: max_series - 1]
        merged: dict[tuple[str, str], float] = {}
        for (d, s), c in data.items():
            k = (d, s if s in keep else "other")
            merged[k] = merged.get(k, 0.0) + c
        data, series = merged, [*keep, "other"]
        totals = {s: sum(c for (_, ss), c in data.items() if ss == s) for s in series}
    else:
        series = ranked
    color = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    day_totals = {d: sum(data.get((d, s), 0.0) for s in series) for d in days}
    top = _nice_max(max(day_totals.values(), default=0.0))

    left, right, top_m = 64, 12, 34
    legend_rows = math.ceil(len(series) / 4)
    bottom = 34 + 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top_m - bottom
    slot = plot_w / max(len(days), 1)
    bar_w = max(1.0, slot * 0.8)
    parts = [head]
    for i in range(5):  # y grid and labels
        v = top * i / 4
        y = top_m + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{escape(_usd(v))}</text>')
    label_every = max(1, math.ceil(len(days) / 12))
    for i, d in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = top_m + plot_h
        for s in series:
            c = data.get((d, s), 0.0)
            if c <= 0:
                continue
            h = plot_h * c / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" fill="{color[s]}">'
                f"<title>{escape(d)} · {escape(s)}: {escape(_usd(c))}</title></rect>"
            )
        if i % label_every == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{top_m + plot_h + 14}" text-anchor="middle" fill="#444">{escape(d[5:])}</text>'
            )
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top_m + plot_h}" y2="{top_m + plot_h}" stroke="#888"/>')
    for i, s in enumerate(series):  # legend
        lx = left + (i % 4) * (plot_w / 4)
        ly = top_m + plot_h + 30 + 16 * (i // 4)
        name = s if len(s) <= 28 else s[:27] + "…"
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{color[s]}"/>')
        parts.append(
            f'<text x="{lx + 14:.1f}" y="{ly}" fill="#222" class="legend">{escape(name)} ({escape(_usd(totals.get(s, 0.0)))})</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
