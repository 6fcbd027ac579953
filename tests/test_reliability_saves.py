"""Issue 18, library side: saves never delete what their manifest does not list, a full disk never destroys a
good save or leaves an index that saves inconsistently, SMEC saves are checksummed, merge_from is atomic, and
the engines' own errors (FAISS, safetensors, numpy) come out as the library's."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from smec_index import SMEC, CompressedIndex, read_index
from smec_index._fsutil import StorageFullError, write_manifest
from smec_index.compressor import FORMAT_VERSION as SMEC_FORMAT
from smec_index.index.errors import IndexStateError
from smec_index.index.persist import FORMAT_VERSION, KIND, MANIFEST
from smec_index.index.store import NotNpyError, VectorStore, load_npy

D = 48


@pytest.fixture(scope="module")
def smec(synth):
    return SMEC((16, 8), "pca", progress=False).fit(synth)


def make_index(smec, X, **kw) -> CompressedIndex:
    ix = CompressedIndex(smec, dims=(8, 16), **kw)
    ix.train(X)
    ix.add(X)
    return ix


def reseal(path: Path, kind: str = KIND, version: int = FORMAT_VERSION, edit=None) -> None:
    """Rewrite a save's manifest over its files (as anyone who can write the directory can), after ``edit(meta)``."""
    m = json.loads((path / MANIFEST).read_text())
    meta = {k: v for k, v in m.items() if k not in ("kind", "format_version", "files", "manifest_sha256")}
    if edit is not None:
        edit(meta)
    (path / MANIFEST).unlink()
    write_manifest(path, kind, version, meta)


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------- a save deletes nothing it did not write
def test_save_refuses_a_directory_with_entries_its_manifest_does_not_list(smec, synth, tmp_path):
    ix = make_index(smec, synth[:200])
    ix.save(tmp_path / "ix")
    (tmp_path / "ix" / "NOTES.txt").write_text("mine")
    (tmp_path / "ix" / "drafts").mkdir()
    (tmp_path / "ix" / "drafts" / "a.tex").write_text("x")
    (tmp_path / "ix" / "backend-8" / "extra.bin").write_bytes(b"1")
    before = tree(tmp_path / "ix")
    with pytest.raises(ValueError, match=r"manifest does not list: NOTES.txt, backend-8/extra.bin, drafts/;"):
        ix.save(tmp_path / "ix")
    assert tree(tmp_path / "ix") == before
    # a one-line manifest claiming the kind, beside a user's files, is not a save: refused, nothing touched
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "thesis.tex").write_text("chapter 1")
    (home / "sub" / "data.csv").write_text("1,2")
    (home / MANIFEST).write_text(json.dumps({"kind": KIND}))
    before = tree(home)
    for save in (ix.save, smec.save):
        with pytest.raises(ValueError, match="refuses to delete"):
            save(home)
    assert tree(home) == before
    # the earlier save itself, and an empty sub-folder (engines leave some), are replaced
    for extra in ("NOTES.txt", "drafts/a.tex", "backend-8/extra.bin"):
        (tmp_path / "ix" / extra).unlink()
    ix.save(tmp_path / "ix")
    assert read_index(tmp_path / "ix").ntotal == 200


def test_smec_save_refuses_unlisted_entries_and_symlinks(smec, tmp_path):
    smec.save(tmp_path / "m")
    (tmp_path / "m" / "README").write_text("mine")
    with pytest.raises(ValueError, match="manifest does not list: README"):
        smec.save(tmp_path / "m")
    (tmp_path / "m" / "README").unlink()
    os.symlink(tmp_path / "m" / "config.json", tmp_path / "m" / "link")
    with pytest.raises(ValueError, match=r"link \(a symbolic link\)"):
        smec.save(tmp_path / "m")
    (tmp_path / "m" / "link").unlink()
    smec.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", MANIFEST, "weights.safetensors"]


# --------------------------------------------------------------------- SMEC saves are checksummed and checked
def test_smec_load_detects_bit_flips_nan_weights_extra_files_and_links(smec, synth, tmp_path):
    smec.save(tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    good = w.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(good), 25):  # every flipped bit is caught, header or weights
        raw = bytearray(good)
        raw[pos] ^= 1 << int(rng.integers(8))
        w.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="SMEC.load: .*does not match its sha256"):
            SMEC.load(tmp_path / "m")
    from safetensors.numpy import load_file, save_file

    w.write_bytes(good)
    tensors = load_file(str(w))
    tensors["proj.8.M"] = tensors["proj.8.M"].copy()
    tensors["proj.8.M"][3, 2] = np.nan
    save_file(tensors, str(w))
    (tmp_path / "m" / MANIFEST).unlink()
    write_manifest(tmp_path / "m", "smec_index.SMEC", SMEC_FORMAT, {})  # re-sealed: checked on its own merits
    with pytest.raises(ValueError, match="projection for dim 8 .*not all finite"):
        SMEC.load(tmp_path / "m")
    shutil.rmtree(tmp_path / "m")
    smec.save(tmp_path / "m")
    (tmp_path / "m" / "extra.py").write_text("print('hi')")
    with pytest.raises(ValueError, match="extra.py is not listed in the manifest"):
        SMEC.load(tmp_path / "m")
    (tmp_path / "m" / "extra.py").unlink()
    (tmp_path / "elsewhere.safetensors").write_bytes(w.read_bytes())
    w.unlink()
    os.symlink(tmp_path / "elsewhere.safetensors", w)
    with pytest.raises(ValueError, match="symbolic link"):
        SMEC.load(tmp_path / "m")


