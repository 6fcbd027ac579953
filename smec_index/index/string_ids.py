"""A CompressedIndex whose vectors carry string ids (document ids such as ``"MED-10"``), as ``build --ids`` saves it.

FAISS and every engine label a vector with an int64; BEIR and most corpora name documents with strings. The
vectors are added with ``add`` (sequential ids 0..n-1, which cost no id-map memory), so the int64 id a search
returns is the position of the document's string id in a list saved beside the index. One directory, written
atomically like a TextIndex::

    string_ids.json   the manifest: kind, format version, ntotal, the size and sha256 of every file below
    ids.json          the ids: a JSON array of distinct non-empty strings, element i the id of vector i
    index/            the CompressedIndex (its own manifest with checksums; the compressor inside)

Loading checks the manifest (the index's own manifest is pinned by its sha256, so a re-save of ``index/``
alone is refused), the ids, and that the index still holds exactly those vectors under ids 0..n-1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._fsutil import MANIFEST, atomic_directory, manifest_files, read_manifest, write_manifest
from .compressed import CompressedIndex
from .ids import SEQUENTIAL
from .persist import saved_files as index_saved_files

__all__ = ["KIND", "FORMAT_VERSION", "MANIFEST_NAME", "IDS_FILE", "INDEX_DIR", "save", "load", "is_saved",
           "saved_files", "save_replacing", "read_ids_manifest", "read_ids", "check_matches", "check_string_ids"]

KIND = "smec_index.StringIdIndex"
FORMAT_VERSION = 1
MANIFEST_NAME = "string_ids.json"
IDS_FILE = "ids.json"
INDEX_DIR = "index"


def check_string_ids(ids: Any, n: int, where: str) -> list[str]:
    """``n`` distinct non-empty strings (a list, or a 1-D numpy array of str), else a TypeError/ValueError
    naming the first bad one."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{where}: ids must be a list of str, got {type(ids).__name__}")
    if len(ids) != n:
        raise ValueError(f"{where}: ids has {len(ids)} items; expected {n}, one per vector of the index")
    seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise TypeError(f"{where}: ids[{i}] is {type(x).__name__} ({x!r:.60}); expected str")
        if not x:
            raise ValueError(f"{where}: ids[{i}] is an empty string; expected a non-empty id")
        if x in seen:
            raise ValueError(f"{where}: ids[{i}] repeats {x!r} of ids[{seen[x]}]; expected distinct ids")
        seen[x] = i
    return list(ids)


def _check_index(index: Any, where: str) -> None:
    """The index numbers its vectors 0..ntotal-1 by slot (added with ``add``, nothing removed)."""
    if not isinstance(index, CompressedIndex):
        raise TypeError(f"{where}: index must be a CompressedIndex, got {type(index).__name__}")
    if index._ids.mode not in (None, SEQUENTIAL) or index._ids.n_slots != index.ntotal:
        raise ValueError(f"{where}: string ids need an index whose vectors were added with add() (ids 0..n-1) "
                         f"and none removed; this one has {index._ids.mode} ids, {index.ntotal} vectors in "
                         f"{index._ids.n_slots} slots")


def saved_files(path: Path) -> set[str] | None:
    """The files an earlier string-id save in ``path`` lists (which a new save may replace), else None."""
    return manifest_files(Path(path), KIND, MANIFEST_NAME)


def is_saved(path: str | Path) -> bool:
    """Whether ``path`` holds the manifest of a CompressedIndex saved with string ids."""
    return saved_files(Path(path)) is not None


def _either_save(path: Path) -> set[str] | None:
    return saved_files(path) or index_saved_files(path)


