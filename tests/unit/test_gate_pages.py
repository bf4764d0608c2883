"""Gate pages: the index and a page per sequential gate, with a band plot per metric drawn from its trace."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from harness.report.gate_pages import write_gate_pages
from harness.report.site import build_site
from harness.store.db import Store
from harness.store.gates import save_gate

GATE = "gate-0123456789abcdef"
TOLERANCE = 0.01  # metric scale: the tolerance line is at -1 point
DOCS = (400, 800, 1200, 1600, 2000)


def _trace() -> list[tuple]:
    rows: list[tuple] = []
    # hellaswag acc_norm: decided "pass" at look 3 (1200 documents); the trace goes on to 5 looks
    for look, docs in enumerate(DOCS, 1):
        half = 0.04 / math.sqrt(look)
        rows.append(("hellaswag", "acc_norm", look, docs, 2000, 2.0 * look ** 2, 0.5, -0.001, -0.001 - half, -0.001 + half,
                     "pass" if look >= 3 else None))
    # arc_easy acc: decided "fail" at look 2 with an infinite e-value against "not regressed"
    for look, docs in enumerate(DOCS[:2], 1):
        e_fail = math.inf if look == 2 else 8.0
        rows.append(("arc_easy", "acc", look, docs, 1000, 0.3, e_fail, -0.05, -0.08, -0.02, "fail" if look == 2 else None))
    return rows


SUMMARY = {
    "metrics": [
        {"task": "hellaswag", "metric": "acc_norm", "decision": "pass", "docs_used": 1200, "docs_available": 2000,
         "estimate": -0.001, "ci_low": -0.0241, "ci_high": 0.0221, "e_pass": 18.0, "e_fail": 0.5, "tolerance": TOLERANCE,
         "p_fallback": None},
        {"task": "arc_easy", "metric": "acc", "decision": "fail", "docs_used": 800, "docs_available": 1000,
         "estimate": -0.05, "ci_low": -0.08, "ci_high": -0.02, "e_pass": 0.3, "e_fail": math.inf, "tolerance": TOLERANCE,
         "p_fallback": None},
    ],
    "docs_used": 2000, "docs_available": 3000, "wall_seconds": 12.5, "alpha": 0.05, "alpha_seq": 0.025,
    "alpha_fallback": 0.025, "baseline_model": "hf:base-model", "candidate_model": "hf:candidate-model",
}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "results.duckdb")
    save_gate(s, GATE, "run-baseline-1", "run-candidate-2", 1234, False, {"tolerance": TOLERANCE, "chunk": 400},
              SUMMARY, _trace())
    yield s
    s.close()


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


def _scale(svg: str, axis: str) -> tuple[float, float]:
    """(slope, intercept) of the map value -> pixel, read off the svg's labelled ticks."""
    ticks: list[tuple[float, float]] = []
    for x, y, label in re.findall(rf'<text class="{axis}" x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]+)</text>', svg):
        ticks.append((float(label), float(x) if axis == "xtick" else float(y) - 4))  # y labels sit 4 px below their line
    assert len(ticks) >= 2, svg
    (v0, p0), (v1, p1) = ticks[0], ticks[-1]
    slope = (p1 - p0) / (v1 - v0)
    return slope, p0 - slope * v0


def _attr(svg: str, cls: str, name: str) -> float:
    m = re.search(rf'<(?:line|polyline|polygon|text)[^>]*class="{cls}"[^>]*\b{name}="([-\d.]+)"', svg)
    assert m, f"no {cls} {name} in {svg[:200]}"
    return float(m.group(1))


def _check_gate_pages(folder) -> None:
    index = (folder / "index.html").read_text()
    assert f'<a href="{GATE}.html">' in index
    assert "run-candidate-2" in index and "run-baseline-1" in index and "FAIL" in index
    assert "2000 / 3000" in index and "33%" in index  # documents used / available, a third saved

    page = (folder / f"{GATE}.html").read_text()
    assert "FAIL" in page and "hf:candidate-model" in page
    assert "∞" in page  # the infinite e-value
    assert "1200 of 2000" in page and "-0.10" in page and "[-2.41, +2.21]" in page  # hellaswag row, in points
    svgs = _svgs(page)
    assert len(svgs) == 2
    by_title = {re.search(r"<title>([^<]+)</title>", s).group(1).split(":")[0]: s for s in svgs}
    assert set(by_title) == {"hellaswag acc_norm", "arc_easy acc"}
    for svg in svgs:
        ET.fromstring(svg)  # well-formed: no duplicate attributes, every label escaped
        assert '<polygon class="ci-band"' in svg and '<polyline class="estimate"' in svg
        ys, yc = _scale(svg, "ytick")
        assert _attr(svg, "tolerance", "y1") == pytest.approx(ys * -100 * TOLERANCE + yc, abs=0.15)
        assert _attr(svg, "zero", "y1") == pytest.approx(yc, abs=0.15)
    hella = by_title["hellaswag acc_norm"]
    assert hella.count('<circle class="look"') == 5
    xs, xc = _scale(hella, "xtick")
    assert _attr(hella, "stop", "x1") == pytest.approx(xs * 1200 + xc, abs=0.15)  # decided at look 3, not the last look
    assert ">decided</text>" in hella
    arc = by_title["arc_easy acc"]
    xs, xc = _scale(arc, "xtick")
    assert _attr(arc, "stop", "x1") == pytest.approx(xs * 800 + xc, abs=0.15)


def test_write_gate_pages(store, tmp_path):
    index = write_gate_pages(store, tmp_path / "out")
    assert index == tmp_path / "out" / "gates" / "index.html"
    _check_gate_pages(index.parent)


def test_build_site_writes_gate_pages(store, tmp_path):
    site_index = build_site(store, tmp_path / "site")
    assert 'href="gates/index.html"' in site_index.read_text()
    _check_gate_pages(tmp_path / "site" / "gates")


def test_undecided_metric_is_marked_stopped_at_its_last_look(tmp_path):
    s = Store(tmp_path / "results.duckdb")
    try:
        rows = [("mmlu", "acc", look, docs, 2000, 1.5, 2.0, 0.0, -0.03, 0.03, None) for look, docs in enumerate(DOCS[:4], 1)]
        summary = {"metrics": [{"task": "mmlu", "metric": "acc", "decision": "pass-fallback", "docs_used": 1600,
                                "docs_available": 2000, "tolerance": 0.02}], "docs_used": 1600, "docs_available": 2000}
        save_gate(s, "g2", "a", "b", 1, True, {}, summary, rows)
        folder = write_gate_pages(s, tmp_path / "out").parent
        svg, = _svgs((folder / "g2.html").read_text())
        assert ">stopped</text>" in svg and ">decided</text>" not in svg
        xs, xc = _scale(svg, "xtick")
        assert _attr(svg, "stop", "x1") == pytest.approx(xs * 1600 + xc, abs=0.15)
        ys, yc = _scale(svg, "ytick")
        assert _attr(svg, "tolerance", "y1") == pytest.approx(ys * -2 + yc, abs=0.15)
    finally:
        s.close()


def test_empty_database_index_says_none(tmp_path):
    s = Store(tmp_path / "results.duckdb")
    try:
        index = write_gate_pages(s, tmp_path / "out").read_text()
        assert "No sequential gates" in index and "<table" not in index
    finally:
        s.close()
