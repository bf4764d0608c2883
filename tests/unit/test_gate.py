"""The gate on constructed runs written straight into a DuckDB file, through the real CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.decisions.compare import Comparison, MetricComparison, compare_runs
from harness.decisions.gate import Policy, decide, junit_xml, load_policy
from harness.store.db import MetricRow, SampleRow, Store
from tests.conftest import REPO, harness_cli


def add_run(db: Path, run_id: str, tasks: dict[str, list[float]], tags: tuple[str, ...] = (), status: str = "complete",
            doc_prefix: str = "doc", shots: int = 0, metric: str = "acc") -> None:
    """A run whose task T has one sample per value, metric `metric` = value; documents hashed by position."""
    store = Store(db)
    try:
        store.create_run(run_id, f"cfg-{run_id}", {"model": f"model-{run_id}", "model_fingerprint": f"fp-{run_id}",
                                                   "backend": "test", "backend_args": {}, "tasks": list(tasks)}, tags)
        for task, values in tasks.items():
            store.record_task(run_id, {"task": task, "version": "1", "num_fewshot": shots, "source": "fixture:x",
                                       "fingerprint": "f" * 64, "n_docs": len(values), "prompts_hash": "p" * 64})
            store.insert_samples(run_id, [
                SampleRow(task, i, f"{doc_prefix}-{task}-{i}", f"prompt-{task}-{i}", "t", f"Question {i}?", "B",
                          {}, "B" if v == 1 else "C", {metric: v}, None)
                for i, v in enumerate(values)])
            store.write_metrics(run_id, [MetricRow(task, metric, sum(values) / len(values), None, None, None, len(values))])
        store.set_status(run_id, status)
    finally:
        store.close()


BASE = [1.0] * 60 + [0.0] * 40  # 100 documents, accuracy 0.60


def _with_flips(values: list[float], down: int = 0, up: int = 0) -> list[float]:
    out = list(values)
    ones = [i for i, v in enumerate(out) if v == 1][:down]
    zeros = [i for i, v in enumerate(out) if v == 0][:up]
    for i in ones:
        out[i] = 0.0
    for i in zeros:
        out[i] = 1.0
    return out


def _gate(db: Path, *extra: str):
    return harness_cli("gate", "--baseline", "base", "--candidate", "cand", "--db", str(db), *extra)


def test_identical_runs_pass(db_path):
    add_run(db_path, "base", {"task_a": BASE, "task_b": BASE})
    add_run(db_path, "cand", {"task_a": BASE, "task_b": BASE})
    result = _gate(db_path)
    assert result.returncode == 0, result.stderr
    assert "gate passed" in result.stdout and "| task_a | acc |" in result.stdout


def test_significant_drop_beyond_tolerance_fails_with_junit(db_path, tmp_path):
    add_run(db_path, "base", {"task_a": BASE, "task_b": BASE})
    add_run(db_path, "cand", {"task_a": _with_flips(BASE, down=20), "task_b": BASE})
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    result = _gate(db_path, "--junit", str(junit), "--markdown", str(md))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "gate failed" in result.stderr
    assert result.stdout == ""  # the summary went to --markdown
    assert "gate failed: 1 regression" in md.read_text()
    suite = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"task_a", "task_b"}
    assert cases["task_a"].find("failure") is not None and "acc" in cases["task_a"].find("failure").get("message")
    assert cases["task_b"].find("failure") is None
    assert suite.get("tests") == "2" and suite.get("failures") == "1"


def test_small_insignificant_drop_passes(db_path):
    add_run(db_path, "base", {"task_a": BASE})
    add_run(db_path, "cand", {"task_a": _with_flips(BASE, down=3)})  # 3 points, McNemar p = 0.25
    result = _gate(db_path)
    assert result.returncode == 0, result.stderr
    assert "not significant" in result.stdout


def test_drop_within_a_generous_tolerance_passes(db_path, tmp_path):
    add_run(db_path, "base", {"task_a": BASE})
    add_run(db_path, "cand", {"task_a": _with_flips(BASE, down=20)})
    policy = tmp_path / "p.yaml"
    policy.write_text("max_drop: 5\ntasks:\n  task_a: {max_drop: 25}\n")
    assert _gate(db_path, "--policy", str(policy)).returncode == 0
    policy.write_text("max_drop: 5\ntasks:\n  task_a: {metric_max_drop: {acc: 10}}\n")
    assert _gate(db_path, "--policy", str(policy)).returncode == 1


def test_improvement_passes(db_path):
    add_run(db_path, "base", {"task_a": BASE})
    add_run(db_path, "cand", {"task_a": _with_flips(BASE, up=25)})
    result = _gate(db_path)
    assert result.returncode == 0, result.stderr
    assert "improved 25.00 points" in result.stdout


def test_too_few_paired_samples_for_a_required_task_is_exit_2(db_path, tmp_path):
    add_run(db_path, "base", {"task_a": BASE, "task_small": BASE[:10]})
    add_run(db_path, "cand", {"task_a": BASE, "task_small": BASE[:10]})
    policy = tmp_path / "p.yaml"
    policy.write_text("required_tasks: [task_small]\nmin_samples: 20\n")
    result = _gate(db_path, "--policy", str(policy))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "harness: error: required task task_small has 10 paired documents, the policy needs at least 20"]
    # not required: it is skipped (reported), and the rest is gated
    result = _gate(db_path)
    assert result.returncode == 0 and "skipped task_small: 10 paired documents" in result.stdout
    policy.write_text("required_tasks: [task_missing]\n")
    result = _gate(db_path, "--policy", str(policy))
    assert result.returncode == 2 and "task_missing" in result.stderr


@pytest.mark.parametrize("text, words", [
    ("max_drop: 1\nunknown_key: 3\n", "unknown_key"),
    ("alpha: 2\n", "alpha"),
    ("tasks:\n  task_a: {max_dorp: 3}\n", "max_dorp"),
    ("max_drop: [1, 2\n", "not valid YAML"),
])
def test_bad_policy_is_exit_2(db_path, tmp_path, text, words):
    add_run(db_path, "base", {"task_a": BASE})
    add_run(db_path, "cand", {"task_a": BASE})
    policy = tmp_path / "bad.yaml"
    policy.write_text(text)
    result = _gate(db_path, "--policy", str(policy))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_missing_run_no_overlap_and_incomplete_run_are_exit_2(db_path):
    add_run(db_path, "base", {"task_a": BASE})
    result = _gate(db_path)
    assert result.returncode == 2 and "no run or tag 'cand'" in result.stderr
    add_run(db_path, "cand", {"task_a": BASE}, doc_prefix="other")
    result = _gate(db_path)
    assert result.returncode == 2 and "share no documents" in result.stderr
    add_run(db_path, "half", {"task_a": BASE}, status="running")
    result = harness_cli("gate", "--baseline", "base", "--candidate", "half", "--db", str(db_path))
    assert result.returncode == 2 and "not complete" in result.stderr


def test_gate_by_tag_and_the_tag_command(db_path):
    add_run(db_path, "run-1", {"task_a": BASE}, tags=("main",))
    add_run(db_path, "run-2", {"task_a": _with_flips(BASE, down=20)})
    tagged = harness_cli("tag", "run-2", "candidate", "--db", str(db_path))
    assert tagged.returncode == 0, tagged.stderr
    result = harness_cli("gate", "--baseline", "main", "--candidate", "candidate", "--db", str(db_path))
    assert result.returncode == 1 and "run-1" in result.stdout and "run-2" in result.stdout
    assert harness_cli("tag", "nope", "x", "--db", str(db_path)).returncode == 2


def test_compare_warns_about_different_shots_and_few_documents(db_path, tmp_path):
    add_run(db_path, "base", {"task_a": BASE[:12]})
    add_run(db_path, "cand", {"task_a": BASE[:12]}, shots=5)
    out, html = tmp_path / "cmp.json", tmp_path / "cmp.html"
    result = harness_cli("compare", "base", "cand", "--db", str(db_path), "--json", str(out), "--html", str(html))
    assert result.returncode == 0, result.stderr
    assert "<html" in html.read_text().lower()
    assert "num_fewshot (shots)" in result.stdout and "few documents overlap" in result.stdout
    data = json.loads(out.read_text())
    assert data["metrics"][0]["n_paired"] == 12 and data["metrics"][0]["delta"] == 0


def test_flips_and_holm_on_constructed_runs(db_path):
    add_run(db_path, "base", {"task_a": BASE, "task_b": BASE})
    add_run(db_path, "cand", {"task_a": _with_flips(BASE, down=5, up=1), "task_b": BASE})
    store = Store(db_path, read_only=True)
    try:
        cmp = compare_runs(store, "base", "cand")
    finally:
        store.close()
    a = next(m for m in cmp.metrics if m.task == "task_a")
    assert (a.improved, a.regressed, a.n_paired, a.kind) == (1, 5, 100, "binary")
    assert a.delta == pytest.approx(-0.04) and a.ci_low < a.delta < a.ci_high
    assert a.p_adjusted == pytest.approx(min(1.0, 2 * a.p_value))  # two tested metrics, the other has p = 1
    flips = [f for f in cmp.flips if f.task == "task_a"]
    assert len(flips) == 6 and {(f.answer_a, f.answer_b) for f in flips} == {("B", "C"), ("C", "B")}
    assert all(f.prompt_excerpt.startswith("Question") and f.target == "B" for f in flips)


def _metric(task: str, value_a: float, value_b: float, p: float, higher_is_better: bool) -> MetricComparison:
    return MetricComparison(task, "loss", "continuous", higher_is_better, value_a, value_b, value_b - value_a,
                            value_b - value_a - 0.01, value_b - value_a + 0.01, p, p, 500, 0, 0)


def test_lower_is_better_metrics_fail_on_a_rise():
    cmp = Comparison("a", "b", "m", "m", [_metric("t1", 0.20, 0.30, 1e-6, False), _metric("t2", 0.30, 0.20, 1e-6, False)],
                     [], [], [])
    result = decide(cmp, Policy())
    status = {d.task: d.status for d in result.decisions}
    assert status == {"t1": "fail", "t2": "pass"} and not result.passed
    root = ET.fromstring(junit_xml(result).encode())
    assert [c.get("name") for c in root.iter("testcase")] == ["t1", "t2"]


def test_default_policy_file_matches_the_built_in_defaults():
    assert load_policy(REPO / "suites" / "gate.yaml") == Policy()
