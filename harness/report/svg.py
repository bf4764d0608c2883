"""Small inline SVG plots for the reports: CI bars, a histogram, a scatter.

Drawn by hand rather than with a plotting library so that pages stay self-contained, a site of a
thousand runs renders in seconds, and every label goes through one escaping function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

MAX_POINTS = 2000
FONT = 'font-family="sans-serif" font-size="11"'


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    low: float
    high: float
    colour: str = "#3b6fb6"


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round axis values from lo to hi, 1, 2 or 5 times a power of ten apart; [lo] when hi <= lo."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def ci_bars(bars: list[Bar], *, zero_line: bool = True, title: str = "") -> Markup:
    """Horizontal point-and-interval plot: one row per bar, a vertical line at 0."""
    bars = [b for b in bars if _finite(b.value, b.low, b.high)]
    if not bars:
        return Markup("")
    label_w, plot_w, row_h, top = 230, 420, 22, 24
    lo = min(min(b.low for b in bars), 0.0 if zero_line else math.inf)
    hi = max(max(b.high for b in bars), 0.0 if zero_line else -math.inf)
    pad = (hi - lo) * 0.05 or 0.05
    lo, hi = lo - pad, hi + pad
    height = top + row_h * len(bars) + 24

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{label_w + plot_w + 20}" '
             f'height="{height}" viewBox="0 0 {label_w + plot_w + 20} {height}">',
             f'<title>{escape(title)}</title>' if title else ""]
    for t in nice_ticks(lo, hi):
        parts.append(f'<line x1="{_fmt(x(t))}" y1="{top - 6}" x2="{_fmt(x(t))}" y2="{height - 20}" stroke="#e3e3e3"/>'
                     f'<text x="{_fmt(x(t))}" y="{height - 6}" text-anchor="middle" {FONT} fill="#555">{t:.3g}</text>')
    if zero_line and lo < 0 < hi:
        parts.append(f'<line x1="{_fmt(x(0))}" y1="{top - 8}" x2="{_fmt(x(0))}" y2="{height - 20}" stroke="#333"/>')
    for i, b in enumerate(bars):
        y = top + i * row_h + row_h / 2
        parts.append(
            f'<text x="{label_w - 8}" y="{_fmt(y + 4)}" text-anchor="end" {FONT}>{escape(b.label)}</text>'
            f'<line x1="{_fmt(x(b.low))}" y1="{_fmt(y)}" x2="{_fmt(x(b.high))}" y2="{_fmt(y)}" stroke="{b.colour}" stroke-width="3"/>'
            f'<circle cx="{_fmt(x(b.value))}" cy="{_fmt(y)}" r="4.5" fill="{b.colour}">'
            f'<title>{escape(b.label)}: {b.value:.4g} [{b.low:.4g}, {b.high:.4g}]</title></circle>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(values: list[float], *, bins: int = 40, xlabel: str = "", colour: str = "#3b6fb6") -> Markup:
    values = [v for v in values if _finite(v)]
    if not values:
        return Markup("")
    w, h, left, bottom = 460, 220, 44, 34
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    peak = max(counts)
    bar_w = (w - left - 10) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
    for i, c in enumerate(counts):
        bh = (h - bottom - 10) * c / peak
        parts.append(f'<rect x="{_fmt(left + i * bar_w)}" y="{_fmt(h - bottom - bh)}" width="{_fmt(max(bar_w - 1, 0.5))}" '
                     f'height="{_fmt(bh)}" fill="{colour}"><title>{lo + i * (hi - lo) / bins:.4g}…'
                     f'{lo + (i + 1) * (hi - lo) / bins:.4g}: {c}</title></rect>')
    for t in nice_ticks(lo, hi):
        tx = left + (t - lo) / (hi - lo) * (w - left - 10)
        parts.append(f'<text x="{_fmt(tx)}" y="{h - bottom + 14}" text-anchor="middle" {FONT} fill="#555">{t:.3g}</text>')
    parts.append(f'<text x="{left - 6}" y="18" text-anchor="end" {FONT} fill="#555">{peak}</text>'
                 f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#333"/>'
                 f'<text x="{(w + left) / 2:.1f}" y="{h - 4}" text-anchor="middle" {FONT}>{escape(xlabel)}</text></svg>')
    return Markup("".join(parts))


def scatter(pairs: list[tuple[float, float]], *, xlabel: str = "", ylabel: str = "") -> Markup:
    """x against y with the diagonal; at most MAX_POINTS points (an even stride through the data)."""
    pairs = [p for p in pairs if _finite(p[0], p[1])]
    if not pairs:
        return Markup("")
    if len(pairs) > MAX_POINTS:
        stride = len(pairs) / MAX_POINTS
        pairs = [pairs[int(i * stride)] for i in range(MAX_POINTS)]
    size, left, bottom = 300, 50, 40
    lo = min(min(a, b) for a, b in pairs)
    hi = max(max(a, b) for a, b in pairs)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = size - 10

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * span

    def sy(v: float) -> float:
        return 10 + (hi - v) / (hi - lo) * span

    width, height = left + size, 10 + span + bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<rect x="{left}" y="10" width="{span}" height="{span}" fill="none" stroke="#999"/>',
             f'<line x1="{_fmt(sx(lo))}" y1="{_fmt(sy(lo))}" x2="{_fmt(sx(hi))}" y2="{_fmt(sy(hi))}" stroke="#c44" stroke-dasharray="4 3"/>']
    for t in nice_ticks(lo, hi, 4):
        parts.append(f'<text x="{_fmt(sx(t))}" y="{10 + span + 14}" text-anchor="middle" {FONT} fill="#555">{t:.3g}</text>'
                     f'<text x="{left - 4}" y="{_fmt(sy(t) + 4)}" text-anchor="end" {FONT} fill="#555">{t:.3g}</text>')
    parts.extend(f'<circle cx="{_fmt(sx(a))}" cy="{_fmt(sy(b))}" r="2" fill="#3b6fb6" fill-opacity="0.5"/>' for a, b in pairs)
    parts.append(f'<text x="{left + span / 2:.1f}" y="{height - 6}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>'
                 f'<text x="12" y="{10 + span / 2:.1f}" text-anchor="middle" {FONT} '
                 f'transform="rotate(-90 12 {10 + span / 2:.1f})">{escape(ylabel)}</text></svg>')
    return Markup("".join(parts))
