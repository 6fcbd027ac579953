"""Bad input to every public entry point of CompressedIndex, property-tested: each call gets a specific
TypeError/ValueError (or, for impossible paths, an OSError) and leaves the index exactly as it was:
ntotal, the id of every slot, and the results of a fixed set of searches are compared before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from index_cases import one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex, read_index
from smec_index._fsutil import _body_sha256
from smec_index.index.persist import MANIFEST

D = 48
# SMEC_HYPOTHESIS_DEEPER=10 runs every property with 10x the examples (CI keeps the default, 1)
DEEPER = int(os.environ.get("SMEC_HYPOTHESIS_DEEPER", "1"))
SETTINGS = settings(max_examples=40 * DEEPER, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
CASES = [("faiss", {"spec": "Flat"}), ("faiss", {"spec": "HNSW32", "params": {"efSearch": 256}}),
         ("hnswlib", {"M": 16, "ef": 256})]


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC(dims=(16, 8), method="pca", progress=False).fit(synth)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c[1].get("spec", c[0]))
def index(request, pca, synth):
    backend, opts = request.param
    ix = CompressedIndex(pca, dims=(8, 16), backend=backend, **opts)
    ix.train(synth)
    ix.add_with_ids(synth[:200], np.arange(1000, 1200))
    ix.remove_ids(np.arange(1000, 1010))
    return ix


def state(ix: CompressedIndex, Q: np.ndarray) -> tuple:
    """Everything a caller can observe: ntotal, the live ids, full and one-stage search results."""
    D1, I1 = ix.search(Q, 10)
    D2, I2 = ix.search(Q, 5, dim=16, rerank="none")
    return ix.ntotal, ix._ids.slot_ids[ix._ids.live_slots()], D1, I1, D2, I2  # live ids in insertion order


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------- strategies
finite = st.floats(-10, 10, allow_nan=False, width=32)


@st.composite
def bad_matrix(draw, d: int = D) -> np.ndarray:
    """An array that is not a finite float (n >= 1, d) matrix."""
    kind = draw(st.sampled_from(["width", "ndim", "dtype", "nonfinite", "zero_width", "object"]))
    n = draw(st.integers(1, 6))
    if kind == "width":
        w = draw(st.integers(1, 2 * d).filter(lambda w: w != d))
        return draw(hnp.arrays(np.float32, (n, w), elements=finite))
    if kind == "ndim":
        shape = draw(st.sampled_from([(d,), (n, d, 1), (), (1, 1, d)]))
        return draw(hnp.arrays(np.float32, shape, elements=finite))
    if kind == "dtype":
        dtype = draw(st.sampled_from([np.int64, np.int8, np.uint16, np.bool_, np.complex64]))
        return draw(hnp.arrays(dtype, (n, d)))
    if kind == "zero_width":
        return np.zeros((n, 0), np.float32)
    if kind == "object":
        return np.array([["a"] * d] * n)
    X = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64, np.float16])), (n, d), elements=finite))
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))
    X[i, j] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return X


bad_k = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=3),
                  st.integers(min_value=(1 << 31) + 1, max_value=1 << 62))


@st.composite
def bad_ids(draw, n: int) -> tuple[np.ndarray, str]:
    """Ids for a batch of n vectors that add_with_ids must refuse, and the words its message must contain."""
    kind = draw(st.sampled_from(["negative", "repeat", "present", "float", "length", "2d", "huge", "text"]))
    ids = np.arange(5000, 5000 + n, dtype=np.int64)
    if kind == "negative":
        ids[draw(st.integers(0, n - 1))] = draw(st.integers(-(1 << 62), -1))
        return ids, ">= 0"
    if kind == "repeat":
        assume(n >= 2)
        ids[1] = ids[0]
        return ids, "repeat"
    if kind == "present":
        ids[draw(st.integers(0, n - 1))] = draw(st.integers(1010, 1199))
        return ids, "already in the index"
    if kind == "float":
        return ids.astype(draw(st.sampled_from([np.float32, np.float64]))), "integers"
    if kind == "length":
        return np.arange(draw(st.integers(0, 3 * n).filter(lambda m: m != n)), dtype=np.int64), "shape"
    if kind == "2d":
        return ids[None, :], "shape"
    if kind == "huge":
        return np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64), "int64"
    return np.array([str(i) for i in ids]), "integers"


# --------------------------------------------------------------------- properties
@SETTINGS
@given(x=bad_matrix())
def test_add_refuses_bad_vectors_and_changes_nothing(index, synth, x):
    before = state(index, synth[300:305])
    with pytest.raises((TypeError, ValueError), match=r"^add: x "):
        index.add(x)
    with pytest.raises((TypeError, ValueError), match=r"^add_with_ids: x "):
        index.add_with_ids(x, np.arange(7000, 7000 + max(1, len(x) if x.ndim else 1)))
    assert_same(before, state(index, synth[300:305]))


@SETTINGS
@given(n=st.integers(1, 6), data=st.data())
def test_add_with_ids_refuses_bad_ids_and_changes_nothing(index, synth, n, data):
    ids, words = data.draw(bad_ids(n))
    before = state(index, synth[300:305])
    with pytest.raises((TypeError, ValueError), match=words):
        index.add_with_ids(synth[300 : 300 + n], ids)
    assert_same(before, state(index, synth[300:305]))


def test_add_refuses_the_other_id_kind_and_ids_absent_in_empty_batches(index, synth):
    before = state(index, synth[300:305])
    with pytest.raises(ValueError, match="cannot be mixed"):
        index.add(synth[300:302])
    with pytest.raises(ValueError, match="cannot be mixed"):
        index.add(np.empty((0, D), np.float32))  # even an empty batch: the kind is what is refused
    index.add_with_ids(np.empty((0, D), np.float32), np.empty(0, np.int64))  # FAISS accepts an empty add
    assert_same(before, state(index, synth[300:305]))


def test_add_of_many_chunks_with_a_bad_row_at_the_end_changes_nothing(index, synth, monkeypatch):
    import smec_index.index.compressed as compressed

    monkeypatch.setattr(compressed, "chunk_rows", lambda d: 7)  # many chunks; the bad row is in the last
    X = np.repeat(synth[300:330], 2, axis=0)
    X[-1, 3] = np.nan
    before = state(index, synth[300:305])
    with pytest.raises(ValueError, match=r"1 row\(s\) with NaN or inf \(first: row 59\)"):
        index.add_with_ids(X, np.arange(8000, 8060))
    assert_same(before, state(index, synth[300:305]))


@SETTINGS
@given(q=bad_matrix(), k=st.integers(1, 20))
def test_search_refuses_bad_queries(index, synth, q, k):
    before = state(index, synth[300:305])
    with pytest.raises((TypeError, ValueError), match=r"^search: x "):
        index.search(q, k)
    assert_same(before, state(index, synth[300:305]))


@SETTINGS
@given(k=bad_k)
def test_search_refuses_bad_k(index, synth, k):
    with pytest.raises(ValueError, match=r"^search: k"):
        index.search(synth[300:302], k)


@SETTINGS
@given(dim=st.one_of(st.integers().filter(lambda v: v not in (8, 16)), st.text(max_size=2), st.floats()),
       rerank=st.text(max_size=6).filter(lambda r: r not in ("full", "cascade", "none")))
def test_search_refuses_unknown_dims_and_reranks(index, synth, dim, rerank):
    with pytest.raises(ValueError, match=r"search: dim must be one of the configured dims \(8, 16\)"):
        index.search(synth[300:302], 3, dim=dim)
    with pytest.raises(ValueError, match="search: rerank must be one of"):
        index.search(synth[300:302], 3, rerank=rerank)


@settings(max_examples=15 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 3000))
def test_search_with_any_k_matches_faiss_padding(index, synth, k):
    D_, I = index.search(synth[300:303], k)
    assert D_.shape == I.shape == (3, k) and D_.dtype == np.float32 and I.dtype == np.int64
    found = (I >= 0).sum(axis=1)
    assert (found == min(k, index.ntotal)).all()  # every backend here finds every live vector at ef 256
    assert (I[:, min(k, index.ntotal):] == -1).all()
    assert set(I[I >= 0].tolist()) <= set(range(1010, 1200))


@SETTINGS
@given(ids=st.one_of(hnp.arrays(np.float64, st.integers(1, 4)), hnp.arrays(np.int64, (2, 2)),
                     st.lists(st.integers(-(1 << 40), -1), min_size=1, max_size=4).map(np.array),
                     st.just(np.array(["3"])), st.just(None)))
def test_remove_ids_refuses_bad_ids_and_changes_nothing(index, synth, ids):
    before = state(index, synth[300:305])
    with pytest.raises((TypeError, ValueError), match=r"^remove_ids: ids"):
        index.remove_ids(ids)
    assert_same(before, state(index, synth[300:305]))


def test_remove_of_absent_ids_removes_nothing(index, synth):
    before = state(index, synth[300:305])
    assert index.remove_ids(np.array([0, 1005, 10**15])) == 0  # never added, removed, far out: like FAISS
    assert_same(before, state(index, synth[300:305]))


# --------------------------------------------------------------------- save and load
def test_save_refuses_paths_it_must_not_replace(index, synth, tmp_path):
    before = state(index, synth[300:305])
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8 not ours")
    (tmp_path / "a-file").write_text("x")
    webapp = tmp_path / "webapp"
    webapp.mkdir()
    (webapp / "manifest.json").write_text('{"name": "my app"}')  # a manifest, but not ours
    cases = [(foreign, ValueError, "is not a saved CompressedIndex.*refuses to delete"),
             (webapp, ValueError, "is not a saved CompressedIndex"),
             (tmp_path / "a-file", ValueError, "exists and is not a directory"),
             (tmp_path / ".tmp-x", ValueError, "marks unfinished saves"),
             (tmp_path / "a-file" / "sub", OSError, "a-file")]
    for path, exc, match in cases:
        with pytest.raises(exc, match=match):
            index.save(path)
    assert (foreign / "cat.jpg").read_bytes() == b"\xff\xd8 not ours"
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "photos", "webapp"]  # no temp dir left behind
    assert (webapp / "manifest.json").read_text() == '{"name": "my app"}'
    assert_same(before, state(index, synth[300:305]))
    index.save(tmp_path / "ok")
    index.save(tmp_path / "ok")  # an earlier save is replaced
    (tmp_path / "empty").mkdir()
    index.save(tmp_path / "empty")  # an empty directory is fine
    assert_same(state(read_index(tmp_path / "empty"), synth[300:305]), before)


@pytest.fixture(scope="module")
def saved(index, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "ix"
    index.save(path)
    return path


def _rewrite_manifest(src: Path, dst: Path, edit) -> None:
    """Copy a saved index, edit its manifest and re-seal its own checksum (what a careless tool or an attacker does)."""
    import shutil

    shutil.copytree(src, dst)
    m = json.loads((dst / MANIFEST).read_text())
    m.pop("manifest_sha256")
    edit(m)
    m["manifest_sha256"] = _body_sha256(m)
    (dst / MANIFEST).write_text(json.dumps(m))


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False)
                           | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=6)
SETTING_KEYS = ["d", "dims", "backend", "metric", "rerank", "candidates", "full_store", "store_dtype", "id_mode",
                "ntotal", "n_slots", "stores", "full_vectors"]


@settings(max_examples=60 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(SETTING_KEYS), value=json_values, data=st.data())
def test_load_of_a_resealed_manifest_with_any_setting_fails_cleanly(saved, synth, tmp_path_factory, key, value, data):
    """Whatever value a setting takes, load raises ValueError or loads an index that answers searches."""
    dst = tmp_path_factory.mktemp("edit") / "ix"
    _rewrite_manifest(saved, dst, lambda m: m.__setitem__(key, value))
    try:
        ix = read_index(dst)
    except ValueError as e:
        assert str(e).startswith("read_index:") or str(e).startswith("SMEC.load:"), str(e)
        return
    ix.search(synth[300:302], 3)


@settings(max_examples=40 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.sampled_from(["../outside.npy", "/etc/hostname", "backend-8/../../x", "./ids.npy", "a//b", "a\\..\\b",
                            "", "smec/../../../etc/passwd"]))
def test_manifest_paths_cannot_escape_the_directory(saved, tmp_path_factory, rel):
    dst = tmp_path_factory.mktemp("escape") / "ix"
    _rewrite_manifest(saved, dst, lambda m: m["files"].__setitem__(rel, {"bytes": 1, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="points outside the save's directory|expected a relative path"):
        read_index(dst)


def test_symlinks_and_unlisted_files_are_refused(saved, tmp_path):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(saved, a)
    target = tmp_path / "elsewhere.npy"
    shutil.copy(a / "ids.npy", target)
    (a / "ids.npy").unlink()
    (a / "ids.npy").symlink_to(target)  # same bytes, same checksum: refused because it is a link
    with pytest.raises(ValueError, match="symbolic link"):
        read_index(a)
    shutil.copytree(saved, b)
    (b / "backend-8" / "extra.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="not listed in the manifest"):
        read_index(b)


@settings(max_examples=30 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), how=st.sampled_from(["flip", "truncate", "append"]))
def test_any_damaged_file_is_refused(saved, tmp_path_factory, data, how):
    import shutil

    dst = tmp_path_factory.mktemp("damage") / "ix"
    shutil.copytree(saved, dst)
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    f = data.draw(st.sampled_from(files), label="file")
    raw = bytearray(f.read_bytes())
    if how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        raw += b"\0"
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="read_index"):
        read_index(dst)


def test_loading_never_unpickles(saved, synth, monkeypatch):
    """Every loader must read native formats, .npy without pickle, safetensors and JSON: make unpickling fail."""
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    ix = read_index(saved)
    assert ix.ntotal == 190 and ix.search(synth[300:301], 3)[1].shape == (1, 3)


def test_no_pickle_in_the_package_source():
    root = Path(__file__).resolve().parents[1] / "smec_index"
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, f
        if "torch.load(" in text:
            assert "weights_only=True" in text, f


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[1].get("spec", c[0]))
@pytest.mark.parametrize("fail_in", ["backend", "store"])
@pytest.mark.parametrize("explicit", [False, True], ids=["add", "add_with_ids"])
def test_an_add_the_machine_fails_half_way_is_taken_out_again(pca, synth, monkeypatch, case, fail_in, explicit):
    """Out of memory or disk full in the 3rd chunk of an add: the error comes through, and the index answers
    exactly as before it; the next add works and answers like an index that never saw the failure."""
    import smec_index.index.compressed as compressed
    from smec_index.index.store import VectorStore

    backend, opts = case

    def fresh() -> CompressedIndex:
        ix = CompressedIndex(pca, dims=(8, 16), backend=backend, full_store="mmap", **opts)
        ix.train(synth)
        if explicit:
            ix.add_with_ids(synth[:100], np.arange(100) * 7)
        else:
            ix.add(synth[:100])
        return ix

    def more(ix: CompressedIndex, rows: slice) -> None:
        X = synth[rows]
        if explicit:
            ix.add_with_ids(X, np.arange(rows.start, rows.stop) * 7)
        else:
            ix.add(X)

    index, reference = fresh(), fresh()
    before = state(index, synth[300:305])
    monkeypatch.setattr(compressed, "chunk_rows", lambda d: 40)
    calls = {"n": 0}
    target = type(index.backends[16]) if fail_in == "backend" else VectorStore
    real = target.add if fail_in == "backend" else target.append

    def failing(self, *args):
        rows = args[-1]  # the vectors (the undo's padding of a store is zeros: not counted)
        if (fail_in == "store" or self.dim == 16) and (fail_in == "backend" or self.dim == D) and np.any(rows):
            calls["n"] += 1
            if calls["n"] == 3:
                raise MemoryError("injected: the machine ran out of memory")
        return real(self, *args)

    monkeypatch.setattr(target, "add" if fail_in == "backend" else "append", failing)
    with pytest.raises(MemoryError, match="injected"):
        more(index, slice(100, 300))
    assert calls["n"] == 3  # the failure came in the 3rd chunk, after two whole chunks had been added
    assert_same(before, state(index, synth[300:305]))
    monkeypatch.undo()
    more(index, slice(100, 300))
    more(reference, slice(100, 300))
    assert index.ntotal == reference.ntotal == 300
    a, b = state(index, synth[300:305]), state(reference, synth[300:305])
    for x, y in zip(a[2:], b[2:]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(index.reconstruct_n(0, 300), reference.reconstruct_n(0, 300))
