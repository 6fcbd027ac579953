"""Thread safety of CompressedIndex: many threads search (and one saves) while one thread adds and removes.

The writer applies a fixed sequence of batches; a second index replays the same sequence serially and
records, after every step, what a search returns. Every concurrent search must equal the serial answer of
one of those snapshots exactly (a half-added batch or a half-removed one matches none of them), and every
snapshot saved concurrently must load as one of them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index_cases import one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex, read_index

BATCH = 40
CASES = [("faiss", {"spec": "Flat"}), ("faiss", {"spec": "HNSW32", "params": {"efSearch": 1024}}),
         ("hnswlib", {"M": 16, "ef": 1024})]


def _ops(n_batches: int) -> list[tuple[str, int]]:
    """add every batch in turn; after every third add, remove the batch added two steps before."""
    ops = []
    for b in range(n_batches):
        ops.append(("add", b))
        if b % 3 == 2:
            ops.append(("remove", b - 2))
    return ops


def _apply(index: CompressedIndex, op: tuple[str, int], X: np.ndarray) -> None:
    kind, b = op
    ids = np.arange(b * 1000, b * 1000 + BATCH)
    if kind == "add":
        index.add_with_ids(X[b * BATCH : (b + 1) * BATCH], ids)
    else:
        assert index.remove_ids(ids) == BATCH


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[1].get("spec", c[0]))
def test_searches_and_saves_during_adds_and_removes_see_whole_snapshots(case, synth, tmp_path):
    backend, opts = case
    X, Q = synth[:480], synth[480:486]
    smec = SMEC(dims=(16, 8), method="pca", progress=False).fit(synth)
    ops = _ops(X.shape[0] // BATCH)
    K = X.shape[0]  # k above any ntotal: a result lists every live id, so it names its snapshot

    def fresh() -> CompressedIndex:
        ix = CompressedIndex(smec, dims=(8, 16), backend=backend, candidates=K, **opts)
        ix.train(synth)
        return ix

    serial, expected = fresh(), {}
    snapshot_ids = [frozenset()]
    for op in ops:
        _apply(serial, op, X)
        D, I = serial.search(Q, K)
        key = frozenset(I[0][I[0] >= 0].tolist())
        assert key not in expected  # every step is a distinct snapshot
        expected[key] = (D, I)
        snapshot_ids.append(key)

    live = fresh()
    stop, errors, seen, saves = threading.Event(), [], [], []
    searched = threading.Condition()
    count = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                D, I = live.search(Q, K)
                key = frozenset(I[0][I[0] >= 0].tolist())
                if key:  # the empty index pads every row
                    assert key in expected, f"a search saw {len(key)} ids: no snapshot has them"
                    np.testing.assert_array_equal(I, expected[key][1])
                    np.testing.assert_array_equal(D, expected[key][0])
                    seen.append(key)
                with searched:
                    count[0] += 1
                    searched.notify_all()
        except Exception as e:  # surfaced in the main thread
            errors.append(e)
            stop.set()

    def saver() -> None:
        try:
            for i in range(3):
                live.save(tmp_path / f"snap{i}")
                saves.append(tmp_path / f"snap{i}")
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    save_thread = None
    for j, op in enumerate(ops):
        with searched:  # let the readers search between steps, so that searches and steps interleave
            target = count[0] + 8
            searched.wait_for(lambda: count[0] >= target or stop.is_set(), timeout=5)
        _apply(live, op, X)
        if j == 3:
            save_thread = threading.Thread(target=saver)
            save_thread.start()
    stop.set()
    for t in threads + [save_thread]:
        t.join()
    assert not errors, errors[0]
    assert len(set(seen)) >= len(ops) // 2  # the readers really ran across the snapshots
    assert live.ntotal == serial.ntotal and np.array_equal(live.search(Q, K)[1], serial.search(Q, K)[1])
    for path in saves:
        D, I = read_index(path).search(Q, K)
        key = frozenset(I[0][I[0] >= 0].tolist())
        assert key in expected and np.array_equal(I, expected[key][1])
