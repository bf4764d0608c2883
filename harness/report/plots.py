"""Inline SVG line plots: latency against throughput (bench pages), accuracy delta against size and
training loss (lineage pages).

Hand-drawn like harness/report/svg.py, whose axis ticks and font they share (self-contained pages,
every label escaped here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from harness.report.svg import FONT, nice_ticks

COLOURS = ("#3b6fb6", "#c0262d", "#1a7f37", "#9a6700", "#8250df", "#0a7d91", "#bf3989", "#57606a")


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float, str], ...]  # (x, y, label of the point)
    colour: str = COLOURS[0]
    dashed: bool = False


def line_plot(series: list[Series], *, xlabel: str, ylabel: str, title: str, width: int = 560, height: int = 320) -> Markup:
    series = [Series(s.name, tuple(p for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])), s.colour, s.dashed)
              for s in series]
    series = [s for s in series if s.points]
    if not series:
        return Markup("")
    left, right, top, bottom = 62, 150, 26, 40
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    # from zero (latency, throughput), or below it where values are negative (an accuracy delta)
    x_lo, x_hi = min(0.0, min(xs) * 1.08), max(max(xs) * 1.08, 0.0) or 1.0
    y_lo, y_hi = min(0.0, min(ys) * 1.1), max(max(ys) * 1.1, 0.0) or 1.0
    if x_hi == x_lo:
        x_hi = x_lo + 1.0
    if y_hi == y_lo:
        y_hi = y_lo + 1.0
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def sy(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
             f'<text x="{left}" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in nice_ticks(x_lo, x_hi):
        parts.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{top + ph}" stroke="#eee"/>'
                     f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle" {FONT} fill="#555">{t:.4g}</text>')
    for t in nice_ticks(y_lo, y_hi):
        parts.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" {FONT} fill="#555">{t:.4g}</text>')
    for i, s in enumerate(series):
        points = sorted(s.points)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in points)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        for x, y, label in points:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{s.colour}"><title>'
                         f'{escape(s.name)} · {escape(label)}: {y:.4g} at {x:.4g}</title></circle>')
        if len(series) == 1 or i == 0:
            for x, y, label in points:
                parts.append(f'<text x="{sx(x) + 5:.1f}" y="{sy(y) - 6:.1f}" {FONT} fill="#333">{escape(label)}</text>')
        ly = top + 14 + i * 16
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" stroke="{s.colour}" '
                     f'stroke-width="2"{dash}/><text x="{left + pw + 34}" y="{ly}" {FONT}>{escape(s.name[:20])}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>'
                 f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" {FONT} '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(ylabel)}</text></svg>')
    return Markup("".join(parts))
