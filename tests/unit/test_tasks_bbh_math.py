"""BBH (CoT few-shot), minerva_math and hendrycks_math against lm-evaluation-harness 0.4.13 itself.

Prompts: lm-eval's ConfigurableTask from its shipped YAML, dataset swapped for ours, must build
byte-identical contexts and the same generation settings. Scoring: lm-eval's own filters and
process_results on a corpus of responses must give our verdict on every one. MATH has no
committed fixture: its documents are a tiny hub-schema mirror written here (synthetic problems
in MATH's format, not real data).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import datasets
import lm_eval
import pytest
from lm_eval.api.instance import Instance as LmInstance
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from harness import tasks as catalog
from harness.core.errors import UsageError
from harness.core.requests import Generate
from harness.core.task import Dataset, ScoreContext
from harness.scoring import math_equivalence
from harness.taskkit.data import forced_source
from harness.taskkit.formats import clear_dataset_cache
from harness.tasks import bbh, hendrycks_math, minerva_math
from tests.conftest import write_hub_repo

LM_TASKS = Path(lm_eval.__file__).parent / "tasks"
SEED = 1234
lm_minerva = pytest.importorskip("lm_eval.tasks.minerva_math.utils")
lm_hendrycks = pytest.importorskip("lm_eval.tasks.hendrycks_math.utils")


def lm_task(yaml_path: str, splits: dict[str, list[dict]], **overrides) -> ConfigurableTask:
    config = load_yaml(LM_TASKS / yaml_path)
    dataset = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    config.update(custom_dataset=lambda **_: dataset, **overrides)
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(SEED)
    return task


def lm_requests(task: ConfigurableTask) -> list[LmInstance]:
    task.build_all_requests()
    return sorted(task.instances, key=lambda i: i.doc_id)


def assert_same_requests(ours, theirs: list[LmInstance], max_gen_toks: int) -> None:
    assert len(ours) == len(theirs) > 0
    for inst, lm in zip(ours, theirs):
        context, kwargs = lm.arguments
        (request,) = inst.requests
        assert isinstance(request, Generate)
        assert inst.prompt == request.prompt == context
        assert list(request.stop) == kwargs["until"]
        assert request.max_tokens == kwargs.get("max_gen_toks", 256) == max_gen_toks
        assert request.temperature == 0.0 and kwargs["do_sample"] is False


def fixture(name: str) -> Dataset:
    with forced_source("fixture"):
        return catalog.get_task(name).load()


# --- BBH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtask", ["date_understanding", "penguins_in_a_table", "snarks", "dyck_languages", "word_sorting",
                                     "causal_judgement", "boolean_expressions", "multistep_arithmetic_two", "web_of_lies"])
def test_bbh_prompts_match_lm_eval(subtask: str) -> None:
    task = catalog.get_task(bbh.task_name(subtask))
    dataset = fixture(task.name)
    ours = task.build(dataset, None, 3, SEED)
    assert_same_requests(ours, lm_requests(lm_task(f"bbh/cot_fewshot/{subtask}.yaml", {"test": dataset.docs})), 1024)
    assert ours[0].prompt.count("A: Let's think step by step.\n") == 4 and ours[0].prompt.endswith("step by step.\n")
    assert ours[0].target == dataset.docs[0]["target"]


def test_bbh_catalog_follows_lm_eval() -> None:
    group = load_yaml(LM_TASKS / "bbh" / "cot_fewshot" / "_bbh.yaml", resolve_func=False)
    for name in ("bbh", "bbh_cot_fewshot"):
        ours = catalog.get_group(name)
        assert ours is not None and ours.weight_by_size and list(ours.tasks) == group["task"]
    assert group["aggregate_metric_list"][0]["weight_by_size"] is True
    for subtask in bbh.SUBTASKS:
        config = load_yaml(LM_TASKS / "bbh" / "cot_fewshot" / f"{subtask}.yaml", resolve_func=False)
        assert bbh.prompts()[subtask] == {"description": config["description"], "shots": config["fewshot_config"]["samples"]}
        task = catalog.get_task(config["task"])
        assert task.version == str(config["metadata"]["version"]) and task.default_fewshot == config["num_fewshot"]
        assert [m.name for m in task.metrics] == ["exact_match,get-answer"]
    assert [s for s in bbh.SUBTASKS if not _has_fixture(s)] == []  # all 27, 3 documents each


def _has_fixture(subtask: str) -> bool:
    try:
        return len(fixture(bbh.task_name(subtask)).docs) == 3
    except UsageError:
        return False


def _answer(shot_target: str) -> str:
    return re.search(r"So the answer is (.*)\.$", shot_target).group(1)


def _web_of_lies(text: str) -> bool:
    honest: dict[str, bool] = {}
    *sentences, question = text.removeprefix("Question: ").split(". ")
    for sentence in sentences:
        speaker, _, rest = sentence.partition(" ")
        about, claim = (None, rest) if not rest.startswith("says ") else rest[5:].split(" ", 1)
        honest[speaker] = (claim == "tells the truth") == (True if about is None else honest[about])
    return honest[re.fullmatch(r"Does (\w+) tell the truth\?", question).group(1)]


@pytest.mark.parametrize("subtask", bbh.SUBTASKS)
def test_bbh_fixture_targets_are_consistent(subtask: str) -> None:
    """Every fixture target has the form of the exemplars' answers and is right where it can be recomputed."""
    docs = fixture(bbh.task_name(subtask)).docs
    shots = bbh.prompts()[subtask]["shots"]
    answers = {_answer(s["target"]) for s in shots}
    assert not {d["input"] for d in docs} & {s["input"] for s in shots}
    for doc in docs:
        text, target = doc["input"], doc["target"]
        if subtask == "boolean_expressions":
            assert text.endswith(" is") and set(text.split()) <= {"True", "False", "not", "and", "or", "(", ")", "is"}
            assert len(text.split()) == len(shots[0]["input"].split()) == 9  # 8 tokens and "is", like BBH
            assert target == str(eval(text.removesuffix(" is")))
        elif subtask == "multistep_arithmetic_two":
            group = r"\((-?\d [-+*] ){3}-?\d\)"
            assert re.fullmatch(rf"\({group} [-+*] {group}\) =", text), text
            assert all(re.fullmatch(rf"\({group} [-+*] {group}\) =", s["input"]) for s in shots)
            assert target == str(eval(text.removesuffix(" =")))
        elif subtask == "web_of_lies":
            assert text.count(". ") == shots[0]["input"].count(". ") == 5
            assert target == ("Yes" if _web_of_lies(text) else "No")
        elif all(re.fullmatch(r"\([A-R]\)", a) for a in answers):
            assert re.fullmatch(r"\([A-R]\)", target) and f"\n{target} " in text
        elif subtask == "word_sorting":
            assert target == " ".join(sorted(text.split("List: ", 1)[1].split()))
        elif subtask == "object_counting":
            assert target.isdigit()
        elif subtask == "dyck_languages":
            opened = text.split("Input: ", 1)[1].split() + target.split()
            stack = []
            for token in opened:
                if token in "([{<":
                    stack.append(token)
                else:
                    assert "([{<"[")]}>".index(token)] == stack.pop()
            assert stack == []
        else:
            assert target in answers or {target, *answers} <= {"Yes", "No", "yes", "no", "valid", "invalid"}, target
    for s in shots:  # the recomputations agree with BBH's own exemplars
        text, answer = s["input"], _answer(s["target"])
        if subtask == "boolean_expressions":
            assert answer == str(eval(text.removesuffix(" is")))
        elif subtask == "multistep_arithmetic_two":
            assert answer == str(eval(text.removesuffix(" =")))
        elif subtask == "web_of_lies":
            assert answer == ("Yes" if _web_of_lies(text) else "No")


