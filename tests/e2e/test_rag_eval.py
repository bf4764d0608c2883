"""rag-eval end to end: the scripted judge server, judge robustness, the store, and input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.backends.base import make_backend, parse_model_spec
from harness.cli.rag import result_json
from harness.core.errors import UsageError
from harness.run.rag_eval import RagConfig, rag_eval
from harness.scoring.judge.client import Failure, JudgeClient
from harness.scoring.rag.generation import JudgeSettings, chat
from harness.scoring.rag.io import load_samples
from harness.serve.scripted_judge import REFUSAL, JudgeServer, Script
from harness.store.db import Store
from tests.conftest import REPO, SHARED_DATA, TESTS, harness_cli

FIXTURES = TESTS / "fixtures_rag"
FAST_FAIL = "timeout=1,max_retries=0"  # a stalled judge costs one second, not five minutes of retries


def _server(rules: list[dict], **kw) -> JudgeServer:
    return JudgeServer(Script.from_json({"model": "judge", "rules": rules, **kw})).start()


# --- the scripted judge server -----------------------------------------------------------------


def test_judge_server_speaks_openai():
    rules = [{"match": r"capital of (\w+)", "reply": "The capital of \\1 is scripted.", "template": True},
             {"match": "json please", "reply": {"verdict": 1}},
             {"match": "break", "mode": "error", "status": 503},
             {"match": "nonsense", "mode": "garbage"}]
    server = _server(rules)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            assert http.get("/models").json()["data"][0]["id"] == "judge"
            body = http.post("/chat/completions", json={"model": "judge", "n": 2, "messages": [
                {"role": "system", "content": "json please"}, {"role": "user", "content": "What is the capital of Peru?"}]}).json()
            # the last user message decides, not the system message; n choices, all the same
            assert [c["message"]["content"] for c in body["choices"]] == ["The capital of Peru is scripted."] * 2
            assert http.post("/chat/completions", json={"messages": [{"role": "user", "content": [
                {"type": "text", "text": "json please"}]}]}).json()["choices"][0]["message"]["content"] == '{"verdict": 1}'
            assert http.post("/completions", json={"prompt": "json please"}).json()["choices"][0]["text"] == '{"verdict": 1}'
            assert http.post("/chat/completions", json={"messages": [{"role": "user", "content": "break"}]}).status_code == 503
            unscripted = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "hello"}]}).json()
            assert unscripted["choices"][0]["message"]["content"] == REFUSAL
            garbage = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "nonsense"}]}).json()
            assert "{" in garbage["choices"][0]["message"]["content"]
            stream = http.post("/chat/completions", json={"stream": True, "messages": [{"role": "user", "content": "json please"}]})
            assert stream.text.endswith("data: [DONE]\n\n") and '{\\"verdict\\": 1}' in stream.text
        log = server.requests()
        assert [entry["rule"] for entry in log] == [0, 1, 1, 2, -1, 3, 1]
    finally:
        server.stop()


def test_judge_server_command_line(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"match": "ping", "reply": "pong"}]))
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", "judge", "--script", str(script), "--port", "0",
                             "--log", str(log)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = line.split("listening on ", 1)[1].strip()
        reply = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "ping"}]}, timeout=10)
        assert reply.json()["choices"][0]["message"]["content"] == "pong"
        assert json.loads(log.read_text().splitlines()[0])["rule"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    script.write_text('[{"reply": "no match key"}]')
    bad = harness_cli("serve", "judge", "--script", str(script), timeout=30)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--script" in bad.stderr


# --- judge robustness --------------------------------------------------------------------------


def test_one_bad_request_fails_alone():
    rules = [{"match": "slow", "mode": "stall", "seconds": 30}, {"match": "refuse", "mode": "refuse"},
             {"match": "junk", "mode": "garbage"}, {"match": "boom", "mode": "error"},
             {"match": "good (\\d)", "reply": '{"reason": "ok", "verdict": \\1}', "template": True}]
    server = _server(rules)
    try:
        backend = make_backend(parse_model_spec(f"openai:judge@{server.base_url}", FAST_FAIL + ",concurrency=4"))
        judge = JudgeClient(backend)
        settings = JudgeSettings()
        prompts = ["good 1", "slow", "good 0", "boom", "refuse", "junk", "good 1 again"]
        requests = [chat(p, settings) for p in prompts]
        replies = judge.complete(requests)
        from harness.core.requests import request_hash
        from harness.scoring.rag.prompts import ContextPrecisionOutput

        parsed = [judge.parse(replies[request_hash(r)], ContextPrecisionOutput)[0] for r in requests]
        kinds = [p.kind if isinstance(p, Failure) else p.verdict for p in parsed]
        assert kinds == [1, "timeout", 0, "error", "refusal", "format", 1]
        assert dict(judge.stats.invalid) == {"timeout": 1, "error": 1, "refusal": 1, "format": 1}
        assert judge.stats.judgments == 7
    finally:
        server.stop()


def _two_samples(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    rows = [
        {"question": "Q-alpha?", "contexts": ["ctx-alpha-1", "ctx-alpha-2"], "answer": "ans-alpha", "ground_truth": "gt-alpha",
         "retrieved_ids": ["d1", "d2"], "relevant_ids": ["d2"]},
        {"question": "Q-beta?", "contexts": ["ctx-beta-1"], "answer": "ans-beta", "ground_truth": "gt-beta"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return data


def _bad_judge_rules() -> list[dict]:
    NOW = "Now perform the same with the following input.*"
    ok_precision = {"reason": "r", "verdict": 1}
    return [
        # sample alpha: statements stall, precision ctx 2 is garbage, recall errors, relevancy refused
        {"match": "^Given a question and an answer, analyze.*" + NOW + "Q-alpha", "mode": "stall", "seconds": 30},
        {"match": "^Given question, answer and context verify.*" + NOW + "ctx-alpha-1", "reply": ok_precision},
        {"match": "^Given question, answer and context verify.*" + NOW + "ctx-alpha-2", "mode": "garbage"},
        {"match": "^Given a context and an answer, analyze each.*" + NOW + "gt-alpha", "mode": "error"},
        {"match": "^Generate a question for the given answer.*" + NOW + "ans-alpha", "mode": "refuse"},
        # sample beta: every judgment valid
        {"match": "^Given a question and an answer, analyze.*" + NOW + "Q-beta", "reply": {"statements": ["B is true.", "C is true."]}},
        {"match": "^Your task is to judge the faithfulness.*" + NOW + "ctx-beta-1", "reply": {"statements": [
            {"statement": "B is true.", "reason": "r", "verdict": 1}, {"statement": "C is true.", "reason": "r", "verdict": 0}]}},
        {"match": "^Given question, answer and context verify.*" + NOW + "ctx-beta-1", "reply": ok_precision},
        {"match": "^Given a context and an answer, analyze each.*" + NOW + "gt-beta", "reply": {"classifications": [
            {"statement": "gt-beta", "reason": "r", "attributed": 1}]}},
        {"match": "^Generate a question for the given answer.*" + NOW + "ans-beta", "reply": {"question": "Q-beta?", "noncommittal": 0}},
    ]


def test_bad_judge_never_crashes_a_run_and_is_counted(tmp_path):
    server = _server(_bad_judge_rules())
    db = tmp_path / "r.duckdb"
    try:
        config = RagConfig(data=_two_samples(tmp_path), judge=f"openai:judge@{server.base_url}", judge_args=FAST_FAIL,
                           k=2, show_progress=False)
        result = rag_eval(config, db)
        alpha, beta = result.per_sample
        assert alpha["faithfulness"] is None and alpha["answer_relevancy"] is None
        assert alpha["context_precision"] is None and alpha["context_recall"] is None
        assert alpha["recall@2"] == 1.0 and alpha["mrr"] == 0.5  # retrieval needs no judge
        assert beta["faithfulness"] == 0.5 and beta["context_precision"] == pytest.approx(1.0)
        assert beta["context_recall"] == 1.0 and beta["answer_relevancy"] == pytest.approx(1.0, abs=1e-6)
        summary = result_json(result, config.judge)
        assert summary["judge"]["invalid_by_kind"] == {"timeout": 1, "error": 1, "refusal": 3, "format": 1}
        assert summary["tasks"]["rag"]["judge_invalid"]["value"] == 6
        assert summary["judge"]["judgments"] == summary["tasks"]["rag"]["judge_invalid"]["n"] == 7 + 7

        # stored as a complete run of task `rag`, samples and metrics in the usual tables
        store = Store(db, read_only=True)
        try:
            info = store.run(result.run_id)
            assert info["status"] == "complete" and info["backend"] == "rag-eval" and list(info["task_rows"]["task"]) == ["rag"]
            stored = store.metrics(result.run_id).set_index("metric")
            assert stored.loc["faithfulness", "value"] == 0.5 and stored.loc["faithfulness", "n"] == 1
            assert stored.loc["judge_invalid", "value"] == 6
            sample = json.loads(store.con.execute("SELECT response FROM samples WHERE run_id = ? AND doc_id = 0",
                                                  [result.run_id]).fetchone()[0])
            assert {e["kind"] for e in sample["judge"]["invalid"]} == {"timeout", "error", "refusal", "format"}
            cached = store.con.execute("SELECT count(*) FROM cache").fetchone()[0]
        finally:
            store.close()
        # failures are not cached (a re-run asks again); replies, garbage and refusals included, are
        assert cached == 14 - 2

        asked = len(server.requests())
        again = rag_eval(config, db)
        assert again.judge is not None and again.judge.cached == 12 and again.per_sample == result.per_sample
        # only the timed-out and the failed requests went out again
        assert {entry["mode"] for entry in server.requests()[asked:]} == {"stall", "error"}
    finally:
        server.stop()


# --- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "contexts": ["c"], "answer": "a"}', ":1: missing 'ground_truth'"),
    ('{"question": "q", "contexts": "c", "answer": "a", "ground_truth": "g"}', ":1: 'contexts' must be a list of strings"),
    ('{"question": " ", "contexts": [], "answer": "a", "ground_truth": "g"}', ":1: 'question' is empty"),
    ('{"question": "q", "contexts": [], "answer": "a", "ground_truth": "g", "retrieved_ids": ["x"]}',
     ":1: 'retrieved_ids' and 'relevant_ids' must be given together"),
    ('{"question": "q", "contexts": [], "answer": "a", "ground_truth": "g", "retrieved_ids": ["x", "x"], "relevant_ids": []}',
     ":1: 'retrieved_ids' lists id 'x' twice"),
    ('{"question": "q", "contexts": [], "answer": "a", "ground_truth": "g", "retrieved_ids": ["x"], "relevant_ids": [true]}',
     ":1: 'relevant_ids' must be a list of string or integer ids"),
    ('{"question": "q", "contexts": [], "answer": "a", "ground_truth": "g", "retrieved_ids": ["x"], "relevant_ids": [],'
     ' "retrieved_scores": [1, 2]}', ":1: 'retrieved_scores' has 2 scores for 1 retrieved ids"),
    ("[1, 2]", ":1: expected a JSON object, got list"),
    ("\n{not json", ":2: not valid JSON"),  # blank lines are skipped but counted
    ("\n", ": no samples"),
])
def test_input_errors_name_the_line(tmp_path, line, message):
    data = tmp_path / "data.jsonl"
    data.write_text(line + "\n")
    with pytest.raises(UsageError) as error:
        load_samples(data)
    assert str(error.value).startswith(f"{data}{message}") and "\n" not in str(error.value)


def test_input_error_on_the_command_line_is_one_line_and_leaves_no_database(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "q", "contexts": ["c"], "answer": "a", "ground_truth": "g"}\n{"question": 3}\n')
    result = harness_cli("rag-eval", str(data), "--metrics", "retrieval", "--db", str(tmp_path / "r.duckdb"))
    assert result.returncode == 2
    assert result.stderr == f"harness: error: {data}:2: missing 'contexts', 'answer', 'ground_truth'\n"
    assert not (tmp_path / "r.duckdb").exists()


def test_judged_metrics_need_a_judge_and_retrieval_does_not(tmp_path):
    data = str(FIXTURES / "rag_small.jsonl")
    missing = harness_cli("rag-eval", data, "--db", str(tmp_path / "r.duckdb"))
    assert missing.returncode == 2 and "--judge SPEC is needed" in missing.stderr
    unknown = harness_cli("rag-eval", data, "--metrics", "bleurt", "--db", str(tmp_path / "r.duckdb"))
    assert unknown.returncode == 2 and "unknown 'bleurt'" in unknown.stderr
    out = tmp_path / "out.json"
    ok = harness_cli("rag-eval", data, "--metrics", "retrieval", "--k", "2", "--db", str(tmp_path / "r.duckdb"),
                     "--json", str(out), "--no-progress")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(out.read_text())
    assert set(summary["tasks"]["rag"]) == {"recall@2", "precision@2", "hit_rate@2", "mrr", "ndcg@2"}
    # 3 of 4 samples carry ids; eiffel has its 2 relevant at ranks 2-3, photosynthesis ties its first two
    assert summary["tasks"]["rag"]["recall@2"] == {"value": pytest.approx((1 / 2 + 1 / 2 + 0) / 3), "stderr": pytest.approx(1 / 6),
                                                   "ci_low": pytest.approx((1 / 3) - 1.959964 / 6, abs=1e-5),
                                                   "ci_high": pytest.approx((1 / 3) + 1.959964 / 6, abs=1e-5), "n": 3}
    assert summary["judge"] is None


# --- real data, when this machine has it (CC-BY-NC-SA: read from ../shared/data, never committed) --


RGB = SHARED_DATA / "rag" / "rgb_en_fact.json"


@pytest.mark.skipif(not RGB.exists(), reason="RGB subset not in ../shared/data (fresh clones lack it)")
def test_rgb_items_at_scale(tmp_path):
    items = [json.loads(line) for line in RGB.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for item in items:
        # a retriever that ranks one negative passage first, then the positives
        passages = [("neg0", item["negative"][0])] + [(f"pos{i}", p) for i, p in enumerate(item["positive"])]
        answer = item["answer"] if isinstance(item["answer"], str) else json.dumps(item["answer"])
        rows.append({"id": item["id"], "question": item["query"], "contexts": [p for _, p in passages], "answer": answer,
                     "ground_truth": answer, "retrieved_ids": [i for i, _ in passages],
                     "relevant_ids": [f"pos{i}" for i in range(len(item["positive"]))]})
    data = tmp_path / "rgb.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    now = ".*Now perform the same with the following input"
    server = _server([
        {"match": "^Given a question and an answer, analyze" + now, "reply": {"statements": ["The answer is stated."]}},
        {"match": "^Your task is to judge the faithfulness" + now, "reply": {"statements": [
            {"statement": "The answer is stated.", "reason": "r", "verdict": 1}]}},
        {"match": "^Generate a question for the given answer" + now, "reply": {"question": "What is the answer?", "noncommittal": 0}},
        {"match": "^Given question, answer and context verify" + now, "reply": {"reason": "r", "verdict": 1}},
        {"match": "^Given a context and an answer, analyze each" + now, "reply": {"classifications": [
            {"statement": "The answer.", "reason": "r", "attributed": 1}]}},
    ])
    try:
        config = RagConfig(data=data, judge=f"openai:judge@{server.base_url}", k=2, show_progress=False,
                           metrics=("retrieval", "faithfulness", "context_precision", "context_recall"))
        result = rag_eval(config, tmp_path / "r.duckdb")
    finally:
        server.stop()
    assert result.judge is not None and result.judge.as_dict()["invalid"] == 0
    values = {r.metric: r for r in result.metrics}
    n = len(items)
    assert values["faithfulness"].value == 1.0 and values["faithfulness"].n == n
    assert values["context_recall"].value == 1.0
    assert values["context_precision"].value == pytest.approx(1.0, abs=1e-9)
    # relevant at ranks 2.. of each list: MRR 1/2, one hit in the top 2
    assert values["mrr"].value == pytest.approx(0.5) and values["precision@2"].value == pytest.approx(0.5)
    expected_recall = sum(1 / len(i["positive"]) for i in items) / n
    assert values["recall@2"].value == pytest.approx(expected_recall)


def test_an_unfinished_run_resumes_and_its_samples_are_replaced(tmp_path):
    db = tmp_path / "r.duckdb"
    config = RagConfig(data=FIXTURES / "rag_small.jsonl", metrics=("retrieval",), k=3, show_progress=False)
    first = rag_eval(config, db)
    store = Store(db)
    try:  # as a killed attempt leaves it: status failed, one sample with stale numbers
        store.set_status(first.run_id, "failed")
        store.con.execute("""UPDATE samples SET metrics = '{"mrr": 0.123}'::JSON WHERE run_id = ? AND doc_id = 0""", [first.run_id])
    finally:
        store.close()
    second = rag_eval(config, db)
    assert second.resumed and second.run_id == first.run_id
    store = Store(db, read_only=True)
    try:
        frame = store.sample_metrics(second.run_id, "rag")
        assert len(frame) == 4 and json.loads(frame["metrics"][0])["mrr"] == 0.5
        assert store.run(second.run_id)["status"] == "complete"
    finally:
        store.close()
