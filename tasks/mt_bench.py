"""MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"), as
lm-sys/FastChat's llm_judge runs it: 80 two-turn questions in 8 categories, graded by an LLM judge.

    harness run --tasks mt_bench --model hf:PATH --judge openai:gpt-4o@https://api.openai.com/v1
    harness run --tasks mt_bench --model replay:answers.jsonl --judge ...   # FastChat model_answer file

Answers (fastchat/llm_judge/gen_model_answer.py): each question's turns are chat messages, sent
through the model's own chat template (the backend applies it; no system message is added); the
second turn is asked after the model's own first answer:

    turn 1: [user: turns[0]]
    turn 2: [user: turns[0], assistant: <answer 1>, user: turns[1]]

at the category's temperature (CATEGORY_TEMPERATURE below, 0.7 for an unknown category; greedy
at 0), at most 1024 new tokens, the answer stripped of surrounding whitespace. Sampled turns use
the run seed (FastChat seeds torch with the choice index, 0).

Grading (gen_judgment.py, single mode; harness.scoring.judge.fastchat): turn 1 with `single-v1`, turn 2 with
`single-v1-multi-turn` (the whole conversation, judged on the second answer); math, reasoning and
coding questions with `single-math-v1` / `single-math-v1-multi-turn` and GPT-4's reference answers
(reference_answer/gpt-4.jsonl). Pairwise mode (`--judge-mode pairwise --baseline-answers FILE`)
uses pair-v2 / pair-math-v1 and their multi-turn variants, both positions (harness.scoring.judge.pairwise).
The judge prompts are FastChat's judge_prompts.jsonl, committed byte for byte in
tasks/fixtures/mt_bench/ and always read from there; their hashes are part of the run's identity.

Documents: one per (question, turn), doc_id 2*i + turn - 1, since a judgment is FastChat's unit
(its show_result.py averages judgments, not questions). `--limit N` takes the first N questions
(2N documents). Metrics, over valid judgments (FastChat drops score -1):
- single: `score` (FastChat's "Average"), `score_turn1`, `score_turn2` (its first and second
  turn tables), `score_<category>`;
- pairwise: `win_rate`, `loss_rate`, `tie_rate`, `win_rate_adjusted` (ties count half), and that
  last per turn and per category;
- both: `invalid_judgments` (a total, n = judgments asked), `judge_variance` with --judge-repeats,
  `position_disagreements` (pairwise, a total).

Deliberate differences: unparseable judgments are retried (see harness.scoring.judge.fastchat), and a failing
judge call is an invalid judgment rather than FastChat's "$ERROR$" text.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.core.requests import Generate, Message, Response, request_hash
from harness.core.task import Dataset, Instance, JudgedScoring, MetricSpec, Scored, StageContext, Task
from harness.scoring.judge.fastchat import JudgeItem, grade_single, load_judge_prompts
from harness.scoring.judge.pairwise import grade_pairwise
from harness.taskkit import files
from harness.taskkit.data import FIXTURE_DIR
from harness.taskkit.formats import cached_load
from harness.tasks import register_task

VERSION = "1.0"
MAX_NEW_TOKENS = 1024
# fastchat/llm_judge/common.py temperature_config
CATEGORY_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
DEFAULT_TEMPERATURE = 0.7
GREEDY_BELOW = 1e-4  # gen_model_answer.py: do_sample = temperature >= 1e-4
NEED_REF_CATEGORIES = ("math", "reasoning", "coding")  # common.py NEED_REF_CATS
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
REFERENCE_MODEL = "gpt-4"
JUDGE_PROMPTS = FIXTURE_DIR / "mt_bench" / "judge_prompts.jsonl"

_BREAKDOWN = ("turn1", "turn2", *CATEGORIES)
METRICS = (
    MetricSpec("score"), *(MetricSpec(f"score_{b}") for b in _BREAKDOWN),
    MetricSpec("win_rate"), MetricSpec("loss_rate", higher_is_better=False), MetricSpec("tie_rate"),
    MetricSpec("win_rate_adjusted"), *(MetricSpec(f"win_rate_adjusted_{b}") for b in _BREAKDOWN),
    MetricSpec("invalid_judgments", higher_is_better=False), MetricSpec("position_disagreements", higher_is_better=False),
    MetricSpec("judge_variance", higher_is_better=False),
)


# --- data ----------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    return files.read_jsonl(path)


def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
    """question.jsonl, with GPT-4's reference answers attached to the questions that are graded with them."""
    base = root / "mt_bench"
    references = {r["question_id"]: r["choices"][0]["turns"] for r in _jsonl(base / "reference_answer" / f"{REFERENCE_MODEL}.jsonl")}
    docs = []
    for q in _jsonl(base / "question.jsonl"):
        needs_ref = q["category"] in NEED_REF_CATEGORIES
        if needs_ref and q["question_id"] not in references:
            raise FileNotFoundError(f"reference_answer/{REFERENCE_MODEL}.jsonl: question {q['question_id']}")
        docs.append({"question_id": q["question_id"], "category": q["category"], "turns": list(q["turns"]),
                     "reference_answer": list(references[q["question_id"]]) if needs_ref else None})
    return docs, []


