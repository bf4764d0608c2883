"""Inline SVG line plots: latency against throughput (bench pages), accuracy delta against size and
training loss (lineage pages); and the band plot of a sequential gate (gate pages): the running
estimate of a metric's paired difference with its anytime-valid interval over the looks, the
tolerance line, zero, and where the gate decided or stopped.

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


@dataclass(frozen=True)
class _Frame:
    """A plot's axes: the SVG opening, frame and grid with tick labels, and the data -> pixel maps."""

    parts: list[str]
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    left: int
    top: int
    pw: int
    ph: int

    def sx(self, v: float) -> float:
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * self.pw

    def sy(self, v: float) -> float:
        return self.top + (self.y_hi - v) / (self.y_hi - self.y_lo) * self.ph


def _frame(title: str, svg_class: str, width: int, height: int, margins: tuple[int, int, int, int],
           x_range: tuple[float, float], y_range: tuple[float, float]) -> _Frame:
    left, right, top, bottom = margins
    f = _Frame([], *x_range, *y_range, left, top, width - left - right, height - top - bottom)
    f.parts.extend([f'<svg xmlns="http://www.w3.org/2000/svg" class="{svg_class}" role="img" width="{width}" '
                    f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
                    f'<text x="{left}" y="14" {FONT} font-weight="bold">{escape(title)}</text>',
                    f'<rect x="{left}" y="{top}" width="{f.pw}" height="{f.ph}" fill="none" stroke="#999"/>'])
    for t in nice_ticks(f.x_lo, f.x_hi):
        f.parts.append(f'<line x1="{f.sx(t):.1f}" y1="{top}" x2="{f.sx(t):.1f}" y2="{top + f.ph}" stroke="#eee"/>'
                       f'<text class="xtick" x="{f.sx(t):.1f}" y="{top + f.ph + 14}" text-anchor="middle" {FONT} '
                       f'fill="#555">{t:.4g}</text>')
    for t in nice_ticks(f.y_lo, f.y_hi):
        f.parts.append(f'<line x1="{left}" y1="{f.sy(t):.1f}" x2="{left + f.pw}" y2="{f.sy(t):.1f}" stroke="#eee"/>'
                       f'<text class="ytick" x="{left - 4}" y="{f.sy(t) + 4:.1f}" text-anchor="end" {FONT} '
                       f'fill="#555">{t:.4g}</text>')
    return f


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
    f = _frame(title, "plot", width, height, (left, right, top, bottom), (x_lo, x_hi), (y_lo, y_hi))
    sx, sy, parts, pw, ph = f.sx, f.sy, f.parts, f.pw, f.ph
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


