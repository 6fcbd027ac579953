import math

import numpy as np
import pytest

from smec_index.metrics import evaluate, evaluate_embeddings, exact_search, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_perfect_and_graded():
    rels = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "c"], rels) == pytest.approx(1.0)
    # swapped order: DCG = 1/1 + 2/log2(3); ideal = 2 + 1/log2(3)
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], rels) == pytest.approx(expected)
    assert ndcg_at_k(["x", "y"], rels) == 0.0


def test_ndcg_cut_at_k_ignores_later_hits():
    rels = {"z": 1}
    ranked = [str(i) for i in range(10)] + ["z"]
    assert ndcg_at_k(ranked, rels, 10) == 0.0
    assert ndcg_at_k(ranked, rels, 11) > 0


def test_recall_and_mrr():
    rels = {"a": 1, "b": 1, "c": 0}
    assert recall_at_k(["a", "x"], rels, 100) == 0.5
    assert mrr_at_k(["x", "c", "b"], rels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"], rels, 10) == 0.0


def test_evaluate_counts_missing_queries_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    out = evaluate({"q1": ["a"]}, qrels)
    assert out["ndcg@10"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no query"):
        evaluate({}, {"q": {"a": 0}})


def test_exact_search_matches_argsort():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(300, 16)).astype(np.float32)
    Q = rng.normal(size=(7, 16)).astype(np.float32)
    S, I = exact_search(Q, C, 5, batch_size=3)
    ref = np.argsort(-(Q @ C.T), axis=1)[:, :5]
    np.testing.assert_array_equal(I, ref)
    assert S.dtype == np.float32 and I.dtype == np.int64
    assert np.all(np.diff(S, axis=1) <= 0)


@pytest.mark.realdata
def test_full_dim_scifact_matches_readme(scifact_minilm, scifact_mpnet):
    for ds, want in ((scifact_minilm, 0.6451), (scifact_mpnet, 0.6557)):
        Q, qids, qrels = ds.split_queries("test")
        assert len(qids) == 300
        got = evaluate_embeddings(Q, ds.corpus, qids, ds.doc_ids, qrels)
        assert got["ndcg@10"] == pytest.approx(want, abs=5e-5)
