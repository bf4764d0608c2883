"""How --executor ray deals requests out to replicas (harness.run.ray_pool.balanced_batches)."""

from __future__ import annotations

from harness.core.requests import Generate, Loglikelihood
from harness.run.ray_pool import balanced_batches

FEWSHOT = "The following are multiple choice questions (with answers) about anatomy.\n\n" + "example " * 200


def _mmlu_like() -> list[Loglikelihood]:
    """Two subjects, each question's prompt = the subject's long few-shot prefix + the question; 4 choices each."""
    requests = []
    for q in range(120):
        subject = "anatomy" if q % 2 else "virology"
        context = FEWSHOT.replace("anatomy", subject) + f"Question {q}: " + "y" * (q * 7 % 90) + "\nAnswer:"
        requests += [Loglikelihood(context=context, continuation=f" {c}") for c in "ABCD"]
    return requests


def test_every_request_once_choices_together_and_lengths_balanced():
    requests = _mmlu_like()
    batches = balanced_batches(requests, replicas=2)
    assert sorted(i for b in batches for i in b) == list(range(len(requests)))
    assert len(batches) >= 8  # at least four per replica
    for batch in batches:
        contexts = {requests[i].context for i in batch}
        assert len(batch) == 4 * len(contexts)  # a question's four choices are in one batch
    sizes = [sum(len(requests[i].context) for i in b) for b in batches]
    assert max(sizes) < 1.5 * min(sizes)  # about equal length each
    assert sizes == sorted(sizes, reverse=True)  # the largest goes out first


def test_questions_sharing_a_prefix_stay_neighbours():
    requests = _mmlu_like()
    for batch in balanced_batches(requests, replicas=2):
        subjects = {requests[i].context.split(" questions")[1][:40] for i in batch}
        assert len(subjects) <= 2  # a batch holds one subject's run of questions, two at a boundary
    mixed = sum(len({requests[i].context[80:90] for i in b}) > 1 for b in balanced_batches(requests, replicas=2))
    assert mixed <= 1  # only the batch where one subject's run ends and the next begins


def test_generate_requests_and_small_inputs():
    prompts = [Generate(prompt="p" * (i % 50 + 1) + str(i)) for i in range(100)]
    batches = balanced_batches(prompts, replicas=3, batch_requests=10)
    assert len(batches) == 12 and sorted(i for b in batches for i in b) == list(range(100))
    two = [Loglikelihood(context="c", continuation=" a"), Loglikelihood(context="d", continuation=" b")]
    assert sorted(map(sorted, balanced_batches(two, replicas=4))) == [[0], [1]]
    assert balanced_batches([], replicas=2) == []
