"""The exit-code contract of harness.cli.main: environment errors and task-group failures are one
line and exit 2, Ctrl-C names what survives, UsageError messages are one line by construction."""

from __future__ import annotations

import errno

import pytest

from harness.cli import main as cli
from harness.core.errors import UsageError


def test_environment_errors_are_worded_not_internal() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/results.duckdb")
    assert cli.environment_error(full) == "disk full (/data/results.duckdb): No space left on device"
    assert cli.environment_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp")).startswith("is a directory (/tmp)")
    assert cli.environment_error(ValueError("a bug")) is None


def test_task_group_failures_are_unwrapped_to_their_cause() -> None:
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ExceptionGroup("inner", [UsageError("bad URL")])])
    assert isinstance(cli.leaf(group), UsageError) and str(cli.leaf(group)) == "bad URL"


def test_main_maps_a_usage_error_inside_a_task_group_to_exit_2(monkeypatch, capsys) -> None:
    def raise_group(*args, **kwargs):
        raise ExceptionGroup("unhandled errors in a TaskGroup", [UsageError("openai: bad server URL\nsecond line")])

    monkeypatch.setattr(cli, "app", raise_group)
    assert cli.main(["run"]) == 2
    assert capsys.readouterr().err == "harness: error: openai: bad server URL second line\n"


@pytest.mark.parametrize("argv, resumable", [(["run", "--tasks", "x"], True), (["rag-eval", "data.jsonl"], True),
                                             (["bench"], False), (["report"], False)])
def test_interrupted_message_says_when_the_run_resumes(argv: list[str], resumable: bool) -> None:
    assert ("resumable with the same command" in cli.interrupted_message(argv)) is resumable
