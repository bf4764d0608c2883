"""tests.conftest.require_or_skip: a missing capability skips a test, except under CI=true, where it fails."""

from __future__ import annotations

import pytest

from tests.conftest import require_or_skip


def test_available_does_nothing(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    require_or_skip(True, "anything")


@pytest.mark.parametrize("ci", [None, "", "false", "1"])
def test_missing_skips_outside_ci(monkeypatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="ChromeDriver is missing"):
        require_or_skip(False, "ChromeDriver", "apt-get install chromium-driver")


def test_missing_fails_under_ci(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI must run this test, but ChromeDriver is missing \(apt-get"):
        require_or_skip(False, "ChromeDriver", "apt-get install chromium-driver")
