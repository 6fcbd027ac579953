"""VectorStore: rows by slot in RAM or memory-mapped, float32 or float16, growing and saved as .npy."""

from __future__ import annotations

import numpy as np
import pytest

from smec_index._fsutil import sha256_file
from smec_index.index.store import VectorStore


@pytest.mark.parametrize("kind", ["memory", "mmap", "disk"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_append_take_save_load(tmp_path, kind, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 12)).astype(np.float32)
    store = VectorStore(12, dtype, kind)
    for s in range(0, 1000, 130):  # many growths
        store.append(X[s : s + 130])
    assert store.n == 1000
    tol = 0 if dtype == "float32" else 2e-3
    np.testing.assert_allclose(store.take(np.array([[5, 999], [0, 17]])), X[[[5, 999], [0, 17]]], atol=tol * 4)
    assert store.take(np.array([3])).dtype == np.float32
    # RAM held: a mapped store is paged in by the OS; an in-memory one holds at least its rows
    assert store.nbytes == 0 if kind != "memory" else store.nbytes >= 1000 * 12 * np.dtype(dtype).itemsize
    store.save(tmp_path / "s.npy")
    saved = np.load(tmp_path / "s.npy")
    assert saved.shape == (1000, 12) and saved.dtype == np.dtype(dtype)
    digest = sha256_file(tmp_path / "s.npy")
    back = VectorStore.load(tmp_path / "s.npy", 12, dtype, kind, 1000)
    np.testing.assert_array_equal(back.rows(), saved)
    back.append(X[:10])  # a loaded store copies before writing: the saved file stays as it was
    assert back.n == 1010 and sha256_file(tmp_path / "s.npy") == digest
    np.testing.assert_array_equal(back.rows(1000), X[:10].astype(dtype))
    np.testing.assert_array_equal(back.rows(0, 1000), saved)


def test_load_refuses_a_shape_or_dtype_mismatch(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"holds float32 \(4, 3\); the manifest says float16 \(4, 3\)"):
        VectorStore.load(tmp_path / "s.npy", 3, "float16", "memory", 4)
    with pytest.raises(ValueError, match=r"the manifest says float32 \(5, 3\)"):
        VectorStore.load(tmp_path / "s.npy", 3, "float32", "mmap", 5)


@pytest.mark.parametrize("kind", ["mmap", "disk"])
def test_file_stores_leave_no_named_temporary_file(tmp_path, monkeypatch, kind):
    """The private file is unlinked when created: a process killed mid-build leaves nothing in TMPDIR."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    store = VectorStore(8, "float32", kind)
    X = np.arange(4000 * 8, dtype=np.float32).reshape(4000, 8)
    store.append(X[:3000])
    store.append(X[3000:])
    assert list((tmp_path / "tmp").iterdir()) == []
    np.testing.assert_array_equal(store.take(np.array([3999, 0])), X[[3999, 0]])
    store.save(tmp_path / "s.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), X)
