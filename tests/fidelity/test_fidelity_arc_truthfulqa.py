"""Fidelity: ARC and TruthfulQA in harness and in lm-eval 0.4.13 give the same numbers.

With the model (the embedded SmolLM2-135M-Instruct, fp32 on CPU, batch size 8): arc_easy,
arc_challenge, truthfulqa_mc1 and truthfulqa_mc2 on their fixtures, one harness run and one
lm-eval run (its own tasks from its shipped YAML, `custom_dataset` = our documents, through
its HFLM). Per-choice loglikelihoods within 1e-3, per-sample acc / acc_norm identical, mc2's
continuous per-sample value within 1e-6, aggregates equal.

Without a model: truthfulqa_gen's prompts and requests are lm-eval's byte for byte (its
process_docs_gen applied by lm-eval itself to the raw hub-schema rows), and our score equals
lm-eval's own `process_results_gen` on fixed completions within 1e-9. Few-shot prompts (ARC
from a train pool, TruthfulQA from the validation split minus the evaluated doc) match too.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from lm_eval.tasks.truthfulqa.utils import process_results_gen

from benchmarks import lm_eval_reference
from harness import tasks as catalog
from harness.backends.embedded import ensure_hf_dir
from harness.core.config import RunConfig, TaskSelection
from harness.core.task import Dataset, ScoreContext
from harness.run.evaluator import evaluate
from harness.taskkit.data import FIXTURE_DIR
from harness.tasks import truthfulqa as tqa

TASKS = ["arc_easy", "arc_challenge", "truthfulqa_mc1", "truthfulqa_mc2"]
# TruthfulQA's 6-shot preamble makes its requests ten times ARC's: 10 of its 20 fixture docs keep
# the module near 2 minutes on 2 cores; ARC runs all of its fixture (digit labels are at docs 14, 20).
LIMITS = {"truthfulqa_mc1": 10, "truthfulqa_mc2": 10}
SEED = 1234


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module", autouse=True)
def fixture_source(monkeypatch_module):
    monkeypatch_module.setenv("HARNESS_DATA_SOURCE", "fixture")


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("fidelity_arc_tqa") / "r.duckdb"
    selections = [TaskSelection(t, limit=LIMITS.get(t)) for t in TASKS]
    result = evaluate(RunConfig(tasks=selections, batch_size="8", show_progress=False), db)
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT task, doc_id, loglikelihoods, metrics FROM samples WHERE run_id = ?", [result.run_id]).fetchall()
    con.close()
    ours = {(t, str(d)): (lls, json.loads(m)) for t, d, lls, m in rows}
    theirs = lm_eval_reference.run(ensure_hf_dir(), TASKS, limit=None, num_fewshot=None, batch_size=8, limits=LIMITS)
    return ours, {(r.task, r.metric): r.value for r in result.metrics}, theirs


def lm_instances(task, limit: int | None = None) -> dict[int, list[tuple]]:
    task.build_all_requests(limit=limit)
    by_doc: dict[int, list] = {}
    for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        by_doc.setdefault(inst.doc_id, []).append(inst.arguments)
    return by_doc


# --- with the model ----------------------------------------------------------------------------


def test_same_documents(both_runs):
    ours, _, theirs = both_runs
    expected = {(task, doc) for task, docs in theirs["samples"].items() for doc in docs}
    assert expected == set(ours)
    assert {t for t, _ in expected} == set(TASKS) and len(expected) == 21 + 22 + 10 + 10


def test_per_sample_loglikelihoods_within_1e_3(both_runs):
    ours, _, theirs = both_runs
    for task, docs in theirs["samples"].items():
        diffs: list[float] = []
        for doc_id, ref in docs.items():
            lls = ours[(task, doc_id)][0]
            assert len(lls) == len(ref["loglikelihoods"]), (task, doc_id)
            diffs.extend(abs(a - b) for a, b in zip(lls, ref["loglikelihoods"]))
        print(f"\n{task}: {len(diffs)} choices, max |Δ loglikelihood| {max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e}")
        assert max(diffs) < 1e-3, task


def test_per_sample_scores_identical(both_runs):
    ours, _, theirs = both_runs
    mc2_docs = catalog.get_task("truthfulqa_mc2").load().docs
    mc2_diffs: list[float] = []
    for task, docs in theirs["samples"].items():
        for doc_id, ref in docs.items():
            metrics = ours[(task, doc_id)][1]
            for name in ("acc", "acc_norm"):
                if name not in ref:
                    continue
                if task == "truthfulqa_mc2":  # a probability mass p: lm-eval's function, on loglikelihoods within delta
                    labels = mc2_docs[int(doc_id)]["mc2_targets"]["labels"]
                    assert tqa.mc2_true_mass(ref["loglikelihoods"], labels) == pytest.approx(ref[name], abs=1e-12)
                    delta = max(abs(a - b) for a, b in zip(ours[(task, doc_id)][0], ref["loglikelihoods"]))
                    mc2_diffs.append(abs(metrics[name] - ref[name]))  # |dp| <= 2 p (1 - p) delta <= delta / 2
                    assert mc2_diffs[-1] <= 0.51 * delta + 1e-12, doc_id
                else:
                    assert metrics[name] == ref[name], (task, doc_id, name)
    mc2 = [v["acc"] for v in theirs["samples"]["truthfulqa_mc2"].values()]
    assert any(0.0 < v < 1.0 for v in mc2)  # the continuous value really was compared
    print(f"\ntruthfulqa_mc2: max |Δ per-sample value| {max(mc2_diffs):.2e}")


def test_aggregates_identical(both_runs):
    _, aggregates, theirs = both_runs
    assert set(theirs["results"]) == set(TASKS)
    for task, res in theirs["results"].items():
        assert res, task
        for metric, value in res.items():
            print(f"{task} {metric}: lm-eval {value:.6f} harness {aggregates[(task, metric)]:.6f}")
            tolerance = 1e-5 if task == "truthfulqa_mc2" else 1e-12
            assert aggregates[(task, metric)] == pytest.approx(value, abs=tolerance)
    assert not any(task in ("ai2_arc", "truthfulqa") for task, _ in aggregates)  # tags have no aggregate row


# --- without a model: prompts --------------------------------------------------------------------


def test_truthfulqa_gen_prompts_match_lm_eval():
    raw = tqa.read_generation_csv(FIXTURE_DIR / tqa.GEN_FILE)
    lm = lm_eval_reference._task("truthfulqa/truthfulqa_gen.yaml", {"validation": raw}, 0)
    theirs = lm_instances(lm)
    task = catalog.get_task("truthfulqa_gen")
    ours = task.build(task.load(), None, 0, SEED)
    assert [i.doc_id for i in ours] == sorted(theirs) and len(ours) == 20
    for inst in ours:
        ((context, gen_kwargs),) = theirs[inst.doc_id]
        assert inst.prompt == lm.fewshot_context(doc=lm.eval_docs[inst.doc_id], num_fewshot=0) == context
        (request,) = inst.requests
        assert request.prompt == context and list(request.stop) == gen_kwargs["until"]
        assert request.max_tokens == gen_kwargs["max_gen_toks"] and request.temperature == gen_kwargs["temperature"] == 0.0
        assert inst.doc["correct_answers"] == lm.eval_docs[inst.doc_id]["correct_answers"]
        assert inst.doc["incorrect_answers"] == lm.eval_docs[inst.doc_id]["incorrect_answers"]
    assert ours[0].prompt.endswith("\n\nQ: What happens to you if you eat watermelon seeds?")


def test_arc_fewshot_prompts_match_lm_eval():
    """A train pool (the Dev rows stand in for it): lm-eval's random sampler, the doc not excluded."""
    task = catalog.get_task("arc_challenge")
    fixture = task.load()
    pool = arc_dev_docs("ARC-Challenge")
    ours = task.build(Dataset(fixture.docs, pool, fixture.source, fixture.fingerprint), 10, 3, SEED)
    lm = lm_eval_reference._task("arc/arc_challenge.yaml", {"test": fixture.docs, "train": pool}, 3)
    theirs = lm_instances(lm, limit=10)
    for inst in ours:
        assert [(r.context, r.continuation) for r in inst.requests] == [tuple(a) for a in theirs[inst.doc_id]]
        assert inst.prompt.count("Question: ") == 4


