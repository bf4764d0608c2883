"""`harness gate --sequential` on the embedded model: early pass, early fail, fallback, storage, reuse, bad input.

The baseline is a real stored run of the embedded model on the HellaSwag fixture (50 documents); the
candidates are the model itself and a seeded random-weight model with SmolLM2's tokenizer (a broken
checkpoint). Small tasks need small looks, so the policies here set chunk and min_docs to 10.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import duckdb
import pytest
import yaml

from tests.conftest import harness_cli
from tests.e2e.test_run_e2e import FIXTURE_ENV

EMBEDDED = "hf:smollm2-135m-instruct"
pytestmark = pytest.mark.slow


def _policy(tmp, name: str, **top) -> str:
    data = {"max_drop": 1.0, "sequential": {"min_docs": 10, "chunk": 10}, **top}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _rows(db, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from benchmarks.gpu_check import TINY, build_model, tokenizer_source

    tmp = tmp_path_factory.mktemp("seqgate")
    db = tmp / "r.duckdb"
    result = harness_cli("run", "--tasks", "hellaswag", "--db", str(db), "--tag", "main", "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 0, result.stderr
    broken = build_model(tmp / "random", TINY, tokenizer_source(None), "cpu", "float32")
    return tmp, db, broken


def _gate(db, *args: str):
    return harness_cli("gate", "--baseline", "main", "--sequential", "--no-progress", "--db", str(db), *args,
                       env=FIXTURE_ENV)


def test_itself_passes_early_and_is_stored(setup):
    tmp, db, _ = setup
    junit = tmp / "self.xml"
    result = _gate(db, "--candidate-model", EMBEDDED, "--policy", _policy(tmp, "wide", max_drop=40.0),
                   "--junit", str(junit))
    assert result.returncode == 0, result.stderr
    assert "pass (non-inferior" in result.stdout and "fallback" not in result.stdout.split("| hellaswag")[1]
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().find("properties")}
    used, available = int(props["docs_used"]), int(props["docs_available"])
    assert available == 50 and 10 <= used < 50
    (gate_id, candidate_run, passed, summary), = _rows(
        db, "SELECT gate_id, candidate_run, passed, summary::VARCHAR FROM sequential_gates")
    assert passed and json.loads(summary)["docs_used"] == used
    trace = _rows(db, "SELECT metric, look, docs_used, ci_low, ci_high, e_pass FROM gate_traces WHERE gate_id = ? "
                      "AND metric = 'acc_norm' ORDER BY look", [gate_id])
    assert [t[2] for t in trace] == sorted({t[2] for t in trace}) and trace[-1][2] == used
    assert trace[-1][4] - trace[-1][3] < trace[0][4] - trace[0][3]  # the interval narrows
    assert trace[-1][5] >= 1 / 0.025 > trace[0][5]  # the pass e-value crossed 1/alpha_seq at the end, not before
    status, n, distinct = _rows(db, "SELECT r.status, count(*), count(DISTINCT s.doc_id) FROM runs r JOIN samples s "
                                    "USING (run_id) WHERE run_id = ? GROUP BY r.status", [candidate_run])[0]
    assert status == "partial" and n == distinct == used


def test_a_broken_checkpoint_fails_early_and_a_later_run_reuses_its_answers(setup):
    tmp, db, broken = setup
    junit = tmp / "broken.xml"
    result = _gate(db, "--candidate-model", f"hf:{broken}", "--policy", _policy(tmp, "strict"), "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate failed" in result.stderr and "fail (regression beyond tolerance" in result.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1" and suite.find("testcase/failure") is not None
    used = int({p.get("name"): p.get("value") for p in suite.find("properties")}["docs_used"])
    per_metric = {p.get("name"): p.get("value") for p in suite.find("testcase/properties")}
    assert min(int(v.split("/")[0]) for k, v in per_metric.items() if k.endswith(".docs")) < 50  # decided early
    full = harness_cli("run", "--model", f"hf:{broken}", "--tasks", "hellaswag", "--db", str(db), "--no-progress",
                       env=FIXTURE_ENV)
    assert full.returncode == 0, full.stderr
    assert f"{4 * used} from cache" in full.stdout  # every answer of the partial run, none recomputed


def test_undecided_falls_back_to_the_fixed_sample_test(setup):
    tmp, db, _ = setup
    result = _gate(db, "--candidate-model", EMBEDDED, "--policy", _policy(tmp, "zero", max_drop=0.0))
    assert result.returncode == 0, result.stderr
    assert "no regression shown; undecided, fixed-sample fallback" in result.stdout
    assert "50/50" in result.stdout


def test_the_report_draws_the_trace(setup):
    tmp, db, _ = setup
    site = tmp / "site"
    result = harness_cli("report", "--out", str(site), "--db", str(db))
    assert result.returncode == 0, result.stderr
    index = (site / "gates" / "index.html").read_text()
    gate_ids = [g for (g,) in _rows(db, "SELECT gate_id FROM sequential_gates")]
    assert gate_ids and all(g in index for g in gate_ids)
    page = (site / "gates" / f"{gate_ids[0]}.html").read_text()
    assert "ci-band" in page and 'class="stop"' in page and 'class="tolerance"' in page


@pytest.mark.parametrize("args,message", [
    (["--candidate-model", EMBEDDED, "--tasks", "mmlu_anatomy"], "no documents in common"),
    (["--candidate-model", EMBEDDED, "--policy", "METRIC"], "has no per-sample value"),
    (["--candidate-model", EMBEDDED, "--candidate", "main"], "exactly one of --candidate"),
    (["--candidate", "main"], "need --candidate-model"),
])
def test_bad_input_is_one_line_and_writes_nothing(setup, args, message):
    tmp, db, _ = setup
    if "METRIC" in args:
        args = [a if a != "METRIC" else _policy(tmp, "metric", metrics=["word_perplexity"]) for a in args]
    before = _rows(db, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM sequential_gates)")
    result = _gate(db, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _rows(db, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM sequential_gates)") == before


def test_a_baseline_without_samples_is_refused(setup, tmp_path):
    _, db, _ = setup
    copy = tmp_path / "nosamples.duckdb"
    shutil.copyfile(db, copy)  # every harness process has closed the file: no WAL beside it
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM samples WHERE run_id IN (SELECT run_id FROM run_tags WHERE tag = 'main')")
    con.close()
    result = _gate(copy, "--candidate-model", EMBEDDED)
    assert result.returncode == 2 and "has no per-sample results" in result.stderr, result.stderr
