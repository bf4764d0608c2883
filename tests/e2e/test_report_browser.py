"""The report pages in a real headless Chromium (selenium + chromedriver), opened from file://.

Chromium, ChromeDriver and selenium are found on PATH / in the venv; where one is missing the tests skip,
except under CI=true (.ci/run installs them), where they fail (tests.conftest.require_or_skip)."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import pytest

from harness.report.site import build_site, page_name, render_comparison
from harness.store.db import Store
from tests.conftest import require_or_skip
from tests.e2e.test_report import EVIL, _add_run, _comparison


def find_browser() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) as found on PATH now; None for each one that is not there."""
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def require_browser() -> tuple[str, str]:
    """Chromium, ChromeDriver and selenium, each checked on its own: skip without one, fail under CI=true."""
    chromium, chromedriver = find_browser()
    require_or_skip(chromium is not None, "Chromium (`chromium` on PATH)", "apt-get install chromium; .ci/run does this")
    require_or_skip(chromedriver is not None, "ChromeDriver (`chromedriver` on PATH)",
                    "apt-get install chromium-driver; .ci/run does this")
    require_or_skip(importlib.util.find_spec("selenium") is not None, "selenium", "pip install -e '.[dev]'")
    assert chromium is not None and chromedriver is not None
    return chromium, chromedriver


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="harness-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser-site")
    store = Store(tmp / "r.duckdb")
    _add_run(store, "run-aaa", "hf:model-a", acc=0.61)
    _add_run(store, "run-bbb", "hf:model-b", acc=0.42, tags=("candidate",), suite="standard")
    _add_run(store, "run-ccc", "hf:model-c", acc=0.75, tags=("candidate", "nightly"))
    _add_run(store, "run-eee", "hf:model-e", acc=0.20, tags=(EVIL,))
    index = build_site(store, tmp / "site")
    store.close()
    return index


def _open(driver, path: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    driver.find_element("css selector", "main")


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _visible_runs(driver) -> list[str]:
    rows = driver.find_elements("css selector", "#leaderboard tbody tr")
    return [row.get_attribute("data-run") for row in rows if row.is_displayed()]


def _column_values(driver, column: int) -> list[float]:
    cells = driver.find_elements("css selector", f"#leaderboard tbody tr:not([hidden]) td:nth-child({column})")
    return [float(cell.get_attribute("data-value")) for cell in cells]


def test_leaderboard_loads_sorts_and_filters(browser, site: Path):
    _open(browser, site)
    assert _severe(browser) == []
    assert set(_visible_runs(browser)) == {"run-aaa", "run-bbb", "run-ccc", "run-eee"}
    header = browser.find_element("css selector", "#leaderboard thead th[title='hellaswag / acc_norm']")
    column = 6  # Model, Suite, Tags, Run, Created, then the first task
    header.click()
    ascending = _column_values(browser, column)
    assert ascending == sorted(ascending) and len(ascending) == 4
    assert _visible_runs(browser)[0] == "run-eee" and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _visible_runs(browser) == ["run-ccc", "run-aaa", "run-bbb", "run-eee"]
    assert header.get_attribute("aria-sort") == "descending"

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "filter-tag")).select_by_value("candidate")
    assert _visible_runs(browser) == ["run-ccc", "run-bbb"]
    Select(browser.find_element("id", "filter-suite")).select_by_value("smoke")
    assert _visible_runs(browser) == ["run-ccc"]
    assert browser.find_element("id", "leaderboard-count").text == "1 of 4 runs shown"
    Select(browser.find_element("id", "filter-tag")).select_by_value(EVIL)
    assert _visible_runs(browser) == ["run-eee"]
    assert _severe(browser) == []


def test_run_page_sample_search(browser, site: Path):
    _open(browser, site.parent / "runs" / page_name("run-eee"))
    assert _severe(browser) == []
    rows = browser.find_elements("css selector", "#sample-rows tr")
    assert len(rows) == 8
    search = browser.find_element("id", "sample-search")
    search.send_keys("alert(")
    shown = browser.find_elements("css selector", "#sample-rows tr")
    assert len(shown) == 2
    assert all(EVIL in row.find_elements("css selector", "td")[2].text for row in shown)  # shown as text, not run
    assert browser.find_element("id", "sample-count").text == "2 of 8 embedded samples match"
    search.clear()
    search.send_keys("mmlu_anatomy 3")
    assert len(browser.find_elements("css selector", "#sample-rows tr")) == 1
    assert browser.execute_script("return window.alertCalled === undefined && document.scripts.length") == 2
    assert _severe(browser) == []


def _png_colours(png: bytes) -> int:
    """Distinct RGB(A) pixel values of a non-interlaced 8-bit PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour_type in (2, 6)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * bpp
    previous, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp * 7))  # every 7th pixel is plenty
        previous = line
    return len(colours)


def test_comparison_page_and_screenshot(browser, tmp_path: Path):
    path = tmp_path / "cmp.html"
    render_comparison(_comparison(), path)
    _open(browser, path)
    assert _severe(browser) == []
    assert len(browser.find_elements("css selector", "svg.plot")) == 3
    flips = browser.find_elements("css selector", "#flips tbody tr")
    assert len(flips) == 1 and EVIL in flips[0].text
    browser.find_element("id", "flip-search").send_keys("no such text")
    assert not flips[0].is_displayed()
    png = browser.get_screenshot_as_png()
    (tmp_path / "comparison.png").write_bytes(png)
    assert _png_colours(png) > 10


def test_leaderboard_screenshot_is_not_blank(browser, site: Path, tmp_path: Path):
    _open(browser, site)
    png = browser.get_screenshot_as_png()
    (tmp_path / "leaderboard.png").write_bytes(png)  # kept in pytest's tmp dir for a person to look at
    assert _png_colours(png) > 10
    assert _severe(browser) == []
