"""IdMap: FAISS's two numbering rules over never-reused slots."""

from __future__ import annotations

import numpy as np
import pytest

from smec_index.index.errors import IndexStateError
from smec_index.index.ids import EXPLICIT, SEQUENTIAL, IdMap


def test_sequential_ids_are_positions_and_compact():
    m = IdMap()
    np.testing.assert_array_equal(m.assign(5, None), np.arange(5))
    assert m.mode == SEQUENTIAL and m.ntotal == 5
    np.testing.assert_array_equal(m.remove(np.array([0, 3, 99])), [0, 3])
    np.testing.assert_array_equal(m.slot_ids, [-1, 0, 1, -1, 2])  # survivors renumbered in order
    np.testing.assert_array_equal(m.assign(2, None), [5, 6])  # slots are never reused
    np.testing.assert_array_equal(m.lookup(np.array([0, 3, 4, 5])), [1, 5, 6, -1])
    np.testing.assert_array_equal(m.to_external(np.array([[6, -1, 2]])), [[4, -1, 1]])
    np.testing.assert_array_equal(m.live_slots(), [1, 2, 4, 5, 6])


def test_explicit_ids_are_stable():
    m = IdMap()
    m.assign(3, np.array([30, 10, 20]))
    m.assign(2, np.array([5, 40]))
    assert m.mode == EXPLICIT
    np.testing.assert_array_equal(m.lookup(np.array([5, 10, 20, 30, 40, 7])), [3, 1, 2, 0, 4, -1])
    m.remove(np.array([10, 40]))
    np.testing.assert_array_equal(m.lookup(np.array([5, 10, 20, 30, 40])), [3, -1, 2, 0, -1])
    np.testing.assert_array_equal(m.slot_ids, [30, -1, 20, 5, -1])
    assert m.ntotal == 3


def test_checks_refuse_mixing_and_duplicates_without_changing_state():
    m = IdMap()
    m.assign(2, np.array([1, 2]))
    with pytest.raises(IndexStateError, match="cannot be mixed"):
        m.check_add(SEQUENTIAL, None, "add")
    with pytest.raises(ValueError, match=r"repeat within the batch: \[4\]"):
        m.check_add(EXPLICIT, np.array([4, 4, 5]), "add_with_ids")
    with pytest.raises(ValueError, match=r"already in the index: \[2\]"):
        m.check_add(EXPLICIT, np.array([2, 3]), "add_with_ids")
    m.check_add(EXPLICIT, np.array([3]), "add_with_ids")
    assert m.ntotal == 2 and m.n_slots == 2


def test_rebuild_from_saved_slot_ids():
    m = IdMap()
    m.assign(4, np.array([8, 6, 4, 2]))
    m.remove(np.array([6]))
    back = IdMap.from_slot_ids(m.mode, m.slot_ids.copy())
    ids = np.array([2, 4, 6, 8])
    np.testing.assert_array_equal(back.lookup(ids), m.lookup(ids))
    assert back.ntotal == 3 and back.n_slots == 4


def test_sequential_ids_cost_no_memory_until_a_removal():
    m = IdMap()
    m.assign(1000, None)
    m.assign(500, None)
    assert m.nbytes == 0 and m.ntotal == m.n_slots == 1500
    np.testing.assert_array_equal(m.lookup(np.array([0, 1499, 1500, -1])), [0, 1499, -1, -1])
    np.testing.assert_array_equal(m.to_external(np.array([[3, -1, 1499]])), [[3, -1, 1499]])
    np.testing.assert_array_equal(m.slot_ids, np.arange(1500))
    m.remove(np.array([2000]))  # nothing to remove: still free
    assert m.nbytes == 0
    m.remove(np.array([0]))
    assert m.nbytes > 0 and m.ntotal == 1499
    np.testing.assert_array_equal(m.lookup(np.array([0, 1498, 1499])), [1, 1499, -1])
    again = IdMap.from_slot_ids(SEQUENTIAL, np.arange(7, dtype=np.int64))
    assert again.nbytes == 0 and again.ntotal == 7
    kept = IdMap.from_slot_ids(SEQUENTIAL, np.array([-1, 0, 1], dtype=np.int64))
    assert kept.nbytes > 0 and kept.ntotal == 2
    explicit = IdMap.from_slot_ids(EXPLICIT, np.arange(3, dtype=np.int64))
    assert explicit.nbytes > 0 and explicit.mode == EXPLICIT


def test_held_bytes_is_the_nbytes_of_the_rebuilt_map():
    """What ``info`` counts for a saved index without loading it: the map ``from_slot_ids`` rebuilds."""
    for mode, slot_ids in ((SEQUENTIAL, np.arange(5)), (SEQUENTIAL, np.array([-1, 0, 1, 2, -1])),
                           (EXPLICIT, np.array([7, 3, -1, 9])), (None, np.empty(0, dtype=np.int64))):
        rebuilt = IdMap.from_slot_ids(mode, slot_ids.astype(np.int64))
        assert IdMap.held_bytes(mode, slot_ids.size, int((slot_ids >= 0).sum())) == rebuilt.nbytes
