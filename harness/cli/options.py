"""Options and helpers that several command modules share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from harness.core.errors import UsageError

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $HARNESS_DB or results/harness.duckdb)")


def check_output_file(path: Optional[Path], option: str) -> None:
    """An output file a command will write (--json, --html, --junit, --markdown): checked before
    anything runs, so a bad target never costs a run: its folder exists and is writable, and the
    path is not a directory."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory: give a file path")
    if not path.parent.is_dir():
        raise UsageError(f"{option}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def check_output_dir(path: Path, option: str) -> None:
    """An output directory (--out): not an existing file, and creatable where it does not exist."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"{option} {path}: {existing} is not a writable directory")


def db_path(path: Optional[Path]) -> Path:
    """--db, else $HARNESS_DB, else results/harness.duckdb."""
    from harness.store.db import default_db_path

    return path or default_db_path()
