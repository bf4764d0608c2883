"""Every bad input, by class: exit 2, one `harness: error:` line on stderr, no traceback, and no
database or directory created where none was (or the existing database byte-identical).

Classes: model files (truncated or foreign GGUF, a directory without weights, a hub id that cannot
be loaded), a device that is not there, output targets (a directory, a missing folder), suite and
policy files (non-UTF-8 bytes, not YAML), mirror data (a truncated JSON line, wrong CSV columns, an
out-of-range label), server URLs (port out of range, malformed IPv6, no host), repeated
--model-args keys, a database path that is a directory, answer files that are not UTF-8.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.store.db import Store
from tests.conftest import REPO, harness_cli

pytestmark = pytest.mark.slow
FIXTURES = REPO / "tasks" / "fixtures"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def mirror(tmp: Path, edit: Callable[[Path], None]) -> dict[str, str]:
    """A data mirror (HARNESS_DATA_DIR) made from the fixtures, with one file spoiled by `edit`."""
    root = tmp / "mirror"
    shutil.copytree(FIXTURES, root, ignore=shutil.ignore_patterns("*.py", "*.md"))
    edit(root)
    return {"HARNESS_DATA_DIR": str(root), "HARNESS_DATA_SOURCE": "mirror"}


def truncate_first_line(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0][:150] + "\n")


def drop_a_csv_column(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")


def label_out_of_range(path: Path) -> None:
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows[2]["label"] = 7
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# name -> (prepare(tmp) -> (argv, env), the fragment the error line must contain)
Case = Callable[[Path], tuple[list[str], dict[str, str]]]


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


TRUNCATED_GGUF = b"GGUF" + (3).to_bytes(4, "little") + bytes(5)  # version 3, then the header stops
NOT_UTF8_ROW = b'{"task_id": "HumanEval/0", "completion": "\xff"}\n'
CASES: dict[str, tuple[Case, str]] = {
    "gguf truncated": (lambda t: (["run", "--tasks", "hellaswag", "--model", f"gguf:{_file(t, 'a.gguf', TRUNCATED_GGUF)}"], {}),
                       "truncated GGUF"),
    "gguf foreign bytes": (lambda t: (["run", "--tasks", "hellaswag", "--model", f"gguf:{_file(t, 'b.gguf', bytes(range(256)) * 4)}"], {}),
                           "not a GGUF file"),
    "gguf is a directory": (lambda t: (["run", "--tasks", "hellaswag", "--model", f"gguf:{t}"], {}), "not a directory"),
    "hf dir without weights": (lambda t: (["run", "--tasks", "hellaswag", "--model", f"hf:{(t / 'empty').mkdir() or t / 'empty'}"], {}),
                               "no model weights"),
    "hf hub id offline": (lambda t: (["run", "--tasks", "hellaswag", "--model", "hf:no-such-org/no-such-model-9f2"], OFFLINE),
                          "not in the local Hugging Face cache"),
    "device cuda without cuda": (lambda t: (["run", "--tasks", "hellaswag", "--model-args", "device=cuda"], {}), "no CUDA"),
    "--json is a directory": (lambda t: (["run", "--tasks", "hellaswag", "--json", str(t)], {}), "is a directory"),
    "--json folder missing": (lambda t: (["run", "--tasks", "hellaswag", "--json", str(t / "no" / "x.json")], {}), "does not exist"),
    "suite not UTF-8": (lambda t: (["run", "--suite", str(_file(t, "s.yaml", b"tasks:\n  - {name: hellaswag}\n\xff\xfe\n"))], {}),
                        "not UTF-8"),
    "suite not YAML": (lambda t: (["run", "--suite", str(_file(t, "s.yaml", b"tasks: [hellaswag\n"))], {}), "malformed suite"),
    "suite is a directory": (lambda t: (["run", "--suite", str(t)], {}), "suite"),
    "mirror truncated JSON line": (lambda t: (["run", "--tasks", "hellaswag"],
                                              mirror(t, lambda r: truncate_first_line(r / "hellaswag" / "hellaswag_val.jsonl"))),
                                   "hellaswag_val.jsonl:1: not JSON"),
    "mirror label out of range": (lambda t: (["run", "--tasks", "hellaswag"],
                                             mirror(t, lambda r: label_out_of_range(r / "hellaswag" / "hellaswag_val.jsonl"))),
                                  "hellaswag_val.jsonl:3: label 7 is out of range"),
    "mirror CSV missing a column": (lambda t: (["run", "--tasks", "mmlu_anatomy"],
                                               mirror(t, lambda r: drop_a_csv_column(r / "mmlu" / "test" / "anatomy_test.csv"))),
                                    "anatomy_test.csv:1: the header lacks column(s) answer"),
    "mirror gsm8k row without answer": (lambda t: (["run", "--tasks", "gsm8k"],
                                                   mirror(t, lambda r: (r / "gsm8k" / "test.jsonl").write_text('{"question": "q"}\n'))),
                                        "test.jsonl:1: missing field 'answer'"),
    "url port out of range": (lambda t: (["run", "--tasks", "gsm8k", "--model", "openai:m@http://127.0.0.1:99999/v1"], {}),
                              "Port out of range"),
    "url malformed IPv6": (lambda t: (["run", "--tasks", "gsm8k", "--model", "openai:m@http://[::1/v1"], {}), "Invalid IPv6"),
    "url without host": (lambda t: (["run", "--tasks", "gsm8k", "--model", "openai:m@http://:80/v1"], {}), "no host"),
    "bench url port out of range": (lambda t: (["bench", "--endpoint", "http://127.0.0.1:99999/v1", "--num-prompts", "1"], {}),
                                    "bad port"),
    "repeated model arg": (lambda t: (["run", "--tasks", "hellaswag", "--model-args", "dtype=float32,dtype=bfloat16"], {}), "twice"),
    "replay file not UTF-8": (lambda t: (["run", "--tasks", "humaneval", "--model", f"replay:{_file(t, 'r.jsonl', NOT_UTF8_ROW)}"], {}),
                              "not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2_before_anything_is_stored(name: str, tmp_path: Path) -> None:
    prepare, fragment = CASES[name]
    argv, env = prepare(tmp_path)
    db = tmp_path / "created-by-nobody" / "results.duckdb"
    result = harness_cli(*argv, "--db", str(db), *(["--limit", "1", "--no-progress"] if argv[0] == "run" else []),
                         env={"HARNESS_DATA_SOURCE": "fixture", **env}, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("harness: error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not db.parent.exists(), "a usage error created the database's folder"


@pytest.fixture
def existing_db(tmp_path: Path) -> Path:
    path = tmp_path / "existing.duckdb"
    store = Store(path)
    for run in ("r0", "r1"):
        store.create_run(run, f"cfg-{run}", {"model": "hf:x", "model_fingerprint": "fp", "backend": "hf", "backend_args": {},
                                             "tasks": ["hellaswag"], "seed": 1}, [f"tag-{run}"])
    store.close()
    return path


@pytest.mark.parametrize("argv, fragment", [
    (["compare", "r0", "r1", "--html", "{tmp}"], "is a directory"),
    (["gate", "--baseline", "r0", "--candidate", "r1", "--junit", "{tmp}"], "is a directory"),
    (["gate", "--baseline", "r0", "--candidate", "r1", "--policy", "{tmp}/p.yaml"], "not UTF-8"),
    (["report", "--out", "{tmp}/existing.duckdb"], "is a file"),
    (["run", "--tasks", "hellaswag", "--limit", "1", "--json", "{tmp}", "--no-progress"], "is a directory"),
])
def test_bad_targets_leave_an_existing_database_byte_identical(argv: list[str], fragment: str, tmp_path: Path,
                                                               existing_db: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"max_drop: 1\n\xff\n")
    before = hashlib.sha256(existing_db.read_bytes()).hexdigest()
    result = harness_cli(*[a.replace("{tmp}", str(tmp_path)) for a in argv], "--db", str(existing_db))
    errors = [line for line in result.stderr.splitlines() if line.startswith("harness: error:")]
    assert result.returncode == 2 and len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert hashlib.sha256(existing_db.read_bytes()).hexdigest() == before
    assert not Path(str(existing_db) + ".wal").exists()
