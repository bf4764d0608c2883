"""Retrieval metrics over one ranked list: Recall@k, Precision@k, hit rate@k, MRR, NDCG@k.

Pure functions of (retrieved ids in rank order, relevant ids, optional retrieval scores).
Relevance is binary. Conventions, each chosen to match trec_eval / ranx where they define one:

- Precision@k divides by k even when fewer than k documents were retrieved (the missing ranks
  count as non-relevant), so a system cannot raise its precision by returning less.
- Recall@k divides by the number of relevant documents, retrieved or not.
- MRR is the reciprocal rank of the first relevant document over the whole list (0 if none
  was retrieved). NDCG@k uses gain 1 / log2(rank + 1) and the ideal ranking of
  min(k, |relevant|) relevant documents.
- A query with no relevant documents has no defined recall, MRR or NDCG; every metric is
  None for it, and the aggregates leave it out (as trec_eval leaves out queries without
  judgments) instead of counting it as 0 or 1.
- Ties: when scores are given, documents with equal scores form a tied block whose internal
  order is arbitrary, and each metric is its expected value over all orders of every block
  (McSherry & Najork, ECIR 2008). Without scores the list order is the ranking (no ties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

RETRIEVAL_METRICS = ("recall", "precision", "hit_rate", "mrr", "ndcg")


@dataclass(frozen=True)
class Block:
    """Documents tied at ranks start+1 .. start+size, of which `relevant` are relevant."""

    start: int
    size: int
    relevant: int

    def positions_within(self, k: int) -> int:
        """How many of this block's ranks fall within the top k."""
        return max(0, min(k - self.start, self.size))


@dataclass(frozen=True)
class Ranking:
    blocks: tuple[Block, ...]
    n_relevant: int  # all relevant documents, retrieved or not


def rank(retrieved: Sequence[str], relevant: Sequence[str], scores: Sequence[float] | None = None) -> Ranking:
    """Group a ranked list into tie blocks. Scores, when given, rank higher-first."""
    if len(set(retrieved)) != len(retrieved):
        raise ValueError("retrieved ids must be unique")
    if scores is not None and len(scores) != len(retrieved):
        raise ValueError("one score per retrieved id")
    wanted = set(relevant)
    if scores is None:
        keyed = [(i, doc) for i, doc in enumerate(retrieved)]  # position is the key: no ties
    else:
        # stable sort by descending score; blocks are runs of exactly equal scores
        keyed = sorted(((-float(s), doc) for s, doc in zip(scores, retrieved)), key=lambda p: p[0])  # type: ignore[misc]
    blocks, start = [], 0
    for _, group in groupby(keyed, key=lambda p: p[0]):
        docs = [doc for _, doc in group]
        blocks.append(Block(start, len(docs), sum(doc in wanted for doc in docs)))
        start += len(docs)
    return Ranking(tuple(blocks), len(wanted))


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError("k must be >= 1")


def expected_hits(ranking: Ranking, k: int) -> float:
    """Expected number of relevant documents in the top k (linear in each block's ranks)."""
    _check_k(k)
    return sum(b.positions_within(k) * b.relevant / b.size for b in ranking.blocks)


def precision_at_k(ranking: Ranking, k: int) -> float | None:
    return expected_hits(ranking, k) / k if ranking.n_relevant else None


def recall_at_k(ranking: Ranking, k: int) -> float | None:
    return expected_hits(ranking, k) / ranking.n_relevant if ranking.n_relevant else None


def hit_rate_at_k(ranking: Ranking, k: int) -> float | None:
    """P(at least one relevant document in the top k): a cut block is a hypergeometric draw."""
    _check_k(k)
    if not ranking.n_relevant:
        return None
    p_miss = 1.0
    for b in ranking.blocks:
        t = b.positions_within(k)
        if t and b.relevant:
            p_miss *= math.comb(b.size - b.relevant, t) / math.comb(b.size, t)
    return 1.0 - p_miss


def mrr(ranking: Ranking) -> float | None:
    """Expected reciprocal rank of the first relevant document (0 when none was retrieved)."""
    if not ranking.n_relevant:
        return None
    for b in ranking.blocks:
        if b.relevant:
            # P(first relevant sits at offset j of the block) = C(size-1-j, relevant-1) / C(size, relevant)
            total = math.comb(b.size, b.relevant)
            return sum(math.comb(b.size - 1 - j, b.relevant - 1) / total / (b.start + j + 1)
                       for j in range(b.size - b.relevant + 1))
    return 0.0


def _discount(position: int) -> float:
    """Gain weight at 0-based position: 1 / log2(rank + 1)."""
    return 1.0 / math.log2(position + 2)


def ndcg_at_k(ranking: Ranking, k: int) -> float | None:
    _check_k(k)
    if not ranking.n_relevant:
        return None
    dcg = sum(b.relevant / b.size * _discount(p)
              for b in ranking.blocks for p in range(b.start, b.start + b.positions_within(k)))
    ideal = sum(_discount(p) for p in range(min(k, ranking.n_relevant)))
    return dcg / ideal


def metric_names(k: int) -> tuple[str, ...]:
    return (f"recall@{k}", f"precision@{k}", f"hit_rate@{k}", "mrr", f"ndcg@{k}")


def retrieval_metrics(retrieved: Sequence[str], relevant: Sequence[str], k: int,
                      scores: Sequence[float] | None = None) -> dict[str, float | None]:
    """All retrieval metrics of one query, keyed by the names of `metric_names(k)`."""
    r = rank(retrieved, relevant, scores)
    values = (recall_at_k(r, k), precision_at_k(r, k), hit_rate_at_k(r, k), mrr(r), ndcg_at_k(r, k))
    return dict(zip(metric_names(k), values))
