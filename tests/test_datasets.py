import numpy as np
import pytest

from conftest import write_toy_beir as _write_beir

from smec_index.datasets import hash_split, load_beir


def test_load_beir_layout(tmp_path):
    _write_beir(tmp_path)
    ds = load_beir(tmp_path, "toy")
    assert ds.corpus.dtype == np.float32 and ds.corpus.shape == (6, 4)
    np.testing.assert_allclose(np.linalg.norm(ds.corpus, axis=1), 1.0, atol=1e-6)
    Q, qids, qrels = ds.split_queries("test")
    assert qids == ["q0", "q1", "q3"]  # q2 has no relevant document
    assert Q.shape == (3, 4)
    Qt, triples = ds.pairs(["q5", "q6"], "train")
    assert triples == [(0, 0, 1.0), (1, 5, 1.0)]
    assert ds.corpus_texts()["d2"] == "T2 text 2"
    assert ds.supervised_split()[1] == "train"


def test_without_train_split_uses_hash_halves(tmp_path):
    _write_beir(tmp_path, with_train=False)
    ds = load_beir(tmp_path, "toy")
    tr, tr_split, ev, ev_split = ds.supervised_split(seed=0)
    assert tr_split == ev_split == "test"
    assert sorted(tr + ev) == ["q0", "q1", "q3"] and not set(tr) & set(ev)


def test_hash_split_is_stable_and_seeded():
    ids = [str(i) for i in range(1000)]
    a, b = hash_split(ids, 0)
    assert hash_split(list(reversed(ids)), 0)[0] == list(reversed(a))
    assert 400 < len(a) < 600
    assert hash_split(ids, 1)[0] != a


def test_load_beir_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_beir(tmp_path / "nope", "toy")
    _write_beir(tmp_path)
    with pytest.raises(ValueError, match="available: \\['toy'\\]"):
        load_beir(tmp_path, "other")


def test_sample_cuts_a_small_corpus_half_judged_with_qrels_kept_to_it(tmp_path):
    _write_beir(tmp_path, n_docs=40, n_queries=8)
    ds = load_beir(tmp_path, "toy")
    small = ds.sample(4, seed=0)
    assert small.name == f"{ds.name}-4" and small.corpus.shape == (4, 4) and len(small.doc_ids) == 4
    judged = {"d0", "d1", "d2", "d4", "d5"}  # relevant in some split (d3 is judged 0)
    assert len(judged & set(small.doc_ids)) == 2  # half of n
    for i, d in enumerate(small.doc_ids):
        np.testing.assert_array_equal(small.corpus[i], ds.corpus[ds.doc_row(d)])
        assert small.doc_row(d) == i
    for split in small.qrels.values():  # only kept documents, only queries that still have a relevant one
        for rel in split.values():
            assert set(rel) <= set(small.doc_ids) and any(s > 0 for s in rel.values())
    kept = [q for split in small.qrels.values() for q in split]
    assert len(kept) == 2 and small.queries.shape == ds.queries.shape
    assert small.sample(3, seed=0).doc_ids != small.doc_ids  # a sample of a sample is its own set
    assert ds.sample(4, seed=0).doc_ids == small.doc_ids and ds.sample(4, seed=1).doc_ids != small.doc_ids
    for bad in (1, 40, 2.5, True):
        with pytest.raises(ValueError, match="BeirDataset.sample: n"):
            ds.sample(bad)
