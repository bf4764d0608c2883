"""The history page in a real headless Chromium, opened from file://: one visible point per run, a plot that is drawn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.report.site import build_site
from harness.store.db import Store
from tests.e2e.test_report_browser import browser  # noqa: F401  (the module's Chromium fixture)
from tests.unit.test_history_pages import RUNS, build_history_db


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> tuple[Path, Path]:
    """(the synthetic database's site, a site whose main tag has runs but no metrics: a page with no plot)."""
    tmp = tmp_path_factory.mktemp("history-site")
    store = build_history_db(tmp / "r.duckdb")
    full = build_site(store, tmp / "site")
    store.close()
    empty = Store(tmp / "empty.duckdb")
    empty.create_run("run-x", "cfg-x", {"model": "hf:x", "model_fingerprint": "fp", "backend": "hf", "backend_args": {},
                                        "tasks": []}, ["main"])
    empty.set_status("run-x", "complete", {})
    bare = build_site(empty, tmp / "empty-site")
    empty.close()
    return full.parent / "history" / "main.html", bare.parent / "history" / "main.html"


def _non_white(png: Path, rect: dict) -> int:
    from PIL import Image

    with Image.open(png) as img:
        box = (int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["width"]), int(rect["y"] + rect["height"]))
        assert box[2] <= img.width and box[3] <= img.height, (box, img.size)  # crop would pad outside with black
        return sum(img.convert("L").crop(box).histogram()[:235])


def test_history_plot_draws_a_point_per_run(browser, sites, tmp_path):  # noqa: F811
    page, bare = sites
    browser.get(page.as_uri())
    svg = browser.find_element("css selector", "main svg.plot.history")
    circles = svg.find_elements("css selector", "circle.run")
    assert len(circles) == len(RUNS) == 3
    assert [c.get_attribute("class") for c in circles] == ["run ungated", "run pass", "run fail"]
    for circle in circles:
        assert circle.is_displayed()
        assert circle.rect["width"] > 0 and circle.rect["height"] > 0
    xs = [c.rect["x"] for c in circles]
    assert xs == sorted(xs) and len(set(xs)) == 3  # run order left to right
    rect = svg.rect
    assert rect["width"] > 100 and rect["height"] > 100
    shot = tmp_path / "history.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0

    browser.get(bare.as_uri())
    assert browser.find_elements("css selector", "svg.plot.history") == []
    blank = tmp_path / "blank.png"
    assert browser.save_screenshot(str(blank))
    if importlib.util.find_spec("PIL") is None:
        assert shot.stat().st_size > blank.stat().st_size
        return
    drawn, empty = _non_white(shot, rect), _non_white(blank, rect)
    print(f"non-white pixels in the plot's rect: {drawn} drawn, {empty} on the page with no data")
    assert drawn > 0.02 * rect["width"] * rect["height"], (drawn, rect)
    assert drawn > 3 * max(empty, 1), (drawn, empty)
