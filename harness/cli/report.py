"""`harness report`: write the static leaderboard site (index.html, one page per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import DbOption, check_output_dir, db_path

commands = typer.Typer()


@commands.command()
def report(
    out: Path = typer.Option(Path("site"), "--out", help="directory to write the site into (default: site/)"),
    db: Optional[Path] = DbOption,
) -> None:
    """Write a static HTML leaderboard and a page per run; opens from file://, no network."""
    from harness.report.site import build_site
    from harness.store.db import Store

    check_output_dir(out, "--out")
    store = Store(db_path(db), read_only=True)
    try:
        index = build_site(store, out)
    finally:
        store.close()
    typer.echo(f"report written to {index}")
