"""Backend configurations every CompressedIndex test runs against (imported by the test_index_* modules).

Search knobs are set so that with ``candidates`` at least the corpus size each backend returns every
vector as a candidate (HNSW ef above the corpus size, IVF probing every list): the full-dim rerank is
then exact whatever the engine, and results can be compared with FAISS's IndexFlat exactly.
"""

from __future__ import annotations

from typing import Any

import faiss
import pytest

BACKEND_CASES: list[tuple[str, dict[str, Any]]] = [
    ("faiss", {"spec": "Flat"}),
    ("faiss", {"spec": "HNSW32", "params": {"efSearch": 1024}}),
    ("faiss", {"spec": "IVF8,Flat", "params": {"nprobe": 8}}),
    ("faiss", {"spec": "IVF4,PQ4x4np", "params": {"nprobe": 4}}),
    ("faiss", {"spec": "SQ8"}),
    ("faiss", {"spec": "RaBitQ4", "params": {"qb": 8}}),
    ("faiss-binary", {"itq": True}),
    ("hnswlib", {"M": 16, "ef_construction": 100, "ef": 1024}),
]

# Backends whose answer at a reduced dim is exact (for tests of the un-reranked search).
EXACT_CASES = [c for c in BACKEND_CASES if c[1].get("spec") in ("Flat", "HNSW32", "IVF8,Flat") or c[0] == "hnswlib"]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    backend, opts = case
    if "spec" in opts:
        return f"{backend}-{opts['spec']}"
    return f"{backend}-itq" if opts.get("itq") else backend


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Run FAISS single-threaded in these tests: on a shared 2-core machine OpenMP's spinning threads turn
    millisecond builds of tiny indexes into seconds. Thread-safety tests still run many Python threads."""
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(prev)
