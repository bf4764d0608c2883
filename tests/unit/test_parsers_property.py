"""Property: whatever bytes or YAML/JSON structure a user's file holds, the suite, policy and mirror
data parsers either return a value or raise UsageError (exit 2 with one line), never anything else
(exit 3, a traceback)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.errors import UsageError
from harness.decisions.gate import load_policy
from harness.run.suite import load_suite
from harness.taskkit import files
from harness.tasks import gsm8k, hellaswag, mmlu

KEYS = ["tasks", "name", "limit", "num_fewshot", "data", "description", "max_drop", "alpha", "metrics", "min_samples",
        "required_tasks", "metric_max_drop", "query", "endings", "label", "ctx_a", "ctx_b", "activity_label", "question",
        "answer", "hellaswag", "gsm8k"]
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5), max_leaves=25)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(parse: Callable[[Path], object], data: bytes, suffix: str = ".yaml") -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            parse(path)
        except UsageError as error:
            assert "\n" not in str(error), "one line"
            return "exit 2"
    return "exit 0"


def suite(path: Path) -> object:
    return load_suite(str(path))[1].selections()


def hellaswag_rows(path: Path) -> object:
    return files.read_jsonl(path, hellaswag.process_row)


def gsm8k_rows(path: Path) -> object:
    return gsm8k.read_jsonl(path)


def mmlu_rows(path: Path) -> object:
    return mmlu.read_csv(path, "anatomy")


PARSERS = [(suite, ".yaml"), (load_policy, ".yaml"), (hellaswag_rows, ".jsonl"), (gsm8k_rows, ".jsonl"), (mmlu_rows, ".csv")]


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    for parse, suffix in PARSERS:
        assert outcome(parse, data, suffix) in ("exit 0", "exit 2")


@PROPERTY
@given(VALUES)
def test_arbitrary_yaml_structures(value: object) -> None:
    text = yaml.safe_dump(value, allow_unicode=True).encode()
    for parse in (suite, load_policy):
        assert outcome(parse, text) in ("exit 0", "exit 2")


@PROPERTY
@given(st.lists(VALUES, min_size=1, max_size=4))
def test_arbitrary_json_lines(rows: list[object]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    for parse in (hellaswag_rows, gsm8k_rows):
        assert outcome(parse, text, ".jsonl") in ("exit 0", "exit 2")


@PROPERTY
@given(st.lists(st.lists(st.text(max_size=8), max_size=7), max_size=5))
def test_arbitrary_csv_tables(rows: list[list[str]]) -> None:
    header = "question,choice0,choice1,choice2,choice3,answer\n"
    text = header + "".join(",".join(json.dumps(cell) for cell in row) + "\n" for row in rows)
    assert outcome(mmlu_rows, text.encode(), ".csv") in ("exit 0", "exit 2")
