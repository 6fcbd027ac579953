"""The manifest of a saved index: format version, settings, counts and the sha256 of every file.

A save is one directory written through ``atomic_directory`` (temp dir, fsync, atomic swap), with
``manifest.json`` written last. Loading reads the manifest, refuses another kind or format version,
checks the manifest's own checksum (a flipped digit in it is caught too), that every path it lists stays
inside the directory (no ``..``, absolute paths or symbolic links) and that it lists every file there, then
the size and sha256 of every file, before anything is deserialised. Nothing is ever unpickled: engines read
their native formats, arrays are ``.npy`` with ``allow_pickle=False``, weights are safetensors, the rest JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from .._fsutil import TMP_PREFIX, json_kind, read_versioned_json, sha256_file

__all__ = ["FORMAT_VERSION", "KIND", "MANIFEST", "write_manifest", "read_manifest", "is_saved_index"]

FORMAT_VERSION = 1
KIND = "smec_index.CompressedIndex"
MANIFEST = "manifest.json"


def _body_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def write_manifest(root: Path, meta: dict[str, Any]) -> None:
    """Checksum every file under ``root`` and write ``manifest.json`` describing them and ``meta``."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(root).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    body = {"kind": KIND, "format_version": FORMAT_VERSION, **meta, "files": files}
    (root / MANIFEST).write_text(json.dumps({**body, "manifest_sha256": _body_sha256(body)}, indent=2))


def is_saved_index(path: Path) -> bool:
    """Whether ``path`` holds an earlier save (a manifest of this kind), which a new save may replace."""
    return json_kind(path / MANIFEST) == KIND


def _check_entry(root: Path, rel: Any, info: Any, where: str) -> Path:
    """The file a manifest entry names, refused if the entry could point outside ``root`` or is malformed."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ValueError(f"{where}: the manifest lists a file named {rel!r}; expected a relative path inside the index")
    parts = tuple(rel.split("/"))
    if PurePosixPath(rel).is_absolute() or any(x in ("", ".", "..") for x in parts):
        raise ValueError(f"{where}: the manifest lists {rel!r}, which points outside the index directory; refused")
    if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and info["bytes"] >= 0
            and isinstance(info.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])):
        raise ValueError(f"{where}: the manifest entry of {rel!r} is {info!r}; expected {{bytes, sha256}}")
    f = root.joinpath(*parts)
    for p in [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]:
        if p.is_symlink():
            raise ValueError(f"{where}: {p} is a symbolic link; a saved index holds only regular files")
    return f


def read_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """The verified manifest of a saved index; ValueError naming what is wrong otherwise.

    Every file under ``root`` must be listed, every listed file must be a regular file inside ``root``
    (no ``..``, no absolute path, no symbolic link) with the listed size and sha256. ``verify=False``
    skips the sha256 of the vector stores (``store-*.npy``: plain float arrays, read lazily when mapped),
    for very large indexes; their sizes are still checked, and every other file is always hashed.
    """
    where = "read_index"
    if root.name.startswith(TMP_PREFIX):
        raise ValueError(f"{where}: {str(root)!r} is a temporary directory of an unfinished save "
                         f"(prefix {TMP_PREFIX!r}), not an index")
    if not root.is_dir():
        raise ValueError(f"{where}: {str(root)!r} is not a directory (a CompressedIndex is saved as one)")
    path = root / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{where}: {str(root)!r} has no {MANIFEST}; it is not a saved CompressedIndex")
    manifest = read_versioned_json(path, KIND, FORMAT_VERSION, where, "a CompressedIndex manifest")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != _body_sha256(body):
        raise ValueError(f"{where}: {path} does not match its own checksum; it was modified or damaged")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{where}: {path} has no file list")
    checked = {rel: _check_entry(root, rel, info, where) for rel, info in files.items()}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            raise ValueError(f"{where}: {p} is a symbolic link; a saved index holds only regular files")
        if p.is_file() and rel != MANIFEST and rel not in files:
            raise ValueError(f"{where}: {p} is not listed in the manifest (added after the save, or the save was "
                             f"tampered with); refused")
    for rel, f in checked.items():
        info = files[rel]
        if not f.is_file():
            raise ValueError(f"{where}: {f} is listed in the manifest but missing")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise ValueError(f"{where}: {f} has {size} bytes; the manifest says {info['bytes']} (truncated or replaced)")
    to_hash = sorted((rel for rel in checked if verify or not _is_store(rel)), key=lambda rel: -files[rel]["bytes"])
    # hashlib releases the GIL: the big files (store, engine) are hashed on as many cores as there are
    with ThreadPoolExecutor(max_workers=max(1, min(len(to_hash), os.cpu_count() or 1))) as pool:
        digests = dict(zip(to_hash, pool.map(lambda rel: sha256_file(checked[rel]), to_hash)))
    for rel, digest in digests.items():
        if digest != files[rel]["sha256"]:
            raise ValueError(f"{where}: {checked[rel]} does not match its sha256 in the manifest; the file is corrupt")
    return manifest


def _is_store(rel: str) -> bool:
    return "/" not in rel and rel.startswith("store-") and rel.endswith(".npy")
