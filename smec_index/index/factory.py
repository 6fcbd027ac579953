"""``index_factory``: a fitted SMEC expressed as FAISS's own objects, so the result is a genuine ``faiss.Index``.

Every SMEC map is ``normalise(normalise(x) @ M + c)`` (a chain of stages collapses to one affine map, see
``compressor/model.py``), which FAISS holds natively as three ``VectorTransform``s in an ``IndexPreTransform``:
``NormalizationTransform(D)``, an affine ``y = A x + b`` (A = M^T, b = c) and ``NormalizationTransform(d)``.
The full-dim rerank is ``IndexRefine`` / ``IndexRefineFlat`` over the full vectors; with a supervised
compressor the refine index sits behind the adapted full-vector map (``transform(x, D)``), as the
``CompressedIndex`` full store does. Saving, loading, wrapping, sharding and tuning are then FAISS's:
``faiss.write_index`` / ``read_index`` need neither smec_index nor torch.

Copies: ``faiss.serialize_index`` / ``deserialize_index`` and pickling work; ``faiss.clone_index`` (and so
``index_cpu_to_gpu``, which clones) does not in FAISS 1.15: its cloner has no case for
``NormalizationTransform``, the same refusal as for FAISS's own ``"L2norm,Flat"``.
"""

from __future__ import annotations

import re
from typing import Any

import faiss
import numpy as np

from ..compressor import SMEC
from ..compressor.model import Projection
from .backends.faiss import with_ids
from .checks import is_int
from .ids import EXPLICIT

__all__ = ["index_factory", "from_compressed", "parse_spec", "stage_chain", "pre_transform"]

_SMEC = re.compile(r"SMEC(\d+)")
_REFINE = re.compile(r"Refine\((.+)\)")
_IDMAP = ("IDMap", "IDMap2")
_METRICS = {faiss.METRIC_INNER_PRODUCT: "ip", faiss.METRIC_L2: "l2"}


def _split_top(spec: str) -> list[str]:
    """``spec`` split at the commas outside parentheses (FAISS's grammar nests specs in ``Refine(...)``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                break
        elif ch == "," and depth == 0:
            parts.append(spec[start:i].strip())
            start = i + 1
    if depth != 0:
        raise ValueError(f"index_factory: spec {spec!r} has unbalanced parentheses")
    parts.append(spec[start:].strip())
    return parts


def parse_spec(spec: str) -> tuple[str | None, int, str, str | None]:
    """``(idmap, dim, engine, refine)`` of ``"[IDMap[2],]SMEC<dim>,<engine>[,Refine(<spec>)|,RFlat]"``.

    ``idmap`` is None, ``"IDMap"`` or ``"IDMap2"``; ``engine`` is the FAISS spec at ``dim``; ``refine`` is the
    FAISS spec of the full-dim refine index (``"Flat"`` for ``RFlat``) or None.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"index_factory: spec must be a factory string such as 'SMEC64,HNSW32,Refine(Flat)', "
                        f"got {spec!r}")
    parts = _split_top(spec.strip())
    if any(not p for p in parts):
        raise ValueError(f"index_factory: spec {spec!r} has an empty component")
    idmap = parts.pop(0) if parts[0] in _IDMAP else None
    m = _SMEC.fullmatch(parts[0]) if parts else None
    if m is None:
        raise ValueError(f"index_factory: spec {spec!r} must start with a SMEC<dim> token (after an optional "
                         f"IDMap/IDMap2), e.g. 'SMEC64,HNSW32,Refine(Flat)'")
    dim = int(m.group(1))
    rest = parts[1:]
    refine = None
    if rest and rest[-1] == "RFlat":
        refine = "Flat"
        rest = rest[:-1]
    elif rest and (r := _REFINE.fullmatch(rest[-1])):
        refine = r.group(1).strip()
        rest = rest[:-1]
    if not rest:
        raise ValueError(f"index_factory: spec {spec!r} names no FAISS engine after SMEC{dim}; "
                         f"expected e.g. 'SMEC{dim},Flat' or 'SMEC{dim},HNSW32'")
    bad = [p for p in rest + ([refine] if refine else []) if _SMEC.search(p) or "IDMap" in p or "Refine" in p
           or p == "RFlat"]
    if bad:
        raise ValueError(f"index_factory: spec {spec!r}: {bad[0]!r} is out of place; the grammar is "
                         f"[IDMap[2],]SMEC<dim>,<engine>[,Refine(<spec>)|,RFlat]")
    return idmap, dim, ",".join(rest), refine