def test_resealed_manifest_with_inconsistent_settings_is_refused(smec, synth, tmp_path):
    ix = make_index(smec, synth[:200])
    ix.save(tmp_path / "ix")
    cases = [
        (lambda m: m.update(id_mode="explicit"), None),  # sequential ids under the explicit flag: harmless
        (lambda m: m.update(id_mode=None), "id_mode=null with 200 slots"),
        (lambda m: m.update(full_vectors="adapted"), "full_vectors='adapted'.*not supervised"),
        (lambda m: m.update(ntotal=199), "live ids, the manifest says ntotal=199|inconsistent"),
    ]
    for edit, pattern in cases:
        dst = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tmp_path / "ix", dst)
        reseal(dst, edit=edit)
        if pattern is None:
            assert read_index(dst).ntotal == 200
            continue
        with pytest.raises(ValueError, match=pattern):
            read_index(dst)
    # an explicit-id index whose manifest is flipped to sequential: its ids are not 0..n-1
    ex = CompressedIndex(smec, dims=(8, 16))
    ex.train(synth[:200])
    ex.add_with_ids(synth[:50], np.arange(1000, 1050))
    ex.save(tmp_path / "ex")
    reseal(tmp_path / "ex", edit=lambda m: m.update(id_mode="sequential"))
    with pytest.raises(ValueError, match="live ids are not 0..ntotal-1"):
        read_index(tmp_path / "ex")


def test_declared_shapes_are_bounded_by_the_file_size_before_allocating(smec, synth, tmp_path):
    ix = make_index(smec, synth[:100])
    ix.save(tmp_path / "ix")
    raw = (tmp_path / "ix" / "ids.npy").read_bytes()
    end = raw.index(b"\n") + 1
    header = raw[:end].replace(b"(100,)", b"(1099511627776,)")
    header = header[:-1].rstrip(b" ") + b" " * (end - len(header[:-1].rstrip(b" ")) - 1) + b"\n"
    assert len(header) == end
    (tmp_path / "ix" / "ids.npy").write_bytes(header + raw[end:])
    reseal(tmp_path / "ix", edit=lambda m: m.update(n_slots=2**40))
    with pytest.raises(ValueError, match=r"declares int64 \(1099511627776,\), which needs"):
        read_index(tmp_path / "ix")


def test_load_npy_names_a_text_or_pickled_file_without_suggesting_pickle(tmp_path):
    (tmp_path / "x.txt").write_text("0.1 0.2\n0.3 0.4\n")
    with pytest.raises(NotNpyError, match=r"build: --corpus .*x.txt is not a .npy file \(it starts with b'0.1 0.'\)") as e:
        load_npy(tmp_path / "x.txt", "build", "--corpus")
    assert "pickle" not in str(e.value)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NotNpyError, match="holds Python objects"):
        load_npy(tmp_path / "obj.npy", "build", "--corpus")
    np.save(tmp_path / "ok.npy", np.ones((3, 2), np.float32))
    (tmp_path / "short.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:-4])
    with pytest.raises(ValueError, match="has 148 bytes; its header declares float32 \\(3, 2\\), which needs 152"):
        load_npy(tmp_path / "short.npy", "build", "--corpus")
    assert load_npy(tmp_path / "ok.npy", "build", "--corpus", mmap_mode="r").shape == (3, 2)


def test_engine_errors_and_absurd_arguments_are_the_librarys(smec, synth, tmp_path):
    ix = make_index(smec, synth[:100])
    with pytest.raises(ValueError, match=r"search: k=2147483648 for 1 queries asks for 2,147,483,648 results"):
        ix.search(synth[:1], 2**31)
    with pytest.raises(ValueError, match=r"add: x is not a rectangular array of numbers .*expected shape \(n, 48\)"):
        ix.add([[0.0] * D, [0.0] * 3])
    with pytest.raises(ValueError, match=r"search: x is not a rectangular array"):
        ix.search([[0.0] * D, [1.0]], 3)
    (tmp_path / "notes.txt").write_text("not an index")
    with pytest.raises(ValueError, match="read_index: .*notes.txt is a file but not a FAISS index file"):
        read_index(tmp_path / "notes.txt")
    assert ix.ntotal == 100


# --------------------------------------------------------------------- a failed add never spoils a save
def test_an_add_whose_undo_fails_marks_the_index_broken_and_save_refuses(smec, synth, tmp_path, monkeypatch):
    ix = make_index(smec, synth[:100], full_store="disk")
    ix.save(tmp_path / "ix")
    good = tree(tmp_path / "ix")
    backend = ix.backends[16]

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend, "add", boom)  # the add fails in an engine ...
    monkeypatch.setattr(VectorStore, "append", boom)  # ... and its undo cannot pad the stores
    with pytest.raises(OSError):
        ix.add(synth[100:150])
    monkeypatch.undo()
    with pytest.raises(IndexStateError, match="save: an add failed .*could not be undone"):
        ix.save(tmp_path / "ix")
    with pytest.raises(IndexStateError, match="add: an add failed"):
        ix.add(synth[:1])
    assert tree(tmp_path / "ix") == good and read_index(tmp_path / "ix").ntotal == 100


