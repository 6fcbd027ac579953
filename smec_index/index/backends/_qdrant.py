"""What the two Qdrant engines (Edge in-process, server through qdrant-client) share.

An engine stores points under non-negative int ids with one or more named dense vectors, and answers a
*chain*: the first stage searches one named vector (HNSW or full scan), every later stage re-scores
exactly the points the stage before it passed on (Qdrant's nested ``Prefetch``), the last stage keeps k.
The layout is described once, engine-neutrally (``CollectionSpec``), and each engine maps it to its own
config types; the chain is built by ``nest_chain`` from the engine's two constructors. Engine errors are
translated here into specific Python errors.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from ..checks import check_ids as _check_ids
from ..checks import is_int
from .base import FLT_MAX

__all__ = [
    "DISTANCES", "QUANTIZATIONS", "DATATYPES", "VectorSpec", "CollectionSpec", "Stage", "StageParams",
    "QdrantEngine", "QdrantEngineError", "QdrantLayoutError", "translate_error", "nest_chain", "to_arrays",
    "stage_search_params", "check_ids", "check_payloads", "check_batch_size", "check_int", "check_oversampling",
    "check_same_layout", "allocated_bytes", "copy_tree_sparse",
]

DISTANCES = ("cosine", "dot", "euclid")
# binaryN: sign codes of N bits a dim; turboN: TurboQuant (Qdrant 1.18: a rotation, then N-bit Lloyd-Max codes a
# dim); pq-xN: product quantization to 1/N of the float32 bytes
BINARY_QUANTIZATIONS = ("binary", "binary1.5", "binary2")
TURBO_QUANTIZATIONS = ("turbo1", "turbo1.5", "turbo2", "turbo4", "turbo8")
PQ_QUANTIZATIONS = ("pq-x4", "pq-x8", "pq-x16", "pq-x32", "pq-x64")
QUANTIZATIONS = (None, "int8", *BINARY_QUANTIZATIONS, *TURBO_QUANTIZATIONS, *PQ_QUANTIZATIONS)
DATATYPES = ("float32", "float16")


class QdrantEngineError(RuntimeError):
    """Qdrant failed in a way that is not a bad argument (I/O, a broken shard, the server's own error)."""


class QdrantLayoutError(ValueError):
    """An existing shard or collection does not have the layout (vectors, sizes, distance, compressor) asked for."""


# --------------------------------------------------------------------- layout
@dataclass(frozen=True)
class VectorSpec:
    """One named dense vector: its size, whether it gets an HNSW graph (only searched vectors need one),
    the quantization of its codes (one of ``QUANTIZATIONS``: ``None``, ``"int8"``, ``"binary"`` /
    ``"binary1.5"`` / ``"binary2"``, ``"turbo1"`` ... ``"turbo8"``, ``"pq-x4"`` ... ``"pq-x64"``) and its storage
    datatype."""

    name: str
    size: int
    graph: bool
    quantization: str | None = None
    datatype: str = "float32"


@dataclass(frozen=True)
class CollectionSpec:
    """The vectors of a collection, their distance and the HNSW build knobs shared by searched vectors.

    ``full_scan_threshold_kb`` is Qdrant's switch between graph and full scan for a segment (in KB of
    vectors). Vectors that are only re-scored get no graph (``m=0``): with one, Qdrant routes the
    id-restricted re-score through it, which is slower than scoring the candidates directly.
    """

    vectors: tuple[VectorSpec, ...]
    distance: str = "cosine"
    m: int = 16
    ef_construct: int = 100
    full_scan_threshold_kb: int = 1000
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "CollectionSpec":
        return cls(**{**d, "vectors": tuple(VectorSpec(**v) for v in d["vectors"]), "metadata": dict(d["metadata"])})

    def differences(self, other: "CollectionSpec") -> list[str]:
        """Human-readable differences between two layouts (empty when they match)."""
        a, b = self.to_json(), other.to_json()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


@dataclass(frozen=True)
class StageParams:
    """Search knobs of the first stage: HNSW ef, exact (brute force, ignores quantization), and for a
    quantized vector whether Qdrant re-scores with the originals (only when no later stage re-scores)."""

    hnsw_ef: int | None = None
    exact: bool = False
    rescore: bool = False
    oversampling: float | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of a chain: the named vector it scores with, the query rows for it (an (nq, d) array, or
    its rows as lists, which an engine may read faster), how many it keeps."""

    name: str
    queries: np.ndarray | list[list[float]]
    limit: int


class QdrantEngine(Protocol):
    """What ``QdrantCompressedCollection`` and the ``qdrant-edge`` backend need from an engine."""

    name: str
    spec: CollectionSpec

    def upsert(self, ids: np.ndarray, vectors: Mapping[str, np.ndarray], payloads: Sequence[dict | None] | None,
               batch_size: int, optimize: bool = True) -> None: ...

    def optimize(self) -> None: ...

    def query(self, stages: Sequence[Stage], params: StageParams, filter: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def delete(self, ids: np.ndarray) -> None: ...

    def count(self) -> int: ...

    def native_filter(self, filter: Any, where: str) -> Any: ...

    def layout(self) -> dict[str, dict[str, Any]]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------- chain and results
def stage_search_params(spec: VectorSpec | None, params: StageParams | None, search_params: Callable[..., Any],
                        quantization_params: Callable[..., Any]) -> Any:
    """A stage's search parameters, built with the engine's two classes (both engines name them alike).

    The first stage (``params`` given) gets HNSW ef, exact, and for a quantized vector explicit quantization
    parameters (Qdrant's default re-score differs between int8 and binary). A re-scoring stage (``params``
    None) scores its candidates with the float vectors. ``spec`` is None for a name the layout lacks (the
    engine then refuses the query with its own message)."""
    quantized = spec is not None and spec.quantization is not None
    if params is None:
        return search_params(quantization=quantization_params(ignore=True)) if quantized else None
    quant = (quantization_params(ignore=False, rescore=params.rescore, oversampling=params.oversampling)
             if quantized else None)
    return search_params(hnsw_ef=params.hnsw_ef, exact=params.exact, quantization=quant)


def nest_chain(stages: Sequence[Stage], row: int, params: StageParams,
               prefetch: Callable[[Stage, Any, Any, StageParams | None], Any]) -> Any:
    """The nested prefetches for one query row, innermost = the first stage; returns the outermost prefetch
    (None for a one-stage chain). The last stage is the request itself, which the engine builds."""
    inner = None
    for i, stage in enumerate(stages[:-1]):
        inner = prefetch(stage, stage.queries[row], inner, params if i == 0 else None)
    return inner


def to_arrays(hits: Sequence[Sequence[tuple[int, float]]], k: int, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """FAISS-shaped ``(scores float32 (nq, k), ids int64 (nq, k))`` from per-query (id, score) lists, best
    first, padded with id -1 and the worst score. ``euclid`` scores (Qdrant's L2 distance) are squared, as
    FAISS reports L2."""
    nq = len(hits)
    worst = FLT_MAX if distance == "euclid" else -FLT_MAX
    D = np.full((nq, k), worst, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    for i, row in enumerate(hits):
        m = min(len(row), k)
        if m:
            I[i, :m] = [h[0] for h in row[:m]]
            D[i, :m] = [h[1] for h in row[:m]]
    if distance == "euclid":
        np.square(D, out=D, where=I >= 0)
    return D, I


# --------------------------------------------------------------------- argument checks
def check_int(value: Any, name: str, where: str, least: int = 1) -> int:
    """An int >= least (numpy ints accepted, bools refused)."""
    if not is_int(value) or value < least:
        raise ValueError(f"{where}: {name} must be an int >= {least}, got {value!r}")
    return int(value)


def check_oversampling(value: Any, where: str) -> float | None:
    """None, or a number >= 1 (how many times its limit a quantized search reads from the codes)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not value >= 1:
        raise ValueError(f"{where}: oversampling must be a number >= 1 or None, got {value!r}")
    return float(value)


def check_ids(ids: Any, where: str, n: int | None = None, unique: bool = True) -> np.ndarray:
    """A 1-D int64 array of non-negative point ids (``smec_index.index.checks``; of length n when given),
    without repeats if ``unique`` (Qdrant would keep the last of them silently)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{where}: ids must be a 1-D array of non-negative ints, got {type(ids).__name__}")
    arr = _check_ids(ids, where, n)
    if unique and arr.size:
        uniq, counts = np.unique(arr, return_counts=True)
        if uniq.shape[0] != arr.shape[0]:
            raise ValueError(f"{where}: ids repeat within the call: {uniq[counts > 1][:10].tolist()}")
    return arr


def check_payloads(payloads: Any, n: int, where: str) -> list[dict | None] | None:
    """None, or a sequence of n payloads, each None or a dict with str keys."""
    if payloads is None:
        return None
    if isinstance(payloads, (str, bytes, Mapping)) or not isinstance(payloads, Sequence):
        raise TypeError(f"{where}: payloads must be a list of dicts (one per vector) or None, "
                        f"got {type(payloads).__name__}")
    if len(payloads) != n:
        raise ValueError(f"{where}: payloads has {len(payloads)} entries; expected {n} (one per vector)")
    for i, p in enumerate(payloads):
        if p is not None and not (isinstance(p, Mapping) and all(isinstance(k, str) for k in p)):
            raise TypeError(f"{where}: payloads[{i}] must be a dict with str keys or None, got {p!r:.80}")
    return [None if p is None else dict(p) for p in payloads]


def check_batch_size(batch_size: Any, where: str) -> int:
    return check_int(batch_size, "batch_size", where)


def check_same_layout(where: str, what: str, saved: CollectionSpec, wanted: CollectionSpec) -> None:
    """Refuse to reopen ``what`` with another compressor or another layout, naming the differences."""
    a, b = saved.metadata.get("smec", {}), wanted.metadata.get("smec", {})
    if a.get("sha256") != b.get("sha256"):
        raise QdrantLayoutError(f"{where}: {what} was filled with another compressor (fingerprint "
                                f"{str(a.get('sha256'))[:12]}, this one {str(b.get('sha256'))[:12]}); its vectors "
                                f"would not match your queries. Pass the SMEC it was built with")
    diff = saved.differences(wanted)
    if diff:
        raise QdrantLayoutError(f"{where}: {what} has another layout: " + "; ".join(diff))


# --------------------------------------------------------------------- errors
_BAD_INPUT = re.compile(r"dimension error|Not existing vector name|Wrong input|Bad input|Bad request|"
                        r"Validation|not found: Vector", re.IGNORECASE)


def translate_error(e: BaseException, where: str, engine: str) -> Exception:
    """A specific error for what an engine raised (Qdrant Edge raises bare ``Exception`` for everything)."""
    msg = str(e).strip() or type(e).__name__
    if "already contains segment data" in msg or "already exists" in msg:
        return FileExistsError(f"{where}: {engine}: {msg}")
    if _BAD_INPUT.search(msg):
        return ValueError(f"{where}: {engine} refused the input: {msg}")
    return QdrantEngineError(f"{where}: {engine} failed: {msg}")


def allocated_bytes(path: str | Path) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks: Qdrant pre-allocates sparse files,
    so apparent sizes mean nothing)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:  # a temporary file the engine removed meanwhile
                pass
    return total


def _copy_sparse(src: str, dst: str) -> None:
    """Copy one file's data extents only (``SEEK_DATA``/``SEEK_HOLE``), keeping its holes: Qdrant
    pre-allocates 32 MiB files that are mostly holes, which a plain copy would fill with zeros."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fd, size, pos = fi.fileno(), os.fstat(fi.fileno()).st_size, 0
        try:
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # nothing but a hole up to the end
                        break
                    raise
                end = os.lseek(fd, start, os.SEEK_HOLE)
                fi.seek(start)
                fo.seek(start)
                left = end - start
                while left > 0:
                    chunk = fi.read(min(left, 1 << 20))
                    fo.write(chunk)
                    left -= len(chunk)
                pos = end
        except (AttributeError, OSError) as e:  # no SEEK_DATA here (filesystem or platform): copy it all
            if isinstance(e, OSError) and e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            fi.seek(0)
            fo.seek(0)
            shutil.copyfileobj(fi, fo, 1 << 20)
        fo.truncate(size)
    shutil.copystat(src, dst)


def copy_tree_sparse(src: str | Path, dst: str | Path) -> None:
    """``shutil.copytree`` that keeps sparse files sparse (see ``_copy_sparse``)."""
    shutil.copytree(src, dst, copy_function=_copy_sparse)
