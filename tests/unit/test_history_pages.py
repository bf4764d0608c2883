"""History pages: gates.history over a tag's runs (oldest first, the gate verdict of each) and the page's plot."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.report.history_pages import page_name, write_history_pages
from harness.report.plots import history_plot
from harness.store import gates
from harness.store.db import MetricRow, Store

RUNS = ("run-001", "run-002", "run-003")  # oldest first; 002 gated pass, 003 gated fail, 001 never a candidate
ACC = (0.61, 0.63, 0.55)


def _decision(status: str, baseline: float, candidate: float) -> dict:
    return {"task": "hellaswag", "metric": "acc_norm", "status": status, "baseline": baseline, "candidate": candidate,
            "delta": candidate - baseline, "ci_low": candidate - baseline - 0.02, "ci_high": candidate - baseline + 0.02,
            "p_value": 0.01, "p_adjusted": 0.01, "n": 100, "tolerance": 0.01, "reason": "test"}


def build_history_db(path: Path, *, other_tag: str = "nightly") -> Store:
    """Three complete runs tagged main (a minute apart, the newest inserted first), a running one, a run under another
    tag, and two fixed gates: run-002 against run-001 passed, run-003 against run-002 failed (on hellaswag/acc_norm)."""
    store = Store(path)
    start = datetime(2024, 5, 1, 12, 0, 0)
    fields = {"model_fingerprint": "fp", "backend": "hf", "backend_args": {}, "suite": "smoke", "tasks": ["hellaswag"],
              "num_fewshot": 0, "limit": 100, "seed": 1}
    for i in reversed(range(3)):
        run = RUNS[i]
        store.create_run(run, f"cfg-{run}", {**fields, "model": f"hf:model-{i}"}, [])
        store.add_tags(run, ["main"])
        store.write_metrics(run, [MetricRow("hellaswag", "acc_norm", ACC[i], 0.02, ACC[i] - 0.04, ACC[i] + 0.04, 100),
                                  MetricRow("mmlu_anatomy", "acc", ACC[i] / 2, 0.03, ACC[i] / 2 - 0.06, ACC[i] / 2 + 0.06, 100)])
        store.set_status(run, "complete", {})
        store.con.execute("UPDATE runs SET created_at = ? WHERE run_id = ?", [start + timedelta(minutes=i), run])
    store.create_run("run-running", "cfg-running", {**fields, "model": "hf:wip"}, ["main", "wip"])
    store.write_metrics("run-running", [MetricRow("hellaswag", "acc_norm", 0.9, None, None, None, 10)])
    store.create_run("run-other", "cfg-other", {**fields, "model": "hf:other"}, [other_tag])
    store.write_metrics("run-other", [MetricRow("hellaswag", "acc_norm", 0.5, None, None, None, 10)])
    store.set_status("run-other", "complete", {})
    gates.record_gate(store, "gate-a", "fixed", RUNS[0], RUNS[1], True, {"tolerance": 0.01},
                      [_decision("pass", ACC[0], ACC[1])])
    gates.record_gate(store, "gate-b", "fixed", RUNS[1], RUNS[2], False, {"tolerance": 0.01},
                      [_decision("fail", ACC[1], ACC[2])])
    return store


@pytest.fixture
def store(tmp_path):
    s = build_history_db(tmp_path / "results.duckdb")
    yield s
    s.close()


def test_history_rows_in_run_order_with_verdicts(store):
    rows = gates.history(store, "main", "hellaswag/acc_norm")
    assert [r["run_id"] for r in rows] == list(RUNS)  # oldest first, the running run left out
    assert [r["value"] for r in rows] == pytest.approx(list(ACC))
    assert [r["gate_passed"] for r in rows] == [None, True, False]
    assert [r["decision"] for r in rows] == [None, "pass", "fail"]
    assert [r["gate_id"] for r in rows] == [None, "gate-a", "gate-b"]
    assert [r["gate_kind"] for r in rows] == [None, "fixed", "fixed"]
    # without a metric: only what a gate judged (hellaswag/acc_norm), not mmlu_anatomy/acc
    default = gates.history(store, "main")
    assert {(r["task"], r["metric"]) for r in default} == {("hellaswag", "acc_norm")}
    assert [r["run_id"] for r in default] == list(RUNS)
    other = gates.history(store, "main", "mmlu_anatomy/acc")
    assert [r["run_id"] for r in other] == list(RUNS) and [r["decision"] for r in other] == [None, None, None]
    assert [r["gate_passed"] for r in other] == [None, True, False]


def _circles(svg: str) -> list[str]:
    return re.findall(r'<circle class="run (\w+)"', svg)


def test_history_page_plot_has_a_circle_per_run(store, tmp_path):
    index = write_history_pages(store, tmp_path / "site")
    listing = index.read_text(encoding="utf-8")
    assert 'href="main.html"' in listing and 'href="nightly.html"' in listing and "wip.html" not in listing
    html = (index.parent / page_name("main")).read_text(encoding="utf-8")
    svgs = re.findall(r'<svg\b[^>]*class="plot history".*?</svg>', html, flags=re.S)
    assert len(svgs) == 1 and "hellaswag acc_norm" in svgs[0]
    assert _circles(svgs[0]) == ["ungated", "pass", "fail"]
    assert len(re.findall(r'<line class="ci"', svgs[0])) == 3
    assert "run-running" not in html and "mmlu_anatomy" not in html
    assert html.count("<b class=\"pass\">") == 1 and html.count("<b class=\"fail\">") == 1


def test_history_plot_skips_non_finite_and_escapes():
    points = [("<run>", 0.5, 0.4, 0.6, None), ("nan", float("nan"), None, None, "pass"), ("b", 0.7, None, None, "fail")]
    svg = str(history_plot(points, title="t & u", ylabel="acc"))
    assert _circles(svg) == ["ungated", "fail"]
    assert "<run>" not in svg and "&lt;run&gt;" in svg and "t &amp; u" in svg
    assert len(re.findall(r'<line class="ci"', svg)) == 1
    assert str(history_plot([("x", float("inf"), None, None, None)], title="t", ylabel="y")) == ""


def test_history_pages_on_a_database_before_schema_5(store, tmp_path, monkeypatch):
    # as a version-4 database: no gates / gate_decisions tables (a query on them would raise)
    store.con.execute("DROP TABLE gate_decisions")
    store.con.execute("DROP TABLE gates")
    monkeypatch.setattr(gates, "current_version", lambda con: gates.HISTORY_VERSION - 1)
    rows = gates.history(store, "main")
    assert [r["run_id"] for r in rows] == [r for r in RUNS for _ in range(2)] and all(r["gate_id"] is None for r in rows)
    index = write_history_pages(store, tmp_path / "old")
    html = (index.parent / "main.html").read_text(encoding="utf-8")
    assert _circles(html) == ["ungated"] * 6
