"""CI never skips what it provisions: with CI=true the browser tests fail when Chromium or ChromeDriver is
missing, and skip (with the reason) without CI. Runs tests/e2e/test_report_browser.py in a child pytest with a
PATH that holds only what the case allows, so no browser starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BROWSER_TESTS = "tests/e2e/test_report_browser.py"


def _path_with(tmp_path: Path, *names: str) -> str:
    """A PATH of one folder holding links to `names` (where this machine has them) and nothing else."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        found = shutil.which(name)
        if found:
            (folder / name).symlink_to(found)
    return str(folder)


def _run_browser_tests(path: str, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = path
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", BROWSER_TESTS],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.parametrize("hidden", ["chromedriver", "chromium"])
def test_browser_tests_fail_under_ci_when_one_binary_is_missing(tmp_path: Path, hidden: str) -> None:
    present = [name for name in ("chromium", "chromedriver") if name != hidden]
    result = _run_browser_tests(_path_with(tmp_path, *present), ci="true")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    summary = out.splitlines()[-1]  # e.g. "4 errors in 1.6s": each test fails at the set-up of its browser
    assert ("error" in summary or "failed" in summary) and "skipped" not in summary and "passed" not in summary, out
    assert "CI must run this test, but" in out, out
    assert ("ChromeDriver" if hidden == "chromedriver" else "Chromium") in out


def test_browser_tests_skip_outside_ci_when_chromedriver_is_missing(tmp_path: Path) -> None:
    result = _run_browser_tests(_path_with(tmp_path, "chromium"), ci=None)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    summary = out.splitlines()[-1]
    assert "skipped" in summary and "failed" not in summary and "error" not in summary, out
    assert "machine capability: ChromeDriver" in out, out
