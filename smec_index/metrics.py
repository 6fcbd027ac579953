"""Retrieval metrics with trec_eval semantics, and exact search to feed them.

nDCG@k follows trec_eval's ``ndcg_cut.k`` as BEIR uses it: gain = the qrels relevance, discount
1/log2(rank + 1), ideal DCG from all judged relevant documents of the query, mean over the queries
that have at least one relevant judgement. Recall@k and MRR@k count documents with relevance > 0.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["ndcg_at_k", "recall_at_k", "mrr_at_k", "evaluate", "exact_search", "evaluate_embeddings"]

Qrels = Mapping[str, Mapping[str, int]]


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(r + 2) for r, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranked list of doc ids against graded judgements ``rels`` (doc id -> relevance)."""
    ideal = _dcg(sorted((r for r in rels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg([max(rels.get(d, 0), 0) for d in ranked[:k]]) / ideal


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    """Fraction of the relevant documents found in the first k."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the first k (0 when none)."""
    for r, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (r + 1)
    return 0.0


def evaluate(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean ``ndcg@10``, ``recall@100`` and ``mrr@10`` over the judged queries (a query missing from run scores 0)."""
    qids = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not qids:
        raise ValueError("evaluate: qrels has no query with a relevant document")
    out = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in qids:
        ranked = list(run.get(q, ()))
        out["ndcg@10"] += ndcg_at_k(ranked, qrels[q], 10)
        out["recall@100"] += recall_at_k(ranked, qrels[q], 100)
        out["mrr@10"] += mrr_at_k(ranked, qrels[q], 10)
    return {k: v / len(qids) for k, v in out.items()}


def exact_search(
    queries: np.ndarray, corpus: np.ndarray, k: int, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (scores float32 (nq, k), rows int64 (nq, k)), best first."""
    k = min(k, corpus.shape[0])
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    rows = np.empty((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], batch_size):
        sims = queries[s : s + batch_size] @ corpus.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(
            np.arange(sims.shape[1]), (sims.shape[0], 1)
        )
        ps = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        rows[s : s + batch_size] = np.take_along_axis(part, order, axis=1)
        scores[s : s + batch_size] = np.take_along_axis(ps, order, axis=1)
    return scores, rows


def evaluate_embeddings(
    queries: np.ndarray,
    corpus: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: Qrels,
    k: int = 100,
) -> dict[str, float]:
    """Exact search of ``queries`` over ``corpus`` (both already L2-normalised) and its metrics."""
    _, rows = exact_search(queries, corpus, k)
    run = {q: [doc_ids[j] for j in r] for q, r in zip(query_ids, rows)}
    return evaluate(run, qrels)
