"""Other tools' files: `harness import-lm-eval DIR` (lm-evaluation-harness 0.4 output into the database)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli.options import DbOption, db_path

commands = typer.Typer()


@commands.command("import-lm-eval")
def import_lm_eval(directory: Path = typer.Argument(..., metavar="DIR",
                                                    help="lm-eval's --output_path, or one model folder inside it"),
                   db: Optional[Path] = DbOption) -> None:
    """Import lm-eval 0.4 results (and --log_samples samples): one run per results file, tagged lm-eval:MODEL@DATE."""
    from harness.interop.lm_eval_in import import_dir

    for item in import_dir(db_path(db), directory):
        what = f"{item.tasks} tasks, {item.samples} samples" if item.samples else f"{item.tasks} tasks, metrics only"
        state = "imported" if item.new else "already imported, unchanged"
        typer.echo(f"{item.source}: run {item.run_id} ({what}) tag {item.tag}: {state}")
