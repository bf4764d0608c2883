"""Fidelity: harness and lm-eval 0.4.13 on the same model and documents give the same numbers.

HellaSwag (0-shot, the 50 fixture documents) and two MMLU subjects (5-shot, 10 fixture
documents each) on the embedded SmolLM2-135M-Instruct, fp32 on CPU. lm-eval runs its own task
objects (built from its shipped YAML) through its own HFLM; harness runs through its packed
shared-context scoring. Per-sample loglikelihoods must agree within 1e-3, per-sample
correctness and the aggregates exactly.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from benchmarks import lm_eval_reference
from harness.backends.embedded import ensure_hf_dir
from harness.core.config import RunConfig, TaskSelection
from harness.run.evaluator import evaluate

TASKS = ["hellaswag", "mmlu_anatomy", "mmlu_high_school_geography"]


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("HARNESS_DATA_SOURCE", "fixture")
    db = tmp_path_factory.mktemp("fidelity") / "r.duckdb"
    result = evaluate(RunConfig(tasks=[TaskSelection(t) for t in TASKS], batch_size="8", show_progress=False), db)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT task, doc_id, loglikelihoods, metrics FROM samples WHERE run_id = ?", [result.run_id]).fetchall()
    ours = {(t, str(d)): (lls, json.loads(m)) for t, d, lls, m in rows}
    con.close()
    theirs = lm_eval_reference.run(ensure_hf_dir(), TASKS, limit=None, num_fewshot=None, batch_size=8)
    return ours, {(r.task, r.metric): r.value for r in result.metrics}, theirs


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_same_documents(both_runs):
    ours, _, theirs = both_runs
    expected = {(task, doc) for task, docs in theirs["samples"].items() for doc in docs}
    assert expected == set(ours)
    assert len(expected) == 50 + 10 + 10


def test_per_sample_loglikelihoods_within_1e_3(both_runs):
    ours, _, theirs = both_runs
    diffs = []
    for task, docs in theirs["samples"].items():
        for doc_id, ref in docs.items():
            lls = ours[(task, doc_id)][0]
            assert len(lls) == len(ref["loglikelihoods"])
            diffs.extend(abs(a - b) for a, b in zip(lls, ref["loglikelihoods"]))
    print(f"\nper-choice |Δ loglikelihood| over {len(diffs)} choices: max {max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e}")
    assert max(diffs) < 1e-3


def test_per_sample_correctness_identical(both_runs):
    ours, _, theirs = both_runs
    for task, docs in theirs["samples"].items():
        for doc_id, ref in docs.items():
            metrics = ours[(task, doc_id)][1]
            for name in ("acc", "acc_norm"):
                if name in ref:
                    assert metrics[name] == ref[name], (task, doc_id, name)


def test_aggregates_identical(both_runs):
    _, aggregates, theirs = both_runs
    for task, res in theirs["results"].items():
        for metric, value in res.items():
            print(f"{task} {metric}: lm-eval {value:.4f} harness {aggregates[(task, metric)]:.4f}")
            assert aggregates[(task, metric)] == pytest.approx(value, abs=1e-12)
