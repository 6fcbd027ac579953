"""Load retrieval sets in the BEIR layout with precomputed embeddings.

Layout (see ``shared/data/README.md``)::

    <dataset>/corpus.jsonl.gz  queries.jsonl.gz  qrels/<split>.tsv
    <dataset>/emb/<model>/{corpus,queries}.f16.npy {corpus,query}_ids.txt

Embeddings are cast to float32 and L2-normalised again on load, so inner product is cosine.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ._npy import load_npy
from ._rows import normalise_rows

__all__ = ["BeirDataset", "load_beir", "default_data_dir", "hash_split"]

Qrels = dict[str, dict[str, int]]


def default_data_dir() -> Path:
    """The shared SciFact directory next to the repository (``../shared/data/scifact``)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def _read_ids(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split()


def _read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{path}: expected header 'query-id<TAB>corpus-id<TAB>score', got {header!r}")
        for row in reader:
            if not row:
                continue
            qid, did, score = row[0], row[1], int(float(row[2]))
            qrels.setdefault(qid, {})[did] = score
    return qrels


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Yield the JSON objects of a (gzipped or plain) JSON-lines file."""
    with _open_text(path) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def hash_split(query_ids: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Split query ids into two halves by a seeded hash of each id.

    Used for supervised training on data sets without a train split: train on the first half,
    evaluate on the second. The split depends only on the id and the seed, so it is stable across
    machines and does not depend on the order of the queries.
    """
    train, test = [], []
    key = seed.to_bytes(8, "little", signed=True)
    for qid in query_ids:
        h = hashlib.blake2b(qid.encode("utf-8"), digest_size=8, key=key).digest()
        (train if h[0] % 2 == 0 else test).append(qid)
    return train, test


@dataclass
class BeirDataset:
    """A BEIR retrieval set with one model's embeddings.

    ``corpus`` and ``queries`` are float32, L2-normalised, rows aligned with ``doc_ids`` and
    ``query_ids``; ``qrels`` maps split -> query id -> doc id -> graded relevance.
    """

    name: str
    model: str
    root: Path
    corpus: np.ndarray
    queries: np.ndarray
    doc_ids: list[str]
    query_ids: list[str]
    qrels: dict[str, Qrels]
    _doc_row: dict[str, int] = field(default_factory=dict, repr=False)
    _query_row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._doc_row = {d: i for i, d in enumerate(self.doc_ids)}
        self._query_row = {q: i for i, q in enumerate(self.query_ids)}

    @property
    def dim(self) -> int:
        return int(self.corpus.shape[1])

    def doc_row(self, doc_id: str) -> int:
        return self._doc_row[doc_id]

    def split_queries(self, split: str) -> tuple[np.ndarray, list[str], Qrels]:
        """(query embeddings, query ids, qrels) for the queries judged in ``split``."""
        qrels = self.qrels[split]
        qids = [q for q in qrels if q in self._query_row and any(s > 0 for s in qrels[q].values())]
        rows = [self._query_row[q] for q in qids]
        return self.queries[rows], qids, {q: qrels[q] for q in qids}

    def pairs(self, qids: list[str], split: str) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
        """Training material for supervised fitting: (query embeddings, (query_row, doc_row, rel) triples)."""
        qrels = self.qrels[split]
        Q = self.queries[[self._query_row[q] for q in qids]]
        triples = [
            (i, self._doc_row[d], float(s))
            for i, q in enumerate(qids)
            for d, s in qrels.get(q, {}).items()
            if s > 0 and d in self._doc_row
        ]
        return Q, triples

    def supervised_split(self, seed: int = 0) -> tuple[list[str], str, list[str], str]:
        """Queries to train on and queries to evaluate on: (train_qids, train_split, eval_qids, eval_split).

        With a ``train`` split the train queries train and the ``test`` queries evaluate. Without one,
        the test queries are split in two halves by a seeded hash of the query id (``hash_split``).
        """
        test_split = "test" if "test" in self.qrels else sorted(self.qrels)[0]
        _, test_qids, _ = self.split_queries(test_split)
        if "train" in self.qrels:
            _, train_qids, _ = self.split_queries("train")
            return train_qids, "train", test_qids, test_split
        a, b = hash_split(test_qids, seed)
        return a, test_split, b, test_split

    def sample(self, n: int, seed: int = 0) -> "BeirDataset":
        """A small corpus cut from this one, named ``<name>-<n>``: ``n`` documents, half of them (seeded) among
        those judged relevant in some split and the rest at random, every split's qrels kept to those documents
        (a query left without a judged document drops out of its split). Small retrieval sets (a few thousand
        documents) are where a compressor has least to learn from; this measures that case on a large set."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"BeirDataset.sample: n must be an int >= 2, got {n!r}")
        if n >= len(self.doc_ids):
            raise ValueError(f"BeirDataset.sample: n={n} must be smaller than the corpus ({len(self.doc_ids)} documents)")
        rng = np.random.default_rng(seed)
        judged = sorted({self._doc_row[d] for split in self.qrels.values() for rel in split.values()
                         for d, s in rel.items() if s > 0 and d in self._doc_row})
        take = rng.choice(np.asarray(judged, dtype=np.int64), min(len(judged), n // 2), replace=False)
        rest = np.setdiff1d(np.arange(len(self.doc_ids)), take)
        keep = np.sort(np.concatenate([take, rng.choice(rest, n - len(take), replace=False)]))
        doc_ids = [self.doc_ids[i] for i in keep]
        kept = set(doc_ids)
        qrels = {}
        for name, split in self.qrels.items():
            cut = {q: {d: s for d, s in rel.items() if d in kept} for q, rel in split.items()}
            qrels[name] = {q: rel for q, rel in cut.items() if any(s > 0 for s in rel.values())}
        return replace(self, name=f"{self.name}-{n}", corpus=np.ascontiguousarray(self.corpus[keep]),
                       doc_ids=doc_ids, qrels=qrels)

    def corpus_texts(self) -> dict[str, str]:
        """Document text by id, ``(title + " " + text).strip()`` as the embeddings were made."""
        return {
            d["_id"]: (d.get("title", "") + " " + d.get("text", "")).strip()
            for d in iter_jsonl(self.root / "corpus.jsonl.gz")
        }

    def query_texts(self) -> dict[str, str]:
        """Query text by id."""
        return {d["_id"]: d["text"] for d in iter_jsonl(self.root / "queries.jsonl.gz")}


def available_models(root: str | Path) -> list[str]:
    """Names of the embedding models present under ``root/emb``."""
    emb = Path(root) / "emb"
    return sorted(p.name for p in emb.iterdir() if (p / "corpus.f16.npy").exists()) if emb.is_dir() else []


def load_beir(root: str | Path, model: str) -> BeirDataset:
    """Load a BEIR-layout directory and one model's embeddings from ``root/emb/<model>``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"load_beir: data directory {str(root)!r} does not exist")
    emb = root / "emb" / model
    if not emb.is_dir():
        raise ValueError(
            f"load_beir: model {model!r} has no embeddings under {str(root / 'emb')!r}; "
            f"available: {available_models(root)}"
        )
    doc_ids = _read_ids(emb / "corpus_ids.txt")
    query_ids = _read_ids(emb / "query_ids.txt")
    corpus = normalise_rows(load_npy(emb / "corpus.f16.npy", "load_beir", "corpus embeddings").astype(np.float32))
    queries = normalise_rows(load_npy(emb / "queries.f16.npy", "load_beir", "query embeddings").astype(np.float32))
    if corpus.shape[0] != len(doc_ids) or queries.shape[0] != len(query_ids):
        raise ValueError(
            f"load_beir: {emb}: {corpus.shape[0]} corpus rows for {len(doc_ids)} ids, "
            f"{queries.shape[0]} query rows for {len(query_ids)} ids"
        )
    qrels = {p.stem: _read_qrels(p) for p in sorted((root / "qrels").glob("*.tsv"))}
    if not qrels:
        raise ValueError(f"load_beir: no qrels/<split>.tsv under {str(root)!r}")
    return BeirDataset(root.name, model, root, corpus, queries, doc_ids, query_ids, qrels)
