"""`harness sandbox run` refuses out-of-bounds limits: exit 2, one line on stderr, no traceback, no sandbox started."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sandbox.bwrap import bwrap_available
from tests.conftest import harness_cli, require_or_skip

BAD = [
    ("--memory-mb", "-5", "--memory-mb must be an integer from 16 to 65536"),
    ("--memory-mb", "0", "--memory-mb must be an integer from 16 to 65536"),
    ("--memory-mb", "15", "--memory-mb must be an integer from 16 to 65536"),
    ("--memory-mb", "65537", "--memory-mb must be an integer from 16 to 65536"),
    ("--memory-mb", "abc", "--memory-mb"),  # refused by the option parser, same shape
    ("--timeout", "0", "--timeout must be a number greater than 0 and at most 3600"),
    ("--timeout", "-1", "--timeout must be a number greater than 0 and at most 3600"),
    ("--timeout", "3601", "--timeout must be a number greater than 0 and at most 3600"),
    ("--timeout", "nan", "--timeout must be a number greater than 0 and at most 3600"),
    ("--timeout", "inf", "--timeout must be a number greater than 0 and at most 3600"),
]


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sandbox-cli") / "prog.py"
    path.write_text("print('ran')\n")
    return path


@pytest.mark.parametrize(("flag", "value", "says"), BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_bad_limit_flag_exits_2_with_one_line(program: Path, flag: str, value: str, says: str) -> None:
    result = harness_cli("sandbox", "run", str(program), "--backend", "bwrap", flag, value, timeout=120)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harness: error: ") and says in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_edge_limits_run(program: Path) -> None:
    require_or_skip(bwrap_available(), "bubblewrap or /usr/bin/python3", "apt-get install bubblewrap python3")
    result = harness_cli("sandbox", "run", str(program), "--backend", "bwrap", "--memory-mb", "16",
                         "--timeout", "3600", timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"status": "passed"' in result.stdout and "ran" in result.stdout
