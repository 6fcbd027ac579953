"""Crash-safe directory writes and file checksums, shared by everything that saves to disk.

A save builds the whole directory under a temporary name beside the target, fsyncs every file and
the directory, then swaps it into place. On Linux the swap is one atomic ``renameat2(RENAME_EXCHANGE)``,
so at every instant ``path`` is either the old complete directory or the new complete one. Elsewhere
it falls back to two renames (the old directory is moved aside first, so it is never half-overwritten).
Temporary directories carry the prefix ``.tmp-`` and the writer's pid: ``read_index`` refuses to load one, and
the next save to the same path removes those whose writer is gone. A save refuses to replace an existing
non-empty directory that is not an earlier save of the same kind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_directory", "sha256_file", "fsync_tree", "json_kind", "read_versioned_json", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"
_TMP_TAIL = re.compile(r"(?:old-)?(\d+)-[0-9a-f]{12}")
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


def _tmp_sibling(path: Path, tag: str = "") -> Path:
    """A fresh temporary name beside ``path``, carrying the writer's pid (for cleaning up after a crash)."""
    return path.parent / f"{TMP_PREFIX}{path.name}-{tag}{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _remove_stale(path: Path) -> None:
    """Remove temporary directories a killed writer left beside ``path`` (its pid is no longer running)."""
    prefix = f"{TMP_PREFIX}{path.name}-"
    for p in path.parent.glob(f"{glob.escape(prefix)}*"):
        m = _TMP_TAIL.fullmatch(p.name[len(prefix):])
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


@contextlib.contextmanager
def atomic_directory(path: str | Path, is_ours: Callable[[Path], bool] | None = None,
                     what: str = "a saved index") -> Iterator[Path]:
    """Yield a fresh temporary directory; on normal exit it replaces ``path`` atomically.

    ``path`` may be new, an empty directory, or (when ``is_ours`` says so) an earlier save; any other
    existing directory is refused with a ValueError before anything is written, because the save
    replaces the whole directory. On an exception the temporary directory is removed and ``path`` is
    left untouched; temporary directories of writers killed earlier are removed first.
    """
    path = Path(path).absolute()
    if path.name.startswith(TMP_PREFIX):
        raise ValueError(f"save: {str(path)!r} starts with {TMP_PREFIX!r}, which marks unfinished saves; choose "
                         f"another name")
    if path.exists() and not path.is_dir():
        raise ValueError(f"save: {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (is_ours is not None and is_ours(path)):
        raise ValueError(f"save: {str(path)!r} exists and is not {what}; a save replaces the whole directory, "
                         f"so it refuses to delete what is there: choose a new path or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            if _exchange(tmp, path):
                # tmp now holds the old directory
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = _tmp_sibling(path, "old-")
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_kind(path: Path) -> Any:
    """The ``kind`` field of a JSON object file, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def read_versioned_json(path: Path, kind: str, version: int, where: str, what: str) -> dict:
    """The JSON object in ``path`` (a save's description: manifest, config), checked to name ``kind`` and
    format ``version``; otherwise a ValueError that starts with ``where`` and says which of the three is wrong.
    ``what`` names the expected file in the message, e.g. "an SMEC config"."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: {path} is corrupt or truncated (not valid JSON: {e})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where}: {path} is not {what} (kind={found!r})")
    if data.get("format_version") != version:
        raise ValueError(f"{where}: {path} has format version {data.get('format_version')!r}; "
                         f"this smec_index reads version {version}")
    return data
