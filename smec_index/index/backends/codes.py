"""Stage codes by name: how a first stage stores its vectors, and what that costs in RAM per vector.

A code is a backend with its options, so ``CompressedIndex(smec, dims=128, code="rabitq4")`` needs no FAISS
spelling. Every code is followed by the exact rerank from the full store. ``code_bytes(code, dim)`` is the
size of one code in RAM, without the 8-byte label every engine keeps beside it.

RaBitQ codes run with 8-bit query quantization (``qb=8``; FAISS's default for ``IndexRaBitQ`` is 4). The
product quantizer codes (``pq1``, ``pq2``, ``pq4``: FAISS ``PQ<m>np``, 8-bit sub-codes, ``m`` = dim / 8, 4 or 2, so
1, 2 or 4 bits a dim; ``opq2``: an OPQ rotation first) learn their codebooks on the stage vectors; their
sub-quantizer count depends on the dim (``code_options``). The residual quantizer codes (``rq1``, ``rq2``,
``rq4``: FAISS ``RQ<m>x8``, the same bytes as ``pq<b>``) code the whole stage vector with ``m`` codebooks of 256,
each quantizing what the previous ones left (beam search), and score a query with look-up tables, no norms
(inner product); they train slower and keep more neighbours per byte. The Qdrant codes keep float32 originals on disk beside
the codes (Qdrant re-scores with them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import faiss

from ._qdrant import PQ_QUANTIZATIONS, TURBO_QUANTIZATIONS

__all__ = ["Code", "CODES", "code_bytes", "code_options", "fits_dim", "default_first_stage", "LABEL_BYTES", "RAM_SHARE"]

# per vector beside the code, reserved for the engine's int64 label: FAISS engines (sign codes included) hold none
# while their rows are the slots (until a removal); hnswlib and Qdrant always do. Sequential ids (``add``) cost nothing
# more; ids from ``add_with_ids``, or any removal, add the facade's id map (3 int64 a vector: ``index.ids.IdMap``).
LABEL_BYTES = 8
RAM_SHARE = 16  # the default first stage keeps RAM per vector at most raw float32 / RAM_SHARE


@dataclass(frozen=True)
class Code:
    """A stage code: the backend that stores it and the options it takes."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    # dims one sub-quantizer covers: the spec's "{m}" is dim // per (0: the spec does not depend on the dim)
    per: int = 0


def _rabitq(bits: int) -> Code:
    spec = "RaBitQ" if bits == 1 else f"RaBitQ{bits}"
    return Code(f"rabitq{bits}", "faiss", {"spec": spec, "params": {"qb": 8}},
                f"FAISS IndexRaBitQ, {bits} bit(s) a dim, 8-bit queries")


def _pq(bits: int, opq: bool = False) -> Code:
    per = 8 // bits
    # "np": no polysemous training (an ordering for Hamming pre-filtering that search here never uses, and 15x
    # the training time: 45.8 s against 3.0 s for PQ28 on 5,183 x 112 at one thread)
    return Code(f"{'o' if opq else ''}pq{bits}", "faiss", {"spec": ("OPQ{m}," if opq else "") + "PQ{m}np"},
                f"FAISS {'OPQ rotation + ' if opq else ''}product quantizer, one byte per {per} dims ({bits} bit(s) a dim)",
                per)


def _rq(bits: int) -> Code:
    per = 8 // bits
    return Code(f"rq{bits}", "faiss", {"spec": "RQ{m}x8"},
                f"FAISS residual quantizer, {bits} bit(s) a dim in 8-bit codebooks, look-up-table search", per)


