"""Our judged RAG metrics equal ragas 0.4.3's on the same inputs, with the same scripted judge.

Both sides talk to one real OpenAI-compatible HTTP server on loopback (tests.servers.
judge_server) that answers by matching the prompt text, so a metric can differ only through
its prompt or its formula. ragas runs its current metrics (`ragas.metrics.collections`, the
ones 0.4.3 recommends; the `ragas.metrics` ones are deprecated) through `llm_factory` over an
AsyncOpenAI client, with HuggingFaceEmbeddings over the same all-MiniLM-L6-v2 directory.

Tolerance: metrics computed from verdicts alone must be equal to 1e-12; answer_relevancy goes
through float32 embeddings computed in different batches, so it must agree to 1e-6.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from harness.scoring.rag import prompts as P
from harness.scoring.rag.embeddings import minilm_path
from harness.scoring.rag.io import load_samples
from harness.serve.scripted_judge import JudgeServer, Script
from tests.conftest import TESTS, harness_cli

FIXTURES = TESTS / "fixtures_rag"
DATA = FIXTURES / "rag_small.jsonl"
SCRIPT = FIXTURES / "judge_script.json"
EXACT = 1e-12
EMBEDDING_TOL = 1e-6
METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")
# instructor, under ragas, warns about its own deprecated modes on every call
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server():
    with JudgeServer(Script.load(SCRIPT)) as running:
        yield running


def _user_prompts(entries: list[dict]) -> set[str]:
    return {[m for m in e["body"]["messages"] if m["role"] == "user"][-1]["content"] for e in entries}


def test_prompts_are_ragas_prompts():
    from ragas.metrics.collections.answer_relevancy import util as ar
    from ragas.metrics.collections.context_precision import util as cp
    from ragas.metrics.collections.context_recall import util as cr
    from ragas.metrics.collections.faithfulness import util as fa

    for s in load_samples(DATA):
        assert P.STATEMENTS.render(P.StatementGeneratorInput(question=s.question, answer=s.answer)) == \
            fa.StatementGeneratorPrompt().to_string(fa.StatementGeneratorInput(question=s.question, answer=s.answer))
        context = "\n".join(s.contexts)
        assert P.NLI.render(P.NLIStatementInput(context=context, statements=["One.", "Two \"quoted\"."])) == \
            fa.NLIStatementPrompt().to_string(fa.NLIStatementInput(context=context, statements=["One.", "Two \"quoted\"."]))
        assert P.RELEVANCE.render(P.AnswerRelevanceInput(response=s.answer)) == \
            ar.AnswerRelevancePrompt().to_string(ar.AnswerRelevanceInput(response=s.answer))
        for c in s.contexts:
            assert P.PRECISION.render(P.ContextPrecisionInput(question=s.question, context=c, answer=s.ground_truth)) == \
                cp.ContextPrecisionPrompt().to_string(cp.ContextPrecisionInput(question=s.question, context=c, answer=s.ground_truth))
        assert P.RECALL.render(P.ContextRecallInput(question=s.question, context=context, answer=s.ground_truth)) == \
            cr.ContextRecallPrompt().to_string(cr.ContextRecallInput(question=s.question, context=context, answer=s.ground_truth))


async def _ragas_scores(base_url: str) -> list[dict[str, float]]:
    from openai import AsyncOpenAI
    from ragas.embeddings import HuggingFaceEmbeddings
    from ragas.llms import llm_factory
    from ragas.metrics.collections import AnswerRelevancy, ContextPrecision, ContextRecall, Faithfulness

    client = AsyncOpenAI(base_url=base_url, api_key="dummy", max_retries=0)
    llm = llm_factory("judge", client=client)
    embeddings = HuggingFaceEmbeddings(model=str(minilm_path()), device="cpu")
    faithfulness, relevancy = Faithfulness(llm=llm), AnswerRelevancy(llm=llm, embeddings=embeddings)
    precision, recall = ContextPrecision(llm=llm), ContextRecall(llm=llm)
    out = []
    for s in load_samples(DATA):
        contexts = list(s.contexts)
        out.append({
            "faithfulness": (await faithfulness.ascore(user_input=s.question, response=s.answer, retrieved_contexts=contexts)).value,
            "answer_relevancy": (await relevancy.ascore(user_input=s.question, response=s.answer)).value,
            "context_precision": (await precision.ascore(user_input=s.question, reference=s.ground_truth,
                                                         retrieved_contexts=contexts)).value,
            "context_recall": (await recall.ascore(user_input=s.question, retrieved_contexts=contexts,
                                                   reference=s.ground_truth)).value,
        })
    await client.close()
    return out


def test_metrics_equal_ragas(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")  # ragas/openai insist on one; the server ignores it
    out = tmp_path / "ours.json"
    result = harness_cli("rag-eval", str(DATA), "--judge", f"openai:judge@{server.base_url}", "--db", str(tmp_path / "r.duckdb"),
                         "--json", str(out), "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr
    ours = [s["metrics"] for s in json.loads(out.read_text())["samples"]]
    our_prompts = _user_prompts(server.requests())
    assert json.loads(out.read_text())["judge"]["invalid"] == 0

    before = len(server.requests())
    theirs = asyncio.run(_ragas_scores(server.base_url))
    # ragas asked exactly the prompts we asked (it repeats the relevancy one; we vary its seed)
    assert _user_prompts(server.requests()[before:]) == our_prompts

    worst = {m: 0.0 for m in METRICS}
    for mine, ref in zip(ours, theirs, strict=True):
        for metric in METRICS:
            if math.isnan(ref[metric]):
                assert mine[metric] is None, (metric, mine, ref)
                continue
            worst[metric] = max(worst[metric], abs(mine[metric] - ref[metric]))
    print("max |ours - ragas|:", worst)
    assert worst["faithfulness"] <= EXACT and worst["context_precision"] <= EXACT and worst["context_recall"] <= EXACT
    assert worst["answer_relevancy"] <= EMBEDDING_TOL
    # the fixture exercises every branch: a partly unfaithful answer, an undefined faithfulness,
    # a noncommittal answer (relevancy 0), useless contexts ranked first, partial recall
    assert [m["faithfulness"] for m in ours] == [pytest.approx(2 / 3), 1.0, None, 1.0]
    assert ours[2]["answer_relevancy"] == 0.0 and 0.8 < ours[0]["answer_relevancy"] < 1.0
    assert ours[0]["context_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-9)
    assert [m["context_recall"] for m in ours] == [1.0, 1.0, 0.0, 0.5]
