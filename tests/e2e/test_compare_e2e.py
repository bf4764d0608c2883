"""Compare, gate and export/import on real runs of the embedded model: fp32 vs its bf16-rounded sibling."""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.conftest import harness_cli
from tests.e2e.test_run_e2e import FIXTURE_ENV, _degraded_copy

TASKS = "hellaswag,mmlu_anatomy"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from harness.backends.embedded import ensure_hf_dir

    tmp = tmp_path_factory.mktemp("cmp")
    db = tmp / "r.duckdb"
    sibling = _degraded_copy(ensure_hf_dir(), tmp / "bf16")
    for tag, model in (("full", []), ("rounded", ["--model", f"hf:{sibling}"])):
        result = harness_cli("run", *model, "--tasks", TASKS, "--limit", "10", "--db", str(db), "--tag", tag,
                             "--no-progress", env=FIXTURE_ENV)
        assert result.returncode == 0, result.stderr
    return tmp, db


def _metrics(db, run_ref_sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT task, metric, value, stderr, n FROM metrics WHERE run_id = ({run_ref_sql}) "
                           "ORDER BY task, metric").fetchall()
    finally:
        con.close()


def test_compare_and_gate_agree(two_runs):
    tmp, db = two_runs
    out = tmp / "cmp.json"
    result = harness_cli("compare", "full", "rounded", "--db", str(db), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "p_holm" in result.stdout and "chosen answer agrees" in result.stdout
    cmp = json.loads(out.read_text())
    assert {(m["task"], m["metric"]) for m in cmp["metrics"]} == {
        ("hellaswag", "acc"), ("hellaswag", "acc_norm"), ("mmlu_anatomy", "acc")}
    for m in cmp["metrics"]:
        assert m["n_paired"] == 10 and m["kind"] == "binary"
        assert m["ci_low"] <= m["delta"] <= m["ci_high"] and 0 <= m["p_value"] <= m["p_adjusted"] <= 1
        assert m["delta"] == pytest.approx(m["value_b"] - m["value_a"])
        assert m["improved"] + m["regressed"] == sum(f["task"] == m["task"] and f["metric"] == m["metric"]
                                                     for f in cmp["flips"])
    shifts = {s["task"]: s for s in cmp["loglikelihood"]}
    assert set(shifts) == {"hellaswag", "mmlu_anatomy"}
    for s in shifts.values():
        assert s["n"] == 10 and 0 < s["agreement"] <= 1
        assert any(d != 0 for d in s["diffs"]) and len(s["pairs"]) == len(s["diffs"])
        assert s["movers"][0][1] == pytest.approx(max(abs(d) for d in s["diffs"]))
    # the store's own metrics of each run match the paired means (every document is paired here)
    full = dict(((t, m), v) for t, m, v, _, _ in _metrics(db, "SELECT run_id FROM run_tags WHERE tag = 'full'"))
    for m in cmp["metrics"]:
        assert m["value_a"] == pytest.approx(full[(m["task"], m["metric"])])

    policy = tmp / "lenient.yaml"
    policy.write_text("max_drop: 50\nmin_samples: 5\nrequired_tasks: [hellaswag, mmlu_anatomy]\n")
    junit = tmp / "gate.xml"
    gate = harness_cli("gate", "--baseline", "full", "--candidate", "rounded", "--policy", str(policy),
                       "--junit", str(junit), "--db", str(db))
    assert gate.returncode == 0, gate.stderr + gate.stdout
    for m in cmp["metrics"]:  # the gate reports the same paired values and p-values as compare
        assert f"| {m['task']} | {m['metric']} | {m['value_a']:.4f} | {m['value_b']:.4f} |" in gate.stdout
    assert junit.read_text().count("<testcase") == 2

    # ten documents are fewer than the default policy's minimum: the gate refuses rather than passes
    strict = harness_cli("gate", "--baseline", "full", "--candidate", "rounded", "--db", str(db))
    assert strict.returncode == 2 and "nothing to gate" in strict.stderr

    # the verdict is stored: the tag's history shows it beside the run's value (the refused gate left no verdict)
    con = duckdb.connect(str(db), read_only=True)
    (verdicts,) = con.execute("SELECT count(*) FROM gates WHERE kind = 'fixed' AND passed").fetchone()
    con.close()
    assert verdicts == 1
    history_json = tmp / "history.json"
    shown = harness_cli("history", "--tag", "rounded", "--metric", "hellaswag/acc_norm", "--json", str(history_json),
                        "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(history_json.read_text())
    rounded = dict(((t, m), v) for t, m, v, _, _ in _metrics(db, "SELECT run_id FROM run_tags WHERE tag = 'rounded'"))
    assert row["gate_passed"] is True and row["decision"] == "pass" and row["gate_kind"] == "fixed"
    assert row["value"] == pytest.approx(rounded[("hellaswag", "acc_norm")]) and "pass (fixed, pass)" in shown.stdout
    missing = harness_cli("history", "--tag", "no-such-tag", "--db", str(db))
    assert missing.returncode == 2 and "no complete run tagged" in missing.stderr


def test_export_import_round_trip(two_runs):
    tmp, db = two_runs
    exported = tmp / "exported"
    result = harness_cli("export", "rounded", "--parquet", str(exported), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert {p.name for p in exported.iterdir()} >= {"runs.parquet", "samples.parquet", "metrics.parquet", "manifest.json"}
    other = tmp / "other.duckdb"
    result = harness_cli("import", str(exported), "--db", str(other))
    assert result.returncode == 0, result.stderr
    ref = "SELECT run_id FROM run_tags WHERE tag = 'rounded'"
    assert _metrics(other, ref) == _metrics(db, ref) and len(_metrics(other, ref)) == 3
    con_a, con_b = duckdb.connect(str(db), read_only=True), duckdb.connect(str(other), read_only=True)
    try:
        query = f"SELECT task, doc_id, doc_hash, metrics::VARCHAR, loglikelihoods FROM samples WHERE run_id = ({ref}) ORDER BY ALL"
        assert con_a.execute(query).fetchall() == con_b.execute(query).fetchall()
        assert con_b.execute("SELECT status FROM runs").fetchall() == [("complete",)]
    finally:
        con_a.close()
        con_b.close()
    shown = harness_cli("show", "rounded", "--db", str(other))
    assert shown.returncode == 0, shown.stderr
    again = harness_cli("import", str(exported), "--db", str(other))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_report_agrees_with_compare(two_runs):
    """The leaderboard shows each run's stored metric; the comparison page shows compare's agreement."""
    import re

    tmp, db = two_runs
    site = tmp / "site"
    built = harness_cli("report", "--out", str(site), "--db", str(db))
    assert built.returncode == 0, built.stderr
    index = (site / "index.html").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-run="([^"]+)"(.*?)</tr>', index, re.S)}
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("""SELECT m.run_id, m.value FROM metrics m JOIN run_tags t USING (run_id)
                            WHERE t.tag IN ('full', 'rounded') AND m.task = 'hellaswag' AND m.metric = 'acc_norm'""").fetchall()
    con.close()
    assert len(stored) == 2
    for run_id, value in stored:
        cells = [float(c) for c in re.findall(r'<td class="num" data-value="([^"]+)"', rows[run_id])]
        assert value in cells

    page, out = tmp / "cmp.html", tmp / "c2.json"
    shown = harness_cli("compare", "full", "rounded", "--db", str(db), "--html", str(page), "--json", str(out))
    assert shown.returncode == 0, shown.stderr
    html = page.read_text()
    for shift in json.loads(out.read_text())["loglikelihood"]:
        assert f"the chosen answer agrees on {100 * shift['agreement']:.1f}% of them" in html