BBH_RESPONSES = [
    "The date is 12/14/1937. So the answer is (D).", "So the answer is (D)", "so the answer is (D).",
    "So the answer is D.", "the answer is (D).\n", "the answer is (D). the answer is (A).", "", "(D)",
    "So the answer is (D).\n\nQ: next", "Thus the answer is False.", "So the answer is  (D).", "So the answer is (D)..",
    "So the Answer is (D).", "the answer is ] } ].", "the answer is yes.", "the answer is 6.", "the answer is",
    "the answer is x", "So the answer is (D).Q", "The answer is (D).",
]


@pytest.mark.parametrize("subtask", ["date_understanding", "dyck_languages", "sports_understanding"])
def test_bbh_scoring_matches_lm_eval(subtask: str) -> None:
    task = catalog.get_task(bbh.task_name(subtask))
    dataset = fixture(task.name)
    lm = lm_task(f"bbh/cot_fewshot/{subtask}.yaml", {"test": dataset.docs})
    inst = task.build(dataset, 1, 3, SEED)[0]
    responses = BBH_RESPONSES + [f"So the answer is {inst.target}."]
    lm_insts = []
    for text in responses:
        lm_inst = LmInstance("generate_until", inst.doc, (inst.prompt, {}), 0, (task.name, 0, 1))
        lm_inst.resps = [bbh_truncate(text)]
        lm_insts.append(lm_inst)
    for ensemble in lm._filters:
        ensemble.apply(lm_insts)
    hits = 0
    for text, lm_inst in zip(responses, lm_insts):
        scored = task.score(inst, [[text]], ScoreContext())
        expected = lm.process_results(inst.doc, [lm_inst.filtered_resps["get-answer"]])["exact_match"]
        assert scored.metrics == {"exact_match,get-answer": expected}, text
        assert json.loads(scored.extracted) == {"get-answer": lm_inst.filtered_resps["get-answer"]}
        hits += int(expected)
    assert hits >= 1


