"""Charts as inline SVG, drawn on the server (no JavaScript, nothing fetched): stacked bars and lines.

Plain functions of their data. Axes use round ticks (1, 2, 2.5 or 5 times a power of ten); legends
are left to the page (HTML wraps, so entries never overlap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from html import escape

PALETTE = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
    "#edc948", "#9c755f", "#ff9da7", "#bab0ac", "#86bcb6",
]  # fmt: skip
ERROR_COLOR = "#e15759"
OTHER = "other"

Fmt = Callable[[float, int], str]  # value, decimals -> label


def nice_scale(max_value: float, ticks: int = 4, integer: bool = False) -> tuple[float, float, int]:
    """(top, step, decimals): a round step (1, 2, 2.5 or 5 times a power of ten) so that
    top = step * n >= max_value with n <= ticks; decimals = what the step needs to print exactly."""
    if not max_value or max_value <= 0 or not math.isfinite(max_value):
        return (float(ticks), 1.0, 0) if integer else (1.0, 0.25, 2)
    raw = max_value / ticks
    exp = math.floor(math.log10(raw))
    step = 10.0 ** (exp + 1)
    for m in (1, 2, 2.5, 5):
        if m * 10.0**exp >= raw * (1 - 1e-9):
            step = m * 10.0**exp
            break
    if integer and step < 1:
        step = 1.0
    decimals = 0
    while decimals < 12 and abs(round(step, decimals) - step) > step * 1e-9:
        decimals += 1
    top = step * math.ceil(max_value / step - 1e-9)
    return top, step, decimals


def fmt_usd(v: float, decimals: int) -> str:
    return "$0" if v == 0 else f"${v:,.{decimals}f}"


def fmt_count(v: float, decimals: int) -> str:
    return f"{v:,.{decimals}f}"


def fmt_ms(v: float, decimals: int) -> str:
    if v == 0:
        return "0"
    if v >= 1000:
        return f"{v / 1000:,.3f}".rstrip("0").rstrip(".") + " s"
    return f"{v:,.{decimals}f} ms"


def bucket_label(bucket: str, hourly: bool) -> str:
    if hourly:
        return f"{bucket[11:13]}:00"
    try:
        d = date.fromisoformat(bucket[:10])
    except ValueError:
        return bucket
    return f"{d.strftime('%b')} {d.day}"


def colors_for(names: Sequence[str]) -> dict[str, str]:
    return {n: "#bab0ac" if n == OTHER else PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def top_series(series: Mapping[str, Mapping[str, float]], keep: int = 8) -> dict[str, dict[str, float]]:
    """The `keep`-1 largest series by total, the rest summed as 'other' (order: largest first)."""
    totals = {n: sum(v.values()) for n, v in series.items()}
    ranked = sorted(series, key=lambda n: (-totals[n], n))
    if len(ranked) <= keep:
        return {n: dict(series[n]) for n in ranked}
    out = {n: dict(series[n]) for n in ranked[: keep - 1]}
    other: dict[str, float] = {}
    for n in ranked[keep - 1:]:
        for b, v in series[n].items():
            other[b] = other.get(b, 0.0) + v
    out[OTHER] = other
    return out


class _Frame:
    """Plot area, y axis with round ticks and x labels, shared by the chart kinds."""

    def __init__(self, buckets: Sequence[str], max_value: float, fmt: Fmt, *, hourly: bool,
                 width: int, height: int, title: str) -> None:
        self.buckets, self.fmt, self.hourly = list(buckets), fmt, hourly
        self.width, self.height = width, height
        self.top, self.step, self.decimals = nice_scale(max_value, integer=fmt is fmt_count)
        self.left, self.right, self.top_m, self.bottom = 64, 12, 12, 26
        self.plot_w = width - self.left - self.right
        self.plot_h = height - self.top_m - self.bottom
        self.slot = self.plot_w / max(len(self.buckets), 1)
        self.parts = [
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        ]

    def y(self, v: float) -> float:
        return self.top_m + self.plot_h * (1 - v / self.top)

    def x_center(self, i: int) -> float:
        return self.left + self.slot * (i + 0.5)

    def axes(self) -> None:
        n = round(self.top / self.step)
        for i in range(n + 1):
            v = self.step * i
            y = self.y(v)
            self.parts.append(f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" y1="{y:.1f}" y2="{y:.1f}"/>')
            self.parts.append(f'<text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                              f"{escape(self.fmt(v, self.decimals))}</text>")
        every = max(1, math.ceil(len(self.buckets) / max(1, self.plot_w // 70)))
        last = len(self.buckets) - 1
        for i, b in enumerate(self.buckets):
            if (last - i) % every == 0:  # counted back from the latest bucket, which is always labelled
                self.parts.append(f'<text class="tick" x="{self.x_center(i):.1f}" y="{self.height - 8}" '
                                  f'text-anchor="middle">{escape(bucket_label(b, self.hourly))}</text>')
        base = self.y(0)
        self.parts.append(f'<line class="axis" x1="{self.left}" x2="{self.width - self.right}" y1="{base:.1f}" y2="{base:.1f}"/>')

    def done(self) -> str:
        self.parts.append("</svg>")
        return "".join(self.parts)


def stacked_bars(
    buckets: Sequence[str],
    series: Mapping[str, Mapping[str, float]],
    colors: Mapping[str, str],
    fmt: Fmt,
    *,
    hourly: bool = False,
    title: str = "",
    width: int = 1200,
    height: int = 260,
) -> str:
    """One bar per bucket, one segment per series (in the order given, the first at the bottom)."""
    peak = max((sum(s.get(b, 0.0) for s in series.values()) for b in buckets), default=0.0)
    fr = _Frame(buckets, peak, fmt, hourly=hourly, width=width, height=height, title=title)
    fr.axes()
    bar_w = max(1.0, min(fr.slot * 0.7, 48))
    for i, b in enumerate(buckets):
        acc = 0.0
        x = fr.x_center(i) - bar_w / 2
        for name, values in series.items():
            v = values.get(b, 0.0)
            if v <= 0:
                continue
            y0, y1 = fr.y(acc), fr.y(acc + v)
            acc += v
            label = f"{bucket_label(b, hourly)} · {name}: {fmt(v, max(fr.decimals, 2) if fmt is fmt_usd else 0)}"
            fr.parts.append(f'<rect class="seg" x="{x:.1f}" y="{y1:.1f}" width="{bar_w:.1f}" '
                            f'height="{max(y0 - y1, 0.8):.1f}" fill="{colors[name]}"><title>{escape(label)}</title></rect>')
    return fr.done()


def lines(
    buckets: Sequence[str],
    series: Mapping[str, Mapping[str, float | None]],
    colors: Mapping[str, str],
    fmt: Fmt,
    *,
    hourly: bool = False,
    title: str = "",
    width: int = 600,
    height: int = 240,
) -> str:
    """One line per series; a bucket without a value breaks the line."""
    peak = max((v for s in series.values() for v in s.values() if v is not None), default=0.0)
    fr = _Frame(buckets, peak, fmt, hourly=hourly, width=width, height=height, title=title)
    fr.axes()
    for name, values in series.items():
        path: list[str] = []
        for i, b in enumerate(buckets):
            v = values.get(b)
            if v is None:
                if path:
                    fr.parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{" ".join(path)}"/>')
                path = []
                continue
            x, y = fr.x_center(i), fr.y(v)
            path.append(f"{x:.1f},{y:.1f}")
            fr.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colors[name]}">'
                            f"<title>{escape(bucket_label(b, hourly))} · {escape(name)}: {escape(fmt(v, 0))}</title></circle>")
        if path:
            fr.parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{" ".join(path)}"/>')
    return fr.done()
