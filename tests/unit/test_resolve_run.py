"""Run references are exact: an id, else a unique literal prefix of one, else a tag; `%` and `_` are plain characters."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from harness.core.errors import UsageError
from harness.store.db import Store
from tests.conftest import harness_cli

RUNS = {  # run id -> (tags, status)
    "20260101-120000-abc123": (["base"], "complete"),
    "20260101-120000-abd999": ([], "complete"),
    "run_1": ([], "complete"),
    "runx1": ([], "complete"),
    "50%off": ([], "complete"),
    "abc": ([], "complete"),
    "abcd": ([], "complete"),
    "ünï-1": (["résumé"], "complete"),
    "tagged-by-a-prefix": (["runx", "20260101"], "complete"),
    "old-zeta": (["zeta"], "complete"),
    "new-zeta": (["zeta"], "complete"),  # created later: the tag means this one
    "newest-zeta": (["zeta"], "running"),  # not complete: never what a tag means
    "half": (["wip"], "running"),
}


def _build(path: Path) -> None:
    store = Store(path)
    try:
        for run_id, (tags, status) in RUNS.items():
            store.create_run(run_id, f"cfg-{run_id}", {"model": "hf:x", "model_fingerprint": "f" * 64, "backend": "hf",
                                                       "backend_args": {}, "tasks": ["t"], "seed": 1}, tags)
            store.set_status(run_id, status)
    finally:
        store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("refs") / "r.duckdb"
    _build(path)
    return path


@pytest.fixture
def store(db):
    s = Store(db, read_only=True)
    yield s
    s.close()


@pytest.mark.parametrize(("ref", "run_id"), [
    ("run_1", "run_1"),                      # an id with `_` is itself
    ("run_", "run_1"),                       # `_` is not a one-character wildcard (runx1 does not match)
    ("runx", "runx1"),                       # a prefix wins over the tag `runx` of another run (the order of old)
    ("50%", "50%off"),                       # `%` is literal inside a prefix
    ("abc", "abc"),                          # an exact id wins over the longer abcd it is a prefix of
    ("abcd", "abcd"),
    ("20260101-120000-abc", "20260101-120000-abc123"),
    ("20260101-120000-abc123", "20260101-120000-abc123"),
    ("base", "20260101-120000-abc123"),      # a tag
    ("zeta", "new-zeta"),                    # the latest complete run with the tag
    ("ün", "ünï-1"),                         # unicode prefix
    ("ünï-1", "ünï-1"),
    ("résumé", "ünï-1"),                     # unicode tag
    ("half", "half"),                        # an id resolves whatever the run's status
])
def test_resolves(store, ref, run_id):
    assert store.resolve_run(ref) == run_id


@pytest.mark.parametrize("ref", [
    "%", "_", "%%", "2026%", "2026_", "_un%", "%off", "run%1", "5%", "__", "'", "' OR 1=1 --", "\\",
    "ABC",                                        # case matters
    "resume",                                     # no accent folding
    unicodedata.normalize("NFD", "résumé"),       # nor normalisation: the bytes given are the bytes matched
    "ü%",
])
def test_wildcards_and_lookalikes_match_nothing(store, ref):
    with pytest.raises(UsageError) as exc:
        store.resolve_run(ref)
    assert str(exc.value).startswith(f"no run or tag {ref!r}") and "\n" not in str(exc.value)


def test_ambiguous_prefix_names_the_candidates(store):
    with pytest.raises(UsageError) as exc:
        store.resolve_run("20260101-120000-ab")
    message = str(exc.value)
    assert "ambiguous" in message and "2 runs" in message
    assert "20260101-120000-abc123" in message and "20260101-120000-abd999" in message


def test_a_tag_that_is_an_ambiguous_prefix_is_still_ambiguous(store):
    """`20260101` is a tag of one run and a prefix of two others: prefixes come first, as before."""
    with pytest.raises(UsageError, match="ambiguous"):
        store.resolve_run("20260101")


def test_many_candidates_are_shortened(tmp_path):
    path = tmp_path / "many.duckdb"
    store = Store(path)
    for i in range(8):
        store.create_run(f"r-{i}", "c", {"model": "m", "model_fingerprint": "f", "backend": "b", "backend_args": {},
                                         "tasks": []}, [])
    with pytest.raises(UsageError, match=r"\(8 runs: r-0, r-1, r-2, r-3, r-4 and 3 more\)"):
        store.resolve_run("r-")
    store.close()


@pytest.mark.parametrize("ref", ["", " ", "\t"])
def test_empty_reference_is_refused(store, ref):
    """An empty prefix would otherwise match every run (the only one, in a one-run database)."""
    with pytest.raises(UsageError, match="empty"):
        store.resolve_run(ref)


def test_tag_of_runs_none_complete(store):
    with pytest.raises(UsageError, match="tag 'wip' has no complete run .*half, status running"):
        store.resolve_run("wip")


@pytest.mark.slow  # the CLI as a subprocess
@pytest.mark.parametrize("ref", ["%", "_", "2026%", "20260101-120000-ab", ""])
def test_cli_show_refuses(db, ref):
    result = harness_cli("show", ref, "--db", str(db))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow  # the CLI as a subprocess
def test_cli_show_literal_prefix(db):
    result = harness_cli("show", "run_", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("run run_1 ")
