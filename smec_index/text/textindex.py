"""``TextIndex``: texts in, texts out. Encodes with an ``Encoder``, compresses with ``SMEC``, searches a
``CompressedIndex`` at reduced dims with full-dim rerank, and keeps the texts in a SQLite ``TextStore``.

Saved as one directory, written atomically::

    textindex.json    the manifest: kind, format version, the encoder (name, dim, fingerprint, the sha256 of
                      every file of its model directory), and the size and sha256 of every file below
    index/            the CompressedIndex (its own manifest with checksums; the SMEC compressor inside)
    texts.sqlite      ids and texts

Thread-safe like ``CompressedIndex``: searches run together; ``add`` and ``remove`` run alone; ``save`` runs
with searches and writes a state between two changes.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .._fsutil import MANIFEST, atomic_directory, manifest_files, read_manifest, write_manifest
from ..compressor import SMEC
from ..index import CompressedIndex
from ..index.checks import check_vectors, is_int
from ..index.compressed import _RWLock
from ..index.errors import IndexStateError
from .encoder import DEFAULT_MODEL, Encoder, model_dir, model_files, verify_model_files
from .io import check_id_list, check_ids, check_texts, read_texts
from .store import TextStore

__all__ = ["TextIndex", "Hit", "FORMAT_VERSION", "KIND"]

FORMAT_VERSION = 2  # 2: textindex.json is a manifest (every file's sha256, the model's files' sha256)
KIND = "smec_index.TextIndex"
_META = "textindex.json"
_INDEX = "index"
_TEXTS = "texts.sqlite"

Hit = tuple[Any, float, str]  # (id, score, text)


def _as_encoder(encoder: Any, where: str) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    if encoder is None:
        return Encoder(DEFAULT_MODEL)
    try:
        return Encoder(encoder)
    except TypeError:
        raise TypeError(f"{where}: encoder must be an Encoder, a model name, a model directory or a "
                        f"SentenceTransformer, got {type(encoder).__name__}") from None


def _supervision(queries: Any, qrels: Any, row_of: Mapping[str | int, int], where: str
                 ) -> tuple[list[str], list[tuple[int, int, float]]] | tuple[None, None]:
    """Query texts and (query_row, doc_row, relevance) pairs from either form:

    - ``queries`` a list of str, ``qrels`` an iterable of ``(query_index, doc_id, relevance)``;
    - ``queries`` a dict ``{query_id: text}``, ``qrels`` a dict ``{query_id: {doc_id: relevance}}`` (BEIR);
    - ``queries`` alone (either form): unlabelled queries, pairs None.
    """
    if queries is None and qrels is None:
        return None, None
    if queries is None:
        raise ValueError(f"{where}: qrels judge queries; got qrels without queries")
    if qrels is None:
        return check_texts(list(queries.values()) if isinstance(queries, Mapping) else queries, where, "queries"), None
    triples: list[tuple[Any, Any, Any]] = []
    if isinstance(queries, Mapping):
        if not isinstance(qrels, Mapping):
            raise TypeError(f"{where}: with queries as a dict {{query_id: text}}, qrels must be a dict "
                            f"{{query_id: {{doc_id: relevance}}}}, got {type(qrels).__name__}")
        qids = list(queries)
        texts = check_texts([queries[q] for q in qids], where, "queries")
        qrow = {q: i for i, q in enumerate(qids)}
        for q, docs in qrels.items():
            if q not in qrow:
                raise ValueError(f"{where}: qrels has query id {q!r}, which is not in queries")
            if not isinstance(docs, Mapping):
                raise TypeError(f"{where}: qrels[{q!r}] must be a dict {{doc_id: relevance}}, got {type(docs).__name__}")
            triples += [(qrow[q], d, r) for d, r in docs.items()]
    else:
        texts = check_texts(queries, where, "queries")
        if isinstance(qrels, (str, bytes)) or not isinstance(qrels, Iterable):
            raise TypeError(f"{where}: qrels must be an iterable of (query_index, doc_id, relevance), "
                            f"got {type(qrels).__name__}")
        for i, p in enumerate(qrels):
            try:
                q, d, r = p
            except (TypeError, ValueError):
                raise ValueError(f"{where}: qrels[{i}] = {p!r}; expected (query_index, doc_id, relevance)") from None
            if not is_int(q) or not 0 <= q < len(texts):
                raise ValueError(f"{where}: qrels[{i}] query_index {q!r} is not an index into queries "
                                 f"(0..{len(texts) - 1})")
            triples.append((int(q), d, r))
    pairs = []
    for q, d, r in triples:
        if d not in row_of:
            raise ValueError(f"{where}: qrels refers to document id {d!r}, which is not among the texts' ids")
        if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not np.isfinite(r):
            raise ValueError(f"{where}: qrels relevance {r!r} for document {d!r} must be a finite number")
        pairs.append((q, row_of[d], float(r)))
    if not any(r > 0 for _, _, r in pairs):
        raise ValueError(f"{where}: qrels has no pair with relevance > 0")
    return texts, pairs


class TextIndex:
    """Search texts by meaning at a fraction of the memory: SMEC-compressed vectors, full-dim rerank, texts kept.

    Build it with ``TextIndex.build``, reopen it with ``TextIndex.load``. ``search`` returns, per query,
    ``[(id, score, text), ...]`` best first.

    Example::

        ti = TextIndex.build(texts, dims=(64,))
        ti.search("does vitamin D prevent fractures?", k=5)
    """

    def __init__(self, index: CompressedIndex, store: TextStore, encoder: Encoder | None, meta: dict[str, Any]) -> None:
        self.index = index
        self.store = store
        self._encoder = encoder
        self._meta = meta
        self._progress = True  # progress bars of an encoder loaded later (``load(..., progress=)``)
        self._lock = _RWLock()
        self._encoder_lock = threading.Lock()  # one lazy load of the saved model, however many threads search

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        texts: Sequence[str] | Path,
        ids: Sequence[str | int] | None = None,
        encoder: Any = None,
        dims: Sequence[int] | int = (64,),
        method: str = "smec",
        backend: str = "faiss",
        spec: str = "Flat",
        rerank: str = "full",
        queries: Sequence[str] | Mapping[Any, str] | None = None,
        qrels: Any = None,
        *,
        candidates: int | Sequence[int] = 100,
        seed: int = 0,
        progress: bool = True,
        smec_options: Mapping[str, Any] | None = None,
        embeddings: np.ndarray | None = None,
        **backend_options: Any,
    ) -> "TextIndex":
        """Encode ``texts``, fit a compressor on them (supervised when ``queries`` and ``qrels`` are given),
        index them at ``dims`` and store them by id.

        Args:
            texts: a list of str, or a ``pathlib.Path`` to BEIR JSON lines or plain text (``read_texts``).
            ids: one distinct str or int per text (default: the file's ids, else 0..n-1).
            encoder: an ``Encoder``, or what ``Encoder(...)`` takes (default the bundled all-MiniLM-L6-v2).
            dims: the reduced dims to index; the smallest is searched, larger ones rescore (cascade).
            method: the compressor (``SMEC`` methods: smec, mrl, search-adaptor, pca, truncate).
            backend, spec, rerank, candidates, backend_options: as ``CompressedIndex`` (``spec`` is FAISS's).
            queries, qrels: training queries and judgements (see ``_supervision`` for the two forms); queries
                alone (a query log) train smec without labels, distilled on them too.
            smec_options: extra ``SMEC`` options (``max_epochs``, ``init``, ...).
            embeddings: the texts' embeddings by ``encoder``'s model, (n, D), when you already have them: they
                are used instead of encoding the texts (queries are still encoded).
        Everything is checked before anything is encoded.
        """
        where = "TextIndex.build"
        if isinstance(texts, Path):
            file_ids, texts = read_texts(texts)
            ids = file_ids if ids is None else ids
        texts = check_texts(texts, where)
        ids = list(range(len(texts))) if ids is None else check_ids(ids, len(texts), where)
        if is_int(dims):
            dims = (int(dims),)
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not all(is_int(d) for d in dims):
            raise TypeError(f"{where}: dims must be an int or a sequence of ints, got {dims!r}")
        if smec_options is not None and not isinstance(smec_options, Mapping):
            raise TypeError(f"{where}: smec_options must be a dict, got {type(smec_options).__name__}")
        smec = SMEC(sorted((int(d) for d in dims), reverse=True), method, seed=seed, progress=progress,
                    **dict(smec_options or {}))
        if backend == "faiss":
            backend_options = {"spec": spec, **backend_options}
        elif spec != "Flat":
            raise ValueError(f"{where}: spec is a FAISS index_factory string; backend is {backend!r} (pass its own "
                             f"options as keyword arguments)")
        # every trained dim is indexed (CompressedIndex's own default is one coded stage)
        index_args = dict(dims=smec.dims, backend=backend, rerank=rerank, candidates=candidates, **backend_options)
        CompressedIndex(smec, **index_args)  # checks the index arguments now, before the slow steps
        row_of = {d: i for i, d in enumerate(ids)}
        q_texts, pairs = _supervision(queries, qrels, row_of, where)
        if q_texts is not None and pairs is None:
            smec.check_unlabelled(where)
        enc = _as_encoder(encoder, where)
        if max(smec.dims) >= enc.dim:
            raise ValueError(f"{where}: dims {tuple(smec.dims)} must all be below the encoder's dim {enc.dim}")
        if embeddings is not None:
            X = check_vectors(embeddings, where, enc.dim, name="embeddings")
            if X.shape[0] != len(texts):
                raise ValueError(f"{where}: embeddings has shape {X.shape}; expected ({len(texts)}, {enc.dim}), one "
                                 f"row per text")
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        else:
            X = enc.encode(texts, progress=progress)
        Q = enc.encode(q_texts, progress=progress) if q_texts is not None else None
        smec.fit(X, queries=Q, qrels=pairs)
        index = CompressedIndex(smec, **index_args)
        index.train(X)
        store = TextStore()
        slots = store.add(ids, texts)
        index.add_with_ids(X, np.asarray(slots, dtype=np.int64))
        return cls(index, store, enc, cls._encoder_meta(enc))

    @staticmethod
    def _encoder_meta(enc: Encoder) -> dict[str, Any]:
        """What a save records of the encoder; with the sha256 of every file of its model directory (checked
        before a later ``load`` opens that directory)."""
        root = model_dir(enc.source) if enc.source is not None else None
        return {"name": enc.name, "source": enc.source, "dim": enc.dim, "max_seq_length": enc.max_seq_length,
                "fingerprint": enc.fingerprint, "model_files": model_files(root) if root is not None else None}

    # ----------------------------------------------------------------- properties
    @property
    def encoder(self) -> Encoder:
        """The encoder; after ``load`` without one, the saved model (a bundled name, or the directory it was
        loaded from) is loaded on first use, and checked to be the same weights."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._load_saved_encoder()
        return self._encoder

    def _load_saved_encoder(self) -> Encoder:
        """The saved model, opened only after every file of its directory matched its recorded sha256."""
        source = self._meta.get("source")
        root = model_dir(source) if source is not None else None
        if root is None:
            raise ValueError(f"TextIndex: the index was built with model {self._meta['name']!r} "
                             f"({source or 'a model given in memory'}), which is neither bundled nor found on "
                             f"this machine; pass encoder= (an Encoder or a model directory) to TextIndex.load")
        verify_model_files(root, self._meta.get("model_files"), "TextIndex")
        return self._checked(Encoder(source, progress=self._progress), "TextIndex")

    def _checked(self, enc: Encoder, where: str) -> Encoder:
        if enc.dim != self._meta["dim"] or enc.fingerprint != self._meta["fingerprint"]:
            raise ValueError(f"{where}: the encoder ({enc.name!r}, dim {enc.dim}, fingerprint {enc.fingerprint[:12]}) "
                             f"is not the model the index was built with ({self._meta['name']!r}, dim "
                             f"{self._meta['dim']}, fingerprint {self._meta['fingerprint'][:12]}); its queries would "
                             f"not match the stored vectors")
        return enc

    def __len__(self) -> int:
        return self.index.ntotal

    def __contains__(self, id: object) -> bool:
        return isinstance(id, (str, int)) and not isinstance(id, bool) and self.store.text_of(id) is not None

    def ids(self) -> list[str | int]:
        """Every id, in the order added."""
        return self.store.ids()

    def text(self, id: str | int) -> str:
        """The stored text of ``id``; KeyError if absent."""
        t = self.store.text_of(id)
        if t is None:
            raise KeyError(id)
        return t

    def __repr__(self) -> str:
        return (f"TextIndex({len(self):,} texts, encoder={self._meta['name']!r} ({self._meta['dim']} dims), "
                f"dims={self.index.dims}, backend={self.index.backend!r}, rerank={self.index.rerank!r})")

    # ----------------------------------------------------------------- search
    def search(self, query: str | Sequence[str], k: int = 10, *, dim: int | None = None, rerank: str | None = None,
               candidates: int | Sequence[int] | None = None) -> list[Hit] | list[list[Hit]]:
        """``[(id, score, text), ...]`` best first for one query string; a list of lists for a list of strings.

        ``dim``, ``rerank`` and ``candidates`` override the index's defaults (see ``CompressedIndex.search``).
        """
        where = "TextIndex.search"
        single = isinstance(query, str)
        queries = check_texts([query] if single else query, where, "query")
        if not is_int(k) or k <= 0:
            raise ValueError(f"{where}: k must be a positive int, got {k!r}")
        Q = self.encoder.encode(queries, progress=False, cache=False)
        with self._lock.read():  # the texts of the ids found are read before a removal can drop them
            D, I = self.index.search(Q, int(k), dim=dim, rerank=rerank, candidates=candidates)
            found = self.store.get(int(s) for s in np.unique(I) if s >= 0)
        hits = [[(found[int(s)][0], float(d), found[int(s)][1]) for d, s in zip(Drow, Irow) if s >= 0]
                for Drow, Irow in zip(D, I)]
        return hits[0] if single else hits

    # ----------------------------------------------------------------- changes
    def add(self, texts: Sequence[str], ids: Sequence[str | int] | None = None) -> None:
        """Encode and add texts under new ids (default: the next free integer ids). Checked before anything changes."""
        where = "TextIndex.add"
        texts = check_texts(texts, where)
        if ids is not None:
            ids = check_ids(ids, len(texts), where)
            self._check_new(ids, where)  # before the slow encoding; checked again under the lock
        X = self.encoder.encode(texts)
        with self._lock.write():
            if ids is None:
                start = self.store.next_slot
                ids = list(range(start, start + len(texts)))
            self._check_new(ids, where)
            slots = self.store.add(ids, texts)
            try:
                self.index.add_with_ids(X, np.asarray(slots, dtype=np.int64))
            except BaseException:
                self.store.remove_slots(slots)
                raise
        return None

    def _check_new(self, ids: Sequence[str | int], where: str) -> None:
        present = self.store.slots_of(ids)
        if present:
            raise ValueError(f"{where}: ids already in the index: {sorted(map(repr, present))[:5]}; remove them first")

    def remove(self, ids: Sequence[str | int]) -> int:
        """Remove texts by id; returns how many were present (absent ids are ignored)."""
        ids = check_id_list(ids, "TextIndex.remove")
        with self._lock.write():
            slots = list(self.store.slots_of(ids).values())
            if not slots:
                return 0
            self.index.remove_ids(np.asarray(slots, dtype=np.int64))
            self.store.remove_slots(slots)
            return len(slots)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the index, its compressor and its texts to directory ``path`` atomically, with ``textindex.json``
        as the manifest of every file. ``path`` may be new, empty or an earlier TextIndex save holding only the
        files its manifest lists; anything else is refused (ValueError naming what is in the way). Runs with
        searches; waits for adds and removals, so the vectors and texts saved always match."""
        with self._lock.read():
            if len(self.store) != self.index.ntotal:
                raise IndexStateError(f"TextIndex.save: {len(self.store)} texts but {self.index.ntotal} vectors (the index "
                                      f"was changed directly); refused, so that no good save is replaced by it")
            self._write(path)

    def _write(self, path: str | Path) -> None:
        with atomic_directory(path, _saved_files, "a saved TextIndex") as tmp:
            self.index.save(tmp / _INDEX)
            self.store.save(tmp / _TEXTS)
            inner = json.loads((tmp / _INDEX / MANIFEST).read_text(encoding="utf-8"))["files"]
            write_manifest(tmp, KIND, FORMAT_VERSION, {"encoder": self._meta, "ntotal": len(self)}, name=_META,
                           known={f"{_INDEX}/{rel}": info for rel, info in inner.items()})

    @classmethod
    def load(cls, path: str | Path, encoder: Any = None, progress: bool = True) -> "TextIndex":
        """Reopen a directory written by ``save``. ``encoder``: an ``Encoder`` (or what it takes) for the model
        the index was built with; by default the saved model (bundled name or directory), loaded on first
        search or add, with progress bars unless ``progress=False``, after checking that every file of the
        model's directory has the sha256 recorded at build time.

        Checked first: ``textindex.json`` (kind, format version, its own checksum, the encoder record), no
        symbolic link and no unlisted file anywhere, the size and sha256 of every file (those under ``index/``
        through the index's own manifest, whose sha256 is pinned here); then the counts of texts and vectors."""
        where = "TextIndex.load"
        path = Path(path)
        inner_manifest = f"{_INDEX}/{MANIFEST}"
        meta = read_manifest(path, KIND, FORMAT_VERSION, where, "a saved TextIndex", name=_META,
                             hash_file=lambda rel: not rel.startswith(_INDEX + "/") or rel == inner_manifest)
        enc_meta = _check_encoder_meta(meta.get("encoder"), path / _META)
        if not is_int(meta.get("ntotal")) or meta["ntotal"] < 0 or _TEXTS not in meta["files"] \
                or inner_manifest not in meta["files"]:
            raise ValueError(f"{where}: {path / _META} lacks ntotal, {_TEXTS} or {inner_manifest}; not a TextIndex save")
        index = CompressedIndex.load(path / _INDEX)
        store = TextStore.load(path / _TEXTS)
        if len(store) != index.ntotal or meta["ntotal"] != index.ntotal:
            raise ValueError(f"{where}: {path} is inconsistent: {len(store)} texts, {index.ntotal} vectors, "
                             f"{meta['ntotal']} in {_META}")
        obj = cls(index, store, None, enc_meta)
        obj._progress = bool(progress)
        if encoder is not None:
            obj._encoder = obj._checked(_as_encoder(encoder, where), where)
        return obj


def _saved_files(path: Path) -> set[str] | None:
    """The files an earlier TextIndex save in ``path`` lists (which a new save may replace), else None."""
    return manifest_files(path, KIND, _META)


def _check_encoder_meta(enc: Any, where: Path) -> dict[str, Any]:
    """The saved encoder record, each field checked for type (it decides which model directory is opened)."""
    ok = (isinstance(enc, dict) and isinstance(enc.get("name"), str)
          and (enc.get("source") is None or isinstance(enc["source"], str))
          and is_int(enc.get("dim")) and enc["dim"] > 0 and is_int(enc.get("max_seq_length"))
          and isinstance(enc.get("fingerprint"), str) and re.fullmatch(r"[0-9a-f]{64}", enc["fingerprint"])
          and (enc.get("model_files") is None or isinstance(enc["model_files"], dict)))
    if not ok:
        raise ValueError(f"TextIndex.load: {where} has encoder={enc!r}; expected {{name, source, dim, max_seq_length, "
                         f"fingerprint, model_files}}")
    return enc
