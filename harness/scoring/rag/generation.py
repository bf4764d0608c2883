"""Judged RAG metrics as ragas 0.4.3 defines them (`ragas.metrics.collections`), prompts included.

- faithfulness: the judge breaks the answer into statements, then gives each a 0/1 verdict of
  being inferable from the contexts (joined by newlines); score = supported / judged
  statements. No statements: undefined (ragas: NaN).
- answer_relevancy: the judge writes a question the answer would answer and flags a
  noncommittal answer, `strictness` (3) times; score = mean cosine similarity of those
  questions to the real one (embeddings), times 0 if every reply flagged the answer
  noncommittal (ragas collections; the legacy metric used "any"). Replies with an empty
  question are dropped; none left gives 0, as ragas. Invalid replies are left out (ragas
  would fail the sample); with no valid reply the score is None.
- context_precision (with reference): a 0/1 "was this context useful for the ground truth"
  verdict per context, in retrieval order; score = average precision
  sum_i(precision@i * v_i) / (sum(v) + 1e-10).
- context_recall: the judge classifies each ground-truth statement as attributable to the
  contexts or not; score = attributed / classified. None classified: undefined.

Requests are sent with ragas's model arguments (temperature 0.01, max_tokens 1024). ragas asks
its `strictness` relevancy questions as identical requests; here they differ by `seed`, so
each has its own cache entry. A metric whose judgment is invalid, or whose input is missing
(empty answer, no contexts, empty ground truth: ragas raises on these), is None for the sample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.core.requests import Generate, Message, request_hash
from harness.scoring.judge.client import Failure, JudgeClient
from harness.scoring.rag import prompts as P
from harness.scoring.rag.embeddings import Embedder, cosine
from harness.scoring.rag.io import RagSample

GENERATION_METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")


@dataclass(frozen=True)
class JudgeSettings:
    temperature: float = 0.01  # ragas InstructorModelArgs defaults
    max_tokens: int = 1024
    strictness: int = 3


@dataclass
class SampleResult:
    metrics: dict[str, float | None] = field(default_factory=dict)
    invalid: Counter = field(default_factory=Counter)
    details: dict = field(default_factory=dict)

    def fail(self, metric: str, failure: Failure) -> None:
        self.invalid[failure.kind] += 1
        self.details.setdefault("invalid", []).append({"metric": metric, "kind": failure.kind, "detail": failure.detail})


def chat(prompt: str, settings: JudgeSettings, seed: int | None = None) -> Generate:
    return Generate(messages=(Message("user", prompt),), max_tokens=settings.max_tokens,
                    temperature=settings.temperature, seed=seed)


# --- requests ----------------------------------------------------------------------------------


def statements_request(s: RagSample, settings: JudgeSettings) -> Generate:
    return chat(P.STATEMENTS.render(P.StatementGeneratorInput(question=s.question, answer=s.answer)), settings)


def nli_request(s: RagSample, statements: Sequence[str], settings: JudgeSettings) -> Generate:
    data = P.NLIStatementInput(context="\n".join(s.contexts), statements=list(statements))
    return chat(P.NLI.render(data), settings)


def relevance_requests(s: RagSample, settings: JudgeSettings) -> list[Generate]:
    prompt = P.RELEVANCE.render(P.AnswerRelevanceInput(response=s.answer))
    return [chat(prompt, settings, seed=i) for i in range(settings.strictness)]


def precision_requests(s: RagSample, settings: JudgeSettings) -> list[Generate]:
    return [chat(P.PRECISION.render(P.ContextPrecisionInput(question=s.question, context=c, answer=s.ground_truth)), settings)
            for c in s.contexts]


def recall_request(s: RagSample, settings: JudgeSettings) -> Generate:
    data = P.ContextRecallInput(question=s.question, context="\n".join(s.contexts), answer=s.ground_truth)
    return chat(P.RECALL.render(data), settings)


# --- formulas (ragas's, including its treatment of non-binary verdicts) -------------------------


def faithfulness_score(verdicts: P.NLIStatementOutput) -> float | None:
    if not verdicts.statements:
        return None
    return sum(1 if v.verdict else 0 for v in verdicts.statements) / len(verdicts.statements)


def average_precision(verdicts: Sequence[int]) -> float:
    numerator = sum(sum(verdicts[: i + 1]) / (i + 1) * verdicts[i] for i in range(len(verdicts)))
    return numerator / (sum(verdicts) + 1e-10)


def recall_score(output: P.ContextRecallOutput) -> float | None:
    if not output.classifications:
        return None
    return sum(c.attributed for c in output.classifications) / len(output.classifications)


def relevancy_score(question: np.ndarray, generated: np.ndarray, noncommittal: Sequence[int]) -> float:
    if len(generated) == 0:
        return 0.0
    return float(cosine(question, generated).mean() * int(not np.all(noncommittal)))


# --- one pass over all samples ------------------------------------------------------------------


def _missing_input(s: RagSample, metric: str) -> str | None:
    if metric in ("faithfulness", "answer_relevancy") and not s.answer.strip():
        return "empty answer"
    if metric in ("faithfulness", "context_precision", "context_recall") and not s.contexts:
        return "no contexts"
    if metric in ("context_precision", "context_recall") and not s.ground_truth.strip():
        return "empty ground_truth"
    return None


def evaluate_generation(samples: Sequence[RagSample], judge: JudgeClient, embedder: Embedder | None,
                        metrics: Sequence[str], settings: JudgeSettings = JudgeSettings()) -> list[SampleResult]:
    results = [SampleResult() for _ in samples]
    wanted = {m: [i for i, s in enumerate(samples) if _missing_input(s, m) is None] for m in metrics}
    for m in metrics:
        for i, s in enumerate(samples):
            reason = _missing_input(s, m)
            if reason is not None:
                results[i].metrics[m] = None
                results[i].details.setdefault("skipped", {})[m] = reason

    # stage 1: everything that needs only the sample
    first: list[Generate] = []
    if "faithfulness" in wanted:
        first += [statements_request(samples[i], settings) for i in wanted["faithfulness"]]
    if "answer_relevancy" in wanted:
        first += [r for i in wanted["answer_relevancy"] for r in relevance_requests(samples[i], settings)]
    if "context_precision" in wanted:
        first += [r for i in wanted["context_precision"] for r in precision_requests(samples[i], settings)]
    if "context_recall" in wanted:
        first += [recall_request(samples[i], settings) for i in wanted["context_recall"]]
    replies = judge.complete(first, "judge: statements, questions, verdicts")

    def one(request: Generate, model, result: SampleResult, metric: str):
        parsed = judge.parse(replies[request_hash(request)], model)[0]
        if isinstance(parsed, Failure):
            result.fail(metric, parsed)
            return None
        return parsed

    # stage 2: faithfulness verdicts need the statements of stage 1
    statements: dict[int, list[str]] = {}
    for i in wanted.get("faithfulness", []):
        out = one(statements_request(samples[i], settings), P.StatementGeneratorOutput, results[i], "faithfulness")
        results[i].metrics["faithfulness"] = None
        if out is not None:
            results[i].details["statements"] = out.statements
            if out.statements:
                statements[i] = out.statements
            else:
                results[i].details.setdefault("skipped", {})["faithfulness"] = "the judge found no statements"
    nli = {i: nli_request(samples[i], st, settings) for i, st in statements.items()}
    replies.update(judge.complete(list(nli.values()), "judge: faithfulness verdicts"))
    for i, request in nli.items():
        out = one(request, P.NLIStatementOutput, results[i], "faithfulness")
        if out is not None:
            results[i].details["verdicts"] = [v.verdict for v in out.statements]
            results[i].metrics["faithfulness"] = faithfulness_score(out)

    for i in wanted.get("context_precision", []):
        outs = [one(r, P.ContextPrecisionOutput, results[i], "context_precision") for r in precision_requests(samples[i], settings)]
        verdicts = [o.verdict for o in outs if o is not None]
        results[i].details["precision_verdicts"] = [None if o is None else o.verdict for o in outs]
        # a missing verdict would shift every later rank: the whole score is undefined
        results[i].metrics["context_precision"] = average_precision(verdicts) if len(verdicts) == len(outs) else None

    for i in wanted.get("context_recall", []):
        out = one(recall_request(samples[i], settings), P.ContextRecallOutput, results[i], "context_recall")
        results[i].metrics["context_recall"] = None if out is None else recall_score(out)
        if out is not None:
            results[i].details["recall_attributed"] = [c.attributed for c in out.classifications]

    if "answer_relevancy" in wanted:
        _relevancy(samples, wanted["answer_relevancy"], replies, judge, embedder, settings, results)
    for r in results:
        r.details["invalid_judgments"] = sum(r.invalid.values())
    return results


def _relevancy(samples: Sequence[RagSample], indices: list[int], replies: dict, judge: JudgeClient, embedder: Embedder | None,
               settings: JudgeSettings, results: list[SampleResult]) -> None:
    generated: dict[int, list[tuple[str, int]]] = {}
    for i in indices:
        kept: list[tuple[str, int]] = []
        valid = 0
        for request in relevance_requests(samples[i], settings):
            parsed = judge.parse(replies[request_hash(request)], P.AnswerRelevanceOutput)[0]
            if isinstance(parsed, Failure):
                results[i].fail("answer_relevancy", parsed)
                continue
            valid += 1
            if parsed.question:  # ragas drops empty questions
                kept.append((parsed.question, parsed.noncommittal))
        results[i].details["questions"] = [{"question": q, "noncommittal": n} for q, n in kept]
        results[i].metrics["answer_relevancy"] = None
        if valid:
            generated[i] = kept
    texts = sorted({samples[i].question for i in generated} | {q for kept in generated.values() for q, _ in kept})
    if not texts:
        return
    if embedder is None:
        raise ValueError("answer_relevancy needs an embedder")
    vectors = dict(zip(texts, embedder.encode(texts)))
    for i, kept in generated.items():
        matrix = np.array([vectors[q] for q, _ in kept]) if kept else np.zeros((0, 1))
        results[i].metrics["answer_relevancy"] = relevancy_score(vectors[samples[i].question], matrix, [n for _, n in kept])
