"""The `harness` command. Exit codes: 0 done, 1 gate failed, 2 usage or input error, 3 internal error."""

from __future__ import annotations

import errno
import logging
import os
import sys
import warnings

import typer

from harness.cli import bench, decisions, interop, rag, recipe, report, run, sandbox, serve
from harness.core.errors import UsageError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Evaluate language models; keep every number in DuckDB.")
log = logging.getLogger("harness")
# A killed run keeps every finished sample and cached answer; the same command continues it.
RESUMABLE_COMMANDS = ("run", "rag-eval")


def interrupted_message(argv: list[str]) -> str:
    command = next((a for a in argv if not a.startswith("-")), "")
    if command in RESUMABLE_COMMANDS:
        return "harness: interrupted; the run is resumable with the same command"
    return "harness: interrupted"

# Each command module holds its commands on a Typer of its own (`commands`); they are composed here.
COMMAND_MODULES = (run, bench, decisions, interop, recipe, rag, report, sandbox, serve)
for _module in COMMAND_MODULES:
    app.registered_commands.extend(_module.commands.registered_commands)
    app.registered_groups.extend(_module.commands.registered_groups)


def _setup_logging() -> None:
    level = logging.DEBUG if os.environ.get("HARNESS_DEBUG") else os.environ.get("HARNESS_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="harness: %(levelname)s: %(message)s", stream=sys.stderr)
    # transformers' deprecation notices, raised from inside peft and trl, are not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    for noisy in ("transformers", "datasets", "huggingface_hub", "urllib3", "filelock", "torch", "torchao", "peft", "trl", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _cli_exception_kind(exc: BaseException) -> str | None:
    """Typer vendors its own click, so its exceptions are recognised by name and shape."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "Exit" in names and hasattr(exc, "exit_code"):
        return "exit"
    if "Abort" in names:
        return "abort"
    if "ClickException" in names and hasattr(exc, "format_message"):
        return "usage"
    return None


# The machine, not the input and not a bug: said in one line, exit 2 (a killed run resumes).
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                      errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EISDIR: "is a directory",
                      errno.ENOTDIR: "not a directory", errno.ENOENT: "no such file or directory", errno.EMFILE: "too many open files"}


def leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, as a task group raises them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def environment_error(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{ENVIRONMENT_ERRNOS[exc.errno]}{where}: {exc.strerror or exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    try:
        try:
            result = app(args=argv, standalone_mode=False)
        except BaseExceptionGroup as group:
            raise leaf(group) from group
    except UsageError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)  # one line: UsageError makes sure
        return 2
    except KeyboardInterrupt:
        print(interrupted_message(sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback unless asked for
        kind = _cli_exception_kind(exc)
        if kind == "exit":
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if kind == "abort":
            print(interrupted_message(sys.argv[1:] if argv is None else argv), file=sys.stderr)
            return 130
        if kind == "usage":
            message = exc.format_message()  # type: ignore[attr-defined]
            if message:  # empty when the help text was already shown (no arguments)
                print(f"harness: error: {message}", file=sys.stderr)
            return 2
        message = environment_error(exc)
        if message is not None:
            print(f"harness: error: {message}", file=sys.stderr)
            return 2
        if os.environ.get("HARNESS_DEBUG"):
            raise
        print(f"harness: internal error: {type(exc).__name__}: {exc} (HARNESS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())
