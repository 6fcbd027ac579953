"""The manifest of a saved index: format version, settings, counts and the sha256 of every file.

A save is one directory written through ``atomic_directory`` (temp dir, fsync, atomic swap), with
``manifest.json`` written last. Loading reads the manifest, refuses another kind or format version,
checks the manifest's own checksum (a flipped digit in it is caught too), then the size and sha256 of
every file it lists, before anything is deserialised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .._fsutil import sha256_file

__all__ = ["FORMAT_VERSION", "KIND", "MANIFEST", "write_manifest", "read_manifest"]

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


def read_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """The verified manifest of a saved index; ValueError naming what is wrong otherwise.

    ``verify=False`` skips the sha256 of the data files (sizes are still checked), for very large
    memory-mapped stores that would otherwise be read in full at load.
    """
    where = "read_index"
    if not root.is_dir():
        raise ValueError(f"{where}: {str(root)!r} is not a directory (a CompressedIndex is saved as one)")
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(f"{where}: {str(root)!r} has no {MANIFEST}; it is not a saved CompressedIndex")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: {path} is corrupt or truncated (not valid JSON: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{where}: {path} is not a CompressedIndex manifest (kind={kind!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: {path} has format version {manifest.get('format_version')!r}; "
                         f"this smec_index reads version {FORMAT_VERSION}")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != _body_sha256(body):
        raise ValueError(f"{where}: {path} does not match its own checksum; it was modified or damaged")
    for rel, info in manifest["files"].items():
        f = root / rel
        if not f.is_file():
            raise ValueError(f"{where}: {f} is listed in the manifest but missing")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise ValueError(f"{where}: {f} has {size} bytes; the manifest says {info['bytes']} (truncated or replaced)")
        if verify and sha256_file(f) != info["sha256"]:
            raise ValueError(f"{where}: {f} does not match its sha256 in the manifest; the file is corrupt")
    return manifest
