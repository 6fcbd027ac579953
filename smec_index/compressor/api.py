"""``SMEC``: fit / transform / extend / save / load for SMEC and its baselines behind one interface."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .._fsutil import atomic_directory, manifest_files, read_manifest, read_versioned_json, write_manifest
from .._rows import normalise_rows
from .._threads import training_threads
from .baselines import pca_projections, pca_rotation, random_rotation, rotate_outputs, truncate_projections
from .model import Projection, StageModel
from .train import KL_DEFAULTS, StageReport, TrainConfig, TrainData, item_scores, train_stage

__all__ = ["SMEC", "NotFittedError", "METHODS", "FORMAT_VERSION"]

METHODS = ("smec", "mrl", "search-adaptor", "pca", "truncate")
SP_LOSSES = ("auto", "l1", "kl")
FORMAT_VERSION = 2  # 2: a manifest with the sha256 of every file
_CONFIG = "config.json"
_KIND = "smec_index.SMEC"
_WEIGHTS = "weights.safetensors"
_FLAG_DEFAULTS = {
    # ads None: off (every stage starts at its input's principal axes, already ordered by importance; the
    # learned selection lost on held-out data with and without labels, see docs/method.md)
    "smec": dict(sequential=True, ads=None, xbm=True),
    "mrl": dict(sequential=False, ads=False, xbm=False),
    "search-adaptor": dict(sequential=False, ads=False, xbm=False),
}


class NotFittedError(ValueError, AttributeError):
    """Raised when a compressor is used before ``fit``."""


def saved_smec_files(path: Path) -> set[str] | None:
    """The files an earlier ``SMEC.save`` in ``path`` lists (which a new save may replace), else None."""
    return manifest_files(path, _KIND)


def is_saved_smec(path: Path) -> bool:
    """Whether ``path`` holds the manifest of an earlier ``SMEC.save``."""
    return saved_smec_files(path) is not None


def _check_matrix(X: Any, name: str, where: str, D: int | None = None) -> np.ndarray:
    """A finite, non-empty 2-D float32 C-contiguous copy-or-view of X, else a specific error."""
    if not isinstance(X, np.ndarray):
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        else:
            raise TypeError(f"{where}: {name} must be a numpy array, got {type(X).__name__}")
    if X.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must have a floating dtype, got {X.dtype}")
    expected = f"(n, {D})" if D is not None else "(n, D)"
    if X.ndim != 2:
        raise ValueError(f"{where}: {name} has shape {X.shape}; expected {expected}")
    if X.shape[0] == 0:
        raise ValueError(f"{where}: {name} is empty (shape {X.shape}); expected {expected} with n >= 1")
    if D is not None and X.shape[1] != D:
        raise ValueError(f"{where}: {name} has shape {X.shape}; expected {expected}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ValueError(f"{where}: {name} has {bad} row(s) with NaN or inf")
    return X


def _check_pairs(qrels: Any, n_queries: int, n_docs: int, where: str) -> list[tuple[int, int, float]]:
    if isinstance(qrels, (str, bytes)) or not isinstance(qrels, Iterable):
        raise TypeError(f"{where}: qrels must be an iterable of (query_row, doc_row, relevance), got {type(qrels).__name__}")
    pairs = []
    for i, p in enumerate(qrels):
        try:
            q, d, r = p
        except (TypeError, ValueError):
            raise ValueError(f"{where}: qrels[{i}] = {p!r}; expected (query_row, doc_row, relevance)") from None
        if not isinstance(q, (int, np.integer)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{where}: qrels[{i}] = {p!r}; query_row and doc_row must be integers")
        if not 0 <= q < n_queries:
            raise ValueError(f"{where}: qrels[{i}] query_row {q} out of range 0..{n_queries - 1}")
        if not 0 <= d < n_docs:
            raise ValueError(f"{where}: qrels[{i}] doc_row {d} out of range 0..{n_docs - 1}")
        if not isinstance(r, (int, float, np.integer, np.floating)) or not np.isfinite(r):
            raise ValueError(f"{where}: qrels[{i}] relevance {r!r} must be a finite number")
        pairs.append((int(q), int(d), float(r)))
    if not any(r > 0 for _, _, r in pairs):
        raise ValueError(f"{where}: qrels has no pair with relevance > 0")
    return pairs


class SMEC:
    """Sequential Matryoshka Embedding Compression and its baselines, behind one interface.

    ``method`` is ``"smec"`` (the paper's SMRL + ADS + S-XBM; switch each module with
    ``sequential=``, ``ads=``, ``xbm=`` for the ablation), ``"mrl"`` (Matryoshka-Adaptor: one
    adaptor trained jointly over all dims, prefix truncation), ``"search-adaptor"`` (one adaptor
    per dim), ``"pca"`` or ``"truncate"``. Inputs are L2-normalised before use (cosine geometry);
    outputs are float32 and L2-normalised. ``init="auto"`` (= ``"pca"``) starts each adapter at the principal
    axes of its input; ``"identity"`` starts it at the input itself. ``ads=None`` (smec's default) keeps each
    stage's leading principal axes, with or without labels; ``ads=True`` learns the dimension selection.
    ``rotate`` (default: every method but ``"truncate"``) follows each reduced dim's map with a seeded random
    rotation: scores are unchanged, and codes that quantize coordinate by coordinate (RaBitQ, sign bits,
    Qdrant's binary) see coordinates of equal spread, which they need (``baselines.rotate_outputs``).

    Without labels smec's stages learn by listwise distillation (``sp_loss="auto"``: each row's softmax over its
    nearest and some random rows, the full-dim teacher's against the stage's) where the paper's eq. 7 matches
    each pair's cosine; the baselines and stages trained with labels keep eq. 7 (docs/method.md says why).

    Every SMEC stage keeps the best, on held-out data, of its trained map and PCA of the same dim (of its input,
    and of the full vector): held-out corpus rows' neighbours without labels, held-out training queries with
    them, where the same stage trained straight from the raw vector and the same stage trained without labels
    (distilled, as a fit without labels trains it) are candidates too (kept by the one-standard-error rule, the
    chain's stage first), and the adapted full vector must beat the raw one to be used. ``reports_`` records each
    stage's candidates, scores and ``choice``.

    Queries without qrels (a query log, no judgments; smec's listwise fits only) are anchors of the distillation
    beside the corpus rows, each over its nearest and some random training rows, and a held-out fifth of them
    (``UNLABELLED_VAL_FRACTION``, at most ``max_val``) replaces held-out corpus rows in every held-out score: their
    recall@10 against exact full-dim search. Queries are not documents (shorter, other words, an instruction
    prefix); rows alone teach the map documents' neighbours.

    ``code`` (a stage code of ``index.backends.codes`` on a FAISS engine, e.g. ``"rabitq1"``; unsupervised smec
    only) makes that choice quantization-aware: candidates are scored by how many of each held-out row's
    full-dim top-10 the *coded* stage vectors find among their nearest 10, 20, 50 and ``code_candidates`` (100)
    (the mean of the four), i.e. recall@10 after the exact rerank of an index built with that code, so a map
    whose floats win but whose codes lose (the trained maps against PCA with 1-bit codes at low dims) is not
    kept; PCA of the full vector is kept unless another map is ahead by two standard errors. Build the index
    with the same code.

    ``train_options`` are ``TrainConfig``'s fields (lr, max_epochs, patience, ...). One matters for wide models:
    ``max_adapter_dim`` (1,024): a stage whose input is wider (a 4,096-dim model's full vector) trains on that
    input's top principal axes, so its adapter is 1,024 x 1,024, not D x D (docs/method.md, "Wide inputs").

    Example::

        smec = SMEC(dims=(128, 64), seed=0).fit(corpus)
        Z = smec.transform(queries, dim=64)
    """

    def __init__(
        self,
        dims: Iterable[int] = (256, 128, 64, 32),
        method: str = "smec",
        *,
        sequential: bool | None = None,
        ads: bool | None = None,
        xbm: bool | None = None,
        init: str = "auto",
        rotate: bool | None = None,
        code: str | None = None,
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
        **train_options: Any,
    ) -> None:
        self.dims = self._check_dims(dims)
        if method not in METHODS:
            raise ValueError(f"SMEC: method must be one of {METHODS}, got {method!r}")
        flags = {"sequential": sequential, "ads": ads, "xbm": xbm}
        given = {k: v for k, v in flags.items() if v is not None}
        if given and method != "smec":
            raise ValueError(f"SMEC: {sorted(given)} only apply to method='smec' (the ablation switches), got method={method!r}")
        if rotate is not None and not isinstance(rotate, bool):
            raise TypeError(f"SMEC: rotate must be None, True or False, got {rotate!r}")
        if init not in ("auto", "identity", "pca"):
            raise ValueError(f"SMEC: init must be 'auto', 'identity' or 'pca', got {init!r}")
        known = {f.name for f in fields(TrainConfig)} - {"xbm"}
        unknown = sorted(set(train_options) - known)
        if unknown:
            raise TypeError(f"SMEC: unknown option(s) {unknown}; training options are {sorted(known)}")
        if train_options.get("sp_loss", "auto") not in SP_LOSSES:
            raise ValueError(f"SMEC: sp_loss must be one of {SP_LOSSES}, got {train_options['sp_loss']!r}")
        if "code_candidates" in train_options:
            candidate_ladder(train_options["code_candidates"], "SMEC: code_candidates")
        for name, what in (("max_adapter_dim", "principal axes a wider stage input is cut to"),
                           ("kl_queries", "unlabelled queries per listwise step")):
            n = train_options.get(name, 1)
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
                raise TypeError(f"SMEC: {name} must be an int ({what}), got {n!r}")
            if n < 1:
                raise ValueError(f"SMEC: {name} must be >= 1 ({what}), got {n}")
        self.method = method
        defaults = _FLAG_DEFAULTS.get(method, dict(sequential=False, ads=False, xbm=False))
        self.sequential = bool(given.get("sequential", defaults["sequential"]))
        ads_flag = given.get("ads", defaults["ads"])
        self.ads = None if ads_flag is None else bool(ads_flag)
        self.xbm = bool(given.get("xbm", defaults["xbm"]))
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError):
                raise ValueError(f"SMEC: device must be None (CUDA when present, else CPU) or a torch device such as "
                                 f"'cpu' or 'cuda:0', got {device!r}") from None
        self.code = self._check_code(code, method, self.dims)
        self.init = init
        self.rotate = method != "truncate" if rotate is None else rotate
        self.seed = int(seed)
        self.device = device
        self.progress = progress
        self.train_options = dict(train_options)
        self._data: tuple[np.ndarray, np.ndarray | None, list | None] | None = None

    # ----------------------------------------------------------------- validation helpers
    @staticmethod
    def _check_dims(dims: Iterable[int]) -> tuple[int, ...]:
        if isinstance(dims, (int, np.integer)):
            dims = (int(dims),)
        try:
            dims = tuple(dims)
        except TypeError:
            raise TypeError(f"SMEC: dims must be a sequence of ints, got {type(dims).__name__}") from None
        if not dims:
            raise ValueError("SMEC: dims is empty; expected at least one target dim, e.g. (256, 64)")
        for d in dims:
            if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
                raise TypeError(f"SMEC: dims must be ints, got {d!r} in {dims}")
            if d <= 0:
                raise ValueError(f"SMEC: dims must be positive, got {d} in {dims}")
        if any(a <= b for a, b in zip(dims, dims[1:])):
            raise ValueError(f"SMEC: dims must be strictly decreasing, got {dims}")
        return tuple(int(d) for d in dims)

    @staticmethod
    def _check_code(code: Any, method: str, dims: tuple[int, ...]) -> str | None:
        if code is None:
            return None
        from ..index.backends.codes import CODES, fits_dim

        coded = sorted(n for n, c in CODES.items() if c.backend in ("faiss", "faiss-binary"))
        if not isinstance(code, str) or code not in coded:
            raise ValueError(f"SMEC: code must be None or one of {coded}, got {code!r}")
        if method != "smec":
            raise ValueError(f"SMEC: code only applies to method='smec' (it decides between a stage's "
                             f"candidates), got method={method!r}")
        bad = [d for d in dims if not fits_dim(code, d)]
        if bad:
            raise ValueError(f"SMEC: code {code!r} needs dims that are multiples of {CODES[code].per}, got {bad}")
        return code

    def _check_fitted(self, where: str) -> None:
        if not hasattr(self, "projections_"):
            raise NotFittedError(f"{where}: this SMEC is not fitted yet; call fit(corpus) first")

    def _config(self) -> TrainConfig:
        return TrainConfig(**{**self.train_options, "xbm": self.xbm})

    def _device(self) -> torch.device:
        if self.device is not None:
            dev = torch.device(self.device)
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"SMEC: device={self.device!r} but CUDA is not available here (torch "
                                 f"{torch.__version__}); pass device=None or 'cpu'")
            return dev
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ----------------------------------------------------------------- public API
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "projections_")

    @property
    def dims_(self) -> tuple[int, ...]:
        """The trained reduced dims, largest first."""
        self._check_fitted("dims_")
        return tuple(sorted((d for d in self.projections_ if d != self.input_dim_), reverse=True))

    def fit(self, corpus: np.ndarray, queries: np.ndarray | None = None, qrels: Iterable | None = None) -> "SMEC":
        """Learn the projections from corpus embeddings (n, D); with ``queries`` and ``qrels``
        (pairs of (query_row, doc_row, relevance)) also with the supervised rank loss; with ``queries`` alone
        (unlabelled, e.g. a query log) the distillation anchors on them too and scores on held-out ones."""
        X, Q, pairs = self._training_input(corpus, queries, qrels, "fit")
        if self.code is not None and pairs is not None:
            raise ValueError(f"SMEC.fit: code={self.code!r} scores stages on held-out corpus rows, which needs an "
                             f"unsupervised fit; got queries and qrels (fit without them, or with code=None)")
        t0 = time.perf_counter()
        D = X.shape[1]
        projections: dict[int, Projection] = {D: Projection.identity(D)}
        selections: dict[int, np.ndarray] = {}
        reports: list[StageReport] = []
        threads = None
        if self.method == "pca":
            projections.update(pca_projections(X, self.dims))
        elif self.method == "truncate":
            projections.update(truncate_projections(D, self.dims))
        else:
            trainer = _Trainer(self, X, Q, pairs)
            # one thread per idle core: a busy machine slows training in proportion. The count changes the
            # float sums, so a seed reproduces a fit at the same count (SMEC_INDEX_THREADS pins it)
            with training_threads() as threads:
                trainer.run(self.dims, projections, selections, reports)
        if self.rotate:
            rotate_outputs(projections, self.dims, self.seed)
        self.input_dim_ = D
        self.supervised_ = pairs is not None and self.method not in ("pca", "truncate")
        self.projections_ = projections
        self.selections_ = selections
        self.reports_ = [r.to_dict() for r in reports]
        self.train_s_ = time.perf_counter() - t0
        self.train_threads_ = threads  # torch threads the fit trained with (None: nothing trained)
        self.fit_rows_ = len(corpus)  # the corpus, not the training sample drawn from it
        self._data = (X, Q, pairs)
        return self

    def training_rows(self, n_rows: int) -> np.ndarray | None:
        """The rows an unsupervised ``fit`` trains on when the corpus has more than ``max_train_rows``
        (a seeded random sample, sorted), else None (all of them). Callers holding a corpus on disk can
        read just these rows and fit on them: the result is the same."""
        cap = self._config().max_train_rows
        if n_rows <= cap:
            return None
        # a linear map of D x D parameters is determined long before 20k rows, and the neighbour ranking
        # grows with the square of the rows
        return np.sort(np.random.default_rng(self.seed).choice(n_rows, cap, replace=False))

    def _training_input(self, corpus, queries, qrels, where, D=None):
        """The checked, L2-normalised training matrices of ``fit`` and ``extend``: the corpus (unsupervised: its
        ``training_rows`` sample), the queries and the pairs; a specific error for bad input."""
        X = _check_matrix(corpus, "corpus", where, D)
        D = X.shape[1]
        if X.shape[0] < 2 and self.method != "truncate":
            raise ValueError(f"{where}: corpus has {X.shape[0]} row; method {self.method!r} learns from at least 2 "
                             f"rows (thousands for a useful map)")
        if self.dims[0] >= D:
            raise ValueError(f"{where}: dims {self.dims} must all be < the corpus dim {D}")
        if qrels is not None and queries is None:
            raise ValueError(f"{where}: qrels need the queries they judge; got qrels without queries")
        Q, pairs = None, None
        if queries is not None:
            Q = _check_matrix(queries, "queries", where, D)
            if qrels is not None:
                pairs = _check_pairs(qrels, Q.shape[0], X.shape[0], where)
            else:
                self.check_unlabelled(where)
            Q = normalise_rows(Q)
        rows = self.training_rows(X.shape[0]) if pairs is None else None
        return normalise_rows(X if rows is None else X[rows]), Q, pairs

    def check_unlabelled(self, where: str) -> None:
        """A ValueError unless this compressor can fit on queries without qrels (smec's listwise distillation,
        no ``code``): callers that encode queries first ask before the slow part."""
        if self.method != "smec" or self._config().sp_loss not in ("auto", "kl") or self.code is not None:
            raise ValueError(
                f"{where}: queries without qrels train smec's listwise distillation (method='smec', "
                f"sp_loss='auto' or 'kl', code=None); got method={self.method!r}, "
                f"sp_loss={self._config().sp_loss!r}, code={self.code!r} (pass qrels, or no queries)")

    def transform(self, X: np.ndarray, dim: int) -> np.ndarray:
        """Project rows of X (n, D) to ``dim`` dims: float32 (n, dim), L2-normalised.

        ``dim = D`` gives the adapted full vector (the raw normalised vector unless trained supervised).
        """
        self._check_fitted("transform")
        proj = self.projection(dim)
        X = _check_matrix(X, "X", "transform", self.input_dim_)
        return proj(normalise_rows(X))

    def projection(self, dim: int) -> Projection:
        """The affine map (M, c) of a trained dim; ``transform`` is ``normalise(normalise(X) @ M + c)``."""
        self._check_fitted("projection")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if int(dim) not in self.projections_:
            raise ValueError(f"dim {dim} is not trained; trained dims: {self.dims_} (and {self.input_dim_} = full)")
        return self.projections_[int(dim)]

    def selected_dims(self, dim: int) -> np.ndarray:
        """ADS's choice for a stage: the indices (sorted, distinct) of the stage input's adapted
        coordinates kept at ``dim``. Methods without ADS keep a prefix: ``arange(dim)``."""
        self.projection(dim)
        if int(dim) in self.selections_:
            return self.selections_[int(dim)].copy()
        return np.arange(int(dim), dtype=np.int64)

    def extend(
        self,
        dim: int,
        corpus: np.ndarray | None = None,
        queries: np.ndarray | None = None,
        qrels: Iterable | None = None,
    ) -> "SMEC":
        """Continued training: add a new dim trained from the nearest larger trained stage.

        Existing projections are not touched (bit-identical). Uses the data given, else the data
        of the last ``fit`` in this process (after ``load`` the corpus must be given).
        """
        self._check_fitted("extend")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"extend: dim must be an int, got {type(dim).__name__}")
        dim = int(dim)
        if not 0 < dim < self.input_dim_:
            raise ValueError(f"extend: dim must be in 1..{self.input_dim_ - 1}, got {dim}")
        if dim in self.projections_:
            raise ValueError(f"extend: dim {dim} is already trained; trained dims: {self.dims_}")
        if self.code is not None:
            self._check_code(self.code, self.method, (dim,))
        if self.method == "mrl" or (self.method == "smec" and not self.sequential):
            raise ValueError("extend: a jointly trained model (mrl, or smec with sequential=False) cannot add a dim "
                             "without retraining every dim; fit a new model, or use method='smec'")
        if corpus is None:
            if self._data is None:
                raise ValueError("extend: no training data in memory (the model was loaded); pass corpus=")
            X, Q, pairs = self._data
            if queries is not None or qrels is not None:
                raise ValueError("extend: pass queries and qrels together with corpus")
        else:
            X, Q, pairs = self._training_input(corpus, queries, qrels, "extend", self.input_dim_)
        projections = dict(self.projections_)
        selections = dict(self.selections_)
        reports: list[StageReport] = []
        if self.method == "pca":
            projections.update(pca_projections(X, (dim,)))
        elif self.method == "truncate":
            projections.update(truncate_projections(self.input_dim_, (dim,)))
        else:
            with training_threads():
                _Trainer(self, X, Q, pairs).extend(dim, projections, selections, reports)
        if self.rotate:
            rotate_outputs(projections, (dim,), self.seed)
        self.projections_ = projections
        self.selections_ = selections
        self.reports_ = self.reports_ + [r.to_dict() for r in reports]
        self.dims = self.dims_
        self._data = (X, Q, pairs)
        return self

    def subset(self, dims: int | Iterable[int]) -> "SMEC":
        """A copy holding only the stages ``dims`` (and the full-dim map): what serving those dims needs. A saved
        ``CompressedIndex`` keeps only its own stages this way, so that stages it never uses cost no disk. The
        kept maps are the same arrays (identical transforms); ``reports_`` keeps the whole fit's history.
        ``dims`` may name the input dim: ``subset(input_dim_)`` keeps the full-dim map alone (no reduced dim)."""
        self._check_fitted("subset")
        if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
            dims = (int(dims),)
        try:
            wanted = sorted(set(dims), reverse=True)
        except TypeError:
            raise TypeError(f"subset: dims must be an int or a sequence of ints, got {dims!r}") from None
        keep = self._check_dims(wanted)
        missing = [d for d in keep if d not in self.dims_ and d != self.input_dim_]
        if missing:
            raise ValueError(f"subset: dims {missing} are not trained; trained dims: {self.dims_} (and "
                             f"{self.input_dim_} = full)")
        keep = tuple(d for d in keep if d != self.input_dim_)
        out = copy.copy(self)
        out.dims = keep or self.dims  # only the full-dim map: the settings keep the dims it was fitted for
        out.train_options = dict(self.train_options)
        out.projections_ = {d: p for d, p in self.projections_.items() if d == self.input_dim_ or d in keep}
        out.selections_ = {d: idx for d, idx in self.selections_.items() if d in out.projections_}
        return out

    def _tensors(self) -> dict[str, np.ndarray]:
        """The arrays a save writes: every map (the full-dim one only when it is not the identity) and the ADS
        selections."""
        tensors = {}
        for d, p in self.projections_.items():
            if d == self.input_dim_ and _is_identity(p):
                continue  # the raw full vector (no labels, or labels that did not help): D x D floats saved for nothing
            tensors[f"proj.{d}.M"] = p.M
            tensors[f"proj.{d}.c"] = p.c
        for d, idx in self.selections_.items():
            tensors[f"ads.{d}"] = idx
        return tensors

    @property
    def nbytes(self) -> int:
        """Bytes of the maps a save writes and a load holds (``subset(dims).nbytes``: what serving ``dims``
        needs). A fixed size, whatever the corpus: an index counts it spread over its vectors."""
        self._check_fitted("nbytes")
        return int(sum(a.nbytes for a in self._tensors().values()))

    # ----------------------------------------------------------------- persistence
    def get_config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": _KIND,
            "method": self.method,
            "dims": list(self.dims),
            "sequential": self.sequential,
            "ads": self.ads,
            "xbm": self.xbm,
            "init": self.init,
            "rotate": self.rotate,
            "code": self.code,
            "seed": self.seed,
            "train_options": self.train_options,
        }

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` (format version, settings, trained state), ``weights.safetensors`` and
        ``manifest.json`` (the size and sha256 of both) into directory ``path``, atomically (a crash leaves the
        previous save intact). ``path`` may be new, empty or an earlier SMEC save holding only the files its
        manifest lists; any other existing directory is refused (ValueError naming what is in the way).
        A disk that fills is raised as ``smec_index.errors.StorageFullError`` (an OSError)."""
        from safetensors.numpy import save_file

        self._check_fitted("save")
        cfg = self.get_config()
        cfg["fitted"] = {
            "input_dim": self.input_dim_,
            "dims": list(self.dims_),
            "supervised": self.supervised_,
            "selected": sorted(self.selections_),
            "train_s": self.train_s_,
            "train_threads": self.train_threads_,
            "fit_rows": self.fit_rows_,
            "reports": self.reports_,
        }
        tensors = self._tensors()
        with atomic_directory(path, saved_smec_files, "a saved SMEC model") as tmp:
            (tmp / _CONFIG).write_text(json.dumps(cfg, indent=2))
            save_file(tensors, str(tmp / _WEIGHTS))
            write_manifest(tmp, _KIND, FORMAT_VERSION, {})

    @classmethod
    def load(cls, path: str | Path) -> "SMEC":
        """Read a directory written by ``save``, after checking its manifest (no other file, no symbolic link,
        the size and sha256 of both files) and format version; then every setting and weight is checked
        (shapes, finite values, ADS indices in range). One ``ValueError`` starting ``SMEC.load:`` otherwise."""
        from safetensors.numpy import load_file

        where = "SMEC.load"
        path = Path(path)
        if path.is_dir() and not (path / "manifest.json").exists() and (path / _CONFIG).is_file():
            read_versioned_json(path / _CONFIG, _KIND, FORMAT_VERSION, where, "an SMEC config")  # names an old version
        read_manifest(path, _KIND, FORMAT_VERSION, where, "a saved SMEC model")
        if set(p.name for p in path.iterdir()) != {"manifest.json", _CONFIG, _WEIGHTS}:
            raise ValueError(f"{where}: {str(path)!r} is not a saved SMEC (needs exactly manifest.json, {_CONFIG} "
                             f"and {_WEIGHTS})")
        cfg = read_versioned_json(path / _CONFIG, _KIND, FORMAT_VERSION, where, "an SMEC config")
        try:
            tensors = load_file(str(path / _WEIGHTS))
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"{where}: {path / _WEIGHTS} is unreadable ({e})") from None
        try:
            return cls._from_saved(cfg, tensors, path)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{where}: {path} is not a valid SMEC save ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_saved(cls, cfg: dict, tensors: dict[str, np.ndarray], path: Path) -> "SMEC":
        flags = {k: cfg[k] for k in ("sequential", "ads", "xbm")} if cfg["method"] == "smec" else {}
        rotate = cfg.get("rotate", False)  # saves from before the option were not rotated
        obj = cls(cfg["dims"], cfg["method"], init=cfg["init"], rotate=rotate, code=cfg.get("code"), seed=cfg["seed"],
                  **flags, **cfg["train_options"])
        fitted = cfg["fitted"]
        D = fitted["input_dim"]
        dims = cls._check_dims(fitted["dims"]) if fitted["dims"] != [] else ()  # []: the full-dim map alone (subset)
        if not isinstance(D, int) or isinstance(D, bool) or D <= (dims[0] if dims else 0):
            raise ValueError(f"input_dim={D!r}; expected an int above the largest dim {dims[0] if dims else 0}")
        if not isinstance(fitted["supervised"], bool):
            raise ValueError(f"supervised={fitted['supervised']!r}; expected true or false")
        raw_full = f"proj.{D}.M" not in tensors and f"proj.{D}.c" not in tensors  # saved as the identity
        saved = (*dims,) if raw_full else (D, *dims)
        expected = {f"proj.{d}.{x}" for d in saved for x in "Mc"}
        obj.input_dim_ = D
        obj.supervised_ = fitted["supervised"]
        obj.projections_ = {D: Projection.identity(D)} if raw_full else {}
        for d in saved:
            M, c = tensors.get(f"proj.{d}.M"), tensors.get(f"proj.{d}.c")
            if M is None or c is None or M.shape != (D, d) or c.shape != (d,):
                raise ValueError(f"projection for dim {d} missing or of the wrong shape")
            if M.dtype.kind != "f" or c.dtype.kind != "f" or not (np.isfinite(M).all() and np.isfinite(c).all()):
                raise ValueError(f"the projection for dim {d} holds {M.dtype} values that are not all finite floats")
            obj.projections_[int(d)] = Projection(M.astype(np.float32), c.astype(np.float32))
        selected = fitted["selected"]
        if not (isinstance(selected, list) and all(isinstance(d, int) and d in (D, *dims) for d in selected)):
            raise ValueError(f"selected={selected!r}; expected dims among {[D, *dims]}")
        obj.selections_ = {}
        for d in selected:
            idx = tensors.get(f"ads.{d}")
            if idx is None or idx.dtype.kind not in "iu" or idx.ndim != 1 or (idx.size and not (
                    idx.min() >= 0 and idx.max() < D)):
                raise ValueError(f"the ADS selection of dim {d} is missing or not indices in 0..{D - 1}")
            obj.selections_[int(d)] = idx.astype(np.int64)
            expected.add(f"ads.{d}")
        if set(tensors) != expected:
            raise ValueError(f"{_WEIGHTS} holds {sorted(set(tensors) - expected)} beyond the config's tensors")
        obj.reports_ = fitted["reports"]
        obj.train_s_ = fitted["train_s"]
        for key in ("fit_rows", "train_threads"):  # older saves recorded neither (2026-12-05), or not the threads
            value = fitted.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{key}={value!r}; expected a positive int or null")
            setattr(obj, f"{key}_", value)
        return obj

    def to_sentence_transformers(self, model: Any, dim: int, portable: bool = True) -> Any:
        """A ``SentenceTransformer`` whose ``encode`` returns ``transform(model.encode(x), dim)``: ``model``'s
        modules followed by this compressor's map to ``dim``: sentence-transformers' own Normalize, Dense and
        Normalize modules (default; ``SentenceTransformer(path)`` reloads a saved one anywhere), or with
        ``portable=False`` one ``smec_index.text.SMECStage`` that records the compressor. Needs
        ``pip install 'smec-index[embed]'``; see ``smec_index.text.st_module``."""
        from ..text.st_module import to_sentence_transformers

        return to_sentence_transformers(self, model, dim, portable)

    def __repr__(self) -> str:
        state = f"fitted, dims={self.dims_}" if self.is_fitted else "not fitted"
        return f"SMEC(method={self.method!r}, dims={self.dims}, {state})"


# ``SMEC(code=...)`` keeps PCA of the full vector unless a candidate beats it by this many standard errors on
# held-out rows: on the development sets' training queries, 2 kept every gain of "best" and lost least (method.md)
CODE_SE = 2.0
# the most query x corpus scores (bytes) the hard-negative mining holds at once: debian's 6,000 training queries
# x 63,904 rows (1.5 GB) fit in one block (``_Trainer._nearest``)
MINE_BYTES = 2 << 30
CANDIDATE_RUNGS = (10, 20, 50)  # candidate counts a coded stage is scored at below ``code_candidates``


def candidate_ladder(candidates: int, name: str = "candidates") -> tuple[int, ...]:
    """The candidate counts a ``code=`` fit scores each stage candidate at: 10, 20, 50 below ``candidates``, then
    ``candidates``. One count saturates: at 100 candidates 2- and 4-bit codes of every map find nearly all of the
    held-out rows' neighbours, so the fewer-candidate rungs decide (and the index's candidates are the user's)."""
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1:
        raise ValueError(f"{name} must be a positive int, got {candidates!r}")
    return tuple(c for c in CANDIDATE_RUNGS if c < candidates) + (int(candidates),)


def ladder_recall(found: np.ndarray, exact: np.ndarray, ladder: tuple[int, ...]) -> np.ndarray:
    """Per query: the share of its ``exact`` top-10 among the first c of ``found``, averaged over ``ladder``."""
    hit = found[:, :, None] == exact[:, None, :]
    return np.mean([hit[:, :c].any(axis=1).mean(axis=1) for c in ladder], axis=0)


def difference_se(a: np.ndarray, b: np.ndarray) -> float:
    """The standard error of the mean of the per-item difference ``a - b`` (0 with one item)."""
    diff = a - b
    return float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0


def _is_identity(p: Projection) -> bool:
    D = p.M.shape[0]
    return p.M.shape == (D, D) and not p.c.any() and np.array_equal(p.M, np.eye(D, dtype=p.M.dtype))


# the share of a fit's unlabelled queries held out to score its stages (at most ``max_val`` of them)
UNLABELLED_VAL_FRACTION = 0.2
# fewer held-out unlabelled queries than this: none are held out, all of them are anchors and held-out corpus rows
# score the stages. SciFact MiniLM's training-query harness (docs/method.md): 20 held out of 100 lost up to 1 point
# in both seeds tried (early stopping and choices on 20 queries' recall), 40 of 200 gained 0.2 / 2.0 / 3.0
UNLABELLED_MIN_VAL = 40

# a fit with no queries at all scores its stages on this share of its rows' worth of mixed rows (at most
# ``MIXED_VAL`` and ``max_val``; fewer than ``UNLABELLED_MIN_VAL``: held-out rows score), ``_mixed_rows``
MIXED_FRACTION = 0.2
MIXED_VAL = 400
# a mixed row is a row and one of its this many nearest rows, weighted lam and 1 - lam, lam uniform in MIXED_LAMBDA
MIXED_NEIGHBOURS = 10
MIXED_LAMBDA = (0.3, 0.7)
# mixed rows' recall keeps rising slowly where held-out rows' stalls (a stage trains about twice as long): the
# patience of such fits unless the user set one (SciFact and debian training queries: as with 8, in 2/3 the time)
MIXED_PATIENCE = 5

RECURRENCE_MIN = 0.05  # between the development sets' 0.0 (debian) and 0.665 (SciFact); see docs/method.md


def label_recurrence(positives: dict[int, list[tuple[int, float]]]) -> float:
    """Share of labelled queries with a judged (positive) document that another query also has: how much of
    what labels teach is about documents that new queries will hit again."""
    seen: dict[int, int] = {}
    for docs in positives.values():
        for d in {d for d, _ in docs}:
            seen[d] = seen.get(d, 0) + 1
    if not positives:
        return 0.0
    return sum(any(seen[d] > 1 for d, _ in docs) for docs in positives.values()) / len(positives)


def _split_unlabelled(n: int, cfg: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, held-out) positions of a fit's ``n`` unlabelled queries: ``UNLABELLED_VAL_FRACTION`` of them
    (at most ``cfg.max_val``) held out when that leaves ``UNLABELLED_MIN_VAL``, else none; at most
    ``cfg.max_train_rows`` anchors (a seeded sample: the anchors' neighbour lists cost queries x rows)."""
    order = rng.permutation(n)
    n_val = min(int(round(n * UNLABELLED_VAL_FRACTION)), cfg.max_val)
    if n_val < UNLABELLED_MIN_VAL:
        n_val = 0
    return np.sort(order[n_val : n_val + cfg.max_train_rows]), np.sort(order[:n_val])


def _mixed_rows(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pseudo-queries made from the corpus ``X`` (L2-normalised rows): each a distinct random row mixed with
    one of its ``MIXED_NEIGHBOURS`` nearest other rows at a weight drawn from ``MIXED_LAMBDA``, L2-normalised. A
    point between two neighbouring documents stands for a query about both better than a document does: as the
    held-out items of a fit without queries they raised training queries' nDCG@10 on every development set
    (docs/method.md, "Mixed rows score a fit without queries")."""
    a = np.sort(rng.choice(len(X), n, replace=False))
    k = min(MIXED_NEIGHBOURS, len(X) - 1)
    sims = X[a] @ X.T
    sims[np.arange(n), a] = -np.inf
    near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    partner = near[np.arange(n), rng.integers(0, k, n)]
    lam = rng.uniform(*MIXED_LAMBDA, (n, 1)).astype(np.float32)
    return normalise_rows(lam * X[a] + (1 - lam) * X[partner])


def _split_queries(positives: dict[int, list[tuple[int, float]]], fraction: float,
                   rng: np.random.Generator, max_val: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) query rows: a random ``fraction`` of the labelled queries held out. Held-out queries
    then hit the training queries' positives as often as new queries from the same distribution hit the fit's,
    so what labels teach about the training documents themselves is scored as test queries will see it
    (SciFact: 196 of 300 test queries hit a training positive; held out by groups sharing no judged document,
    the fit dropped labels that were worth 13 points, docs/method.md), at most ``max_val`` of them (every
    held-out score ranks each held-out query against the sample and the held-out queries' own judged and mined
    documents). Fewer than 20 labelled queries: no hold-out (both are every query)."""
    labelled = np.array(sorted(positives), dtype=np.int64)
    n_val = int(round(len(labelled) * fraction))
    n_val = n_val if max_val is None else min(n_val, max_val)
    if len(labelled) < 20 or not 0 < n_val < len(labelled):
        return labelled, labelled
    order = rng.permutation(labelled)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class _Trainer:
    """Builds the frozen tensors for each training run and composes the trained stages into projections."""

    def __init__(self, smec: SMEC, X: np.ndarray, Q: np.ndarray | None, pairs: list | None) -> None:
        self.smec, self.X, self.Q, self.pairs = smec, X, Q, pairs
        base = smec._config()
        kl = replace(base, sp_loss="kl", **{k: v for k, v in KL_DEFAULTS.items() if k not in smec.train_options})
        smec_auto = smec.method == "smec" and base.sp_loss == "auto"
        self.cfg = kl if base.sp_loss == "kl" or (smec_auto and pairs is None) else replace(base, sp_loss="l1")
        # with labels, smec's stage trained without them (the "unsupervised" candidate) learns as an unsupervised
        # fit of smec does, so that labels which do not help fall back to what the fit without them gives
        self.unsup_cfg = kl if smec_auto else self.cfg
        # "auto": every adapter starts at its input's principal axes (see docs/method.md for the runs)
        self._init = smec.init if smec.init != "auto" else "pca"
        self.ads = bool(smec.ads)
        self.device = smec._device()
        self.rng = np.random.default_rng(smec.seed)
        # the rows the similarity-preservation loss and the unsupervised held-out score use: every row, or with
        # labels on a corpus above max_train_rows the same seeded sample an unsupervised fit trains on (the rank
        # loss still draws positives and negatives from the whole corpus); the neighbour ranking costs rows^2 x D
        # per teacher, which was 2/3 of a 100k-row supervised fit
        sample = smec.training_rows(X.shape[0]) if pairs is not None else None
        pool = np.arange(X.shape[0]) if sample is None else sample
        n = len(pool)
        n_val = min(max(1, int(round(n * self.cfg.val_fraction))), self.cfg.max_val) if n >= 20 else 0
        perm = self.rng.permutation(n)
        self.val_rows = pool[np.sort(perm[:n_val]) if n_val else np.sort(perm[: max(1, n // 5)])]
        self.train_rows = pool[np.sort(perm[n_val:])] if n_val else pool
        self.X_t = torch.as_tensor(X, device=self.device)
        self._adapted: torch.Tensor | None = None
        self._pcas: dict = {}
        self._raws: tuple | None = None
        # PCA maps are fitted on the sample too; None: on every row
        self.sample = sample
        # the rows held-out scores rank (None: all): with a sample, it and the held-out queries' judged and mined
        # documents, so the top of each held-out ranking is the one the whole corpus gives
        self.eval_rows: np.ndarray | None = None
        self._eval_X: np.ndarray | None = None
        self._ident = Projection.identity(X.shape[1])
        self._wide: dict[tuple[int, int], tuple[Projection, Projection]] = {}  # ``_narrowed``
        # what depends only on a teacher (its neighbour lists, validation truth), per teacher tensor held above
        self._teacher_caches: dict[int, dict] = {}
        if smec.code is not None:
            for d in smec.dims:
                need = self._code_engine(d).min_train_rows
                if need > len(self.train_rows):
                    raise ValueError(f"SMEC.fit: code={smec.code!r} at dim {d} trains on at least {need} rows; "
                                     f"the corpus leaves {len(self.train_rows)} after holding out validation rows")
        self.sup = None
        # unlabelled queries: (training positions, held-out positions) in Q, drawn from their own seeded generator
        # so that a fit's other draws are those of the same fit without them
        self.unlabelled = None
        if pairs is None and Q is not None:
            self.unlabelled = _split_unlabelled(len(Q), self.cfg, np.random.default_rng([smec.seed, 1]))
        # listwise fits (no code) without labels: mixed rows, which only score (no anchors), score the fit without
        # queries and, in a fit with unlabelled queries, the stages trained without them (``corpus-only``)
        self.mixed = False  # the fit's held-out items are mixed rows
        self.mixed_Q: np.ndarray | None = None
        self.mixed_split: tuple[np.ndarray, np.ndarray] | None = None  # (no anchors, every mixed row held out)
        self.corpus_cfg = self.cfg
        if pairs is None and smec.method == "smec" and self.cfg.sp_loss == "kl" and smec.code is None:
            n_mixed = min(int(round(X.shape[0] * MIXED_FRACTION)), MIXED_VAL, self.cfg.max_val)
            if n_mixed >= UNLABELLED_MIN_VAL:
                self.mixed_Q = _mixed_rows(X, n_mixed, np.random.default_rng([smec.seed, 2]))
                self.mixed_split = (np.empty(0, dtype=np.int64), np.arange(n_mixed))
                if "patience" not in smec.train_options:
                    self.corpus_cfg = replace(self.cfg, patience=MIXED_PATIENCE)
                if Q is None:
                    self.Q, self.cfg, self.mixed = self.mixed_Q, self.corpus_cfg, True
                    self.unlabelled = self.mixed_split
        if pairs is not None:
            positives: dict[int, list[tuple[int, float]]] = {}
            for q, d, r in pairs:
                if r > 0:
                    positives.setdefault(q, []).append((d, r))
            train_q, val_q = _split_queries(positives, self.cfg.val_fraction, self.rng, self.cfg.max_val)
            pos_list = [positives.get(i, []) for i in range(Q.shape[0])]
            # hard negatives: each query's nearest documents at full dim
            mined = min(self.cfg.mined + max(len(p) for p in pos_list), X.shape[0])
            neg_pool = self._nearest(Q, mined)
            self.sup = dict(positives=pos_list, neg_pool=neg_pool, train_q=train_q, val_q=val_q,
                            Q_t=torch.as_tensor(Q, device=self.device), recurrence=label_recurrence(positives))
            if sample is not None:
                judged = [r for q in val_q for r, _ in pos_list[q]]
                self.eval_rows = np.unique(np.concatenate([sample, np.asarray(judged, dtype=np.int64),
                                                           neg_pool[val_q].ravel()]))

    @property
    def scores_queries(self) -> bool:
        """Whether held-out unlabelled queries score this fit (some are held out), not held-out corpus rows."""
        return self.unlabelled is not None and len(self.unlabelled[1]) > 0

    def _nearest(self, Q: np.ndarray, k: int) -> np.ndarray:
        """Each query's ``k`` nearest corpus rows at full dim (the hard-negative pool), best first, ranked for a
        block of queries at a time so that their scores stay within ``MINE_BYTES`` (6,000 training queries
        against a million rows would be 24 GB at once)."""
        Q_t = torch.as_tensor(Q, device=self.device)
        step = max(1, MINE_BYTES // (4 * self.X_t.shape[0]))
        return torch.cat([torch.topk(Q_t[s : s + step] @ self.X_t.T, k, dim=1).indices
                          for s in range(0, len(Q_t), step)]).cpu().numpy()

    def _data(self, proj_in: Projection, teacher: torch.Tensor, supervised: bool = True,
              anchors: bool = True) -> TrainData:
        """The stage's training data; ``supervised=False`` leaves the labels out even when the fit has them,
        ``anchors=False`` the unlabelled queries out of the loss (they still score it when some are held out)."""
        inputs = torch.as_tensor(self._raw(proj_in), device=self.device)
        data = TrainData(teacher=teacher, inputs=inputs, train_rows=self.train_rows, val_rows=self.val_rows,
                         eval_rows=self.eval_rows)
        # every stage of a fit shares one of two teachers (the raw or the adapted full vectors): rank their
        # neighbours once per fit, not once per stage
        data.share_teacher_cache(self._teacher_caches.setdefault(id(teacher), {}))
        if self.unlabelled is not None:
            # trained without the queries: scored as a fit without queries is, on its mixed rows
            quiet = not anchors and self.mixed_Q is not None
            held, (u_train, u_val) = (self.mixed_Q, self.mixed_split) if quiet else (self.Q, self.unlabelled)
            data.u_inputs = torch.as_tensor(proj_in.raw(held), device=self.device)
            data.u_teacher = torch.as_tensor(held, device=self.device)
            data.u_train = u_train if anchors else np.empty(0, dtype=np.int64)
            data.u_val, data.u_name = u_val, "mixed" if quiet else "queries"
        if self.sup is not None and supervised:
            data.q_inputs = torch.as_tensor(proj_in.raw(self.Q), device=self.device)
            data.positives = self.sup["positives"]
            data.neg_pool = self.sup["neg_pool"]
            data.train_q = self.sup["train_q"]
            data.val_q = self.sup["val_q"]
        return data

    def _model(self, n_in: int, out_dims: tuple[int, ...], ads: bool, proj_in: Projection,
               cfg: TrainConfig | None = None) -> StageModel:
        """A stage model started at ``proj_in``'s principal axes (``init="pca"``) for training with ``cfg``
        (None: the fit's own)."""
        init_logits = None
        if ads:
            # a mild preference for the input's leading coordinates: before any evidence ADS keeps the
            # prefix (the previous stage's most important outputs come first), and Gumbel noise explores
            init_logits = torch.linspace(1.0, -1.0, n_in)
        model = StageModel(n_in, out_dims, ads, init_logits).to(self.device)
        if self._init == "pca":
            mu, R = self._pca_of(proj_in)
            # listwise distillation starts exactly at the stage's "pca-input" candidate, x R, un-centred (as
            # ``pca_projections``, which says why); eq. 7 (the baselines, stages with labels) at the centred
            # (x - mu) R it was measured with: from x R it never improved on it (unsupervised mrl = PCA)
            bias = np.zeros(n_in) if (cfg or self.cfg).sp_loss == "kl" else -(mu @ R)
            with torch.no_grad():
                model.adapter.linear.weight.copy_(torch.as_tensor(R.T - np.eye(n_in), dtype=torch.float32))
                model.adapter.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return model

    def _train(self, model: StageModel, data: TrainData, desc: str, reports: list[StageReport], offset: int,
               cfg: TrainConfig | None = None):
        """Train ``model`` with ``cfg`` (None: the fit's own) and append its report."""
        reports.append(train_stage(model, data, cfg or self.cfg, self.smec.seed + offset, self.smec.progress, desc))

    def _compose(self, model: StageModel, proj_in: Projection, out: dict[int, Projection], sel: dict[int, np.ndarray]):
        A, b = model.adapter.affine()
        for d in model.out_dims:
            idx = model.selection(d)
            out[d] = proj_in.then(A, b, idx)
            if model.ads and d < model.n_in:
                sel[d] = idx

    def _from_raw(self, out_dims: tuple[int, ...], ads: bool, desc: str, projections, selections, reports,
                  offset: int) -> None:
        """Train one stage on the raw full vectors (teacher and input) with these outputs, then freeze it."""
        D = self.X.shape[1]
        ident = self._ident
        data = self._data(ident, self.X_t)
        model = self._model(D, out_dims, ads, ident)
        self._train(model, data, desc, reports, offset)
        self._compose(model, ident, projections, selections)

    def run(self, dims, projections, selections, reports) -> None:
        D = self.X.shape[1]
        full = (D,) if self.sup is not None else ()
        method = self.smec.method
        if method == "search-adaptor":
            for i, d in enumerate(full + tuple(dims)):
                self._from_raw((d,), False, f"search-adaptor {d}", projections, selections, reports, i)
            return
        if not self.smec.sequential:
            self._from_raw(full + tuple(dims), self.ads, f"{method} joint", projections, selections, reports, 0)
            return
        # with labels the chain starts at the adapted full vector: D -> D is trained alone and frozen, then
        # each smaller dim from the one before (training D and d1 as two outputs of one first stage carried the
        # lower-dim loss SMRL removes); every stage also competes with one trained straight from the raw vector
        if full:
            self._from_raw(full, False, f"smec {D}->{D}", projections, selections, reports, 0)
            # labels that do not improve the full vector on held-out queries leave it raw (and the rerank with it)
            self._choose(reports[-1], D, {"trained": (projections[D], None),
                                          "raw": (Projection.identity(D), None)}, projections, selections)
        prev = D
        for i, d in enumerate(dims):
            self._stage(prev, d, projections, selections, reports, len(full) + i, last=i == len(dims) - 1)
            prev = d

    def _stage(self, src: int, d: int, projections, selections, reports, offset: int, last: bool = False) -> None:
        """One SMRL stage: train src -> d on the frozen projection to ``src``, then keep the best candidate on
        held-out data (``_choose``). Its teacher is the raw full vector, or with labels the adapted one (the
        frozen D -> D stage). A stage is also trained straight from the raw full vector (``from-full``), in
        case the chain lost what it needs: the ``last`` (smallest) stage always, every stage with labels (the
        adapted vector is then the chain's root, and stages rooted there lost on debian's held-out queries
        where they won on SciFact's; see docs/method.md). With labels that candidate trains as search-adaptor
        does, without S-XBM."""
        D = self.X.shape[1]
        teacher = self._stage_teacher(projections)
        candidates: dict = {}
        main = self._trained(projections[src], src, d, teacher, True, f"smec {src}->{d}", offset, reports)
        candidates["trained"] = main
        report = reports[-1]
        extra: list[StageReport] = []
        if self.sup is not None or (last and src != D):
            # with labels this is the search-adaptor recipe (in-batch similarity pairs, no S-XBM): on debian's
            # held-out training queries it beat the same stage trained with S-XBM (docs/method.md)
            cfg = replace(self.cfg, xbm=False) if self.sup is not None else None
            candidates["from-full"] = self._trained(self._ident, D, d, self.X_t, True, f"smec {D}->{d} (raw)",
                                                    offset, extra, cfg)
        if self.sup is not None:
            # the same stage without the rank loss, trained as an unsupervised fit trains it: kept when the labels
            # do not help on held-out queries
            candidates["unsupervised"] = self._trained(projections[src], src, d, teacher, False,
                                                       f"smec {src}->{d} (no labels)", offset, extra, self.unsup_cfg)
        if self.unlabelled is not None and not self.mixed:
            # the stage's trained candidates again without the queries, as a fit without queries trains them (stopped
            # on mixed rows): queries too noisy to anchor on must not make the map worse than no queries
            candidates["corpus-only"] = self._trained(projections[src], src, d, teacher, True,
                                                      f"smec {src}->{d} (no queries)", offset, extra, self.corpus_cfg,
                                                      anchors=False)
            if "from-full" in candidates:
                candidates["from-full-corpus-only"] = self._trained(self._ident, D, d, self.X_t, True,
                                                                    f"smec {D}->{d} (raw, no queries)", offset, extra,
                                                                    self.corpus_cfg, anchors=False)
        report.train_s += sum(r.train_s for r in extra)
        candidates["pca-input"] = (self._pca_after(projections[src], d), None)
        if src != D or self.sup is not None:
            candidates["pca-full"] = (self._pca_after(self._ident, d), None)
        self._choose(report, d, candidates, projections, selections)

    def _trained(self, proj_in: Projection, src: int, d: int, teacher: torch.Tensor, supervised: bool, desc: str,
                 offset: int, reports: list[StageReport], cfg: TrainConfig | None = None, anchors: bool = True
                 ) -> tuple[Projection, np.ndarray | None]:
        """A src -> d stage trained on ``proj_in``'s output (with the rank loss when ``supervised`` and the fit
        has labels; with the unlabelled queries as anchors unless ``anchors=False``) with ``cfg`` (None: the
        fit's own), as (projection from the raw input, ADS selection or None)."""
        width = max(self.cfg.max_adapter_dim, d)
        if src > width:
            proj_in, src = self._narrowed(proj_in, width), width
        data = self._data(proj_in, teacher, supervised, anchors)
        model = self._model(src, (d,), self.ads, proj_in, cfg)
        self._train(model, data, desc, reports, offset, cfg)
        return self._composed(model, proj_in, d)

    def _narrowed(self, proj_in: Projection, width: int) -> Projection:
        """A stage input wider than ``max_adapter_dim`` (and than the stage's dim): ``proj_in`` followed by the top
        ``width`` principal axes of its output, one map per input and width, so that the stages trained on it
        share its output and its PCA."""
        key = (id(proj_in), width)
        if key not in self._wide or self._wide[key][0] is not proj_in:
            self._wide[key] = (proj_in, self._pca_after(proj_in, width))
        return self._wide[key][1]

    def _composed(self, model: StageModel, proj_in: Projection, d: int) -> tuple[Projection, np.ndarray | None]:
        """A trained single-output stage as (projection from the raw input, ADS selection or None)."""
        out: dict[int, Projection] = {}
        sel: dict[int, np.ndarray] = {}
        self._compose(model, proj_in, out, sel)
        return out[d], sel.get(d)

    def _pca_after(self, proj_in: Projection, d: int) -> Projection:
        """``proj_in`` followed by the top ``d`` principal axes of its (un-normalised) output, not re-centred
        (as ``pca_projections``, which says why)."""
        _, R = self._pca_of(proj_in)
        return proj_in.then(R, np.zeros(R.shape[1]), np.arange(d))

    def _raw(self, proj_in: Projection) -> np.ndarray:
        """``proj_in``'s un-normalised output of the corpus, kept for the last map asked (a stage's candidates
        and its PCA share their input)."""
        if _is_identity(proj_in):
            return self.X
        if self._raws is None or self._raws[0] is not proj_in:
            self._raws = (proj_in, proj_in.raw(self.X))
        return self._raws[1]

    def _pca_of(self, proj_in: Projection) -> tuple[np.ndarray, np.ndarray]:
        """(mean, principal axes) of ``proj_in``'s un-normalised output over the training corpus (its sample when
        the fit has one), computed once per map (a stage's PCA start and its PCA candidate share it; every
        stage's full-dim PCA is one)."""
        hit = self._pcas.get(id(proj_in))
        if hit is None or hit[0] is not proj_in:
            out = self._raw(proj_in)
            mu, R, _ = pca_rotation(out if self.sample is None else out[self.sample])
            hit = self._pcas[id(proj_in)] = (proj_in, mu, R)
        return hit[1], hit[2]

    @torch.no_grad()
    def _score(self, proj: Projection, d: int) -> np.ndarray:
        """A candidate map's score on each held-out item: nDCG of each held-out training query when the fit has
        labels, else each held-out unlabelled query's (or without them, corpus row's) recall@10 against its
        full-dim neighbours (``train.item_scores``)."""
        # unsupervised, the teacher is the raw full vector; supervised scores need no teacher
        data = TrainData(teacher=self.X_t, inputs=self.X_t, train_rows=self.train_rows, val_rows=self.val_rows,
                         eval_rows=self.eval_rows)
        data.share_teacher_cache(self._teacher_caches.setdefault(id(self.X_t), {}))
        if self._eval_X is None:  # the rows every candidate is scored on, gathered once per fit
            self._eval_X = self.X if self.eval_rows is None else self.X[self.eval_rows]
        if self.smec.code is not None:
            return self._coded_score(proj, d, data)
        corpus = {d: torch.as_tensor(proj(self._eval_X), device=self.device)}
        q_out = None
        if self.scores_queries:
            data.u_teacher = torch.as_tensor(self.Q, device=self.device)
            data.u_train, data.u_val = self.unlabelled
            q_out = {d: torch.as_tensor(proj(self.Q[data.u_val]), device=self.device)}
        if self.sup is not None:
            data.positives, data.val_q = self.sup["positives"], self.sup["val_q"]
            q_out = {d: torch.as_tensor(proj(self.Q[self.sup["val_q"]]), device=self.device)}
        return item_scores(data, corpus, q_out)[0].double().cpu().numpy()

    def _code_engine(self, d: int):
        """An empty engine of the fit's ``code`` at dim ``d``, as ``CompressedIndex`` builds it."""
        from ..index.backends import make_backend
        from ..index.backends.codes import CODES, code_options

        return make_backend(CODES[self.smec.code].backend, d, "ip", code_options(self.smec.code, d))

    def _coded_score(self, proj: Projection, d: int, data: TrainData) -> np.ndarray:
        """Each held-out corpus row's recall@10 after an exact rerank of its nearest found by the fit's ``code``
        on the candidate's (finally rotated) stage vectors of the training rows, averaged over the candidate
        counts of ``candidate_ladder(code_candidates)``."""
        Z = proj(self._eval_X)
        if self.smec.rotate:
            Z = Z @ random_rotation(d, self.smec.seed).astype(np.float32)
        train_pos, val_pos = data.eval_positions(data.train_rows), data.eval_positions(data.val_rows)
        Zt = np.ascontiguousarray(Z[train_pos], dtype=np.float32)
        engine = self._code_engine(d)
        if not engine.is_trained:
            engine.train(Zt)
        engine.add(np.arange(len(Zt), dtype=np.int64), Zt)
        ladder = candidate_ladder(min(self.cfg.code_candidates, len(Zt)))
        _, found = engine.search(np.ascontiguousarray(Z[val_pos], dtype=np.float32), ladder[-1])
        exact = data.val_exact().cpu().numpy()
        return ladder_recall(found, exact, ladder)

    def _choose(self, report: StageReport, d: int, candidates: dict, projections: dict, selections: dict) -> None:
        """Keep one candidate map for dim ``d`` by its mean held-out score.

        Without labels: the best (the first listed on a tie). With labels whose judged documents recur (at least
        ``RECURRENCE_MIN`` of the labelled queries share one with another query): the first listed whose mean is
        within one standard error of the best's (the error of their per-query difference), so that where the
        held-out queries cannot tell two candidates apart the one listed first (the trained chain, then the other
        maps trained with labels) is kept (SciFact: 66.5% of training queries share a judged document with
        another, and 196 of its 300 test queries hit a training positive). Where judged documents do not recur
        (debian: none of 6,000), the best is kept. With unlabelled queries (not mixed rows) the same one-standard-
        error rule with the maps trained without the queries listed first (``corpus-only``, stopped on mixed rows
        as a fit without queries is): queries keep a map trained with them only where the held-out queries see it
        ahead (docs/method.md, "Mixed rows score a fit without queries").

        With a ``code``: PCA of the full vector ("pca-full", at the first stage "pca-input", the same map) unless
        the best is ahead of it by more than ``CODE_SE`` standard errors of their per-row difference. Held-out
        corpus rows favour the trained maps over what queries see (docs/method.md, measured on training queries)."""
        items = {name: self._score(proj, d) for name, (proj, _) in candidates.items()}
        scores = {name: float(v.mean()) for name, v in items.items()}
        names = list(scores)
        best = max(names, key=lambda name: (scores[name], -names.index(name)))
        tolerance = 0.0
        report.recurrence = None if self.sup is None else self.sup["recurrence"]
        if self.smec.code is not None:
            report.rule = "pca-2se"
        else:
            report.rule = "one-se" if self.sup is not None and self.sup["recurrence"] >= RECURRENCE_MIN else "best"
            if self.unlabelled is not None and not self.mixed:
                # unlabelled queries: the maps trained without them first, kept unless one trained with them (or
                # PCA) is ahead by a standard error on the held-out queries
                report.rule = "one-se"
                names = sorted(names, key=lambda name: "corpus-only" not in name)
        if report.rule == "pca-2se":
            pca = "pca-full" if "pca-full" in items else "pca-input"
            se = difference_se(items[best], items[pca])
            if best != pca and scores[best] - scores[pca] <= CODE_SE * se:
                best, tolerance = pca, CODE_SE * se
        elif report.rule == "one-se":
            for name in names:
                se = difference_se(items[best], items[name])
                if scores[best] - scores[name] <= se:
                    best, tolerance = name, se
                    break
        proj, sel = candidates[best]
        projections[d] = proj
        selections.pop(d, None)
        if sel is not None and d < proj.M.shape[0]:
            selections[d] = sel
        report.choice, report.candidates, report.tolerance = best, scores, tolerance
        report.held_out = ("labelled queries" if self.sup is not None else "mixed rows" if self.mixed
                           else "queries" if self.scores_queries else "rows")

    def _stage_teacher(self, projections) -> torch.Tensor:
        """The raw full vectors, or with labels the adapted ones (the frozen D -> D stage), projected once."""
        if self.sup is None:
            return self.X_t
        if self._adapted is None:
            self._adapted = torch.as_tensor(projections[self.X.shape[1]](self.X), device=self.device)
        return self._adapted

    def extend(self, dim: int, projections, selections, reports) -> None:
        if self.smec.method == "search-adaptor":
            self._from_raw((dim,), False, f"search-adaptor {dim}", projections, selections, reports, len(projections))
            return
        src = min(d for d in projections if d > dim)
        self._stage(src, dim, projections, selections, reports, len(projections), last=dim < min(projections))
