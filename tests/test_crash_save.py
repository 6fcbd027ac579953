"""Crash safety of ``write_index``: a process saving an index over an earlier save is killed with SIGKILL at
random points, several times. After every kill the path must load and answer exactly as the earlier save
or as the complete new one (never a mix, never an error), temporary directories must never load as an
index, and the next save must clean them up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from smec_index import SMEC, CompressedIndex, read_index
from smec_index._fsutil import TMP_PREFIX

N, D, EXTRA = 60_000, 64, 20_000

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from smec_index import read_index

    path = sys.argv[1]
    index = read_index(sys.argv[3])  # the old index, from a copy the test never touches
    index.add(np.load(sys.argv[2]))
    print("ready", flush=True)
    while True:  # saves over and over: the kill lands anywhere in one of them
        index.save(path)
        print("saved", flush=True)
""")


def _data(seed: int, n: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    X, extra, Q = _data(0, N), _data(1, EXTRA), _data(2, 20)
    smec = SMEC(dims=(16,), method="pca", progress=False).fit(X[:5000])
    index = CompressedIndex(smec, dims=(16,), spec="Flat", candidates=50)
    index.train(X[:1000])
    index.add(X)
    path = root / "ix"
    index.save(path)
    index.save(root / "base")
    old = index.search(Q, 10)
    np.save(root / "extra.npy", extra)
    index.add(extra)
    new = index.search(Q, 10)
    (root / "child.py").write_text(CHILD)
    t = time.perf_counter()
    index.save(root / "timing")
    return root, path, Q, old, new, time.perf_counter() - t


def _same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_sigkill_during_saves_never_loses_the_index(setup):
    root, path, Q, old, new, save_s = setup
    rng = np.random.default_rng(0)
    outcomes, interrupted = [], 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # kill points: early in the first save (old must survive), and anywhere in later ones
    delays = list(rng.uniform(0.0, save_s, 3)) + list(rng.uniform(0.0, 3 * save_s, 3))
    for delay in delays:
        child = subprocess.Popen([sys.executable, str(root / "child.py"), str(path), str(root / "extra.npy"), str(root / "base")],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        loaded = read_index(path)  # must load, verified, whatever the kill interrupted
        got = loaded.search(Q, 10)
        assert _same(got, old) or _same(got, new), "a crash left an index that answers like neither save"
        outcomes.append("new" if _same(got, new) else "old")
        left = list(root.glob(f"{TMP_PREFIX}*"))
        interrupted += bool(left)
        for tmp in left:
            with pytest.raises(ValueError, match="temporary directory of an unfinished save"):
                read_index(tmp)
        # the complete new index is not mistaken for the old one: counts come from the manifest
        assert loaded.ntotal in (N, N + EXTRA)
    assert interrupted >= 2, f"the kills never landed inside a save ({outcomes})"  # the test exercised crashes
    # a save by a live process removes what the killed writers left beside the path
    read_index(path).save(path)
    assert not list(root.glob(f"{TMP_PREFIX}*"))
    assert sorted(p.name for p in root.iterdir()) == ["base", "child.py", "extra.npy", "ix", "timing"]
