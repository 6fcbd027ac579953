"""Crash-safe directory writes and file checksums, shared by everything that saves to disk.

A save builds the whole directory under a temporary name beside the target, fsyncs every file and
the directory, then swaps it into place. On Linux the swap is one atomic ``renameat2(RENAME_EXCHANGE)``,
so at every instant ``path`` is either the old complete directory or the new complete one. Elsewhere
it falls back to two renames (the old directory is moved aside first, so it is never half-overwritten).
Temporary directories carry the prefix ``.tmp-`` and are never a valid save.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_directory", "sha256_file", "fsync_tree", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (directories last, so their entries are durable)."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    res = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return res == 0


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on normal exit it replaces ``path`` atomically.

    On an exception the temporary directory is removed and ``path`` is left untouched.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise ValueError(f"save: {str(path)!r} exists and is not a directory")
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            if _exchange(tmp, path):
                # tmp now holds the old directory
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = path.parent / f"{TMP_PREFIX}{path.name}-old-{uuid.uuid4().hex[:12]}"
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
