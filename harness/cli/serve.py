"""`harness serve judge`: servers a user runs beside an evaluation (today: the scripted judge)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from harness.core.errors import UsageError

serve_app = typer.Typer(no_args_is_help=True, help="Run a local server that evaluations talk to.")
commands = typer.Typer()
commands.add_typer(serve_app, name="serve")


@serve_app.command("judge")
def serve_judge(
    script: Path = typer.Option(..., "--script", help="JSON rules: which reply answers which prompt (docs/rag.md)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="0 picks a free port (printed on start)"),
    log: Optional[Path] = typer.Option(None, "--log", help="append each request as a JSON line"),
) -> None:
    """A scripted OpenAI-compatible judge: replies chosen by rules, every request logged."""
    from harness.serve.scripted_judge import JudgeServer, Script, serve_until_interrupted

    try:
        rules = Script.load(script)
    except (OSError, ValueError, re.error) as exc:
        raise UsageError(f"--script {script}: {exc}") from None
    serve_until_interrupted(JudgeServer(rules, host, port, log))
