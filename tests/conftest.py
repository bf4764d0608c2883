"""Shared test set-up: no hub access, an isolated database per test, the CLI as a subprocess."""

from __future__ import annotations

import json
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


def require_or_skip(available: bool, what: str, hint: str = "") -> None:
    """Skip when this machine lacks `what` (a capability a test needs: a daemon, a browser, a binary), but fail
    when CI=true: CI (.ci/run) provisions every such capability, so a skip there would hide a broken setup.
    `hint` says how to get it (shown in both cases)."""
    if available:
        return
    where = f" ({hint})" if hint else ""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run this test, but {what} is missing{where}", pytrace=False)
    pytest.skip(f"machine capability: {what} is missing{where}")


def harness_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `harness` command line in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results.duckdb"


def write_hub_repo(root: Path, configs: dict[str, dict[str, list[dict]]]) -> None:
    """A local dataset repo like the hub's: README with `configs`, one jsonl per config and split."""
    """A dataset repository as the hub lays it out (a README with configs, one jsonl per split): a local
    HARNESS_HUB_MIRROR entry that `datasets.load_dataset(dir, config)` reads."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            path = root / config / f"{split}-00000-of-00001.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
