import pytest

from harness.core.errors import UsageError
from harness.run.suite import load_suite, suite_names


def test_shipped_suites_validate():
    assert {"smoke", "standard"} <= set(suite_names())
    name, smoke = load_suite("smoke")
    assert name == "smoke" and smoke.data == "fixture"
    selections = smoke.selections()
    assert all(s.data == "fixture" for s in selections)
    assert {s.name for s in selections} >= {"hellaswag", "gsm8k"}
    _, standard = load_suite("standard")
    assert [s.name for s in standard.selections()] == ["mmlu", "hellaswag", "gsm8k"]
    assert standard.selections()[0].num_fewshot == 5


def test_suite_defaults_apply_per_task(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("limit: 7\nnum_fewshot: 1\ntasks:\n  - hellaswag\n  - {name: gsm8k, limit: 2}\n")
    _, suite = load_suite(str(path))
    hs, gsm = suite.selections()
    assert (hs.limit, hs.num_fewshot, gsm.limit, gsm.num_fewshot) == (7, 1, 2, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("tasks: [hellaswag]\nlimits: 3\n", "limits: Extra inputs are not permitted"),
        ("tasks:\n  - {name: hellaswag, shots: 3}\n", "Extra inputs are not permitted"),
        ("tasks: [hellaswag\n", "malformed suite"),
        ("- hellaswag\n", "expected a mapping"),
        ("tasks: []\n", "tasks"),
        ("tasks: [no_such_task]\n", "unknown task: no_such_task"),
        ("tasks: [hellaswag]\nlimit: 0\n", "limit"),
        ("tasks: [hellaswag]\ndata: ftp\n", "data"),
    ],
)
def test_malformed_suites_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_suite(str(path))


def test_unknown_suite_name():
    with pytest.raises(UsageError, match="unknown suite: nope"):
        load_suite("nope")


def test_suite_names_list_suites_not_the_gate_policy() -> None:
    from harness.run.suite import suite_names

    names = suite_names()
    assert {"smoke", "standard"} <= set(names) and "gate" not in names
