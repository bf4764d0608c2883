"""ARC and TruthfulQA: mirror rows -> hub-schema documents, mc2 scoring, registration and tags."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import tasks as catalog
from harness.core.errors import UsageError
from harness.core.requests import LoglikelihoodResult
from harness.core.task import Dataset, ScoreContext
from harness.taskkit.data import FIXTURE_DIR, forced_source
from harness.taskkit.formats import clear_dataset_cache
from harness.tasks import arc, truthfulqa

SEED = 1234


def fixture_task(name: str):
    task = catalog.get_task(name)
    with forced_source("fixture"):
        return task, task.load()


# --- ARC ---------------------------------------------------------------------------------------


def ai2_row(key: str, labels: list[str]) -> dict:
    return {"id": "Q1", "answerKey": key,
            "question": {"stem": "Which is a gas?", "choices": [{"text": f"t{lab}", "label": lab} for lab in labels]}}


def test_arc_mirror_row_becomes_the_hub_row() -> None:
    doc = arc.mirror_to_hub_row(ai2_row("B", ["A", "B", "C", "D"]))
    assert doc == {"id": "Q1", "question": "Which is a gas?", "answerKey": "B",
                   "choices": {"text": ["tA", "tB", "tC", "tD"], "label": ["A", "B", "C", "D"]}}
    assert arc.gold(doc) == 1


def test_arc_digit_answer_key_indexes_digit_labels() -> None:
    doc = arc.mirror_to_hub_row(ai2_row("3", ["1", "2", "3", "4"]))
    assert doc["answerKey"] == "3" and arc.gold(doc) == 2


def test_arc_answer_key_not_among_labels_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "arc").mkdir()
    (tmp_path / "arc" / "ARC-Easy-Test.jsonl").write_text(json.dumps(ai2_row("E", ["A", "B"])) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"ARC-Easy-Test.jsonl:1: .*'E' is not in list"):
        arc.dir_loader("ARC-Easy", tmp_path)


def test_arc_fixture_covers_digit_labels_and_odd_choice_counts() -> None:
    for name, n_docs in (("arc_easy", 21), ("arc_challenge", 22)):
        task, dataset = fixture_task(name)
        assert len(dataset.docs) == n_docs and dataset.fewshot_docs == []
        assert any(d["answerKey"].isdigit() for d in dataset.docs)
        assert any(len(d["choices"]["text"]) != 4 for d in dataset.docs)
        inst = task.build(dataset, 1, 0, SEED)[0]
        assert inst.prompt == f"Question: {dataset.docs[0]['question']}\nAnswer:"
        assert inst.target == dataset.docs[0]["choices"]["text"][arc.gold(dataset.docs[0])]


def test_arc_train_file_is_the_fewshot_pool_when_present(tmp_path: Path) -> None:
    (tmp_path / "arc").mkdir()
    for split, key in (("Test", "A"), ("Train", "2")):
        rows = ai2_row(key, ["A", "B"] if split == "Test" else ["1", "2"])
        (tmp_path / "arc" / f"ARC-Challenge-{split}.jsonl").write_text(json.dumps(rows) + "\n", encoding="utf-8")
    docs, fewshot = arc.dir_loader("ARC-Challenge", tmp_path)
    assert len(docs) == 1 and [arc.gold(d) for d in fewshot] == [1]


def test_arc_shots_without_a_fewshot_source_are_a_usage_error() -> None:
    task, dataset = fixture_task("arc_easy")
    with pytest.raises(UsageError, match="needs few-shot documents"):
        task.build(dataset, 2, 1, SEED)


# --- TruthfulQA data ---------------------------------------------------------------------------


def test_mc_item_becomes_the_hub_row_in_order() -> None:
    item = {"question": "Q?", "mc1_targets": {"yes": 1, "no": 0}, "mc2_targets": {"a": 1, "b": 1, "c": 0}}
    assert truthfulqa.mc_row(item) == {
        "question": "Q?",
        "mc1_targets": {"choices": ["yes", "no"], "labels": [1, 0]},
        "mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 1, 0]},
    }


def test_generation_csv_row_as_the_hub_builds_it() -> None:
    record = {"\ufeffType": "Adversarial", "Category": "Misconceptions", "Question": "Q? ", "Best Answer": "B",
              "Correct Answers": "Nothing happens; You eat seeds ", "Incorrect Answers": "You die", "Source": "S"}
    row = truthfulqa.generation_row(record)
    assert row == {"type": "Adversarial", "category": "Misconceptions", "question": "Q? ", "best_answer": "B",
                   "correct_answers": ["Nothing happens", "You eat seeds"], "incorrect_answers": ["You die"], "source": "S"}
    assert truthfulqa.generation_row({**record, "Incorrect Answers": ""}) is None  # the builder skips it
    assert row is not None
    doc = truthfulqa.process_gen_doc(row)
    assert doc["question"] == "Q?" and doc["type"] == "Adversarial"
    assert doc["correct_answers"] == ["Nothing happens.", "You eat seeds.", "I have no comment."]
    assert doc["incorrect_answers"] == ["You die."]


def test_no_comment_is_not_added_twice() -> None:
    doc = truthfulqa.process_gen_doc({"question": "q", "correct_answers": ["I have no comment", " "], "incorrect_answers": ["x."]})
    assert doc["correct_answers"] == ["I have no comment."]


def test_truthfulqa_fixtures_load_with_the_validation_split_as_pool() -> None:
    for name in ("truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_gen"):
        _, dataset = fixture_task(name)
        assert len(dataset.docs) == 20 and dataset.fewshot_docs == dataset.docs
    _, mc = fixture_task("truthfulqa_mc1")
    assert all(d["mc1_targets"]["labels"][0] == 1 and sum(d["mc1_targets"]["labels"]) == 1 for d in mc.docs)
    _, gen = fixture_task("truthfulqa_gen")
    assert gen.docs[0]["type"] == "Adversarial" and all("I have no comment." in d["correct_answers"] for d in gen.docs)


def test_bad_mc_json_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "truthfulqa").mkdir()
    (tmp_path / "truthfulqa" / "mc_task.json").write_text('[{"question": "q"}]', encoding="utf-8")
    with pytest.raises(UsageError, match=r"mc_task.json: item 0: .*mc1_targets"):
        truthfulqa.read_mc_json(tmp_path / "truthfulqa" / "mc_task.json")


# --- TruthfulQA mc2 scoring ----------------------------------------------------------------------


def mc2_instance(labels: list[int]):
    task = catalog.get_task("truthfulqa_mc2")
    doc = {"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
           "mc2_targets": {"choices": [f"c{i}" for i in range(len(labels))], "labels": labels}}
    return task, task.build(Dataset([doc], [doc], "test", "x"), None, 0, SEED)[0]


def test_mc2_is_the_normalised_true_probability_mass() -> None:
    task, inst = mc2_instance([1, 1, 0, 0])
    lls = [math.log(0.2), math.log(0.1), math.log(0.3), math.log(0.4)]
    scored = task.score(inst, [LoglikelihoodResult(x, False) for x in lls], ScoreContext())
    assert scored.metrics == {"acc": pytest.approx(0.3, abs=1e-12)}
    assert scored.loglikelihoods == lls


def test_mc2_normalises_over_all_answers() -> None:
    """Unnormalised probabilities (tiny ones, as real loglikelihoods give) are normalised first."""
    assert truthfulqa.mc2_true_mass([-50.0, -50.0, -50.0 + math.log(2)], [1, 0, 0]) == pytest.approx(0.25, abs=1e-12)
    assert truthfulqa.mc2_true_mass([-1.0, -2.0], [0, 0]) == 0.0
    assert truthfulqa.mc2_true_mass([-1.0, -2.0], [1, 1]) == pytest.approx(1.0)


def test_mc1_is_accuracy_on_the_first_choice() -> None:
    task = catalog.get_task("truthfulqa_mc1")
    doc = {"question": "q", "mc1_targets": {"choices": ["right", "wrong"], "labels": [1, 0]}, "mc2_targets": {"choices": [], "labels": []}}
    inst = task.build(Dataset([doc], [doc], "test", "x"), None, 0, SEED)[0]
    assert inst.prompt.startswith(truthfulqa.QA_PROMPT) and inst.prompt.endswith("\n\nQ: q\nA:")
    assert task.score(inst, [LoglikelihoodResult(-1.0, True), LoglikelihoodResult(-2.0, False)], ScoreContext()).metrics == {"acc": 1.0}
    assert task.score(inst, [LoglikelihoodResult(-3.0, True), LoglikelihoodResult(-2.0, False)], ScoreContext()).metrics == {"acc": 0.0}


# --- registration ------------------------------------------------------------------------------


NEW_TASKS = {"arc_easy": ("1.0", "loglikelihood"), "arc_challenge": ("1.0", "loglikelihood"),
             "truthfulqa_mc1": ("2.0", "loglikelihood"), "truthfulqa_mc2": ("3.0", "loglikelihood"),
             "truthfulqa_gen": ("3.0", "generate")}


def test_registered_with_lm_eval_versions() -> None:
    for name, (version, kind) in NEW_TASKS.items():
        task = catalog.get_task(name)
        assert (task.version, task.request_kinds, task.default_fewshot) == (version, (kind,), 0)
    assert [m.name for m in catalog.get_task("truthfulqa_gen").metrics][:3] == ["bleu_max", "bleu_acc", "bleu_diff"]
    assert len(catalog.get_task("truthfulqa_gen").metrics) == 12


def test_tags_select_tasks_without_an_aggregate_group() -> None:
    assert {"ai2_arc", "truthfulqa"} <= set(catalog.tag_names())
    assert catalog.expand(["ai2_arc"]) == ["arc_easy", "arc_challenge"]
    assert catalog.expand(["truthfulqa", "arc_easy"]) == ["truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_gen", "arc_easy"]
    assert catalog.get_group("ai2_arc") is None and catalog.get_group("truthfulqa") is None
    assert not [g.name for g in catalog.groups_containing(list(NEW_TASKS))]
    with pytest.raises(UsageError, match="did you mean ai2_arc"):
        catalog.get_task("ai2_ark")


def test_harness_tasks_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    assert main(["tasks"]) == 0
    listed = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines()}
    for name, (version, kind) in NEW_TASKS.items():
        assert listed[name] == f"{name}\tv{version}\t0-shot\t{kind}"


@pytest.fixture(autouse=True)
def _fresh_dataset_cache():
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def test_fixtures_are_laid_out_like_the_mirror() -> None:
    names = {p.name for p in (FIXTURE_DIR / "arc").iterdir()} | {p.name for p in (FIXTURE_DIR / "truthfulqa").iterdir()}
    assert names == {"ARC-Easy-Test.jsonl", "ARC-Easy-Dev.jsonl", "ARC-Challenge-Test.jsonl", "ARC-Challenge-Dev.jsonl",
                     "mc_task.json", "TruthfulQA.csv"}