def _affine(P: Projection) -> faiss.LinearTransform:
    """``y = x @ M + c`` as a trained FAISS linear transform (A = M^T, row-major (d_out, d_in))."""
    D, d = P.M.shape
    t = faiss.LinearTransform(D, d, True)
    faiss.copy_array_to_vector(np.ascontiguousarray(P.M.T, dtype=np.float32).ravel(), t.A)
    faiss.copy_array_to_vector(np.ascontiguousarray(P.c, dtype=np.float32), t.b)
    t.is_trained = True
    return t


def stage_chain(smec: SMEC, dim: int) -> list[faiss.VectorTransform]:
    """The transforms that map a raw input row to ``smec.transform(x, dim)``: normalise, affine, normalise."""
    P = smec.projection(dim)
    return [faiss.NormalizationTransform(smec.input_dim_, 2.0), _affine(P), faiss.NormalizationTransform(P.dim, 2.0)]


def pre_transform(chain: list[faiss.VectorTransform], index: faiss.Index) -> faiss.IndexPreTransform:
    """``IndexPreTransform(chain, index)`` that owns its parts (C++ frees them with it, whatever Python holds)."""
    out = faiss.IndexPreTransform(index)
    for t in reversed(chain):
        out.prepend_transform(t)
        t.this.disown()
    index.this.disown()
    out.own_fields = True
    return out


def _refine(base: faiss.Index, refine: faiss.Index) -> faiss.IndexRefine:
    out = faiss.IndexRefine(base, refine)
    base.this.disown()
    refine.this.disown()
    out.own_fields = True
    out.own_refine_index = True
    return out


def _factory(d: int, spec: str, metric: int, what: str) -> faiss.Index:
    try:
        return faiss.index_factory(int(d), spec, metric)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"index_factory: the {what} spec {spec!r} at d={d} is not a FAISS factory string "
                         f"FAISS accepts: {msg}") from None


def full_refine_index(smec: SMEC, inner: faiss.Index) -> faiss.Index:
    """The full-dim refine index around ``inner``: behind the adapted full-vector map when ``smec`` is
    supervised (what the ``CompressedIndex`` full store scores), else ``inner`` on the raw vectors."""
    if not smec.supervised_:
        return inner
    return pre_transform(stage_chain(smec, smec.input_dim_), inner)


def check_metric(metric: Any, where: str) -> int:
    if not is_int(metric) or int(metric) not in _METRICS:
        raise ValueError(f"{where}: metric must be faiss.METRIC_INNER_PRODUCT (0) or faiss.METRIC_L2 (1), "
                         f"got {metric!r}")
    return int(metric)


