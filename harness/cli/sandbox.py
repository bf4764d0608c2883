"""`harness sandbox run FILE`: run one program in the code sandbox and print its verdict as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.core.errors import UsageError

sandbox_app = typer.Typer(no_args_is_help=True, help="Run programs in the code-execution sandbox.")
commands = typer.Typer()
commands.add_typer(sandbox_app, name="sandbox")

# The Limits field each option sets: a value out of its bounds (sandbox/base.py LIMIT_BOUNDS) is named by its option.
LIMIT_OPTIONS = {"timeout_s": "--timeout", "memory_mb": "--memory-mb"}


@sandbox_app.command("run")
def sandbox_run(
    file: Path = typer.Argument(..., help="Python file to run (as main.py in a fresh work dir)"),
    backend: str = typer.Option("auto", "--backend", help="auto | docker | bwrap | local"),
    timeout: float = typer.Option(10.0, "--timeout", help="wall-clock limit in seconds (0 < T <= 3600)"),
    memory_mb: int = typer.Option(512, "--memory-mb", help="memory limit in MiB (16 to 65536)"),
    allow_unsandboxed_code: bool = typer.Option(False, "--allow-unsandboxed-code",
                                                help="permit --backend local (no isolation)"),
) -> None:
    """Run FILE with python3 in the sandbox; print {status, exit_code, stdout, stderr, wall_s, cpu_s, ...}.
    Exit code 0 when the program passed (exit 0), 1 otherwise."""
    from harness.sandbox import Limits, get_sandbox
    from harness.sandbox.base import LimitError

    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    try:  # before any sandbox starts: Limits checks every field against its bounds
        limits = Limits(timeout_s=timeout, memory_mb=memory_mb)
    except LimitError as exc:
        option = LIMIT_OPTIONS.get(exc.field)
        if option is None:
            raise
        raise UsageError(f"{option} must be {exc.allowed}, got {exc.value}") from None
    source = file.read_bytes()
    with get_sandbox(backend, allow_unsandboxed=allow_unsandboxed_code) as box:
        verdict = box.run({"main.py": source}, ["python3", "main.py"], limits)
    typer.echo(verdict.to_json())
    if verdict.status != "passed":
        raise typer.Exit(1)
