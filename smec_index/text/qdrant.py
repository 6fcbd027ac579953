"""``QdrantTextCollection``: texts on a ``QdrantCompressedCollection``, each text and its id in its point's payload.

The vectors come from an ``Encoder`` and go through the collection's SMEC stages as usual; the payload of a
point is ``{"doc_id": <your id>, "text": <the text>}``, so Qdrant itself keeps the texts (and filters on
them, e.g. with a full-text payload index). A point's Qdrant id is a 63-bit hash of your id (str or int),
so ids need no mapping table and a text added again under the same id replaces the old one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from ..index.backends.qdrant_edge import EdgeEngine
from ..index.backends.qdrant_server import ServerEngine
from ..qdrant import QdrantCompressedCollection
from .encoder import Encoder
from .io import check_id_list, check_ids, check_texts
from .textindex import Hit

__all__ = ["QdrantTextCollection", "point_id", "ID_KEY", "TEXT_KEY"]

ID_KEY = "doc_id"
TEXT_KEY = "text"


def point_id(doc_id: str | int) -> int:
    """The Qdrant point id of a text id: the first 63 bits of blake2b over its type and value (stable everywhere)."""
    key = (f"s:{doc_id}" if isinstance(doc_id, str) else f"i:{int(doc_id)}").encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


class QdrantTextCollection:
    """Add, search and remove texts on a Qdrant collection holding SMEC stages (Edge or server).

    Example::

        col = QdrantCompressedCollection.edge("docs.qdrant", smec, dims=(64,))
        tc = QdrantTextCollection(col, Encoder())
        tc.add(texts, ids)
        tc.search("does vitamin D prevent fractures?", k=5)      # [(id, score, text), ...]
    """

    def __init__(self, collection: QdrantCompressedCollection, encoder: Encoder) -> None:
        if not isinstance(collection, QdrantCompressedCollection):
            raise TypeError(f"QdrantTextCollection: collection must be a QdrantCompressedCollection, got "
                            f"{type(collection).__name__}")
        if not isinstance(encoder, Encoder):
            raise TypeError(f"QdrantTextCollection: encoder must be an Encoder, got {type(encoder).__name__}")
        if encoder.dim != collection.d:
            raise ValueError(f"QdrantTextCollection: the encoder makes {encoder.dim}-dim vectors; the collection's "
                             f"compressor takes {collection.d}")
        self.collection = collection
        self.encoder = encoder

    def add(self, texts: Sequence[str], ids: Sequence[str | int], batch_size: int = 256) -> None:
        """Encode ``texts`` and upsert them with their ids and texts as payloads (an existing id is replaced)."""
        where = "QdrantTextCollection.add"
        texts = check_texts(texts, where)
        ids = check_ids(ids, len(texts), where)
        X = self.encoder.encode(texts)
        payloads = [{ID_KEY: i, TEXT_KEY: t} for i, t in zip(ids, texts)]
        self.collection.upsert(np.array([point_id(i) for i in ids], dtype=np.int64), X, payloads, batch_size)

    def remove(self, ids: Sequence[str | int]) -> int:
        """Delete texts by id; returns how many were present."""
        ids = check_id_list(ids, "QdrantTextCollection.remove")
        return self.collection.delete(np.array([point_id(i) for i in ids], dtype=np.int64))

    def search(self, query: str | Sequence[str], k: int = 10, filter: Any = None,
               candidates: int | Sequence[int] = 100) -> list[Hit] | list[list[Hit]]:
        """``[(id, score, text), ...]`` best first for one query (a list of lists for a list of queries);
        ``filter`` and ``candidates`` as ``QdrantCompressedCollection.search``."""
        where = "QdrantTextCollection.search"
        single = isinstance(query, str)
        queries = check_texts([query] if single else query, where, "query")
        Q = self.encoder.encode(queries, progress=False, cache=False)
        D, I = self.collection.search(Q, k, filter=filter, candidates=candidates)
        payloads = self._payloads(sorted({int(p) for p in I.ravel() if p >= 0}))
        hits = [[(payloads[int(p)][ID_KEY], float(s), payloads[int(p)][TEXT_KEY]) for s, p in zip(Ds, Is)
                 if p >= 0 and int(p) in payloads] for Ds, Is in zip(D, I)]
        return hits[0] if single else hits

    def _payloads(self, pids: list[int]) -> dict[int, dict]:
        """Payload by point id, from the engine (Edge: ``retrieve`` on the shard; server: ``client.retrieve``)."""
        if not pids:
            return {}
        engine = self.collection.engine
        if isinstance(engine, EdgeEngine):
            records = engine.shard.retrieve(pids, True, False)
        elif isinstance(engine, ServerEngine):
            records = engine.client.retrieve(collection_name=engine.collection, ids=pids, with_payload=True,
                                             with_vectors=False)
        else:
            raise TypeError(f"QdrantTextCollection: unknown engine {type(engine).__name__}")
        return {int(r.id): dict(r.payload) for r in records}
