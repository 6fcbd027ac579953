"""``TextStore``: the texts of a ``TextIndex`` by id, in SQLite.

One table ``docs(slot INTEGER PRIMARY KEY, id UNIQUE, text)``: ``slot`` is the int64 id under which the
vector lives in the ``CompressedIndex`` (assigned here, never reused), ``id`` the caller's id (a str or an
int, kept as given: SQLite compares them by type, so ``1`` and ``"1"`` are different ids), ``text`` the
document. A ``meta`` table holds the format version and the next free slot.

A working store lives in memory; ``save`` writes a consistent copy to a file with SQLite's backup API, and
``load`` reads a saved file back into memory (so a saved index never changes until it is saved again).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["TextStore", "STORE_FORMAT_VERSION"]

STORE_FORMAT_VERSION = 1
_BATCH = 500  # SQLite's default limit on host parameters is 999


class TextStore:
    """Texts by id and by slot, in an in-memory SQLite database; thread-safe."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.RLock()
        with self._db:
            self._db.execute("CREATE TABLE docs (slot INTEGER PRIMARY KEY, id NOT NULL UNIQUE, text TEXT NOT NULL)")
            self._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("format_version", STORE_FORMAT_VERSION), ("next_slot", 0)])

    # ----------------------------------------------------------------- reads
    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    @property
    def next_slot(self) -> int:
        """The slot the next added text gets (slots are never reused, even after removal)."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'next_slot'").fetchone()[0])

    def slots_of(self, ids: Sequence[str | int]) -> dict[str | int, int]:
        """Slot by id, for the ids present."""
        out: dict[str | int, int] = {}
        with self._lock:
            for s in range(0, len(ids), _BATCH):
                part = list(ids[s : s + _BATCH])
                q = f"SELECT id, slot FROM docs WHERE id IN ({','.join('?' * len(part))})"
                out.update(self._db.execute(q, part).fetchall())
        return out

    def get(self, slots: Iterable[int]) -> dict[int, tuple[str | int, str]]:
        """``(id, text)`` by slot, for the slots present."""
        slots = [int(s) for s in slots]
        out: dict[int, tuple[str | int, str]] = {}
        with self._lock:
            for s in range(0, len(slots), _BATCH):
                part = slots[s : s + _BATCH]
                q = f"SELECT slot, id, text FROM docs WHERE slot IN ({','.join('?' * len(part))})"
                out.update((slot, (i, t)) for slot, i, t in self._db.execute(q, part))
        return out

    def text_of(self, id: str | int) -> str | None:
        """The text stored under ``id``, or None."""
        with self._lock:
            row = self._db.execute("SELECT text FROM docs WHERE id = ?", (id,)).fetchone()
        return None if row is None else row[0]

    def ids(self) -> list[str | int]:
        """Every id, in the order added."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM docs ORDER BY slot")]

    # ----------------------------------------------------------------- writes
    def add(self, ids: Sequence[str | int], texts: Sequence[str]) -> list[int]:
        """Store texts under new ids (the caller has checked they are new and distinct); returns their slots."""
        with self._lock, self._db:
            start = self.next_slot
            slots = list(range(start, start + len(ids)))
            self._db.executemany("INSERT INTO docs VALUES (?, ?, ?)", zip(slots, ids, texts))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_slot'", (start + len(ids),))
        return slots

    def remove_slots(self, slots: Sequence[int]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM docs WHERE slot = ?", [(int(s),) for s in slots])

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write a consistent copy of the whole store to a new SQLite file ``path``."""
        dst = sqlite3.connect(str(path))
        try:
            with self._lock:
                self._db.backup(dst)
        finally:
            dst.close()

    @classmethod
    def load(cls, path: str | Path) -> "TextStore":
        """Read a file written by ``save`` into memory; ValueError if it is not one or of another format version."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"TextStore.load: {str(path)!r} is missing")
        obj = cls.__new__(cls)
        obj._lock = threading.RLock()
        obj._db = sqlite3.connect(":memory:", check_same_thread=False)
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            src.backup(obj._db)
            version = obj._db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
            obj._db.execute("SELECT slot, id, text FROM docs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"TextStore.load: {path} is not a text store ({e})") from None
        finally:
            src.close()
        if version is None or version[0] != STORE_FORMAT_VERSION:
            raise ValueError(f"TextStore.load: {path} has format version {version and version[0]!r}; this smec_index "
                             f"reads version {STORE_FORMAT_VERSION}")
        return obj

    def close(self) -> None:
        self._db.close()
