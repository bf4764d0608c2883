"""Terminal tables render whatever the store hands back, gaps included."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from harness.cli.tables import runs_table


def test_runs_table_renders_missing_tags_and_suites() -> None:
    frame = pd.DataFrame({"run_id": ["r1", "r2"], "created_at": [pd.Timestamp("2026-12-01 10:00:00"), None],
                          "status": ["complete", "failed"], "model": ["hf:x", "openai:m@http://***@h/v1"],
                          "suite": [None, float("nan")], "tags": [float("nan"), "canary"], "samples": [3, 0]})
    console = Console(record=True, width=200)
    console.print(runs_table(frame))
    text = console.export_text()
    assert "r1" in text and "canary" in text and "nan" not in text.lower()
