"""Retrieval metrics against values computed by hand on constructed rankings.

Each expected value is written as the arithmetic that produces it, so a reader can check it.
log2(2) = 1, log2(3) = 1.58496..., log2(4) = 2.
"""

from __future__ import annotations

import math
from itertools import permutations

import pytest

from harness.scoring.rag.retrieval import (
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    rank,
    recall_at_k,
    retrieval_metrics,
)

L3 = math.log2(3)


def test_plain_ranking_hand_values():
    # relevant at ranks 2 and 4 of 5; a third relevant document was never retrieved
    r = rank(["a", "b", "c", "d", "e"], ["b", "d", "z"])
    assert precision_at_k(r, 3) == pytest.approx(1 / 3)
    assert recall_at_k(r, 3) == pytest.approx(1 / 3)
    assert recall_at_k(r, 5) == pytest.approx(2 / 3)
    assert hit_rate_at_k(r, 1) == 0.0
    assert hit_rate_at_k(r, 2) == 1.0
    assert mrr(r) == pytest.approx(1 / 2)
    dcg = 1 / L3 + 1 / math.log2(5)
    idcg = 1 + 1 / L3 + 1 / 2  # three relevant documents fit in the top 5
    assert ndcg_at_k(r, 5) == pytest.approx(dcg / idcg)


def test_k_larger_than_the_list():
    r = rank(["a", "b"], ["a"])
    # precision divides by k, not by the 2 documents returned
    assert precision_at_k(r, 10) == pytest.approx(1 / 10)
    assert recall_at_k(r, 10) == 1.0
    assert hit_rate_at_k(r, 10) == 1.0
    assert ndcg_at_k(r, 10) == 1.0


def test_no_relevant_documents_is_undefined_not_zero():
    values = retrieval_metrics(["a", "b"], [], k=5)
    assert values == {"recall@5": None, "precision@5": None, "hit_rate@5": None, "mrr": None, "ndcg@5": None}


def test_relevant_documents_none_retrieved():
    values = retrieval_metrics(["a", "b"], ["x"], k=2)
    assert values == {"recall@2": 0.0, "precision@2": 0.0, "hit_rate@2": 0.0, "mrr": 0.0, "ndcg@2": 0.0}


def test_empty_retrieval_list():
    assert retrieval_metrics([], ["x"], k=3)["mrr"] == 0.0


def test_ties_are_averaged_over_orders():
    # scores: a and b tie at the top, c below; only b is relevant
    r = rank(["a", "b", "c"], ["b"], scores=[0.9, 0.9, 0.1])
    assert precision_at_k(r, 1) == pytest.approx(0.5 * 1 / 1)  # b is first half of the time
    assert hit_rate_at_k(r, 1) == pytest.approx(0.5)
    assert hit_rate_at_k(r, 2) == 1.0
    assert mrr(r) == pytest.approx(0.5 * 1 + 0.5 * 1 / 2)
    assert ndcg_at_k(r, 3) == pytest.approx((0.5 * 1 + 0.5 / L3) / 1)


def test_ties_order_of_input_does_not_matter():
    a = retrieval_metrics(["a", "b", "c"], ["b"], 2, scores=[1.0, 1.0, 0.0])
    b = retrieval_metrics(["b", "a", "c"], ["b"], 2, scores=[1.0, 1.0, 0.0])
    assert a == b


def test_scores_rank_higher_first():
    # the list is given out of order; scores put c first
    values = retrieval_metrics(["a", "b", "c"], ["c"], 1, scores=[0.1, 0.2, 0.3])
    assert values["precision@1"] == 1.0 and values["mrr"] == 1.0


def _brute_force(retrieved, relevant, scores, k):
    """Mean of each metric over every order of the tied blocks (what the tie-aware formulas promise)."""
    ordered = sorted(set(scores), reverse=True)
    blocks = [[d for d, s in zip(retrieved, scores) if s == level] for level in ordered]
    totals: dict[str, float] = {}
    count = 0

    def walk(i, prefix):
        nonlocal count
        if i == len(blocks):
            values = retrieval_metrics(prefix, relevant, k)
            for key, v in values.items():
                totals[key] = totals.get(key, 0.0) + v
            count += 1
            return
        for order in permutations(blocks[i]):
            walk(i + 1, prefix + list(order))

    walk(0, [])
    return {key: v / count for key, v in totals.items()}


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_tie_aware_equals_brute_force(k):
    retrieved = ["a", "b", "c", "d", "e", "f"]
    scores = [0.9, 0.7, 0.7, 0.7, 0.3, 0.3]  # blocks {a}, {b, c, d}, {e, f}
    relevant = ["c", "d", "f", "q"]
    expected = _brute_force(retrieved, relevant, scores, k)
    got = retrieval_metrics(retrieved, relevant, k, scores=scores)
    assert got == pytest.approx(expected, abs=1e-12)


def test_bad_input():
    with pytest.raises(ValueError):
        rank(["a", "a"], ["a"])
    with pytest.raises(ValueError):
        rank(["a"], ["a"], scores=[1.0, 2.0])
    with pytest.raises(ValueError):
        precision_at_k(rank(["a"], ["a"]), 0)