def _ok(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def band_plot(points: list[tuple[float, float | None, float | None, float | None]], *, tolerance_points: float,
              stop_at: float | None, title: str, xlabel: str = "documents used", ylabel: str = "candidate - baseline (points)",
              width: int = 560, height: int = 320, stop_label: str = "decided") -> Markup:
    """A sequential gate's metric over its looks: the anytime-valid interval as a band, the running estimate,
    the tolerance line at -tolerance_points, zero, and a marker where the gate decided (or stopped).

    points: (docs_used, estimate, ci_low, ci_high) per look, in points; non-finite values are skipped."""
    est = sorted((x, y) for x, y, _, _ in points if _ok(x, y))
    band = sorted((x, lo, hi) for x, _, lo, hi in points if _ok(x, lo, hi))
    if not est and not band:
        return Markup("")
    left, right, top, bottom = 62, 130, 26, 40
    xs = [p[0] for p in est] + [p[0] for p in band] + ([stop_at] if _ok(stop_at) else [])
    ys = [p[1] for p in est] + [v for p in band for v in p[1:]] + [0.0, -tolerance_points]
    x_lo, x_hi = 0.0, max(max(xs) * 1.05, 0.0) or 1.0
    pad = (max(ys) - min(ys)) * 0.08 or 1.0
    y_lo, y_hi = min(ys) - pad, max(ys) + pad
    f = _frame(title, "plot band", width, height, (left, right, top, bottom), (x_lo, x_hi), (y_lo, y_hi))
    sx, sy, parts, pw, ph = f.sx, f.sy, f.parts, f.pw, f.ph
    if band:
        outline = [(x, hi) for x, _, hi in band] + [(x, lo) for x, lo, _ in reversed(band)]
        parts.append(f'<polygon class="ci-band" points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in outline)}" '
                     f'fill="{COLOURS[0]}" fill-opacity="0.18" stroke="none"/>')
    parts.append(f'<line class="zero" x1="{left}" y1="{sy(0):.1f}" x2="{left + pw}" y2="{sy(0):.1f}" stroke="#555" '
                 f'stroke-dasharray="2 3"/>')
    parts.append(f'<line class="tolerance" x1="{left}" y1="{sy(-tolerance_points):.1f}" x2="{left + pw}" '
                 f'y2="{sy(-tolerance_points):.1f}" stroke="{COLOURS[1]}" stroke-dasharray="6 4"/>')
    if est:
        parts.append(f'<polyline class="estimate" points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in est)}" '
                     f'fill="none" stroke="{COLOURS[0]}" stroke-width="2"/>')
        for x, y in est:
            parts.append(f'<circle class="look" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{COLOURS[0]}"><title>'
                         f'{y:+.3g} points after {x:.4g} documents</title></circle>')
    if stop_at is not None and math.isfinite(stop_at):
        parts.append(f'<line class="stop" x1="{sx(stop_at):.1f}" y1="{top}" x2="{sx(stop_at):.1f}" y2="{top + ph}" '
                     f'stroke="{COLOURS[2]}" stroke-width="1.5"/>'
                     f'<text class="stop" x="{sx(stop_at) + 4:.1f}" y="{top + 12}" {FONT} fill="{COLOURS[2]}">'
                     f'{escape(stop_label)}</text>')
    legend = (("estimate", COLOURS[0], ' stroke-width="2"'), ("interval", COLOURS[0], ' stroke-width="8" stroke-opacity="0.18"'),
              (f"tolerance -{tolerance_points:.3g}", COLOURS[1], ' stroke-width="2" stroke-dasharray="6 4"'))
    for i, (name, colour, style) in enumerate(legend):
        ly = top + 14 + i * 16
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" stroke="{colour}" '
                     f'{style}/><text x="{left + pw + 34}" y="{ly}" {FONT}>{escape(name)}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" {FONT}>{escape(xlabel)}</text>'
                 f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" {FONT} '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(ylabel)}</text></svg>')
    return Markup("".join(parts))


VERDICT_FILL = {"pass": COLOURS[2], "fail": COLOURS[1], None: "#8c959f"}


def history_plot(points: list[tuple[str, float | None, float | None, float | None, str | None]], *, title: str,
                 ylabel: str, width: int = 620, height: int = 320) -> Markup:
    """A metric over a tag's runs (history pages): x is the run's index, y its value with a vertical 95% CI bar,
    one circle per run filled by the verdict of the gate that judged it (pass green, fail red, ungated grey).

    points: (label, value, ci_low, ci_high, verdict) in run order, verdict "pass", "fail" or None; runs with a
    non-finite value are skipped (a non-finite interval only drops the bar)."""
    runs = [(label, v, lo if _ok(lo, hi) else None, hi if _ok(lo, hi) else None, verdict)
            for label, v, lo, hi, verdict in points if _ok(v)]
    if not runs:
        return Markup("")
    left, right, top, bottom = 62, 20, 26, 70
    ys = [v for _, v, _, _, _ in runs] + [b for r in runs for b in r[2:4] if b is not None]
    pad = (max(ys) - min(ys)) * 0.08 or max(abs(max(ys)) * 0.05, 0.01)
    f = _frame(title, "plot history", width, height, (left, right, top, bottom), (-0.5, len(runs) - 0.5),
               (min(ys) - pad, max(ys) + pad))
    sx, sy, parts, pw, ph = f.sx, f.sy, f.parts, f.pw, f.ph
    # the frame's numeric x ticks are run indexes; the runs' own labels go under the axis instead
    parts[:] = [p for p in parts if 'class="xtick"' not in p]
    step = max(1, math.ceil(len(runs) / max(1, pw // 18)))
    for i, (label, _, lo, hi, _) in enumerate(runs):
        x = sx(i)
        if lo is not None and hi is not None:
            parts.append(f'<line class="ci" x1="{x:.1f}" y1="{sy(lo):.1f}" x2="{x:.1f}" y2="{sy(hi):.1f}" '
                         f'stroke="#57606a" stroke-width="1.5"/>')
        if i % step == 0:
            short = label if len(label) <= 14 else label[:13] + "…"
            parts.append(f'<text class="xlabel" x="{x:.1f}" y="{top + ph + 12}" text-anchor="end" {FONT} fill="#555" '
                         f'transform="rotate(-35 {x:.1f} {top + ph + 12})">{escape(short)}</text>')
    parts.append(f'<polyline class="values" points="{" ".join(f"{sx(i):.1f},{sy(r[1]):.1f}" for i, r in enumerate(runs))}" '
                 f'fill="none" stroke="{COLOURS[0]}" stroke-width="2"/>')
    for i, (label, v, lo, hi, verdict) in enumerate(runs):
        kind = verdict if verdict in ("pass", "fail") else "ungated"
        ci = f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""
        parts.append(f'<circle class="run {kind}" cx="{sx(i):.1f}" cy="{sy(v):.1f}" r="5" '
                     f'fill="{VERDICT_FILL.get(verdict, VERDICT_FILL[None])}" stroke="#fff"><title>'
                     f'{escape(label)}: {v:.4g}{ci}, {kind}</title></circle>')
    parts.append(f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" {FONT} '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(ylabel)}</text></svg>')
    return Markup("".join(parts))