def save(index: CompressedIndex, ids: Sequence[str], path: str | Path) -> None:
    """Write ``index`` and the string id of each of its vectors (``ids[i]`` for vector i) to directory ``path``
    atomically. ``path`` may be new, empty, or an earlier save of either kind (with or without string ids)
    holding only the files its manifest lists; anything else is refused before anything is written."""
    where = "string_ids.save"
    _check_index(index, where)
    ids = check_string_ids(ids, index.ntotal, where)
    with atomic_directory(path, _either_save, "a saved index") as tmp:
        index.save(tmp / INDEX_DIR)
        (tmp / IDS_FILE).write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        inner = json.loads((tmp / INDEX_DIR / MANIFEST).read_text(encoding="utf-8"))["files"]
        write_manifest(tmp, KIND, FORMAT_VERSION, {"ntotal": len(ids)}, name=MANIFEST_NAME,
                       known={f"{INDEX_DIR}/{rel}": info for rel, info in inner.items()})


def save_replacing(index: CompressedIndex, path: str | Path) -> None:
    """``index.save(path)``, where ``path`` may also hold an earlier save with string ids (then replaced as a
    whole, atomically: the index is saved inside a temporary directory that takes the old one's place)."""
    if not is_saved(Path(path)):
        index.save(path)
        return
    with atomic_directory(path, _either_save, "a saved index") as tmp:
        index.save(tmp / "staging")
        for entry in (tmp / "staging").iterdir():
            entry.rename(tmp / entry.name)
        (tmp / "staging").rmdir()


def read_ids_manifest(path: str | Path, where: str = "string_ids.load") -> dict[str, Any]:
    """The verified manifest of a string-id save: every file's size, and the sha256 of ``ids.json`` and of the
    index's own manifest (which pins the index's files; ``CompressedIndex.load`` checks those)."""
    path = Path(path)
    inner = f"{INDEX_DIR}/{MANIFEST}"
    meta = read_manifest(path, KIND, FORMAT_VERSION, where, "a saved index with string ids", name=MANIFEST_NAME,
                         hash_file=lambda rel: not rel.startswith(INDEX_DIR + "/") or rel == inner)
    n = meta.get("ntotal")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0) or IDS_FILE not in meta["files"] \
            or inner not in meta["files"]:
        raise ValueError(f"{where}: {path / MANIFEST_NAME} lacks ntotal, {IDS_FILE} or {inner}; not a save with "
                         f"string ids")
    return meta


def read_ids(path: str | Path, n: int, where: str = "string_ids.load") -> list[str]:
    """The ``n`` string ids of ``path/ids.json`` (checked: a list of distinct non-empty strings)."""
    f = Path(path) / IDS_FILE
    try:
        ids = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: {f} is not valid JSON ({e})") from None
    try:
        return check_string_ids(ids, n, f"{where}: {f}")
    except TypeError as e:
        raise ValueError(str(e)) from None


def load(path: str | Path, *, full_store: str | None = None, verify: bool = True) -> tuple[CompressedIndex, list[str]]:
    """Reopen a directory written by ``save``: ``(index, ids)``, where ``ids[i]`` is the string id of the
    vector that ``index.search`` returns as ``i``. ``full_store`` and ``verify`` as in ``CompressedIndex.load``."""
    where = "string_ids.load"
    path = Path(path)
    meta = read_ids_manifest(path, where)
    ids = read_ids(path, meta["ntotal"], where)
    index = CompressedIndex.load(path / INDEX_DIR, full_store=full_store, verify=verify)
    check_matches(json.loads((path / INDEX_DIR / MANIFEST).read_text(encoding="utf-8")), len(ids), path, where)
    return index, ids


def check_matches(m: dict[str, Any], n: int, path: Path, where: str) -> None:
    """The index's manifest ``m`` numbers exactly ``n`` vectors 0..n-1 (sequential ids, none removed)."""
    if m.get("id_mode") not in (None, SEQUENTIAL) or not m.get("ntotal") == m.get("n_slots") == n:
        raise ValueError(f"{where}: {path} is inconsistent: {n} string ids, but the index holds "
                         f"{m.get('ntotal')} vectors in {m.get('n_slots')} slots with {m.get('id_mode')} ids "
                         f"(expected sequential ids 0..{n - 1}, none removed)")
