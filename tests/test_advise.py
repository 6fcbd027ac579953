"""The dims advisor: recall@k against exact full-dim search, the recommendation, its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smec_index import SMEC
from smec_index.advise import DEFAULT_CODES, Advice, DimEstimate, advise
from smec_index.index.backends.codes import LABEL_BYTES, code_bytes


@pytest.fixture(scope="module")
def low_rank() -> np.ndarray:
    """400 x 24 vectors whose last 16 coordinates are zero: truncation to 8+ dims loses nothing."""
    rng = np.random.default_rng(0)
    X = np.zeros((400, 24), dtype=np.float32)
    X[:, :8] = rng.normal(size=(400, 8))
    return X


def test_lossless_dims_keep_everything_and_the_smallest_is_recommended(low_rank):
    a = advise(low_rank, method="truncate", dims=(16, 8, 4), target=0.99, k=10, candidates=50, holdout=50,
               progress=False)
    by = {r.dim: r for r in a.rows}
    assert [r.dim for r in a.rows] == [4, 8, 16]
    assert by[8].recall == 1.0 and by[16].recall == 1.0  # the dropped coordinates are all zero
    assert by[4].recall < 0.9  # half the information gone
    assert (a.dim, a.rerank) == (8, False)
    assert a.n_queries == 50 and a.n_vectors == 350  # held-out rows are queries, not searched
    assert "Recommended: 8 dims without rerank" in a.summary()


def test_recommendation_is_read_from_the_table(synth):
    a = advise(synth, method="pca", dims=(32, 16, 8, 4), target=0.9, k=10, candidates=40, progress=False)
    for r in a.rows:
        # the rerank rescores a superset of the dim's own top-k, so it never finds fewer true neighbours
        assert r.recall_rerank >= r.recall - 1e-9
        assert r.bytes_per_vector == 4 * r.dim
        assert r.qps > 0 and r.qps_rerank > 0
    meeting = [r for r in a.rows if r.meets(0.9) != "no"]
    assert meeting, a.table()
    assert a.dim == meeting[0].dim and a.rerank == (meeting[0].recall < 0.9)
    table = a.table()
    assert f"| {a.dim} |" in table and "reference" in table
    row_line = next(line for line in table.splitlines() if line.startswith(f"| {a.dim} |"))
    assert row_line.rstrip(" |").endswith("with rerank" if a.rerank else "yes")
    d = a.to_dict()
    assert d["dim"] == a.dim and len(d["rows"]) == 4 and d["rows"][0]["meets"] in ("yes", "with rerank", "no")


def test_no_dim_meets_an_impossible_target(synth):
    a = advise(synth, method="truncate", dims=(4, 2), target=1.0, k=10, candidates=10, progress=False)
    assert a.dim is None and a.recommended is None
    assert a.summary().startswith("No trained dim keeps 1 of the full-dim top-10")


def test_fitted_compressor_and_held_out_queries(synth, synth_supervised):
    Q, pairs = synth_supervised
    smec = SMEC((16, 8), "pca").fit(synth)
    a = advise(synth, Q, smec=smec, target=0.5, n_vectors=10_000_000, progress=False)
    assert a.queries_from == f"{Q.shape[0]} held-out queries" and a.n_vectors == 10_000_000
    assert [r.dim for r in a.rows] == [8, 16] and a.method == "pca"
    if a.dim is not None:
        assert "For 10,000,000 vectors" in a.summary()


def test_trained_smec_runs(synth):
    a = advise(synth, dims=(16,), target=0.5, progress=False, max_epochs=1, ads_epochs=1, patience=1,
               batch_size=64, memory_size=200, neighbour_pool=20)
    assert a.method == "smec" and len(a.rows) == 1 and 0.0 <= a.rows[0].recall <= 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=0), "target must be a number in"),
    (dict(target=1.5), "target must be a number in"),
    (dict(k=0), "k must be a positive int"),
    (dict(k=10, candidates=5), "candidates must be >= k=10"),
    (dict(n_vectors=0), "n_vectors must be a positive int"),
    (dict(dims=(48,)), "must all be < the corpus dim 48"),
    (dict(method="nope"), "method must be one of"),
    (dict(max_epochs=1, bogus=2), "unknown option"),
])
def test_bad_arguments_are_refused(synth, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        advise(synth, progress=False, **kwargs)


def test_bad_inputs_name_the_argument(synth):
    with pytest.raises(ValueError, match=r"queries has shape \(3, 5\); expected \(n, 48\)"):
        advise(synth, np.zeros((3, 5), np.float32), method="pca", progress=False)
    with pytest.raises(TypeError, match="corpus must be a float numpy array"):
        advise(np.zeros((10, 4), dtype=np.int64), progress=False)
    with pytest.raises(ValueError, match="smec must be a fitted"):
        advise(synth, smec=SMEC((8,), "pca"), progress=False)
    fitted = SMEC((8,), "pca").fit(synth)
    with pytest.raises(ValueError, match=r"dims \[4\] are not trained"):
        advise(synth, smec=fitted, dims=(4,), progress=False)
    with pytest.raises(ValueError, match="apply only when advise fits"):
        advise(synth, smec=fitted, max_epochs=2, progress=False)
    with pytest.raises(ValueError, match="fitted on 48-dim vectors"):
        advise(synth[:, :40], smec=fitted, progress=False)


def test_summary_states_memory_and_qps():
    rows = [DimEstimate(32, 128, 0.90, 0.99, 400.0, 300.0), DimEstimate(64, 256, 0.985, 1.0, 200.0, 180.0)]
    a = Advice(rows, 256, 50.0, 0.98, 10, 100, 1_000_000, 100, "100 held-out queries", "smec", False, 32, True)
    text = a.summary()
    assert "Recommended: 32 dims with full-dim rerank of the top 100" in text
    assert "122.1 MiB of float32 vectors in RAM instead of 976.6 MiB (8.0x less, 854.5 MiB saved)" in text
    assert "300 queries/s instead of 50 (6.0x)" in text


# --------------------------------------------------------------------- in bytes
def test_bytes_options_cover_every_code_dim_and_candidates(synth):
    a = advise(synth, method="pca", dims=(32, 16), target=0.9, k=10, candidates=100, holdout=100, progress=False)
    assert {(o.dim, o.code) for o in a.options} == {(d, c) for d in (48, 32, 16) for c in DEFAULT_CODES}
    assert {o.candidates for o in a.options} == {20, 50, 100}
    smec = SMEC((32, 16), "pca").fit(synth)
    for o in a.options:  # the 48 -> dim map, held once, spread over the 500 searched vectors
        shared = math.ceil(smec.subset(o.dim).nbytes / 500)
        assert o.ram_bytes_per_vector == code_bytes(o.code, o.dim) + LABEL_BYTES + shared and 0 <= o.recall <= 1
    assert all(o.recall == 1.0 for o in a.options if (o.dim, o.code) == (48, "float32"))  # the exact search itself
    f32 = {o.dim: o.recall for o in a.options if o.code == "float32" and o.candidates == 100 and o.dim < 48}
    assert f32 == {r.dim: pytest.approx(r.recall_rerank) for r in a.rows}  # the same exact search, twice
    meeting = [o for o in a.options if o.recall >= 0.9]
    assert a.choice_meets and a.choice.ram_bytes_per_vector == min(o.ram_bytes_per_vector for o in meeting)
    assert "held out" in a.queries_from and f"code {a.choice.code}" in a.choice_summary()
    assert "<-" in a.bytes_table() and a.to_dict()["choice"]["code"] == a.choice.code
    many = advise(synth, method="pca", dims=(32,), codes=("rabitq1",), k=10, candidates=100, holdout=100,
                  n_vectors=10**7, progress=False)  # the same map over 10M vectors: under a byte, rounded up
    assert {o.ram_bytes_per_vector for o in many.options if o.dim == 32} == {code_bytes("rabitq1", 32) + LABEL_BYTES + 1}
    assert {o.ram_bytes_per_vector for o in many.options if o.dim == 48} == {code_bytes("rabitq1", 48) + LABEL_BYTES}


def test_a_budget_picks_the_best_recall_within_it(synth):
    a = advise(synth, method="pca", dims=(32, 16), codes=("float32", "sq8", "binary"), k=10, candidates=50,
               holdout=100, budget=60, progress=False)
    within = [o for o in a.options if o.ram_bytes_per_vector <= 60]
    assert a.choice.ram_bytes_per_vector <= 60 and a.choice.recall == max(o.recall for o in within)
    assert "within 60 B a vector" in a.choice_summary()
    none = advise(synth, method="pca", dims=(16,), codes=("float32",), k=10, candidates=50, budget=10,
                  progress=False)
    assert none.choice is None and none.choice_summary().startswith("No (dim, code) fits 10 B")


def test_held_out_queries_are_named_and_codes_checked(synth, synth_supervised):
    Q, _ = synth_supervised
    a = advise(synth, Q, method="pca", dims=(16,), codes=("rabitq1",), progress=False)
    assert a.queries_from == "80 held-out queries" and {o.code for o in a.options} == {"rabitq1"}
    with pytest.raises(ValueError, match="codes must be"):
        advise(synth, method="pca", dims=(16,), codes=("qdrant-int8",), progress=False)
    with pytest.raises(ValueError, match="budget must be"):
        advise(synth, method="pca", dims=(16,), budget=-1, progress=False)
