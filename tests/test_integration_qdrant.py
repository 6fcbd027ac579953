"""langchain-qdrant and llama-index-vector-stores-qdrant pointed at a ``QdrantCompressedCollection`` with the
settings docs/qdrant.md gives: they search the ``full`` vector, their writes fill only ``full``, and
``refresh()`` makes integer-id writes searchable by the compressed stages (qdrant-client's local mode)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from smec_index import SMEC
from smec_index.qdrant import QdrantCompressedCollection

pytestmark = pytest.mark.integration


@pytest.fixture()
def setup(synth):
    X = synth
    smec = SMEC(dims=(16,), method="pca", progress=False).fit(X)
    client = QdrantClient(":memory:")
    col = QdrantCompressedCollection.server(client, "docs", smec, dims=(16,))
    texts = [f"document number {i}" for i in range(len(X))]
    # payload keys as langchain-qdrant reads them, so its searches can return our own points too
    col.upsert(np.arange(400), X[:400], [{"page_content": t, "metadata": {"src": "ours"}} for t in texts[:400]])
    yield X, smec, client, col, texts
    col.close()


def test_langchain_qdrant_reads_and_writes_full_and_refresh_makes_its_writes_searchable(setup):
    lq = pytest.importorskip("langchain_qdrant", reason="langchain-qdrant not installed")
    from langchain_core.embeddings import Embeddings

    X, smec, client, col, texts = setup
    vectors = dict(zip(texts, X))

    class Lookup(Embeddings):
        def embed_documents(self, docs):  # langchain-qdrant embeds "dummy_text" to check the dim
            return [vectors.get(t, X[0]).tolist() for t in docs]

        def embed_query(self, text):
            return vectors[text].tolist()

    store = lq.QdrantVectorStore(client=client, collection_name="docs", embedding=Lookup(), vector_name="full",
                                 distance=models.Distance.COSINE, retrieval_mode=lq.RetrievalMode.DENSE)
    store.add_texts(texts[400:], metadatas=[{"src": "langchain"}] * 200, ids=list(range(400, 600)))
    assert store.similarity_search(texts[450], k=1)[0].page_content == texts[450]  # LangChain searches `full`
    assert store.similarity_search(texts[10], k=1)[0].page_content == texts[10]
    probe = np.arange(400, 600, 5)  # qdrant-client's local mode searches in Python: a sample
    _, I = col.search(X[probe], 1, candidates=50)
    assert not np.isin(I, np.arange(400, 600)).any()  # its writes hold only `full`: invisible to the stages
    assert col.refresh() == 200
    _, I = col.search(X[probe], 1, candidates=50)
    assert np.mean(I[:, 0] == probe) >= 0.97
    assert store.similarity_search(texts[450], k=1)[0].metadata["src"] == "langchain"  # payload kept


def test_llama_index_qdrant_writes_uuid_points_refresh_refuses_them(setup):
    lq = pytest.importorskip("llama_index.vector_stores.qdrant", reason="llama-index-vector-stores-qdrant not installed")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import VectorStoreQuery

    X, smec, client, col, texts = setup
    store = lq.QdrantVectorStore(client=client, collection_name="docs", dense_vector_name="full")
    nodes = [TextNode(text=texts[i], id_=str(uuid.UUID(int=i)), embedding=X[i].tolist()) for i in range(400, 410)]
    store.add(nodes)
    got = store.query(VectorStoreQuery(query_embedding=X[405].tolist(), similarity_top_k=1))
    assert got.ids == [str(uuid.UUID(int=405))]  # LlamaIndex searches `full`
    with pytest.raises(ValueError, match="UUID id"):
        col.refresh()
