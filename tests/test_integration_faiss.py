"""The native SMEC index in the libraries that persist FAISS indexes, each used as its own docs say, with
``faiss.IndexFlatIP(d)`` replaced by ``smec_index.index_factory(...)``: same top-10 after a save and reload.

Needs ``pip install 'smec-index[integration]'``; each test is skipped, with the reason, when its library is
absent. Haystack's FAISS store is left out: ``farm-haystack[faiss]`` pins numpy < 2 (docs/faiss.md).
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index_cases import one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, index_factory

pytestmark = pytest.mark.integration

SPEC = "SMEC16,HNSW32,Refine(Flat)"


@pytest.fixture(scope="module")
def corpus(synth):
    X, Q = synth[:500], synth[500:520]
    smec = SMEC(dims=(16,), method="pca", progress=False).fit(X)
    texts = [f"document number {i}" for i in range(len(X))]
    queries = [f"question number {i}" for i in range(len(Q))]
    vectors = dict(zip(texts + queries, np.vstack([X, Q])))
    return smec, X, Q, texts, queries, vectors


def native(smec: SMEC, spec: str = SPEC) -> faiss.Index:
    index = index_factory(smec, spec)
    params = (["efSearch=64"] if "HNSW" in spec else []) + (["k_factor_rf=10"] if "Refine" in spec else [])
    if params:
        faiss.ParameterSpace().set_index_parameters(index, ",".join(params))
    return index


def test_langchain_faiss_save_local_load_local(corpus, tmp_path):
    lc = pytest.importorskip("langchain_community.vectorstores", reason="langchain-community not installed")
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.embeddings import Embeddings

    smec, X, Q, texts, queries, vectors = corpus

    class Lookup(Embeddings):
        def embed_documents(self, docs):
            return [vectors[t].tolist() for t in docs]

        def embed_query(self, text):
            return vectors[text].tolist()

    store = lc.FAISS(embedding_function=Lookup(), index=native(smec), docstore=InMemoryDocstore(),
                     index_to_docstore_id={}, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    store.add_texts(texts, metadatas=[{"parity": i % 2} for i in range(len(texts))])

    def top10(s) -> list[list[str]]:
        return [[d.page_content for d in s.similarity_search(q, k=10)] for q in queries]

    before = top10(store)
    exact = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    assert np.mean([len(set(b) & {texts[i] for i in e}) / 10 for b, e in zip(before, exact)]) >= 0.95
    store.save_local(str(tmp_path / "lc"))
    loaded = lc.FAISS.load_local(str(tmp_path / "lc"), Lookup(), allow_dangerous_deserialization=True)
    assert isinstance(loaded.index, faiss.IndexRefine)
    assert top10(loaded) == before
    copy = lc.FAISS.deserialize_from_bytes(store.serialize_to_bytes(), Lookup(),
                                           allow_dangerous_deserialization=True)
    assert top10(copy) == before
    hits = loaded.similarity_search(queries[0], k=5, filter={"parity": 1})
    assert len(hits) == 5 and all(h.metadata["parity"] == 1 for h in hits)
    assert len(loaded.max_marginal_relevance_search(queries[0], k=5, fetch_k=20)) == 5  # reads reconstruct()
    # delete calls remove_ids: FAISS's IndexRefine has none; an engine without refine removes (and compacts)
    flat = lc.FAISS(embedding_function=Lookup(), index=native(smec, "SMEC16,Flat"), docstore=InMemoryDocstore(),
                    index_to_docstore_id={}, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    ids = flat.add_texts(texts)
    assert flat.delete(ids[:3]) and flat.index.ntotal == len(texts) - 3
    assert not {texts[0], texts[1], texts[2]} & {d.page_content for d in flat.similarity_search(texts[1], k=10)}


def test_llamaindex_faiss_vector_store_persist_and_map_store(corpus, tmp_path):
    li = pytest.importorskip("llama_index.vector_stores.faiss", reason="llama-index-vector-stores-faiss not installed")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import VectorStoreQuery

    smec, X, Q, texts, _, _ = corpus
    nodes = [TextNode(text=t, id_=f"n{i}", embedding=X[i].tolist()) for i, t in enumerate(texts)]

    def top10(store) -> list[list[str]]:
        return [store.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=10)).ids for q in Q]

    plain = li.FaissVectorStore(faiss_index=native(smec))
    plain.add(nodes)
    before = top10(plain)
    plain.persist(persist_path=str(tmp_path / "plain" / "default__vector_store.json"))
    assert top10(li.FaissVectorStore.from_persist_dir(str(tmp_path / "plain"))) == before

    mapped = li.FaissMapVectorStore(faiss_index=native(smec, "IDMap2," + SPEC))
    mapped.add(nodes)
    got = top10(mapped)
    assert [[f"n{i}" for i in row] for row in before] == got
    mapped.persist(persist_path=str(tmp_path / "map" / "default__vector_store.json"))
    assert top10(li.FaissMapVectorStore.from_persist_dir(str(tmp_path / "map"))) == got
    # FaissMapVectorStore's delete calls remove_ids: FAISS's IndexRefine has none (as for FAISS's own "Flat,RFlat"),
    # an engine without refine removes through the IndexPreTransform
    with pytest.raises(RuntimeError, match="remove_ids not implemented"):
        mapped.delete_nodes(["n0"])
    flat = li.FaissMapVectorStore(faiss_index=native(smec, "IDMap2,SMEC16,Flat"))
    flat.add(nodes)
    flat.delete_nodes(["n0", "n1"])
    assert flat.client.ntotal == len(nodes) - 2 and not {"n0", "n1"} & {i for row in top10(flat) for i in row}


def test_beir_dense_faiss_search_and_save(corpus, tmp_path):
    dense = pytest.importorskip("beir.retrieval.search.dense", reason="beir not installed")
    from beir.retrieval.search.dense.faiss_index import FaissIndex

    smec, X, Q, texts, queries, vectors = corpus
    bcorpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(texts)}
    bqueries = {f"q{i}": q for i, q in enumerate(queries)}

    class Model:  # BEIR's dense model interface, answering with the stored embeddings
        def encode_corpus(self, docs, batch_size=0, **kwargs):
            return np.stack([vectors[d["text"]] for d in docs])

        def encode_queries(self, qs, batch_size=0, **kwargs):
            return np.stack([vectors[q] for q in qs])

    class FlatIPFaissSearch(dense.FlatIPFaissSearch):
        """beir 2.2.0 leaves ``encode`` and ``search_from_files`` abstract in every FAISS search class: stubs."""

        def encode(self, *args, **kwargs):
            raise NotImplementedError

        def search_from_files(self, *args, **kwargs):
            raise NotImplementedError

    class SMECFaissSearch(FlatIPFaissSearch):
        """BEIR's flat search with its ``faiss.IndexFlatIP(dim)`` replaced by the native SMEC index."""

        def index(self, corpus, score_function=None, **kwargs):
            faiss_ids, embeddings = self._index(corpus, score_function)
            self.faiss_index = FaissIndex.build(faiss_ids, embeddings, native(smec))

    search = SMECFaissSearch(Model(), batch_size=64)
    before = search.search(bcorpus, bqueries, 10, "dot")
    before = {q: sorted(r, key=r.get, reverse=True) for q, r in before.items()}
    search.save(str(tmp_path), prefix="smec", ext="flat")
    plain = FlatIPFaissSearch(Model(), batch_size=64)  # BEIR's own load: faiss.read_index
    plain.load(str(tmp_path), prefix="smec", ext="flat")
    after = plain.search(bcorpus, bqueries, 10, "dot")
    assert {q: sorted(r, key=r.get, reverse=True) for q, r in after.items()} == before
    exact = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    assert np.mean([len(set(before[f"q{i}"]) & {f"d{j}" for j in exact[i]}) / 10 for i in range(len(Q))]) >= 0.95
