"""`harness sandbox run FILE`: run one program in the code sandbox and print its verdict as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.core.errors import UsageError

sandbox_app = typer.Typer(no_args_is_help=True, help="Run programs in the code-execution sandbox.")
commands = typer.Typer()
commands.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("run")
def sandbox_run(
    file: Path = typer.Argument(..., help="Python file to run (as main.py in a fresh work dir)"),
    backend: str = typer.Option("auto", "--backend", help="auto | docker | bwrap | local"),
    timeout: float = typer.Option(10.0, "--timeout", help="wall-clock limit in seconds"),
    memory_mb: int = typer.Option(512, "--memory-mb", help="memory limit in MiB"),
    allow_unsandboxed_code: bool = typer.Option(False, "--allow-unsandboxed-code",
                                                help="permit --backend local (no isolation)"),
) -> None:
    """Run FILE with python3 in the sandbox; print {status, exit_code, stdout, stderr, wall_s, cpu_s, ...}.
    Exit code 0 when the program passed (exit 0), 1 otherwise."""
    from harness.sandbox import Limits, get_sandbox

    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    source = file.read_bytes()
    with get_sandbox(backend, allow_unsandboxed=allow_unsandboxed_code) as box:
        verdict = box.run({"main.py": source}, ["python3", "main.py"], Limits(timeout_s=timeout, memory_mb=memory_mb))
    typer.echo(verdict.to_json())
    if verdict.status != "passed":
        raise typer.Exit(1)
