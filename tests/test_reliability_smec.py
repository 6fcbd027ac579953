"""Bad input to SMEC.fit / transform / extend / save / load, property-tested: a specific TypeError/ValueError
naming the argument, and a fitted compressor left exactly as it was (its maps and its answers)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from smec_index import SMEC
from smec_index._fsutil import write_manifest
from smec_index.compressor import FORMAT_VERSION


def reseal(path) -> None:
    """Rewrite a SMEC save's manifest over its current files, as whoever edits the files can."""
    (path / "manifest.json").unlink()
    write_manifest(path, "smec_index.SMEC", FORMAT_VERSION, {})

D = 48
# SMEC_HYPOTHESIS_DEEPER=10 runs every property with 10x the examples (CI keeps the default, 1)
DEEPER = int(os.environ.get("SMEC_HYPOTHESIS_DEEPER", "1"))
SETTINGS = settings(max_examples=40 * DEEPER, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-10, 10, allow_nan=False, width=32)


@pytest.fixture(scope="module")
def fitted(synth):
    """A fitted compressor for each family: a baseline (pca) and a short SMEC training (extend trains)."""
    return {"pca": SMEC(dims=(16, 8), method="pca", progress=False).fit(synth),
            "smec": SMEC(dims=(16, 8), method="smec", seed=0, progress=False, max_epochs=1,
                         ads_epochs=1).fit(synth[:300])}


def snapshot(smec: SMEC, Q: np.ndarray) -> tuple:
    maps = {d: (p.M.copy(), p.c.copy()) for d, p in smec.projections_.items()}
    return smec.dims_, maps, {d: smec.transform(Q, d) for d in smec.dims_}


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1].keys() == b[1].keys()
    for d in a[1]:
        np.testing.assert_array_equal(a[1][d][0], b[1][d][0])
        np.testing.assert_array_equal(a[1][d][1], b[1][d][1])
        np.testing.assert_array_equal(a[2].get(d), b[2].get(d))


def assert_refused(smec: SMEC, call, match: str, Q: np.ndarray) -> None:
    """``call(smec)`` raises TypeError/ValueError matching ``match`` and leaves the compressor as it was."""
    before = snapshot(smec, Q)
    with pytest.raises((TypeError, ValueError), match=match):
        call(smec)
    assert_same(before, snapshot(smec, Q))


