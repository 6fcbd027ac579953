"""Saving and loading a CompressedIndex: round trips per backend, checksums, refusals, crash safety."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from index_cases import BACKEND_CASES, case_id, one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex, read_index, write_index
from smec_index._fsutil import TMP_PREFIX
from smec_index.index.persist import FORMAT_VERSION, MANIFEST


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC(dims=(32, 16, 8), method="pca", progress=False).fit(synth)


def _index(smec, case, X, **kw):
    backend, opts = case
    index = CompressedIndex(smec, dims=(8, 16), backend=backend, **opts, **kw)
    index.train(X)
    return index


@pytest.mark.parametrize("case", BACKEND_CASES, ids=case_id)
@pytest.mark.parametrize("explicit", [False, True], ids=["add", "add_with_ids"])
def test_round_trip_gives_identical_results(pca, synth, tmp_path, case, explicit):
    X, Q = synth[:500], synth[500:]
    index = _index(pca, case, X)
    if explicit:
        index.add_with_ids(X[:400], np.arange(400) * 3 + 7)
        index.remove_ids(np.arange(7, 300, 9))
    else:
        index.add(X[:400])
        index.remove_ids(np.arange(0, 100, 7))
    before = [index.search(Q, 10), index.search(Q[:1], 5, dim=16, rerank="none"), index.search(Q, 3, rerank="cascade")]
    write_index(index, tmp_path / "ix")
    loaded = read_index(tmp_path / "ix")
    assert isinstance(loaded, CompressedIndex)
    assert (loaded.ntotal, loaded.d, loaded.dims, loaded.metric_type) == (index.ntotal, index.d, index.dims, index.metric_type)
    after = [loaded.search(Q, 10), loaded.search(Q[:1], 5, dim=16, rerank="none"), loaded.search(Q, 3, rerank="cascade")]
    for (D0, I0), (D1, I1) in zip(before, after):
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
    # adding after load continues the numbering / the id space
    if explicit:
        loaded.add_with_ids(X[400:], np.arange(100) + 10**6)
        index.add_with_ids(X[400:], np.arange(100) + 10**6)
    else:
        loaded.add(X[400:])
        index.add(X[400:])
    np.testing.assert_array_equal(loaded.search(Q, 10)[1], index.search(Q, 10)[1])


@pytest.mark.parametrize("kind", ["mmap", "disk"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_file_store_round_trip_never_touches_the_saved_files(pca, synth, tmp_path, kind, dtype):
    X, Q = synth[:500], synth[500:]
    index = _index(pca, BACKEND_CASES[0], X, full_store=kind, store_dtype=dtype)
    index.add(X[:300])
    index.save(tmp_path / "ix")
    loaded = CompressedIndex.load(tmp_path / "ix")
    assert loaded.full_store == kind and loaded.nbytes < index.nbytes + 1
    np.testing.assert_array_equal(loaded.search(Q, 10)[1], index.search(Q, 10)[1])
    loaded.add(X[300:])  # copy-on-write into a private file
    index.add(X[300:])
    np.testing.assert_array_equal(loaded.search(Q, 10)[1], index.search(Q, 10)[1])
    CompressedIndex.load(tmp_path / "ix")  # checksums still match: the saved store was not written to
    in_ram = CompressedIndex.load(tmp_path / "ix", full_store="memory")
    assert in_ram.full_store == "memory" and in_ram.ntotal == 300


def test_save_overwrites_atomically_and_a_failed_save_keeps_the_old_one(pca, synth, tmp_path, monkeypatch):
    X = synth[:500]
    index = _index(pca, BACKEND_CASES[0], X)
    index.add(X[:100])
    index.save(tmp_path / "ix")
    index.add(X[100:200])
    index.save(tmp_path / "ix")  # replaces the previous save
    assert read_index(tmp_path / "ix").ntotal == 200
    index.add(X[200:300])

    def broken_save(path):
        (path / "index.faiss").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(index.backends[16], "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "ix")
    assert read_index(tmp_path / "ix").ntotal == 200
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.fixture
def saved(pca, synth, tmp_path):
    index = _index(pca, BACKEND_CASES[0], synth[:500])
    index.add(synth[:200])
    index.save(tmp_path / "ix")
    return tmp_path / "ix"


def _rewrite_manifest(path, **changes):
    m = json.loads((path / MANIFEST).read_text())
    m.update(changes)
    (path / MANIFEST).write_text(json.dumps(m))


def test_manifest_lists_every_file_with_its_checksum(saved):
    m = json.loads((saved / MANIFEST).read_text())
    assert m["format_version"] == FORMAT_VERSION and m["backend"] == "faiss" and m["dims"] == [8, 16]
    assert m["ntotal"] == 200 and m["d"] == 48 and m["full_vectors"] == "raw"
    on_disk = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(m["files"]) == on_disk
    assert {"smec/config.json", "ids.npy", "backend-8/index.faiss", "store-full.npy", "store-16.npy"} <= on_disk
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())


def test_truncated_manifest_is_refused(saved):
    text = (saved / MANIFEST).read_text()
    (saved / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_index(saved)


def test_edited_manifest_is_refused(saved):
    text = (saved / MANIFEST).read_text()
    (saved / MANIFEST).write_text(text.replace('"ntotal": 200', '"ntotal": 201'))
    with pytest.raises(ValueError, match="does not match its own checksum"):
        read_index(saved)


def test_other_format_version_is_refused(saved):
    _rewrite_manifest(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match=f"format version {FORMAT_VERSION + 1}; this smec_index reads version"):
        read_index(saved)


@pytest.mark.parametrize("name", ["store-full.npy", "backend-8/index.faiss", "ids.npy", "smec/weights.safetensors"])
def test_corrupted_file_is_refused(saved, name):
    data = bytearray((saved / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (saved / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        read_index(saved)
    if name == "store-full.npy":  # same size: only the sha256 pass can notice, and verify=False skips it
        assert CompressedIndex.load(saved, verify=False).ntotal == 200


@pytest.mark.parametrize("name", ["store-full.npy", "backend-16/index.faiss"])
def test_truncated_file_is_refused_even_without_checksums(saved, name):
    data = (saved / name).read_bytes()
    (saved / name).write_bytes(data[:-100])
    for verify in (True, False):
        with pytest.raises(ValueError, match="truncated or replaced"):
            CompressedIndex.load(saved, verify=verify)


def test_missing_file_and_wrong_directories_are_refused(saved, tmp_path):
    (saved / "ids.npy").unlink()
    with pytest.raises(ValueError, match="ids.npy is listed in the manifest but missing"):
        read_index(saved)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no manifest.json"):
        read_index(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a directory"):
        CompressedIndex.load(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / MANIFEST).write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(ValueError, match="not a CompressedIndex manifest"):
        read_index(tmp_path / "other")


def test_load_refuses_bad_options(saved):
    with pytest.raises(ValueError, match="full_store must be one of"):
        CompressedIndex.load(saved, full_store="ssd")


def test_write_and_read_index_pass_faiss_indexes_through(tmp_path, synth):
    flat = faiss.IndexFlatIP(48)
    flat.add(synth)
    write_index(flat, tmp_path / "flat.faiss")
    back = read_index(tmp_path / "flat.faiss")
    assert isinstance(back, faiss.IndexFlatIP) and back.ntotal == 600
    with pytest.raises(TypeError, match="must be a CompressedIndex or a faiss.Index"):
        write_index("index", tmp_path / "x")


def test_save_before_training_is_refused(tmp_path):
    index = CompressedIndex(SMEC(dims=(8,), method="pca"))
    with pytest.raises(ValueError, match="not trained"):
        index.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


def test_a_saved_index_keeps_only_the_compressor_stages_it_serves(synth, tmp_path):
    smec = SMEC((32, 16, 8), "pca").fit(synth)
    index = CompressedIndex(smec, dims=16, code="sq8")
    index.train(synth)
    index.add(synth)
    index.save(tmp_path / "ix")
    back = read_index(tmp_path / "ix")
    assert back.smec.dims_ == (16,) and smec.dims_ == (32, 16, 8)  # the caller's compressor is untouched
    np.testing.assert_array_equal(back.search(synth[:5], 10)[1], index.search(synth[:5], 10)[1])
    whole = tmp_path / "whole"
    smec.save(whole)
    kept = sum(f.stat().st_size for f in (tmp_path / "ix" / "smec").iterdir())
    assert kept < sum(f.stat().st_size for f in whole.iterdir())
    cascade = CompressedIndex(smec, dims=(16, 8), code="float32")
    cascade.train(synth)
    cascade.add(synth)
    cascade.save(tmp_path / "cx")
    assert read_index(tmp_path / "cx").smec.dims_ == (16, 8)