def load() -> Dataset:
    # No hub source: the committed fixture is the complete question set (80 questions, 30 references).
    return cached_load("mt_bench", dir_loader=dir_loader, hub=None, hub_loader=None)


# --- answers -------------------------------------------------------------------------------------


def temperature(category: str) -> float:
    value = CATEGORY_TEMPERATURE.get(category, DEFAULT_TEMPERATURE)
    return 0.0 if value < GREEDY_BELOW else value


def first_turn_request(doc: dict, seed: int, max_new_tokens: int) -> Generate:
    t = temperature(doc["category"])
    return Generate(messages=(Message("user", doc["turns"][0]),), max_tokens=max_new_tokens, temperature=t,
                    seed=seed if t > 0 else None, doc_key=str(doc["question_id"]))  # replay: answers by question


def second_turn_request(first: Generate, doc: dict, first_answer: str) -> Generate:
    assert first.messages is not None
    return replace(first, messages=first.messages + (Message("assistant", first_answer), Message("user", doc["turns"][1])))


def answer_text(response: Response) -> str:
    return str(response[0]).strip() if isinstance(response, list) and response else ""


def build(dataset: Dataset, limit: int | None, num_fewshot: int, seed: int, *, max_new_tokens: int) -> list[Instance]:
    instances = []
    for i, doc in enumerate(dataset.docs if limit is None else dataset.docs[:limit]):
        first = first_turn_request(doc, seed, max_new_tokens)
        for turn in range(1, min(2, len(doc["turns"])) + 1):  # FastChat judges a second turn only where there is one
            reference = doc["reference_answer"]
            # The second turn's request exists only once the first is answered; both documents
            # carry the first-turn request, which fixes the model, its settings and the question.
            instances.append(Instance(doc_id=2 * i + turn - 1, doc={**doc, "turn": turn}, prompt=doc["turns"][turn - 1],
                                      target=reference[turn - 1] if reference else "", requests=(first,)))
    return instances


# --- the judged stage ----------------------------------------------------------------------------


def conversations(ctx: StageContext, instances: list[Instance]) -> dict[object, tuple[str, str]]:
    """Both answers of every question touched: first turns together, then second turns together."""
    firsts: dict[object, tuple[dict, Generate]] = {}
    for inst in instances:
        firsts.setdefault(inst.doc["question_id"], (inst.doc, inst.requests[0]))  # type: ignore[arg-type]
    answers_1 = ctx.ask_model([r for _, r in firsts.values()])
    first_text = {qid: answer_text(answers_1[request_hash(r)]) for qid, (_, r) in firsts.items()}
    seconds = {qid: second_turn_request(r, doc, first_text[qid]) for qid, (doc, r) in firsts.items() if len(doc["turns"]) > 1}
    answers_2 = ctx.ask_model(list(seconds.values()))
    return {qid: (first_text[qid], answer_text(answers_2[request_hash(seconds[qid])]) if qid in seconds else "")
            for qid in firsts}


def judge_item(ctx: StageContext, inst: Instance, answers: tuple[str, str]) -> JudgeItem:
    doc, turn = inst.doc, inst.doc["turn"]
    reference = doc["reference_answer"]
    baseline = tuple(ctx.judge.baseline_turns(doc["question_id"])[:turn]) if ctx.judge.pairwise else None
    return JudgeItem(key=inst.doc_id, questions=tuple(doc["turns"][:turn]), answers=answers[:turn],
                     references=tuple(reference) if reference else None, baseline=baseline)


def run_stage(ctx: StageContext, instances: list[Instance]) -> list[Scored]:
    answers = conversations(ctx, instances)
    items = [judge_item(ctx, inst, answers[inst.doc["question_id"]]) for inst in instances]
    grade = grade_pairwise if ctx.judge.pairwise else grade_single
    grades = grade(ctx.judge, ctx.judge.prompts, items)
    scored = []
    for inst, item in zip(instances, items):
        g = grades[inst.doc_id]
        doc = inst.doc
        response = {"question_id": doc["question_id"], "category": doc["category"], "turn": doc["turn"],
                    "answers": list(item.answers), "baseline_answers": list(item.baseline) if item.baseline else None,
                    "judge": g.record()}
        scored.append(Scored(metrics=g.metrics((f"turn{doc['turn']}", doc["category"])), response=response,
                             extracted=g.extracted()))
    return scored


def mt_bench_task(name: str = "mt_bench", max_new_tokens: int = MAX_NEW_TOKENS) -> Task:
    """`max_new_tokens` below FastChat's 1024 makes a quick variant (tests, smoke runs)."""
    if max_new_tokens < 1:
        raise ValueError("mt_bench: max_new_tokens >= 1")
    return Task(
        name=name, version=VERSION, load=load,
        build=lambda ds, limit, shots, seed: build(ds, limit, shots, seed, max_new_tokens=max_new_tokens),
        score=None, judged=JudgedScoring(run_stage, load_judge_prompts(JUDGE_PROMPTS)), metrics=METRICS, default_fewshot=0,
        tags=("judged", "chat"), request_kinds=("generate",),
        description=f"MT-Bench (80 two-turn questions), FastChat llm_judge, LLM judge (--judge), max_new_tokens={max_new_tokens}",
    )


@register_task("mt_bench")
def mt_bench() -> Task:
    return mt_bench_task()
