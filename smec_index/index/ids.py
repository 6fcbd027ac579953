"""External int64 ids <-> internal slots, with FAISS's two numbering rules.

Every vector lives in one *slot* (its row in the stores and its label in every backend); slots are
never reused, so backends never renumber. The external id of a slot follows FAISS:

- ``sequential`` (vectors added with ``add``): ids are positions ``0 .. ntotal-1`` in insertion order
  and are compacted on removal, as in ``IndexFlat`` (removing ids 0 and 1 makes the old id 2 the new 0).
- ``explicit`` (vectors added with ``add_with_ids``): ids are the caller's and stay put, as in
  ``IndexIDMap``.

One index holds one kind; mixing them is refused (FAISS would silently mean two different things).
"""

from __future__ import annotations

import numpy as np

from .errors import IndexStateError

__all__ = ["IdMap", "SEQUENTIAL", "EXPLICIT"]

SEQUENTIAL = "sequential"
EXPLICIT = "explicit"


class IdMap:
    """Slot <-> external id map: ``slot_ids[slot]`` is the id (-1 once removed); lookups by binary search.

    While every id is its own slot (sequential ids, nothing removed: the common case) the map holds no array
    at all, so an index pays nothing for ids beyond the engine's own 8-byte label; the first removal (or
    explicit ids) makes it a real map."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.mode: str | None = None
        self._identity = True  # slot == id for every slot, none removed; the arrays below are then unused
        self._slot_ids = np.empty(0, dtype=np.int64)
        self._n_slots = 0
        self._keys = np.empty(0, dtype=np.int64)  # live external ids, sorted
        self._vals = np.empty(0, dtype=np.int64)  # their slots

    def _materialise(self) -> None:
        if self._identity:
            self._slot_ids = np.arange(self._n_slots, dtype=np.int64)
            self._keys = self._slot_ids.copy()
            self._vals = self._slot_ids.copy()
            self._identity = False

    # ----------------------------------------------------------------- state
    @property
    def ntotal(self) -> int:
        return self._n_slots if self._identity else int(self._keys.shape[0])

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def slot_ids(self) -> np.ndarray:
        """External id of every slot so far, -1 for removed ones (a view; do not modify)."""
        if self._identity:
            return np.arange(self._n_slots, dtype=np.int64)
        return self._slot_ids[: self._n_slots]

    @property
    def nbytes(self) -> int:
        if self._identity:
            return 0
        return int(self._slot_ids.nbytes + self._keys.nbytes + self._vals.nbytes)

    @staticmethod
    def held_bytes(mode: str | None, n_slots: int, ntotal: int) -> int:
        """``nbytes`` of the map ``from_slot_ids`` rebuilds for a saved index with these counts: nothing while
        every id is its own slot (not explicit, nothing removed), else each slot's id and the sorted live ids
        with their slots (int64)."""
        if mode != EXPLICIT and ntotal == n_slots:
            return 0
        return 8 * (n_slots + 2 * ntotal)

    def live_slots(self) -> np.ndarray:
        """Slots of the live vectors in insertion order."""
        if self._identity:
            return np.arange(self._n_slots, dtype=np.int64)
        return np.flatnonzero(self.slot_ids >= 0).astype(np.int64)

    # ----------------------------------------------------------------- checks (no state change)
    def check_add(self, mode: str, ids: np.ndarray | None, where: str) -> None:
        """Refuse a mode mix, or explicit ids that repeat in the batch or are already present."""
        if self.mode is not None and self.mode != mode:
            have = "add (sequential ids)" if self.mode == SEQUENTIAL else "add_with_ids (explicit ids)"
            want = "add" if mode == SEQUENTIAL else "add_with_ids"
            raise IndexStateError(
                f"{where}: this index holds vectors added with {have}; {want} cannot be mixed with them "
                f"(FAISS numbers the two differently). Use one kind per index, or reset() it first."
            )
        if ids is None:
            return
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.shape[0] != ids.shape[0]:
            raise ValueError(f"{where}: ids repeat within the batch: {uniq[counts > 1][:10].tolist()}")
        present = self.lookup(uniq) >= 0
        if present.any():
            raise ValueError(f"{where}: ids already in the index: {uniq[present][:10].tolist()} "
                             f"({int(present.sum())} in all); remove them first")

    # ----------------------------------------------------------------- mutation
    def assign(self, n: int, ids: np.ndarray | None) -> np.ndarray:
        """Give n new vectors their slots (and ids: the next positions when ``ids`` is None); return the slots."""
        mode = SEQUENTIAL if ids is None else EXPLICIT
        slots = np.arange(self._n_slots, self._n_slots + n, dtype=np.int64)
        if mode == SEQUENTIAL and self._identity:
            self._n_slots += n
            self.mode = mode
            return slots
        self._materialise()
        if ids is None:
            ids = np.arange(self.ntotal, self.ntotal + n, dtype=np.int64)
        self._grow(self._n_slots + n)
        self._slot_ids[self._n_slots : self._n_slots + n] = ids
        self._n_slots += n
        if mode == SEQUENTIAL:
            # positions are already sorted and above every live id
            self._keys = np.concatenate([self._keys, ids])
            self._vals = np.concatenate([self._vals, slots])
        else:
            order = np.argsort(ids, kind="stable")
            keys, vals = ids[order], slots[order]
            at = np.searchsorted(self._keys, keys)
            self._keys = np.insert(self._keys, at, keys)
            self._vals = np.insert(self._vals, at, vals)
        self.mode = mode
        return slots

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Forget the given ids (unknown ones are ignored); return the freed slots. Sequential ids compact."""
        slots = self.lookup(np.unique(ids))
        slots = slots[slots >= 0]
        if slots.shape[0] == 0:
            return slots
        self._materialise()
        self._slot_ids[slots] = -1
        if self.mode == SEQUENTIAL:
            live = self.live_slots()
            self._slot_ids[live] = np.arange(live.shape[0], dtype=np.int64)
            self._keys = np.arange(live.shape[0], dtype=np.int64)
            self._vals = live
        else:
            keep = np.isin(self._vals, slots, invert=True)
            self._keys, self._vals = self._keys[keep], self._vals[keep]
        return slots

    def _grow(self, need: int) -> None:
        if need > self._slot_ids.shape[0]:
            cap = max(need, int(self._slot_ids.shape[0] * 1.5))
            grown = np.full(cap, -1, dtype=np.int64)
            grown[: self._n_slots] = self.slot_ids
            self._slot_ids = grown

    # ----------------------------------------------------------------- lookups
    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Slot of each id, -1 for ids that are not live."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._identity:
            return np.where((ids >= 0) & (ids < self._n_slots), ids, -1)
        if self._keys.shape[0] == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, ids), self._keys.shape[0] - 1)
        return np.where(self._keys[at] == ids, self._vals[at], -1)

    def to_external(self, slots: np.ndarray) -> np.ndarray:
        """External ids for backend labels; -1 stays -1."""
        if self._identity:
            return np.where(slots >= 0, slots, -1).astype(np.int64)
        out = np.full(slots.shape, -1, dtype=np.int64)
        found = slots >= 0
        out[found] = self._slot_ids[slots[found]]
        return out

    # ----------------------------------------------------------------- persistence
    @classmethod
    def from_slot_ids(cls, mode: str | None, slot_ids: np.ndarray) -> "IdMap":
        """Rebuild the map from a saved ``slot_ids`` array."""
        obj = cls()
        obj.mode = mode
        n = int(slot_ids.shape[0])
        if mode != EXPLICIT and np.array_equal(slot_ids, np.arange(n, dtype=np.int64)):
            obj._n_slots = n
            return obj
        obj._identity = False
        obj._slot_ids = np.array(slot_ids, dtype=np.int64)
        obj._n_slots = int(slot_ids.shape[0])
        live = obj.live_slots()
        ids = obj._slot_ids[live]
        order = np.argsort(ids, kind="stable")
        obj._keys, obj._vals = ids[order], live[order]
        return obj