CODES: dict[str, Code] = {c.name: c for c in (
    Code("float32", "faiss", {"spec": "Flat"}, "FAISS IndexFlat, exact at the stage"),
    Code("sq8", "faiss", {"spec": "SQ8"}, "FAISS 8-bit scalar quantizer"),
    Code("sq4", "faiss", {"spec": "SQ4"}, "FAISS 4-bit scalar quantizer"),
    _rabitq(1), _rabitq(2), _rabitq(4),
    _pq(1), _pq(2), _pq(4), _pq(2, opq=True),
    _rq(1), _rq(2), _rq(4),
    Code("binary", "faiss-binary", {}, "sign bits, Hamming distance (IndexBinaryFlat)"),
    Code("binary-itq", "faiss-binary", {"itq": True}, "sign bits after an ITQ rotation, Hamming distance"),
    Code("qdrant-int8", "qdrant-edge", {"quantization": "int8", "oversampling": 1.0}, "Qdrant scalar int8"),
    Code("qdrant-binary", "qdrant-edge", {"quantization": "binary", "oversampling": 1.0},
         "Qdrant binary, 1 bit a dim, 8-bit queries"),
    Code("qdrant-binary1.5", "qdrant-edge", {"quantization": "binary1.5", "oversampling": 1.0},
         "Qdrant binary, 1.5 bits a dim, 8-bit queries"),
    Code("qdrant-binary2", "qdrant-edge", {"quantization": "binary2", "oversampling": 1.0},
         "Qdrant binary, 2 bits a dim, 8-bit queries"),
    *(Code(f"qdrant-{q}", "qdrant-edge", {"quantization": q, "oversampling": 1.0},
           f"Qdrant TurboQuant, {q[len('turbo'):]} bit(s) a dim after a rotation") for q in TURBO_QUANTIZATIONS),
    *(Code(f"qdrant-{q}", "qdrant-edge", {"quantization": q, "oversampling": 1.0},
           f"Qdrant product quantization, 1/{q[len('pq-x'):]} of the float32 bytes") for q in PQ_QUANTIZATIONS),
)}

