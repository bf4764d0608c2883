"""Bad input: one line on stderr, exit code 2, and the database untouched."""

import hashlib
from pathlib import Path

import pytest

from harness.store.db import Store
from tests.conftest import harness_cli


@pytest.fixture
def existing_db(tmp_path: Path) -> Path:
    path = tmp_path / "existing.duckdb"
    store = Store(path)
    store.create_run("r0", "cfg", {"model": "hf:x", "model_fingerprint": "fp", "backend": "hf", "backend_args": {},
                                   "tasks": ["hellaswag"], "seed": 1}, ["keep"])
    store.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_clean_failure(result, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def _malformed_suite(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("tasks: [hellaswag]\nshots: 5\n")
    return str(path)


@pytest.mark.parametrize(
    "make_args, env, expected",
    [
        (lambda tmp: ["--tasks", "hellaswagg"], {}, "unknown task: hellaswagg (did you mean hellaswag?)"),
        (lambda tmp: ["--suite", "no_such_suite"], {}, "unknown suite: no_such_suite"),
        (lambda tmp: ["--suite", _malformed_suite(tmp)], {}, "shots: Extra inputs are not permitted"),
        (lambda tmp: ["--tasks", "gsm8k"], {"HARNESS_DATA_SOURCE": "mirror", "HARNESS_DATA_DIR": "{tmp}"}, "missing dataset for gsm8k"),
        (lambda tmp: ["--tasks", "hellaswag", "--model", "hf:/no/such/model"], {}, "model path does not exist"),
        (lambda tmp: ["--tasks", "hellaswag", "--model-args", "dtype"], {}, "malformed --model-args"),
        (lambda tmp: ["--tasks", "hellaswag", "--model-args", "colour=blue"], {}, "colour"),
        (lambda tmp: ["--tasks", "hellaswag", "--model", "nosuch:model"], {}, "unknown backend prefix"),
        (lambda tmp: ["--tasks", "hellaswag", "--limit", "0"], {}, "--limit"),
        (lambda tmp: ["--tasks", "hellaswag", "--bogus-flag"], {}, "No such option"),
    ],
    ids=["unknown-task", "unknown-suite", "malformed-suite", "missing-data", "missing-model-path", "malformed-model-args",
         "unknown-model-arg", "unknown-backend", "bad-limit", "unknown-flag"],
)
def test_bad_input_is_one_line_exit_2_and_leaves_db_unchanged(tmp_path, existing_db, make_args, env, expected):
    before = _digest(existing_db)
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    result = harness_cli("run", *make_args(tmp_path), "--db", str(existing_db), "--no-progress", env=env)
    _assert_clean_failure(result, expected)
    assert _digest(existing_db) == before
    assert not Path(str(existing_db) + ".wal").exists()


def test_unwritable_db_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = harness_cli("run", "--tasks", "hellaswag", "--limit", "1", "--db", str(blocker / "r.duckdb"), "--no-progress",
                         env={"HARNESS_DATA_SOURCE": "fixture"})
    _assert_clean_failure(result, "cannot open database")


def test_show_unknown_run(existing_db):
    result = harness_cli("show", "zzz", "--db", str(existing_db))
    _assert_clean_failure(result, "no run or tag 'zzz'")


def test_runs_without_database(tmp_path):
    result = harness_cli("runs", "--db", str(tmp_path / "missing.duckdb"))
    _assert_clean_failure(result, "no results database")
