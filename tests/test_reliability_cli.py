"""The command line under bad input files (property-tested) and its streaming build: ``build`` maps ``--corpus``
read-only and adds it in batches; bad input ends with status 1 and one line naming the option, and ``--out``
is never created or changed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from smec_index import SMEC, CompressedIndex, read_index
from smec_index.cli import main

# SMEC_HYPOTHESIS_DEEPER=10 runs every property with 10x the examples (CI keeps the default, 1)
DEEPER = int(os.environ.get("SMEC_HYPOTHESIS_DEEPER", "1"))
SETTINGS = settings(max_examples=30 * DEEPER, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-10, 10, allow_nan=False, width=32)


def run(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def model(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("cli-rel")
    SMEC((16, 8), "pca", progress=False).fit(synth).save(root / "pca")
    np.save(root / "X.npy", synth)
    return root


@st.composite
def bad_npy(draw) -> tuple[bytes | np.ndarray, str]:
    """What a --corpus file must not be, and a fragment of the error line it must produce."""
    kind = draw(st.sampled_from(["width", "ndim", "int", "empty", "nan", "object", "garbage", "truncated"]))
    n = draw(st.integers(1, 40))
    if kind == "width":
        width = draw(st.integers(1, 96).filter(lambda w: w != 48))
        return draw(hnp.arrays(np.float32, (n, width), elements=finite)), "--corpus"
    if kind == "ndim":
        return draw(hnp.arrays(np.float32, draw(st.sampled_from([(48,), (n, 48, 1)])), elements=finite)), "--corpus"
    if kind == "int":
        return draw(hnp.arrays(draw(st.sampled_from([np.int64, np.uint8, np.bool_])), (n, 48))), "--corpus"
    if kind == "empty":
        return np.zeros((0, 48), np.float32), "--corpus"
    if kind == "object":
        return np.array([{"a": 1}] * n, dtype=object), "--corpus"
    if kind == "garbage":
        return draw(st.binary(max_size=200)), "--corpus"
    if kind == "truncated":
        header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 48), }"
        return header + b" " * 40, "--corpus"  # a header promising 1000 rows, and no data
    X = draw(hnp.arrays(draw(st.sampled_from([np.float16, np.float32, np.float64])), (n, 48), elements=finite))
    X[draw(st.integers(0, n - 1)), draw(st.integers(0, 47))] = draw(st.sampled_from([np.nan, np.inf]))
    return X, "NaN or inf"


@SETTINGS
@given(bad=bad_npy())
def test_build_refuses_bad_corpus_files_and_writes_nothing(model, tmp_path_factory, capsys, bad):
    content, words = bad
    tmp = tmp_path_factory.mktemp("bad")
    path = tmp / "X.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=True)  # an object array is written with pickle: build must refuse it
    code, err = run(["build", "--compressor", model / "pca", "--corpus", path, "--out", tmp / "out", "--quiet"], capsys)
    assert code == 1 and err.startswith("smec-index build: error:") and words in err and err.count("\n") == 1, err
    assert not (tmp / "out").exists() and sorted(p.name for p in tmp.iterdir()) == ["X.npy"]


@SETTINGS
@given(lines=st.lists(st.one_of(st.integers(-5, 2000).map(str), st.text(max_size=4)), max_size=700))
def test_build_refuses_bad_id_files(model, tmp_path_factory, capsys, lines):
    # the rule of --ids, restated: one id a line once stripped (a BOM and blank lines at the end ignored), none
    # blank, all distinct, one per corpus row; any strings are ids (int64 ones when all are plain integers)
    rows = "\n".join(lines).removeprefix("\ufeff").splitlines()
    while rows and not rows[-1].strip():
        rows.pop()
    ids = [x.strip() for x in rows]
    valid = len(ids) == 600 and all(ids) and len(set(ids)) == 600
    if valid:
        return
    tmp = tmp_path_factory.mktemp("ids")
    (tmp / "ids.txt").write_text("\n".join(lines))
    code, err = run(["build", "--compressor", model / "pca", "--corpus", model / "X.npy", "--ids", tmp / "ids.txt",
                     "--out", tmp / "out", "--quiet"], capsys)
    assert code == 1 and "--ids" in err and err.count("\n") == 1, err
    assert not (tmp / "out").exists()


def test_build_with_a_bad_row_in_a_late_chunk_keeps_the_old_save(model, tmp_path, capsys, synth, monkeypatch):
    import smec_index.index.compressed as compressed

    code, _ = run(["build", "--compressor", model / "pca", "--corpus", model / "X.npy", "--out", tmp_path / "out",
                   "--quiet"], capsys)
    assert code == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").iterdir())
    X = np.tile(synth, (3, 1))
    X[1700, 5] = np.inf
    np.save(tmp_path / "X.npy", X)
    monkeypatch.setattr(compressed, "chunk_rows", lambda d: 100)  # the bad row is in the 18th chunk
    code, err = run(["build", "--compressor", model / "pca", "--corpus", tmp_path / "X.npy", "--out", tmp_path / "out",
                     "--code", "float32", "--force", "--quiet"], capsys)  # a code that needs no training: the add finds the row
    assert code == 1 and "--corpus: rows 0..1,799" in err and "first: row 1700" in err, err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").iterdir()) == before  # old save kept


@pytest.mark.parametrize("spec,store", [("Flat", "memory"), ("IVF8,Flat", "mmap"), ("Flat", "disk")])
def test_streaming_build_equals_an_in_memory_build(model, tmp_path, capsys, synth, monkeypatch, spec, store):
    """build maps the file and adds it in batches (forced small here); the result equals add() of the whole array."""
    import smec_index.index.compressed as compressed

    monkeypatch.setattr(compressed, "chunk_rows", lambda d: 64)
    np.save(tmp_path / "X16.npy", synth.astype(np.float16))
    extra = ["--param", "nprobe=8"] if spec != "Flat" else []
    code, err = run(["build", "--compressor", model / "pca", "--corpus", tmp_path / "X16.npy", "--dims", "8,16",
                     "--spec", spec, *extra, "--full-store", store, "--out", tmp_path / "ix", "--quiet"], capsys)
    assert code == 0, err
    built = read_index(tmp_path / "ix")
    assert built.full_store == store
    ref = CompressedIndex(SMEC.load(model / "pca"), dims=(8, 16), spec=spec,
                          **({"params": {"nprobe": 8}} if spec != "Flat" else {}))
    ref.train(synth.astype(np.float16).astype(np.float32))
    ref.add(synth.astype(np.float16).astype(np.float32))
    assert built.ntotal == ref.ntotal == 600
    Q = synth[:20]
    D1, I1 = built.search(Q, 10)
    D2, I2 = ref.search(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(built.reconstruct_n(0, 600), synth.astype(np.float16).astype(np.float32))


def test_add_from_a_memory_mapped_file_in_many_chunks(tmp_path, synth, monkeypatch):
    """A read-only memmap is added chunk by chunk (its pages handed back after each) with the same result."""
    import smec_index.index.compressed as compressed

    np.save(tmp_path / "X.npy", np.tile(synth, (4, 1)))
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    smec = SMEC((16, 8), "pca", progress=False).fit(synth)
    a = CompressedIndex(smec, dims=(8,), spec="Flat", full_store="mmap")
    b = CompressedIndex(smec, dims=(8,), spec="Flat", full_store="mmap")
    a.add(np.array(X))
    monkeypatch.setattr(compressed, "chunk_rows", lambda d: 100)
    b.add(X)
    assert np.asarray(X).sum() == np.tile(synth, (4, 1)).sum()  # the released pages read back unchanged
    np.testing.assert_array_equal(a.search(synth[:5], 10)[1], b.search(synth[:5], 10)[1])
    np.testing.assert_array_equal(a.reconstruct_n(0, 2400), b.reconstruct_n(0, 2400))


@pytest.fixture(scope="module")
def built(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "ix"
    assert main(["build", "--compressor", str(model / "pca"), "--corpus", str(model / "X.npy"), "--spec", "Flat",
                 "--out", str(out), "--quiet"]) == 0
    return out


@SETTINGS
@given(bad=bad_npy(), k=st.one_of(st.just("10"), st.sampled_from(["0", "-3", "2.5", "ten", ""])))
def test_search_refuses_bad_query_files_and_k(built, tmp_path_factory, capsys, bad, k):
    content, _ = bad
    tmp = tmp_path_factory.mktemp("q")
    if isinstance(content, bytes):
        (tmp / "Q.npy").write_bytes(content)
    else:
        np.save(tmp / "Q.npy", content, allow_pickle=True)
    code, err = run(["search", "--index", built, "--queries", tmp / "Q.npy", "-k", k], capsys)
    assert code in (1, 2) and err.count("\n") == 1, err
    assert ("-k" in err) if code == 2 else ("--queries" in err or "NaN or inf" in err), err


def test_search_and_info_refuse_a_damaged_index(built, tmp_path, capsys, synth):
    import shutil

    np.save(tmp_path / "Q.npy", synth[:2])
    shutil.copytree(built, tmp_path / "ix")
    with open(tmp_path / "ix" / "ids.npy", "r+b") as f:
        f.seek(-3, 2)
        f.write(b"\xff\xff\xff")
    for argv in (["search", "--index", tmp_path / "ix", "--queries", tmp_path / "Q.npy"], ["info", tmp_path / "ix"]):
        code, err = run(argv, capsys)
        assert code == 1 and "does not match its sha256" in err and err.count("\n") == 1, err


def test_take_rows_samples_a_mapped_file_like_fancy_indexing(tmp_path, monkeypatch):
    import smec_index.index.stream as stream

    X = np.random.default_rng(0).normal(size=(5000, 24)).astype(np.float16)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    monkeypatch.setattr(stream, "chunk_rows", lambda d: 333)  # many chunks, rows in several of them
    rows = np.random.default_rng(1).choice(5000, 700, replace=False)  # unsorted on purpose
    got = stream.take_rows(mapped, rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, X[rows].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(mapped), X)  # the released pages read back unchanged
