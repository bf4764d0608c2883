"""Shared test set-up: no hub access, an isolated database per test, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
# Real benchmark data (never committed): $HARNESS_SHARED_DATA, else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("HARNESS_SHARED_DATA") or REPO.parent / "shared" / "data")

# Tests never reach the hub; the hub path is exercised against a local mirror (HARNESS_HUB_MIRROR).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("HARNESS_DATA_DIR", None)
os.environ.pop("HARNESS_DB", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder; e2e and fidelity tests are also `slow`, so `-m "not slow"` is the quick run."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if folder in ("unit", "e2e", "fidelity"):
            item.add_marker(folder)
            if folder != "unit":
                item.add_marker("slow")


def harness_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `harness` command line in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results.duckdb"
