"""Options and helpers that several command modules share."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $HARNESS_DB or results/harness.duckdb)")


def db_path(path: Optional[Path]) -> Path:
    """--db, else $HARNESS_DB, else results/harness.duckdb."""
    from harness.store.db import default_db_path

    return path or default_db_path()
