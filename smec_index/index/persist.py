"""The manifest of a saved index: format version, settings, counts and the sha256 of every file.

A save is one directory written through ``atomic_directory`` (temp dir, fsync, atomic swap), with
``manifest.json`` written last. Loading reads the manifest, refuses another kind or format version,
checks the manifest's own checksum (a flipped digit in it is caught too), that every path it lists stays
inside the directory (no ``..``, absolute paths or symbolic links) and that it lists every file there, then
the size and sha256 of every file, before anything is deserialised. Nothing is ever unpickled: engines read
their native formats, arrays are ``.npy`` with ``allow_pickle=False``, weights are safetensors, the rest JSON.
The machinery is shared with the SMEC and TextIndex saves (``smec_index._fsutil``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import _fsutil
from .._fsutil import MANIFEST

__all__ = ["FORMAT_VERSION", "KIND", "MANIFEST", "write_manifest", "read_manifest", "is_saved_index", "saved_files"]

FORMAT_VERSION = 1
KIND = "smec_index.CompressedIndex"


def write_manifest(root: Path, meta: dict[str, Any]) -> None:
    """Checksum every file under ``root`` and write ``manifest.json`` describing them and ``meta``."""
    _fsutil.write_manifest(root, KIND, FORMAT_VERSION, meta)


def saved_files(path: Path) -> set[str] | None:
    """The files an earlier save in ``path`` lists (which a new save may replace), or None if it is not one."""
    return _fsutil.manifest_files(path, KIND)


def is_saved_index(path: Path) -> bool:
    """Whether ``path`` holds a manifest of a saved CompressedIndex."""
    return saved_files(path) is not None


def read_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """The verified manifest of a saved index; ValueError naming what is wrong otherwise.

    Every file under ``root`` must be listed, every listed file must be a regular file inside ``root``
    (no ``..``, no absolute path, no symbolic link) with the listed size and sha256. ``verify=False``
    skips the sha256 of the vector stores (``store-*.npy``: plain float arrays, read lazily when mapped),
    for very large indexes; their sizes are still checked, and every other file is always hashed.
    """
    return _fsutil.read_manifest(Path(root), KIND, FORMAT_VERSION, "read_index", "a saved CompressedIndex",
                                 hash_file=None if verify else (lambda rel: not _is_store(rel)))


def _is_store(rel: str) -> bool:
    return "/" not in rel and rel.startswith("store-") and rel.endswith(".npy")