def test_save_refuses_an_inconsistent_index(smec, synth, tmp_path):
    ix = make_index(smec, synth[:100])
    ix._stores["full"]._n -= 1  # what a half-finished add used to leave
    with pytest.raises(IndexStateError, match="save: the index is inconsistent"):
        ix.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


# --------------------------------------------------------------------- a full disk (a small tmpfs, as root)
@contextlib.contextmanager
def tmpfs(size: str):
    """A fresh tmpfs of ``size`` mounted on a temporary directory (skips the test where that is not possible)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="smec-tmpfs-"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


@pytest.mark.parametrize("kind", ["disk", "mmap"])
def test_full_disk_during_add_changes_nothing_and_the_old_save_survives(smec, synth, tmp_path, monkeypatch, kind):
    X = np.tile(synth, (4, 1))  # 4,000 rows x 48 float32: 750 KiB in the full store
    with tmpfs("512k") as mnt:
        monkeypatch.setattr(tempfile, "tempdir", str(mnt))  # the store's private file goes to the small disk
        ix = make_index(smec, X[:1000], full_store=kind)
        ix.save(tmp_path / "ix")
        good = tree(tmp_path / "ix")
        D0, I0 = ix.search(X[:5], 5)
        with pytest.raises(StorageFullError, match="add: no room for .* the disk is full") as e:
            ix.add(X[1000:])
        assert e.value.errno == 28 and isinstance(e.value, OSError)
        assert ix.ntotal == 1000
        D1, I1 = ix.search(X[:5], 5)
        assert np.array_equal(I0, I1) and np.array_equal(D0, D1)
        ix.save(tmp_path / "ix")  # a consistent save replaces the good one with the same content
        back = read_index(tmp_path / "ix")
        assert back.ntotal == 1000 and np.array_equal(back.search(X[:5], 5)[1], I0)
        assert set(tree(tmp_path / "ix")) == set(good)
        ix.add(X[1000:1100])  # what fits still goes in
        assert ix.ntotal == 1100


def test_full_disk_during_save_keeps_the_previous_save(smec, synth, tmp_path):
    X = np.tile(synth, (6, 1))  # a save of 1.3 MB
    with tmpfs("1m") as mnt:
        small = make_index(smec, X[:200])
        small.save(mnt / "ix")
        good = tree(mnt / "ix")
        big = make_index(smec, X)
        with pytest.raises(StorageFullError, match="save: the disk holding .* is full") as e:
            big.save(mnt / "ix")
        assert e.value.errno == 28
        assert tree(mnt / "ix") == good and read_index(mnt / "ix").ntotal == 200
        assert sorted(p.name for p in mnt.iterdir()) == ["ix"]  # no temporary directory left
        # SMEC weights through safetensors (its SafetensorError becomes StorageFullError too)
        wide = SMEC((200,), "pca", progress=False).fit(np.random.default_rng(0).normal(size=(800, 1200)).astype(np.float32))
        with pytest.raises(StorageFullError):
            wide.save(mnt / "m")
        assert not (mnt / "m").exists()


def test_a_loaded_file_store_copies_beside_the_save_and_a_full_disk_changes_nothing(smec, synth, tmp_path):
    X = np.tile(synth, (4, 1))
    with tmpfs("1m") as mnt:
        ix = make_index(smec, X[:1500], full_store="disk")
        ix.save(mnt / "ix")
        back = read_index(mnt / "ix")
        assert back._stores["full"].work_dir == mnt / "ix"
        with pytest.raises(StorageFullError):
            back.add(X[1500:])  # the private copy (its 1500 rows and the new ones) does not fit beside the save
        assert back.ntotal == 1500 and np.array_equal(back.search(X[:3], 3)[1], ix.search(X[:3], 3)[1])
        assert read_index(mnt / "ix").ntotal == 1500  # the save it was loaded from is untouched


# --------------------------------------------------------------------- merge_from is one step
def test_merge_from_loses_nothing_added_to_other_meanwhile(smec, synth):
    a = make_index(smec, synth[:100])
    b = CompressedIndex(smec, dims=(8, 16))
    b.train(synth[:200])
    added = [0]
    stop = threading.Event()

    def feed():
        # bounded: unbounded, the feed outran the merges on a loaded machine and the test took minutes
        while not stop.is_set() and added[0] < 2_100:
            b.add(synth[:7])
            added[0] += 7

    t = threading.Thread(target=feed)
    t.start()
    try:
        merges = 0
        while merges < 20 or t.is_alive():  # merging for as long as the feed adds
            a.merge_from(b)
            merges += 1
    finally:
        stop.set()
        t.join()
    assert added[0] == 2_100 and a.ntotal + b.ntotal == 100 + added[0]


def test_two_indexes_merging_into_each_other_do_not_deadlock(smec, synth):
    a, b = make_index(smec, synth[:300]), make_index(smec, synth[300:600])
    errors = []

    def run(x, y):
        try:
            for _ in range(10):
                x.merge_from(y)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a, b)), threading.Thread(target=run, args=(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors and a.ntotal + b.ntotal == 600


def test_huge_ids_and_a_crafted_engine_capacity_are_refused_or_bounded(smec, synth, tmp_path):
    ix = CompressedIndex(smec, dims=(8, 16))
    ix.train(synth[:200])
    with pytest.raises(ValueError, match="add_with_ids: ids must fit in int64, got 75557863725914323419136"):
        ix.add_with_ids(synth[:1], [2**76])
    hn = CompressedIndex(smec, dims=(8, 16), backend="hnswlib")
    hn.train(synth[:200])
    hn.add(synth[:200])
    hn.save(tmp_path / "hn")
    cfg_path = tmp_path / "hn" / "backend-8" / "hnswlib.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "max_elements": 2**40}))  # would allocate terabytes if believed
    reseal(tmp_path / "hn")
    back = read_index(tmp_path / "hn")
    assert back.backends[8].index.max_elements < 10_000
    assert np.array_equal(back.search(synth[:3], 3)[1], hn.search(synth[:3], 3)[1])


def test_format_1_smec_saves_and_text_embeddings_are_named(smec, tmp_path):
    smec.save(tmp_path / "m")
    (tmp_path / "m" / MANIFEST).unlink()
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    with pytest.raises(ValueError, match="SMEC.load: .*config.json has format version 1; this smec_index reads version 2"):
        SMEC.load(tmp_path / "m")
    from conftest import write_toy_beir

    from smec_index.datasets import load_beir

    root = write_toy_beir(tmp_path / "beir")
    emb = next((root / "emb").iterdir())
    (emb / "corpus.f16.npy").write_text("0.1 0.2 0.3 0.4\n")
    with pytest.raises(NotNpyError, match="load_beir: corpus embeddings .*is not a .npy file") as e:
        load_beir(root, emb.name)
    assert "pickle" not in str(e.value)


def test_atomic_file_replaces_whole_or_leaves_the_old_file(tmp_path):
    """The one-file writer under ``write_json`` and ``save_figure``: folders made, the file replaced when the block
    ends, the old one kept and no temporary left when it raises."""
    from smec_index._fsutil import atomic_file
    from smec_index.report import write_json

    path = tmp_path / "a" / "b.json"
    write_json(path, {"v": 1})
    assert json.loads(path.read_text()) == {"v": 1}
    try:
        with atomic_file(path) as f:
            f.write('{"v": 2')
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert json.loads(path.read_text()) == {"v": 1} and sorted(p.name for p in path.parent.iterdir()) == ["b.json"]
    with atomic_file(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


def test_write_json_keeps_number_lists_on_one_line(tmp_path):
    """Per-query scores (3,000 a configuration) take one line each; everything else is indented JSON, and the
    text reads back to the same payload (strings that look like numbers and nested lists included)."""
    from smec_index.report import write_json

    payload = {"per_query": [0.5, 1, -3e-05, 1e+20], "rows": [[1, 2], [3, 4]], "mixed": ["1", 2], "empty": [],
               "nested": {"curve": [0.1, 0.2]}, "text": "[1, 2]"}
    text = write_json(tmp_path / "r.json", payload).read_text()
    assert json.loads(text) == payload
    assert '"per_query": [0.5, 1, -3e-05, 1e+20]' in text and '"curve": [0.1, 0.2]' in text
    assert '"mixed": [\n' in text  # not only numbers: one item a line, as json.dumps(indent=2) writes it
