"""MT-Bench with an LLM judge: FastChat's prompts and parsing, scores on published answers, judge
robustness, the judge cache, pairwise mode, and real models (the embedded hf model answering,
llama_cpp.server judging).

The judge in most tests is harness.serve.scripted_judge, a real OpenAI-compatible HTTP server on
loopback whose replies are scripted by regex rules; the candidate is `replay:` over FastChat
model_answer files (small subsets of two published answer files, tasks/fixtures/mt_bench/).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import duckdb
import pytest

from harness.backends.base import parse_model_spec
from harness.backends.replay import ReplayBackend
from harness.core.requests import Generate, Message, request_hash
from harness.scoring.judge.fastchat import (
    INVALID_RATING,
    JudgeItem,
    JudgeSettings,
    grade_single,
    load_judge_prompts,
    parse_rating,
    prompt_name,
    render_single,
)
from harness.scoring.judge.pairwise import combine, disagree, parse_verdict
from harness.serve.scripted_judge import REFUSAL, JudgeServer, Script
from tests.conftest import REPO, SHARED_DATA, harness_cli
from tests.servers import llama_server  # noqa: F401 (pytest fixture)

FIXTURES = REPO / "tasks" / "fixtures" / "mt_bench"
SUBSET = FIXTURES / "model_answer_subset"
SUBSET_IDS = (81, 82, 111, 112, 121, 122)  # writing, math, coding: the questions of the answer subsets
CATEGORY = {81: "writing", 82: "writing", 111: "math", 112: "math", 121: "coding", 122: "coding"}
NEED_REF = ("math", "reasoning", "coding")
JUDGE_MODEL = "judge"
# sha256 of FastChat's published files (fastchat/llm_judge/data/mt_bench at the pinned commit)
PUBLISHED_SHA256 = {
    "judge_prompts.jsonl": "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
    "question.jsonl": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    "reference_answer/gpt-4.jsonl": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
}


# --- helpers -------------------------------------------------------------------------------------


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def raw_prompts() -> dict[str, dict]:
    return {p["name"]: p for p in jsonl(FIXTURES / "judge_prompts.jsonl")}


def questions() -> dict[int, dict]:
    return {q["question_id"]: q for q in jsonl(FIXTURES / "question.jsonl")}


def references() -> dict[int, dict]:
    return {r["question_id"]: r for r in jsonl(FIXTURES / "reference_answer" / "gpt-4.jsonl")}


def answers(model: str) -> dict[int, list[str]]:
    return {r["question_id"]: r["choices"][0]["turns"] for r in jsonl(SUBSET / f"{model}.jsonl")}


def fastchat_single_prompt(template: dict, question: dict, answer: dict, ref_answer: dict | None, multi_turn: bool) -> str:
    """fastchat/llm_judge/common.py run_judge_single's user prompt, on FastChat's own row shapes."""
    kwargs = {}
    if ref_answer is not None:
        kwargs["ref_answer_1"] = ref_answer["choices"][0]["turns"][0]
        if multi_turn:
            kwargs["ref_answer_2"] = ref_answer["choices"][0]["turns"][1]
    if multi_turn:
        return template["prompt_template"].format(question_1=question["turns"][0], question_2=question["turns"][1],
                                                  answer_1=answer["choices"][0]["turns"][0],
                                                  answer_2=answer["choices"][0]["turns"][1], **kwargs)
    return template["prompt_template"].format(question=question["turns"][0], answer=answer["choices"][0]["turns"][0], **kwargs)


def expected_judge_messages(model: str) -> dict[tuple[int, int], list[dict]]:
    """(question_id, turn) -> the chat messages FastChat sends its judge for this model's answers."""
    prompts, qs, refs = raw_prompts(), questions(), references()
    out = {}
    for row in jsonl(SUBSET / f"{model}.jsonl"):
        q = qs[row["question_id"]]
        ref = refs[q["question_id"]] if q["category"] in NEED_REF else None
        for turn in (1, 2):
            name = ("single-math-v1" if ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
            user = fastchat_single_prompt(prompts[name], q, row, ref, multi_turn=turn == 2)
            out[(q["question_id"], turn)] = [{"role": "system", "content": prompts[name]["system_prompt"]},
                                             {"role": "user", "content": user}]
    return out


def turn_pattern(answer_turns: list[str], turn: int, who: str = "") -> str:
    """A regex found only in the judge prompt that grades this answer's `turn` (single, or pairwise as assistant `who`)."""
    if turn == 1:
        label = f"Assistant {who}'s Answer" if who else "Assistant's Answer"
        return re.escape(f"[The Start of {label}]\n{answer_turns[0]}\n[The End of {label}]")
    who = who or "A"
    return re.escape(f"### Assistant {who}:\n{answer_turns[1]}\n\n<|The End of Assistant {who}'s Conversation with User|>")


def rating_rules(model: str, replies: dict[tuple[int, int], str]) -> list[dict]:
    ans = answers(model)
    rules = []
    for (qid, turn), reply in replies.items():
        mode = reply if reply in ("refuse", "garbage") else "reply"
        rules.append({"match": turn_pattern(ans[qid], turn), "reply": reply, "mode": mode})
    return rules


def subset_mirror(tmp: Path, ids: tuple[int, ...] = SUBSET_IDS) -> Path:
    """A data mirror holding only these questions (and the reference answers), for HARNESS_DATA_DIR."""
    root = tmp / "mirror"
    (root / "mt_bench" / "reference_answer").mkdir(parents=True)
    lines = [line for line in (FIXTURES / "question.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
             if json.loads(line)["question_id"] in ids]
    (root / "mt_bench" / "question.jsonl").write_text("".join(lines), encoding="utf-8")
    shutil.copy(FIXTURES / "reference_answer" / "gpt-4.jsonl", root / "mt_bench" / "reference_answer" / "gpt-4.jsonl")
    return root


def run_mt_bench(db: Path, model_file: Path, judge_url: str, *args: str, env: dict | None = None, judge_args: str = "timeout=20,max_retries=0"):
    return harness_cli("run", "--tasks", "mt_bench", "--model", f"replay:{model_file}", "--judge", f"openai:{JUDGE_MODEL}@{judge_url}",
                       "--judge-args", judge_args, "--db", str(db), "--no-progress", *args, env=env or {})


def metrics(db: Path, run_id: str | None = None) -> dict[str, tuple[float, int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id = run_id or con.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        rows = con.execute("SELECT metric, value, n FROM metrics WHERE run_id = ?", [run_id]).fetchall()
    finally:
        con.close()
    return {m: (v, n) for m, v, n in rows}


def samples(db: Path) -> list[tuple[int, dict, str, dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id = con.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        rows = con.execute("SELECT doc_id, response, extracted, metrics FROM samples WHERE run_id = ? ORDER BY doc_id",
                           [run_id]).fetchall()
    finally:
        con.close()
    return [(d, json.loads(r), e, json.loads(m)) for d, r, e, m in rows]


def runs(db: Path) -> list[tuple[str, str, str, dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT run_id, status, config_hash, metadata FROM runs ORDER BY created_at").fetchall()
    finally:
        con.close()
    return [(r, s, c, json.loads(m or "{}")) for r, s, c, m in rows]


def chat_posts(server: JudgeServer) -> list[dict]:
    return [e for e in server.requests() if e["path"].endswith("/chat/completions")]


# --- fixtures are FastChat's files ---------------------------------------------------------------


def test_fixtures_are_fastchat_files_byte_for_byte() -> None:
    for name, sha in PUBLISHED_SHA256.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == sha, name
    assert len(questions()) == 80 and len(references()) == 30
    published = SHARED_DATA / "mt_bench" / "model_answer_published"
    for model in ("gpt-3.5-turbo", "llama-13b"):
        rows = (SUBSET / f"{model}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        assert [json.loads(r)["question_id"] for r in rows] == list(SUBSET_IDS)
        if published.is_dir():  # the lines are copied unchanged from the published files
            full = set((published / f"{model}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True))
            assert set(rows) <= full


def test_judge_prompts_load_field_for_field_and_render_as_fastchat() -> None:
    prompts = load_judge_prompts(FIXTURES / "judge_prompts.jsonl")
    raw = raw_prompts()
    assert set(prompts) == set(raw) and len(prompts) == 8
    for name, prompt in prompts.items():
        assert asdict(prompt) == raw[name]  # templates and system prompts, character for character
    assert {prompt_name(False, r, m) for r in (False, True) for m in (False, True)} == \
        {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"}
    assert {prompt_name(True, r, m) for r in (False, True) for m in (False, True)} == \
        {"pair-v2", "pair-math-v1", "pair-v2-multi-turn", "pair-math-v1-multi-turn"}

    # braces in an answer are text, not placeholders (str.format does not re-read substituted values)
    item = JudgeItem(0, ("Q?",), ("A {answer} }{",))
    text = render_single(prompts["single-v1"], item)
    assert text.startswith("[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response")
    assert text.endswith("[Question]\nQ?\n\n[The Start of Assistant's Answer]\nA {answer} }{\n[The End of Assistant's Answer]")

    qs, refs = questions(), references()
    gpt = {r["question_id"]: r for r in jsonl(SUBSET / "gpt-3.5-turbo.jsonl")}
    for qid in SUBSET_IDS:
        q, ref = qs[qid], (refs[qid] if qs[qid]["category"] in NEED_REF else None)
        for turn in (1, 2):
            name = prompt_name(False, ref is not None, turn == 2)
            mine = render_single(prompts[name], JudgeItem(qid, tuple(q["turns"][:turn]), tuple(gpt[qid]["choices"][0]["turns"][:turn]),
                                                          tuple(ref["choices"][0]["turns"]) if ref else None))
            assert mine == fastchat_single_prompt(raw[name], q, gpt[qid], ref, multi_turn=turn == 2)
            assert "{" + "answer" not in mine.replace(gpt[qid]["choices"][0]["turns"][0], "")  # every placeholder filled


@pytest.mark.parametrize("text, rating", [
    ("The answer is correct. Rating: [[5]]", 5.0),
    ("Rating: [[8.5]]", 8.5),
    ("[[10]] and later [[3]]", 10.0),  # the first match
    ("[3] and then [[9]]", 9.0),  # the double-bracket pattern is searched first, over the whole text
    ("Rating: [7]", 7.0),  # the single-bracket backup
    ("[[A]] is better, [6]", 6.0),
    ("[[5.]]", 5.0),
    ("[[15]]", 15.0),  # FastChat does not check the range
    ("Rating: 7", INVALID_RATING),
    ("Rating: [[seven]]", INVALID_RATING),
    ("[[ 5 ]]", INVALID_RATING),
    ("[[-3]]", INVALID_RATING),
    ("", INVALID_RATING),
    (REFUSAL, INVALID_RATING),
    ("[[08]]", INVALID_RATING),  # ast.literal_eval raises in FastChat; unparseable here
    ("[[\u0663]]", INVALID_RATING),  # an Arabic-Indic digit matches \d but is no Python literal
])
def test_rating_parsing_as_fastchat(text: str, rating: float) -> None:
    assert parse_rating(text) == rating


def test_pairwise_verdicts_and_position_swap() -> None:
    assert [parse_verdict(t) for t in ("[[A]]", "x [[B]] y", "[[C]]", "[[B]] but [[A]]", "A", "[A]", "")] == \
        ["A", "B", "tie", "A", "error", "error", "error"]
    # g1: the candidate is assistant A; g2: the candidate is assistant B
    assert combine("A", "B") == "win" and combine("B", "A") == "loss"
    assert combine("A", "A") == "tie" and disagree("A", "A")  # position bias: a tie, counted as a disagreement
    assert combine("B", "B") == "tie" and disagree("B", "B")
    assert combine("tie", "B") == "tie" and disagree("tie", "B")  # a tie in g1 is a tie (FastChat)
    assert combine("tie", "tie") == "tie" and not disagree("tie", "tie")
    assert combine("A", "error") == "error" and combine("error", "tie") == "error" and not disagree("A", "error")


# --- grading with a fake judge: repeats, variance, retries ----------------------------------------


class FakeJudge:
    """Replies by seed; a seed with no reply is a failed call."""

    def __init__(self, replies: dict[int | None, str], settings: JudgeSettings) -> None:
        self.replies, self.settings, self.errors = replies, settings, {}
        self.asked: list[int | None] = []

    def repeat_seed(self, repeat: int) -> int | None:
        return 100 + repeat if self.settings.repeats > 1 else None

    def ask(self, requests):
        out = {}
        for r in requests:
            self.asked.append(r.seed)
            if r.seed in self.replies:
                out[request_hash(r)] = self.replies[r.seed]
            else:
                self.errors[request_hash(r)] = "TimeoutError: no answer"
        return out


def test_repeats_report_the_judges_variance_and_retries_are_bounded() -> None:
    prompts = load_judge_prompts(FIXTURES / "judge_prompts.jsonl")
    item = JudgeItem(7, ("Q?",), ("A.",))
    # repeat 2 is unparseable once, then parses on its retry (seed 102 + 1000)
    judge = FakeJudge({100: "[[6]]", 101: "[[8]]", 102: "no idea", 1102: "Rating: [[7]]"},
                      JudgeSettings(temperature=0.7, repeats=3, retries=2))
    grade = grade_single(judge, prompts, [item])[7]
    assert sorted(judge.asked, key=str) == [100, 101, 102, 1102]
    assert grade.metrics(("turn1", "writing")) == {"invalid_judgments": 0.0, "score": 7.0, "score_turn1": 7.0,
                                                   "score_writing": 7.0, "judge_variance": 1.0}
    # always unparseable: asked 1 + retries times, then invalid and excluded; a failed call is not retried
    judge = FakeJudge({100: "[[9]]", 101: "garbage", 1101: "garbage", 2101: "garbage"},
                      JudgeSettings(temperature=0.7, repeats=3, retries=2))
    grade = grade_single(judge, prompts, [item])[7]
    assert sorted(judge.asked) == [100, 101, 102, 1101, 2101]
    assert grade.metrics(("turn1",)) == {"invalid_judgments": 2.0, "score": 9.0, "score_turn1": 9.0}
    assert [len(c.attempts) for c in grade.calls] == [1, 3, 1]
    assert "TimeoutError" in grade.calls[2].final.error


def test_judge_client_isolates_failures() -> None:
    from harness.backends.base import Backend
    from harness.scoring.judge.client import GIVE_UP_AFTER, Failure, JudgeClient

    class Flaky(Backend):
        name = "flaky"

        def __init__(self, bad: set[str]) -> None:
            super().__init__(parse_model_spec("replay:x"))
            self.bad, self.calls = bad, 0

        def fingerprint(self) -> str:
            return "flaky"

        def generate(self, requests, progress):
            self.calls += 1
            for i, r in enumerate(requests):
                if r.prompt in self.bad:
                    raise TimeoutError(f"stalled on {r.prompt}")
                yield i, [f"ok {r.prompt}"]

    requests = [Generate(prompt=f"p{i}") for i in range(16)]
    client = JudgeClient(Flaky({"p3", "p11"}), check=False)
    replies = client.complete(requests)
    got = {i: replies[request_hash(r)] for i, r in enumerate(requests) if not isinstance(replies[request_hash(r)], Failure)}
    assert sorted(got) == [i for i in range(16) if i not in (3, 11)] and got[0] == ["ok p0"]
    assert {h for h, r in replies.items() if isinstance(r, Failure)} == {request_hash(requests[3]), request_hash(requests[11])}
    assert "stalled on p3" in replies[request_hash(requests[3])].detail
    assert client.stats.calls() == {"requested": 16, "cached": 0, "computed": 14, "failed": 2}
    # a judge that fails every call is given up on after GIVE_UP_AFTER failures in a row
    dead = Flaky({f"p{i}" for i in range(16)})
    client = JudgeClient(dead, check=False)
    replies = client.complete(requests)
    assert len(replies) == 16 and all(isinstance(r, Failure) for r in replies.values())
    assert sum("not asked" in r.detail for r in replies.values()) == 16 - GIVE_UP_AFTER
    assert dead.calls < 2 * 16


# --- the replay backend reads FastChat's model_answer format --------------------------------------


def test_replay_reads_fastchat_model_answers(tmp_path: Path) -> None:
    path = SUBSET / "llama-13b.jsonl"
    backend = ReplayBackend(parse_model_spec(f"replay:{path}"))
    assert backend.fingerprint() == "replay:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert backend.describe()["model_ids"] == ["llama-13b"] and backend.describe()["questions"] == 6
    q = questions()[111]
    ans = answers("llama-13b")[111]
    first = Generate(messages=(Message("user", q["turns"][0]),), doc_key="111")
    second = Generate(messages=(Message("user", q["turns"][0]), Message("assistant", ans[0]), Message("user", q["turns"][1])),
                      doc_key="111")
    assert dict(backend.generate([first, second], lambda n: None)) == {0: [ans[0]], 1: [ans[1]]}
    with pytest.raises(Exception, match="no answer for question_id 90"):
        list(backend.generate([Generate(messages=(Message("user", questions()[90]["turns"][0]),), doc_key="90")], lambda n: None))
    with pytest.raises(Exception, match="names no question"):  # the question is named by the request, not guessed from text
        list(backend.generate([Generate(messages=(Message("user", q["turns"][0]),))], lambda n: None))
    with pytest.raises(Exception, match="plain-prompt"):
        list(backend.generate([Generate(prompt="def f():")], lambda n: None))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 81, "choices": [{"index": 0, "turns": [1, 2]}]}\n')
    with pytest.raises(Exception, match="bad.jsonl:1"):
        ReplayBackend(parse_model_spec(f"replay:{bad}"))


# --- scores on published answers, with a scripted judge -------------------------------------------

# (question, turn) -> the judge's reply for each model's answer; "refuse"/"garbage" never parse
GPT35_REPLIES = {(81, 1): "Rating: [[9]]", (81, 2): "Rating: [[8]]", (82, 1): "Rating: [[8]]", (82, 2): "Rating: [[7]]",
                 (111, 1): "Rating: [[10]]", (111, 2): "Rating: [[6]]", (112, 1): "Rating: [[9]]", (112, 2): "Rating: [[9]]",
                 (121, 1): "refuse", (121, 2): "Rating: [[7]]", (122, 1): "Rating: [[8]]", (122, 2): "Rating: [[5]]"}
LLAMA_REPLIES = {(81, 1): "Rating: [4]", (81, 2): "[[2]]", (82, 1): "Rating: [[5]]", (82, 2): "Rating: [[3]]",
                 (111, 1): "Rating: [[2]]", (111, 2): "Rating: [[1]]", (112, 1): "Rating: [[3]]", (112, 2): "garbage",
                 (121, 1): "Rating: [[2]]", (121, 2): "Rating: [[1]]", (122, 1): "Rating: [[3.5]]", (122, 2): "Rating: [[2]]"}
# Worked out by hand from the tables above (invalid judgments excluded, as FastChat drops score -1).
EXPECTED = {
    "gpt-3.5-turbo": {"score": (86 / 11, 11), "score_turn1": (44 / 5, 5), "score_turn2": (42 / 6, 6),
                      "score_writing": (32 / 4, 4), "score_math": (34 / 4, 4), "score_coding": (20 / 3, 3),
                      "invalid_judgments": (1, 12)},
    "llama-13b": {"score": (28.5 / 11, 11), "score_turn1": (19.5 / 6, 6), "score_turn2": (9 / 5, 5),
                  "score_writing": (14 / 4, 4), "score_math": (6 / 3, 3), "score_coding": (8.5 / 4, 4),
                  "invalid_judgments": (1, 12)},
}


@pytest.fixture(scope="module")
def published_judge():
    script = Script.from_json({"model": JUDGE_MODEL, "rules": rating_rules("gpt-3.5-turbo", GPT35_REPLIES)
                               + rating_rules("llama-13b", LLAMA_REPLIES)})
    with JudgeServer(script) as server:
        yield server


@pytest.mark.parametrize("model, replies", [("gpt-3.5-turbo", GPT35_REPLIES), ("llama-13b", LLAMA_REPLIES)])
def test_scores_on_published_answers_equal_hand_computed_means(tmp_path: Path, published_judge, model, replies) -> None:
    db, env = tmp_path / "r.duckdb", {"HARNESS_DATA_DIR": str(subset_mirror(tmp_path))}
    before = len(chat_posts(published_judge))
    proc = run_mt_bench(db, SUBSET / f"{model}.jsonl", published_judge.base_url, env=env)
    assert proc.returncode == 0, proc.stderr
    got = metrics(db)
    assert set(got) == set(EXPECTED[model])  # no row for categories or modes without documents
    for name, (value, n) in EXPECTED[model].items():
        assert got[name][0] == pytest.approx(value) and got[name][1] == n, name
    assert "1 of 12 judgments are invalid" in proc.stderr and "invalid_judgments" in proc.stdout

    # the judge saw FastChat's messages, byte for byte, at temperature 0 and max_tokens 2048
    posts = chat_posts(published_judge)[before:]
    expected = expected_judge_messages(model)
    first_attempts = [p["body"] for p in posts if "seed" not in p["body"]]
    assert sorted(json.dumps(b["messages"]) for b in first_attempts) == sorted(json.dumps(m) for m in expected.values())
    assert all(b["temperature"] == 0 and b["max_tokens"] == 2048 and b["model"] == JUDGE_MODEL for b in first_attempts)
    # the unparseable one was asked twice more, with retry seeds, then excluded
    bad = next(k for k, v in replies.items() if v in ("refuse", "garbage"))
    retries = [p["body"] for p in posts if "seed" in p["body"]]
    assert sorted(b["seed"] for b in retries) == [1000, 2000] and all(b["messages"] == expected[bad] for b in retries)
    by_doc = {d: (r, e, m) for d, r, e, m in samples(db)}
    doc = 2 * SUBSET_IDS.index(bad[0]) + bad[1] - 1
    response, extracted, sample_metrics = by_doc[doc]
    assert extracted == "invalid" and "score" not in sample_metrics and sample_metrics["invalid_judgments"] == 1
    assert [a["value"] for a in response["judge"]["judgments"][0]["attempts"]] == [-1.0, -1.0, -1.0]
    assert response["answers"] == answers(model)[bad[0]][: bad[1]]

    # judge spec, settings and prompt hashes are recorded
    [(_, status, _, meta)] = runs(db)
    judge = meta["judge"]
    assert status == "complete" and judge["spec"] == f"openai:{JUDGE_MODEL}@{published_judge.base_url}"
    assert judge["temperature"] == 0 and judge["max_tokens"] == 2048 and judge["retries"] == 2 and judge["mode"] == "single"
    assert set(judge["prompt_hashes"]) == set(raw_prompts())


def test_rerun_is_judged_from_the_cache_and_another_judge_is_another_run(tmp_path: Path, published_judge) -> None:
    db, env = tmp_path / "r.duckdb", {"HARNESS_DATA_DIR": str(subset_mirror(tmp_path))}
    model = SUBSET / "gpt-3.5-turbo.jsonl"
    assert run_mt_bench(db, model, published_judge.base_url, env=env).returncode == 0
    before = len(chat_posts(published_judge))
    proc = run_mt_bench(db, model, published_judge.base_url, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(chat_posts(published_judge)) == before  # zero judge requests
    assert "14 judge requests, 14 from cache, 0 computed, 0 failed" in proc.stdout
    assert metrics(db)["score"][0] == pytest.approx(86 / 11)
    # another judge configuration (here: two seeded repeats) is another run, with another configuration hash
    proc = run_mt_bench(db, model, published_judge.base_url, "--judge-repeats", "2", env=env,
                        judge_args="timeout=20,max_retries=0,seed=7")
    assert proc.returncode == 0, proc.stderr
    (_, _, hash_1, _), (_, _, hash_2, _), (_, _, hash_3, meta_3) = runs(db)
    assert hash_1 == hash_2 != hash_3 and meta_3["judge"]["seed"] == 7 and meta_3["judge"]["repeats"] == 2
    seeds = sorted(p["body"]["seed"] for p in chat_posts(published_judge)[before:])
    assert seeds == sorted([7] * 12 + [8] * 12 + [1007, 2007, 1008, 2008])  # repeats, and the refusal's retries
    got = metrics(db, runs(db)[2][0])
    # a deterministic judge: no variance between repeats, the same scores, twice the judgments
    assert got["judge_variance"] == (0.0, 11) and got["score"][0] == pytest.approx(86 / 11)
    assert got["invalid_judgments"] == (2.0, 24)


# --- judge robustness ----------------------------------------------------------------------------


def test_a_judge_that_stalls_errs_or_refuses_never_crashes_the_run(tmp_path: Path) -> None:
    ans = answers("gpt-3.5-turbo")
    rules = [{"match": turn_pattern(ans[81], 1), "mode": "stall", "seconds": 60},
             {"match": turn_pattern(ans[81], 2), "mode": "error", "status": 500},
             {"match": turn_pattern(ans[82], 1), "mode": "refuse"},
             {"match": turn_pattern(ans[82], 2), "reply": "Good. Rating: [[7]]"}]
    db = tmp_path / "r.duckdb"
    with JudgeServer(Script.from_json({"model": JUDGE_MODEL, "rules": rules})) as server:
        proc = run_mt_bench(db, SUBSET / "gpt-3.5-turbo.jsonl", server.base_url, "--limit", "2",
                            env={"HARNESS_DATA_SOURCE": "fixture"}, judge_args="timeout=1,max_retries=0")
        assert proc.returncode == 0, proc.stderr
        assert metrics(db) == {"score": (7.0, 1), "score_turn2": (7.0, 1), "score_writing": (7.0, 1),
                               "invalid_judgments": (3.0, 4)}
        by_doc = {d: r["judge"]["judgments"][0]["attempts"] for d, r, _, _ in samples(db)}
        assert "no answer within 1 s" in by_doc[0][0]["error"] and len(by_doc[0]) == 1  # failures are not retried here
        assert "HTTP 500" in by_doc[1][0]["error"]
        assert [a["text"] for a in by_doc[2]] == [REFUSAL] * 3  # a refusal is unparseable: retried, then invalid
        assert "3 failed" not in proc.stdout and "2 failed" in proc.stdout

        # failures are not cached: a re-run asks the stalled and failed judgments again, and only those
        before = len(chat_posts(server))
        proc = run_mt_bench(db, SUBSET / "gpt-3.5-turbo.jsonl", server.base_url, "--limit", "2",
                            env={"HARNESS_DATA_SOURCE": "fixture"}, judge_args="timeout=1,max_retries=0")
        assert proc.returncode == 0, proc.stderr
        asked_again = {e["mode"] for e in chat_posts(server)[before:]}
        assert asked_again == {"stall", "error"}
        assert metrics(db)["invalid_judgments"] == (3.0, 4)


def test_usage_errors_exit_2_before_the_database_opens(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli.main import main  # in this process: four CLI start-ups would cost 20 s here

    db = tmp_path / "r.duckdb"
    model = f"replay:{SUBSET / 'gpt-3.5-turbo.jsonl'}"
    cases = [
        (["--tasks", "mt_bench", "--model", model], "needs a judge"),
        (["--tasks", "mt_bench", "--model", model, "--judge-repeats", "2"], "need --judge SPEC"),
        (["--tasks", "mt_bench", "--model", model, "--judge", "openai:judge@http://127.0.0.1:9/v1", "--judge-mode", "pairwise"],
         "needs --baseline-answers"),
        (["--tasks", "mt_bench", "--model", model, "--judge", "hf:smollm2-135m-instruct", "--judge-repeats", "3"],
         "temperature=0.7 (or seed=S)"),
    ]
    for args, message in cases:
        code = main(["run", "--limit", "1", "--db", str(db), "--no-progress", *args])
        stderr = capsys.readouterr().err
        assert code == 2 and message in stderr and "Traceback" not in stderr, (args, stderr)
        assert not db.exists()


# --- pairwise ------------------------------------------------------------------------------------

# (question, turn) -> what the judge says of the candidate (gpt-3.5-turbo) against the baseline (llama-13b)
PAIR_OUTCOMES = {(81, 1): "win", (82, 1): "loss", (111, 1): "win", (112, 1): "bias", (121, 1): "win", (122, 1): "win",
                 (81, 2): "win", (82, 2): "bias", (111, 2): "error", (112, 2): "win", (121, 2): "loss", (122, 2): "win"}
# replies when the candidate is assistant A (g1), and when it is assistant B (g2)
PAIR_REPLIES = {"win": ("[[A]]", "[[B]]"), "loss": ("[[B]]", "[[A]]"), "bias": ("[[A]]", "[[A]]"), "error": ("[[A]]", "garbage")}


def test_pairwise_both_positions_and_disagreement_is_a_tie(tmp_path: Path) -> None:
    cand = answers("gpt-3.5-turbo")
    rules = []
    for (qid, turn), outcome in PAIR_OUTCOMES.items():
        for who, reply in zip(("A", "B"), PAIR_REPLIES[outcome]):
            rules.append({"match": turn_pattern(cand[qid], turn, who), "reply": f"Verdict: {reply}",
                          "mode": "garbage" if reply == "garbage" else "reply"})
    db, env = tmp_path / "r.duckdb", {"HARNESS_DATA_DIR": str(subset_mirror(tmp_path))}
    with JudgeServer(Script.from_json({"model": JUDGE_MODEL, "rules": rules})) as server:
        proc = run_mt_bench(db, SUBSET / "gpt-3.5-turbo.jsonl", server.base_url, "--judge-mode", "pairwise",
                            "--baseline-answers", str(SUBSET / "llama-13b.jsonl"), env=env)
        assert proc.returncode == 0, proc.stderr
        bodies = [p["body"] for p in chat_posts(server)]
    got = metrics(db)
    # 11 valid matches: 7 wins, 2 losses, 2 ties (both position-bias disagreements); 1 excluded
    expected = {"win_rate": (7 / 11, 11), "loss_rate": (2 / 11, 11), "tie_rate": (2 / 11, 11),
                "win_rate_adjusted": (8 / 11, 11), "win_rate_adjusted_turn1": (4.5 / 6, 6),
                "win_rate_adjusted_turn2": (3.5 / 5, 5), "win_rate_adjusted_writing": (2.5 / 4, 4),
                "win_rate_adjusted_math": (2.5 / 3, 3), "win_rate_adjusted_coding": (3 / 4, 4),
                "invalid_judgments": (1, 24), "position_disagreements": (2, 12)}
    assert set(got) == set(expected)
    for name, (value, n) in expected.items():
        assert got[name][0] == pytest.approx(value) and got[name][1] == n, name
    # both orders of one pair, FastChat's pair-v2 system prompt
    prompts = raw_prompts()
    first_turn_81 = [b for b in bodies if b["messages"][1]["content"].startswith("[User Question]\n" + questions()[81]["turns"][0])]
    assert len(first_turn_81) == 2 and {b["messages"][0]["content"] for b in first_turn_81} == {prompts["pair-v2"]["system_prompt"]}
    base = answers("llama-13b")[81][0]
    a_first = [b for b in first_turn_81 if f"[The Start of Assistant A's Answer]\n{base}" in b["messages"][1]["content"]]
    assert len(a_first) == 1  # the baseline was assistant A once, and assistant B once
    assert any(b["messages"][0]["content"] == prompts["pair-math-v1-multi-turn"]["system_prompt"] for b in bodies)


# --- real models ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_answers_both_turns(tmp_path: Path) -> None:
    """The hf backend answers with its chat template, turn 2 after its own turn-1 answer (8 new tokens)."""
    from harness import tasks as catalog
    from harness.core.config import JudgeConfig, RunConfig, TaskSelection
    from harness.run.evaluator import evaluate
    from harness.tasks.mt_bench import mt_bench_task

    catalog.register_task_factory("mt_bench_quick", lambda: mt_bench_task("mt_bench_quick", max_new_tokens=8))
    with JudgeServer(Script.from_json({"model": JUDGE_MODEL, "rules": [{"match": ".", "reply": "Fine. [[5]]"}]})) as server:
        config = RunConfig(tasks=[TaskSelection("mt_bench_quick", limit=1, data="fixture")], show_progress=False,
                           judge=JudgeConfig(f"openai:{JUDGE_MODEL}@{server.base_url}", "timeout=60"))
        result = evaluate(config, tmp_path / "r.duckdb")
        bodies = [p["body"] for p in chat_posts(server)]
    assert result.stats.computed == 2  # turn 1, then turn 2
    [(doc_1, first, _, m1), (doc_2, second, _, m2)] = samples(tmp_path / "r.duckdb")
    assert (doc_1, doc_2) == (0, 1)
    answer_1, answer_2 = second["answers"]
    assert first["answers"] == [answer_1] and answer_1 and m1["score"] == m2["score"] == 5.0
    q = questions()[81]
    multi = [b for b in bodies if b["messages"][0]["content"] == raw_prompts()["single-v1-multi-turn"]["system_prompt"]]
    assert len(multi) == 1 and f"### Assistant A:\n{answer_1}\n\n### User:\n{q['turns'][1]}\n\n### Assistant A:\n{answer_2}\n\n" \
        in multi[0]["messages"][1]["content"]


@pytest.mark.slow
def test_llama_cpp_server_judge_end_to_end(tmp_path: Path, llama_server) -> None:  # noqa: F811
    """A tiny real judge grades poorly and often unparseably; the run completes and counts it."""
    db = tmp_path / "r.duckdb"
    proc = harness_cli("run", "--tasks", "mt_bench", "--limit", "2", "--model", f"replay:{SUBSET / 'gpt-3.5-turbo.jsonl'}",
                       "--judge", llama_server.spec(), "--judge-args", "max_tokens=64,retries=0,timeout=600,max_retries=1",
                       "--db", str(db), "--no-progress", env={"HARNESS_DATA_SOURCE": "fixture"})
    assert proc.returncode == 0, proc.stderr
    got = metrics(db)
    invalid, judgments = got["invalid_judgments"]
    valid = got["score"][1] if "score" in got else 0
    assert judgments == 4 and valid + invalid == 4
    ratings = [a["value"] for _, r, _, _ in samples(db) for a in r["judge"]["judgments"][0]["attempts"]]
    print(f"llama_cpp.server judge: {valid} valid, {int(invalid)} invalid of 4 judgments; attempts' ratings {ratings}; "
          f"metrics {got}")
    [(_, status, _, meta)] = runs(db)
    assert status == "complete" and meta["judge"]["spec"] == llama_server.spec() and meta["judge"]["max_tokens"] == 64