def index_factory(smec: SMEC, spec: str, metric: int = faiss.METRIC_INNER_PRODUCT) -> faiss.Index:
    """A genuine ``faiss.Index`` for a fitted compressor: the one-line replacement for ``faiss.index_factory``.

    ``spec`` is FAISS's factory grammar with a ``SMEC<dim>`` transform token first:
    ``"SMEC64,HNSW32,Refine(Flat)"``. The engine spec after the token (``Flat``, ``HNSW32``, ``IVF1024,PQ16``,
    ``SQ8``, ``RaBitQ`` ...) is built by ``faiss.index_factory`` at ``dim`` and searches the SMEC-compressed
    vectors; ``Refine(<spec>)`` (or ``RFlat``) reranks its candidates exactly at full dim (k_factor
    candidates per result, 1 by default as in FAISS: set ``index.k_factor`` or ``ParameterSpace``'s
    ``k_factor_rf``). A leading ``IDMap,`` / ``IDMap2,`` wraps the whole index, as in FAISS.

    The index takes raw full-dim rows (``d = smec.input_dim_``); ``add``, ``train`` (IVF, PQ, ...) and
    ``search`` run entirely in FAISS, and ``faiss.write_index`` / ``read_index`` round-trip it without
    smec_index. ``metric`` is ``faiss.METRIC_INNER_PRODUCT`` (cosine on the normalised compressed vectors)
    or ``faiss.METRIC_L2``.
    """
    where = "index_factory"
    if not isinstance(smec, SMEC):
        raise TypeError(f"{where}: smec must be a fitted smec_index.SMEC, got {type(smec).__name__}")
    smec._check_fitted(where)
    metric = check_metric(metric, where)
    idmap, dim, engine, refine = parse_spec(spec)
    if dim not in smec.dims_:
        raise ValueError(f"{where}: spec {spec!r} asks for SMEC{dim}; the compressor has dims {smec.dims_}")
    D = smec.input_dim_
    index: faiss.Index = pre_transform(stage_chain(smec, dim), _factory(dim, engine, metric, "engine"))
    if refine is not None:
        inner = _factory(D, refine, metric, "refine")
        if refine == "Flat" and not smec.supervised_:
            flat = faiss.IndexRefineFlat(index)  # what FAISS's own "RFlat" builds
            index.this.disown()
            flat.own_fields = True
            index = flat
        else:
            index = _refine(index, full_refine_index(smec, inner))
    if idmap is not None:
        wrapper = (faiss.IndexIDMap2 if idmap == "IDMap2" else faiss.IndexIDMap)(index)
        index.this.disown()
        wrapper.own_fields = True
        index = wrapper
    return index


def from_compressed(ci: Any, k: int) -> faiss.Index:
    """The native equivalent of a FAISS-backed ``CompressedIndex`` holding the same vectors (its read lock
    held by the caller): the smallest dim's engine copied, each rescoring stage an ``IndexRefine`` over
    that stage's stored rows, ``k_factor`` set so that a search for ``k`` reranks the same candidates."""
    first = ci.backends[ci.dims[0]]
    engine, slots = first.compact_copy()
    stages = ci._stages(0, ci.rerank)
    smec, metric = ci.smec, faiss.METRIC_INNER_PRODUCT if ci.metric == "ip" else faiss.METRIC_L2
    index: faiss.Index = pre_transform(stage_chain(smec, ci.dims[0]), engine)
    # how many results each stage hands on for a search of k: CompressedIndex._search's fetch / keep
    out = [max(k, c) for c in ci.candidates[: len(stages) - 1]] + [k]
    for j, stage in enumerate(stages[1:], 1):
        store = ci._stores.get(stage)  # none yet in an index that never held a vector
        dim = ci.d if stage == "full" else int(stage)
        flat = (faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, metric)
                if ci.store_dtype == "float16" else faiss.IndexFlat(dim, metric))
        if slots.size:
            flat.add(store.take(slots))  # the rows are already as the stage scores them: added past the chain
        refine = full_refine_index(smec, flat) if stage == "full" else pre_transform(stage_chain(smec, dim), flat)
        index = _refine(index, refine)
        index.k_factor = out[j - 1] / out[j] * (1 + 1e-9)  # IndexRefine truncates k * k_factor to an int
    live = ci._ids.live_slots()
    ids = ci._ids.slot_ids[slots]
    if ci._ids.mode == EXPLICIT or not np.array_equal(slots, live):
        return with_ids(index, ids)
    return index