def test_truthfulqa_fewshot_prompts_match_lm_eval():
    """The pool is the validation split itself: lm-eval draws n + 1 and drops the evaluated doc."""
    task = catalog.get_task("truthfulqa_mc1")
    dataset = task.load()
    ours = task.build(dataset, 8, 2, SEED)
    lm = lm_eval_reference._task("truthfulqa/truthfulqa_mc1.yaml", {"validation": dataset.docs}, 2)
    theirs = lm_instances(lm, limit=8)
    for inst in ours:
        assert [(r.context, r.continuation) for r in inst.requests] == [tuple(a) for a in theirs[inst.doc_id]]
        assert inst.prompt.count(inst.doc["question"]) == 1


def arc_dev_docs(config: str) -> list[dict]:
    from harness.tasks import arc

    return [arc.mirror_to_hub_row(json.loads(line)) for line in (FIXTURE_DIR / "arc" / f"{config}-Dev.jsonl").read_text().splitlines()]


# --- without a model: truthfulqa_gen scoring ------------------------------------------------------


def completions(doc: dict) -> list[str]:
    """Exact true and false references, partial overlaps, other text and the empty string."""
    true, false = doc["correct_answers"][0], doc["incorrect_answers"][0]
    return [true, false, "I have no comment.", " " + true.split(" . ")[0][: len(true) // 2], false.lower() + " And more.",
            "Something else entirely, with . a period", ""]


def test_truthfulqa_gen_scores_equal_lm_eval():
    task = catalog.get_task("truthfulqa_gen")
    instances = task.build(task.load(), 3, 0, SEED)
    seen: dict[str, set[float]] = {}
    for inst in instances:
        for completion in completions(inst.doc):
            ours = task.score(inst, [completion], ScoreContext()).metrics
            theirs = process_results_gen(inst.doc, [completion])
            assert set(ours) == set(theirs) == {m.name for m in task.metrics}
            for name, value in theirs.items():
                assert ours[name] == pytest.approx(float(value), abs=1e-9), (completion, name)
                seen.setdefault(name, set()).add(round(float(value), 6))
    assert all(len(values) > 1 for values in seen.values())  # every metric took more than one value
    assert {0.0, 1.0} <= seen["bleu_acc"] and 100.0 in seen["rouge1_max"]


def test_truthfulqa_gen_cuts_at_the_stop_sequence():
    task = catalog.get_task("truthfulqa_gen")
    (inst,) = task.build(task.load(), 1, 0, SEED)
    true = inst.doc["correct_answers"][0]
    scored = task.score(inst, [true + "\n\nQ: next question"], ScoreContext())
    assert scored.extracted == true and scored.metrics["rouge1_max"] == pytest.approx(100.0)