def bbh_truncate(text: str) -> str:
    from lm_eval.models.utils import postprocess_generated_text

    return postprocess_generated_text(text, list(bbh.STOP), None)


# --- MATH: a tiny hub-schema mirror ------------------------------------------------------------

# Synthetic problems in MATH's schema (written for this test, not MATH items).
MATH_ROWS = [
    {"problem": "Compute $1+1$.", "solution": "We add: $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {"problem": "What is half of $1$?", "solution": "Half of one is $\\boxed{\\dfrac{1}{2}}$.", "level": "Level 1", "type": "Algebra"},
    {"problem": "Solve $x^2=4$, $x>0$.\n\nGive $x$.", "solution": "So $x=\\boxed{2}$ inches.", "level": "Level 2", "type": "Algebra"},
    {"problem": "Find the interval.", "solution": "It is $\\boxed{[2,5)}$.", "level": "Level 3", "type": "Algebra"},
]


@pytest.fixture()
def math_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_hub_repo(tmp_path / "EleutherAI" / "hendrycks_math", {
        "algebra": {"test": MATH_ROWS, "train": MATH_ROWS[::-1]}, "precalculus": {"test": MATH_ROWS[1:3], "train": MATH_ROWS}})
    monkeypatch.setenv("HARNESS_HUB_MIRROR", str(tmp_path))
    monkeypatch.setenv("HARNESS_DATA_SOURCE", "hub")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    clear_dataset_cache()
    yield
    clear_dataset_cache()


@pytest.mark.parametrize("subject", ["algebra", "precalc"])
def test_minerva_prompts_match_lm_eval(subject: str, math_hub) -> None:
    task = catalog.get_task(minerva_math.task_name(subject))
    dataset = task.load()
    assert dataset.source.startswith("hub:EleutherAI/hendrycks_math@")
    assert [d["answer"] for d in dataset.docs][:2] == [lm_minerva.normalize_final_answer(lm_minerva.remove_boxed(
        lm_minerva.last_boxed_only_string(r["solution"]))) for r in dataset.docs[:2]]
    raw = MATH_ROWS if subject == "algebra" else MATH_ROWS[1:3]
    lm = lm_task(f"minerva_math/minerva_math_{subject}.yaml", {"test": raw, "train": raw})
    ours = task.build(dataset, None, 4, SEED)
    assert_same_requests(ours, lm_requests(lm), 256)
    assert ours[0].prompt.count("Problem:\n") == 5 and ours[0].prompt.endswith("\n\nSolution:")
    assert [inst.target for inst in ours] == [d["answer"] for d in lm.test_docs()]
    assert minerva_math.EXEMPLARS == tuple((s["problem"], s["solution"]) for s in lm_minerva.list_fewshot_samples())


def test_hendrycks_prompts_match_lm_eval(math_hub) -> None:
    task = catalog.get_task(hendrycks_math.task_name("algebra"))
    dataset = task.load()
    lm = lm_task("hendrycks_math/hendrycks_math_algebra.yaml", {"test": MATH_ROWS, "train": MATH_ROWS[::-1]})
    assert_same_requests(task.build(dataset, None, 0, SEED), lm_requests(lm), 256)
    lm2 = lm_task("hendrycks_math/hendrycks_math_algebra.yaml", {"test": MATH_ROWS, "train": MATH_ROWS[::-1]}, num_fewshot=2)
    assert_same_requests(task.build(dataset, None, 2, SEED), lm_requests(lm2), 256)


def test_math_catalog_follows_lm_eval() -> None:
    for family, module, metrics in (("minerva_math", minerva_math, ["exact_match", "math_verify"]),
                                    ("hendrycks_math", hendrycks_math, ["exact_match"])):
        path = "benchmarks/minerva_math.yaml" if family == "minerva_math" else "hendrycks_math/hendrycks_math.yaml"
        group = load_yaml(LM_TASKS / path, resolve_func=False)
        ours = catalog.get_group(family)
        assert ours is not None and list(ours.tasks) == group["task"] and ours.weight_by_size
        assert [m["metric"] for m in group["aggregate_metric_list"]] == metrics
        for name in group["task"]:
            config = load_yaml(LM_TASKS / family / f"{name}.yaml", resolve_func=False)
            task = catalog.get_task(name)
            assert task.version == str(config["metadata"]["version"]) and [m.name for m in task.metrics] == metrics
            assert module.SUBJECTS[name.removeprefix(f"{family}_")] == config["dataset_name"]


# --- MATH scoring against lm-eval's ------------------------------------------------------------

FINALS = [
    "2", "$2$", "2.0", "\\frac{4}{2}", "\\dfrac12", "\\frac12", "0.5", "\\frac{1}{2}", "1/2", "\\tfrac{1}{2}",
    "2 inches", "\\text{2 cm}", "$x=2$", "x = 2", "2^\\circ", "\\boxed{2}", "\\sqrt4", "\\sqrt{4}", "[2,5)", "[2, 5)",
    "(2,5]", "\\left[2,5\\right)", "\\$2", "2,000", "2{,}000", "\\frac{1}{2} \\text{ dollars}", "\\frac{2}{4}",
    "\\frac{", "\\sqrt{", "}{", "", "two", "\\text{two}", "\\infty", "3", "-2", "\\pi", "2\\pi cm", "\\sqrt[3]{8}",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "1,2", "x^2", "2 \\mbox{ m}", "\\%2", "50\\%", ".5", "\\frac{1}{2}.",
]
RESPONSES = (
    [f"We compute.\nFinal Answer: The final answer is ${f}$. I hope it is correct." for f in FINALS]
    + [f"Final Answer: The final answer is {f}. I hope it is correct." for f in FINALS[:12]]
    + ["The answer is $\\boxed{2}$.", "", "Final Answer: The final answer is $2$.", "Final Answer: The final answer is $2$",
       "Final Answer: The final answer is 2. I hope it is correct.\n\nProblem: next", "final answer is $2$. I hope it is correct.",
       "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct. Final Answer: The final answer is $2$. I hope it is correct."]
)


def test_minerva_scoring_matches_lm_eval() -> None:
    golds = [MATH_ROWS[0], MATH_ROWS[1], MATH_ROWS[3]]
    task = catalog.get_task(minerva_math.task_name("algebra"))
    agree, correct = 0, 0
    for row in golds:
        doc = minerva_math.process_doc(row)
        inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
        for text in RESPONSES:
            lm_text = bbh_free_truncate(text)
            expected = lm_minerva.process_results(doc, [lm_text])
            got = task.score(inst, [[text]], ScoreContext()).metrics
            assert got == {k: float(v) for k, v in expected.items()}, (text, doc["answer"])
            agree += 1
            correct += int(expected["exact_match"])
    assert agree == 3 * len(RESPONSES) and 10 < correct < agree


def bbh_free_truncate(text: str) -> str:
    from lm_eval.models.utils import postprocess_generated_text

    return postprocess_generated_text(text, ["Problem:"], None)


def test_minerva_normalisers_match_lm_eval() -> None:
    strings = FINALS + [f"${f}$" for f in FINALS] + ["\\left( 3, \\frac{\\pi}{2} \\right)", "10 \\text{ feet}", "5 \\text{ ways}",
                                                   "\\sqrt[3]8", "\\fracab", "\\boxed 5", "3\\mathrm{th}", "a 5", "an apple"]
    for s in strings:
        assert minerva_math.normalize_final_answer(s) == lm_minerva.normalize_final_answer(s), s
        assert minerva_math.last_boxed_only_string(s) == lm_minerva.last_boxed_only_string(s), s
        assert minerva_math.get_unnormalized_answer(s) == lm_minerva.get_unnormalized_answer(s), s
    assert len(strings) > 90


def test_hendrycks_scoring_matches_lm_eval() -> None:
    task = catalog.get_task(hendrycks_math.task_name("algebra"))
    responses = [f"${f}$" for f in FINALS] + FINALS + ["The answer is $2$ and $3$.", "$", "$$", "x = $2$", "\\boxed{2}"]
    matched = 0
    for row in (MATH_ROWS[0], MATH_ROWS[1], MATH_ROWS[3]):
        doc = hendrycks_math.process_doc(row)
        inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
        for text in responses:
            expected = lm_hendrycks.process_results(doc, [text])["exact_match"]
            assert task.score(inst, [[text]], ScoreContext()).metrics == {"exact_match": float(expected)}, (text, doc["answer"])
            matched += expected
        for a in FINALS:
            for b in FINALS[:20]:
                assert hendrycks_math.is_equiv(a, b) == lm_hendrycks.is_equiv(a, b), (a, b)
    assert 5 < matched < 3 * len(responses)


# --- the sympy check cannot hang a run ---------------------------------------------------------


SLOW = ("\\frac{(x+y+z)^{40}}{(x-y)^{7}}", "\\frac{(x-y-z)^{40}}{(x+y)^{7}}")  # sympy.simplify takes far over 5 s


def test_pathological_expression_times_out() -> None:
    assert math_equivalence.sympy_equiv("\\frac{1}{2}", "0.5")  # starts the worker
    started = time.perf_counter()
    assert math_equivalence.sympy_equiv(*SLOW, timeout_s=1) is False  # lm-eval's alarm, inside the worker
    assert time.perf_counter() - started < 1 + math_equivalence.GRACE_S + 1.0


def test_overrunning_worker_is_killed_and_replaced() -> None:
    worker = math_equivalence.EquivalenceWorker()
    try:
        assert worker.call("sympy", ("x+x", "2x", 5), 60.0) is True
        started = time.perf_counter()
        assert worker.call("sympy", (*SLOW, 600), 1.0) is False  # the alarm would fire in 10 min: the parent kills
        assert time.perf_counter() - started < 2.5
        assert worker._process is None
        assert worker.call("sympy", ("\\frac{2}{4}", "0.5", 5), 60.0) is True  # a fresh worker
        assert worker.call("math_verify", ("$\\boxed{\\frac{1}{2}}$", "so $0.5$", 5), 60.0) is True
        assert worker.call("no_such_op", (), 60.0) is False
    finally:
        worker.stop()