@st.composite
def bad_matrix(draw, d: int | None = D):
    """Not a finite float (n >= 1, d) matrix: wrong width (when d is given), ndim, dtype, NaN/inf, empty, or
    not an array."""
    kinds = ["ndim", "dtype", "nonfinite", "empty", "list"] + (["width"] if d is not None else [])
    kind = draw(st.sampled_from(kinds))
    width = d or 48
    n = draw(st.integers(1, 6))
    if kind == "width":
        w = draw(st.integers(1, 2 * width).filter(lambda w: w != width))
        return draw(hnp.arrays(np.float32, (n, w), elements=finite))
    if kind == "ndim":
        return draw(hnp.arrays(np.float32, draw(st.sampled_from([(width,), (n, width, 1), ()])), elements=finite))
    if kind == "dtype":
        return draw(hnp.arrays(draw(st.sampled_from([np.int32, np.uint8, np.bool_, np.complex64])), (n, width)))
    if kind == "empty":
        return np.zeros((0, width), np.float32)
    if kind == "list":
        return [[0.5] * width] * n
    X = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64])), (n, width), elements=finite))
    X[draw(st.integers(0, n - 1)), draw(st.integers(0, width - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return X


@SETTINGS
@given(X=bad_matrix(d=None), method=st.sampled_from(["pca", "smec"]))
def test_fit_refuses_bad_corpus_and_keeps_the_old_fit(fitted, synth, X, method):
    assert_refused(fitted[method], lambda smec: smec.fit(X), r"^fit: corpus", synth[:5])


@SETTINGS
@given(Q=bad_matrix(), method=st.sampled_from(["pca", "smec"]))
def test_fit_refuses_bad_queries(fitted, synth, Q, method):
    assert_refused(fitted[method], lambda smec: smec.fit(synth, queries=Q, qrels=[(0, 0, 1.0)]), r"^fit: queries",
                   synth[:5])


bad_pair = st.one_of(
    st.tuples(st.integers(-5, -1) | st.integers(20, 100), st.integers(0, 10), st.just(1.0)),  # query row out of range
    st.tuples(st.integers(0, 9), st.integers(-5, -1) | st.integers(600, 10**6), st.just(1.0)),  # doc row out of range
    st.tuples(st.integers(0, 9), st.integers(0, 10), st.sampled_from([float("nan"), float("inf"), "1", None])),
    st.tuples(st.floats(0, 5), st.integers(0, 10), st.just(1.0)),  # a float row
    st.tuples(st.integers(0, 9), st.integers(0, 10)),  # two fields
    st.just("q0 d1 1"),
)


@SETTINGS
@given(pair=bad_pair)
def test_fit_refuses_bad_qrels(fitted, synth, pair):
    smec = fitted["pca"]
    before = snapshot(smec, synth[:5])
    with pytest.raises((TypeError, ValueError), match=r"^fit: qrels"):
        smec.fit(synth, queries=synth[:20], qrels=[(0, 1, 1.0), pair])
    with pytest.raises((TypeError, ValueError), match="qrels"):
        smec.fit(synth, queries=synth[:20], qrels=pair if isinstance(pair, str) else 5)
    assert_same(before, snapshot(smec, synth[:5]))


def test_fit_refuses_mismatched_arguments(fitted, synth):
    smec = fitted["pca"]
    before = snapshot(smec, synth[:5])
    with pytest.raises(ValueError, match="queries without qrels train smec's listwise distillation"):
        smec.fit(synth, queries=synth[:5])
    with pytest.raises(ValueError, match="qrels without queries"):
        smec.fit(synth, qrels=[(0, 1, 1.0)])
    with pytest.raises(ValueError, match="no pair with relevance > 0"):
        smec.fit(synth, queries=synth[:5], qrels=[(0, 1, 0.0)])
    with pytest.raises(ValueError, match=r"dims \(16, 8\) must all be < the corpus dim 12"):
        smec.fit(synth[:, :12])
    assert_same(before, snapshot(smec, synth[:5]))


@SETTINGS
@given(X=bad_matrix(), method=st.sampled_from(["pca", "smec"]))
def test_transform_refuses_bad_input(fitted, synth, X, method):
    with pytest.raises((TypeError, ValueError), match=r"^transform: X"):
        fitted[method].transform(X, 8)


@SETTINGS
@given(dim=st.one_of(st.integers().filter(lambda d: d not in (8, 16, D)), st.floats(), st.text(max_size=2), st.none()))
def test_transform_refuses_unknown_dims(fitted, synth, dim):
    with pytest.raises((TypeError, ValueError), match="dim"):
        fitted["pca"].transform(synth[:2], dim)


def test_unfitted_compressor_refuses_transform_extend_save(tmp_path, synth):
    fresh = SMEC(dims=(8,), method="pca")
    for call in (lambda: fresh.transform(synth[:2], 8), lambda: fresh.extend(4, synth), lambda: fresh.save(tmp_path / "m")):
        with pytest.raises(ValueError, match="not fitted"):
            call()
    assert not (tmp_path / "m").exists()


@SETTINGS
@given(dim=st.one_of(st.integers(-100, 0), st.integers(D, 10**6), st.sampled_from([8, 16]), st.floats(1, 40),
                     st.booleans(), st.text(max_size=2)),
       method=st.sampled_from(["pca", "smec"]))
def test_extend_refuses_bad_dims_and_keeps_the_fit(fitted, synth, dim, method):
    assert_refused(fitted[method], lambda smec: smec.extend(dim, synth), r"^extend: dim", synth[:5])


@SETTINGS
@given(X=bad_matrix(), method=st.sampled_from(["pca", "smec"]))
def test_extend_refuses_bad_corpus_and_keeps_the_fit(fitted, synth, X, method):
    assert_refused(fitted[method], lambda smec: smec.extend(4, X), r"^extend: corpus", synth[:5])


def test_extend_after_load_needs_a_corpus(fitted, synth, tmp_path):
    fitted["pca"].save(tmp_path / "m")
    back = SMEC.load(tmp_path / "m")
    with pytest.raises(ValueError, match="pass corpus="):
        back.extend(4)
    assert back.dims_ == (16, 8)


# --------------------------------------------------------------------- save and load
def test_save_replaces_an_earlier_save_and_refuses_anything_else(fitted, synth, tmp_path):
    smec = fitted["pca"]
    smec.save(tmp_path / "m")
    smec.save(tmp_path / "m")  # an earlier SMEC save: replaced atomically
    np.testing.assert_array_equal(SMEC.load(tmp_path / "m").transform(synth[:3], 8), smec.transform(synth[:3], 8))
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    (home / "config.json").write_text('{"theme": "dark"}')  # a config.json, but not a SMEC one
    (home / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a saved SMEC model"):
        smec.save(home)
    assert (home / "notes.txt").read_text() == "keep me" and (home / "config.json").read_text() == '{"theme": "dark"}'
    assert sorted(p.name for p in home.iterdir()) == ["config.json", "notes.txt", "weights.safetensors"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        smec.save(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "home", "m"]  # no temporary directory left


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 100) | st.floats(allow_nan=False) | st.text(max_size=6),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=6)


@settings(max_examples=50 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([("method",), ("dims",), ("init",), ("seed",), ("train_options",), ("fitted",),
                             ("fitted", "input_dim"), ("fitted", "dims"), ("fitted", "selected"), ("fitted", "supervised"),
                             ("sequential",)]),
       value=json_values)
def test_load_of_any_config_value_fails_cleanly(fitted, synth, tmp_path_factory, path, value):
    """Whatever a config field holds, load raises ValueError or gives a compressor that transforms."""
    src = tmp_path_factory.mktemp("m") / "m"
    fitted["smec"].save(src)
    cfg = json.loads((src / "config.json").read_text())
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (src / "config.json").write_text(json.dumps(cfg))
    reseal(src)
    try:
        back = SMEC.load(src)
    except ValueError as e:
        assert str(e).startswith("SMEC.load:"), str(e)
        return
    for d in back.dims_:
        assert back.transform(synth[:2], d).shape == (2, d)


@settings(max_examples=30 * DEEPER, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(["config.json", "weights.safetensors"]),
       how=st.sampled_from(["truncate", "garbage", "empty"]))
def test_load_of_a_damaged_file_fails_cleanly(fitted, tmp_path_factory, data, name, how):
    src = tmp_path_factory.mktemp("m") / "m"
    fitted["pca"].save(src)
    raw = (src / name).read_bytes()
    if how == "truncate":
        raw = raw[: data.draw(st.integers(1, len(raw) - 1))]
    elif how == "garbage":
        raw = data.draw(st.binary(min_size=1, max_size=64))
    else:
        raw = b""
    (src / name).write_bytes(raw)
    with pytest.raises(ValueError, match="SMEC.load"):
        SMEC.load(src)


def test_load_refuses_other_versions_and_non_saves(fitted, tmp_path):
    fitted["pca"].save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    reseal(tmp_path / "m")
    with pytest.raises(ValueError, match="format version 99"):
        SMEC.load(tmp_path / "m")
    shutil.rmtree(tmp_path / "m")
    with pytest.raises(ValueError, match="is not a saved SMEC"):
        SMEC.load(tmp_path / "m")