# bytes of one code at ``dim`` for codes not sized by FAISS itself. TurboQuant keeps 8 bytes a vector beside
# its codes (measured: the optimized segment's quantized.data is 56 B a point at 384 dims, 1 bit), 1.5 bits are
# 1-bit codes of the vector padded to 1.5 d; product quantization's codebooks are per collection, not counted.
_QDRANT_BYTES = {"qdrant-int8": lambda d: d + 4, "qdrant-binary": lambda d: -(-d // 8),
                 "qdrant-binary1.5": lambda d: -(-3 * d // 16), "qdrant-binary2": lambda d: -(-d // 4),
                 **{f"qdrant-{q}": (lambda d, half_bits=int(2 * float(q[len("turbo"):])): -(-half_bits * d // 16) + 8)
                    for q in TURBO_QUANTIZATIONS},
                 **{f"qdrant-{q}": (lambda d, n=int(q[len("pq-x"):]): -(-4 * d // n)) for q in PQ_QUANTIZATIONS}}


def fits_dim(code: str, dim: int) -> bool:
    """Whether ``dim`` can hold ``code`` (a product quantizer needs a multiple of its sub-vector's dims; a
    residual quantizer, sized the same way, a multiple of the dims one byte codes)."""
    per = CODES[code].per
    return per == 0 or int(dim) % per == 0


def code_options(code: str, dim: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The backend options of ``code`` at ``dim`` (default: the code's own): a product quantizer's spec gets its
    sub-quantizer count; a ValueError when the dim cannot hold the code (not a multiple of its sub-vector)."""
    if code not in CODES:
        raise ValueError(f"code must be one of {sorted(CODES)}, got {code!r}")
    c = CODES[code]
    opts = dict(c.options if options is None else options)
    if c.per:
        if not fits_dim(code, dim):
            raise ValueError(f"code {code!r} needs a dim that is a multiple of {c.per}, got {dim}")
        opts["spec"] = opts["spec"].format(m=int(dim) // c.per)
    return opts


def code_bytes(code: str, dim: int) -> int:
    """RAM bytes of one vector's code at ``dim`` (FAISS's own ``sa_code_size`` for FAISS codes)."""
    if code not in CODES:
        raise ValueError(f"code must be one of {sorted(CODES)}, got {code!r}")
    c = CODES[code]
    if c.backend == "faiss":
        spec = code_options(code, dim)["spec"]
        return int(faiss.index_factory(int(dim), spec, faiss.METRIC_INNER_PRODUCT).sa_code_size())
    if c.backend == "faiss-binary":
        return -(-int(dim) // 8)
    return int(_QDRANT_BYTES[code](int(dim)))


# the default's codes, finest first: at a given dim the finest code that fits the budget is taken. 4 bits a dim
# are SQ4, not RaBitQ 4 bit: at the stages the default takes the same recall after reranking 100 candidates on
# the training queries (Debian 128 dims 0.9975 against 0.9976, SciFact mpnet 128 dims 0.9995 against 0.9991),
# 20 bytes a vector fewer, and one search (batch 1, with the rerank) 1.8 and 2.1 times faster there
# (``benchmarks/default_stage.py``: 1.40 against 2.48 ms, 0.32 against 0.66 ms)
_DEFAULT_CODES = ("float32", "sq8", "sq4", "rabitq2", "rabitq1")
# codes of 4 bits a dim or more, finest first: what a reduced default stage must afford to beat the full vector
# at 1 bit (FULL_CODE)
_FINE_CODES = ("float32", "sq8", "sq4")
FULL_CODE = "rabitq1"
FULL_SHARE = 3  # a reduced default stage keeps at least this share of the input dim: D / FULL_SHARE


def default_first_stage(D: int, dims: Sequence[int], budget: float | None = None,
                        shared: Mapping[int, float] | None = None, full: bool = False) -> tuple[int, str]:
    """The (dim, code) of the default first stage within ``budget`` RAM bytes a vector (default: raw float32 /
    ``RAM_SHARE``, i.e. ``D / 4``): a code plus ``LABEL_BYTES`` plus ``shared[dim]`` (the bytes a vector of what
    serving that dim holds once: the compressor's map spread over the corpus). In order:

    1. the largest dim of at least ``D / 3`` at the finest code of 4 bits a dim or more (``float32``, ``sq8``,
       ``sq4``) that fits;
    2. with ``full`` (a fitted compressor: ``D`` is a first stage of its own), the full vector at 1-bit RaBitQ;
    3. the largest dim at the finest of ``float32``, ``sq8``, ``sq4``, ``rabitq2``, ``rabitq1`` that fits.

    When nothing fits because of the shared bytes (a supervised compressor's D x D map on a small corpus: it is
    held whatever the stage), the same order without them; when nothing fits even so, the smallest dim at 1 bit.

    Measured on the development sets' training queries (``benchmarks/default_stage.py``, recall@10 after
    reranking 100 candidates): a reduced stage coded with 4 bits or more at D / 3 beats the full vector at 1 bit
    (Debian, 63,904 x 384: 128 dims at SQ4 0.9975 against 0.9945, and 0.932 against 0.888 at 20 candidates), fewer bits there or fewer dims lose to it (128 dims at 2 bits 0.9898; SciFact MiniLM, 5,183
    rows, where the 128-d map costs 38 B a vector: 64 dims at SQ8 0.9833 against 0.9962), and on a small corpus
    the maps' share leaves the reduced stages little (1,400 rows: at most 0.969 against 0.999)."""
    budget = 4 * D / RAM_SHARE if budget is None else float(budget)
    for share in (shared or {}), {}:
        found = _first_fit(D, dims, budget, share, full)
        if found is not None:
            return found
    return int(min(dims)), "rabitq1"


def _first_fit(D: int, dims: Sequence[int], budget: float, share: Mapping[int, float],
               full: bool) -> tuple[int, str] | None:
    """Steps 1-3 of ``default_first_stage`` with ``share`` bytes a vector for each dim; None when nothing fits."""
    def fits(code: str, dim: int) -> bool:
        return code_bytes(code, dim) + LABEL_BYTES + share.get(dim, 0.0) <= budget

    for dim in sorted(dims, reverse=True):
        if dim * FULL_SHARE < D:
            break
        for code in _FINE_CODES:
            if fits(code, dim):
                return int(dim), code
    if full and fits(FULL_CODE, D):
        return int(D), FULL_CODE
    for dim in sorted(dims, reverse=True):
        for code in _DEFAULT_CODES:
            if fits(code, dim):
                return int(dim), code
    return None
