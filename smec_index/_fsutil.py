"""Crash-safe directory writes and file checksums, shared by everything that saves to disk.

A save builds the whole directory under a temporary name beside the target, fsyncs every file and
the directory, then swaps it into place. On Linux the swap is one atomic ``renameat2(RENAME_EXCHANGE)``,
so at every instant ``path`` is either the old complete directory or the new complete one. Elsewhere
it falls back to two renames (the old directory is moved aside first, so it is never half-overwritten).
Temporary directories carry the prefix ``.tmp-`` and the writer's pid: ``read_index`` refuses to load one, and
the next save to the same path removes those whose writer is gone. A save replaces an existing non-empty
directory only when every entry in it is a file listed by its own manifest of the same kind (so nothing a user
put there is ever deleted); a disk that fills during a save is reported as ``StorageFullError``.

Every save (CompressedIndex, SMEC, TextIndex) describes itself with a manifest written last: kind, format
version, settings, the size and sha256 of every file, and a checksum of the manifest itself.
``read_manifest`` checks all of it, refusing symbolic links and unlisted files, before anything is parsed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

__all__ = ["atomic_directory", "atomic_file", "sha256_file", "fsync_tree", "json_kind", "read_versioned_json",
           "TMP_PREFIX", "MANIFEST", "StorageFullError", "write_manifest", "read_manifest", "manifest_files", "storage_full"]

MANIFEST = "manifest.json"

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


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write one file whole or not at all: the block writes a temporary file beside ``path`` (parent folders
    made), which is flushed, fsynced and renamed over ``path`` when the block ends, and removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


class StorageFullError(OSError):
    """The disk (or the user's quota) filled while writing: a save, or the file of a file-backed store.

    An ``OSError`` with errno ``ENOSPC``, raised in place of what the writer itself raised (FAISS's
    RuntimeError, safetensors' SafetensorError, SQLite's OperationalError, numpy's short write), which is
    kept as ``__cause__``. What was being written is rolled back: an earlier save at the path is untouched.
    """


_FULL_MARKERS = ("no space left on device", "os error 28", "disk is full", "disk quota exceeded")
_FULL_BYTES = 1 << 20  # a filesystem with less than this free after a failed write is taken to be full


def storage_full(exc: BaseException, where: str | Path) -> bool:
    """Whether ``exc``, raised while writing under directory ``where``, means the disk or quota is full: an
    ENOSPC/EDQUOT OSError, a message that says so, or a failed write on a filesystem with under 1 MiB free."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, Exception) or isinstance(exc, (ValueError, TypeError, KeyError)):
        return False
    if any(m in str(exc).lower() for m in _FULL_MARKERS):
        return True
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return isinstance(exc, (OSError, RuntimeError)) and st.f_bavail * st.f_frsize < _FULL_BYTES


def _check_replaceable(path: Path, listed: Callable[[Path], set[str] | None] | None, what: str) -> None:
    """Refuse (ValueError, nothing touched) to replace a non-empty ``path`` unless every entry under it is a
    regular file that its own manifest lists (``listed(path)``: those paths, or None when it is not ``what``)."""
    if not any(path.iterdir()):
        return
    files = listed(path) if listed is not None else None
    if files is None:
        raise ValueError(f"save: {str(path)!r} exists and is not {what}; a save replaces the whole directory, "
                         f"so it refuses to delete what is there: choose a new path or remove it")
    parents = {PurePosixPath(f).parents[i].as_posix() for f in files for i in range(len(PurePosixPath(f).parts) - 1)}
    unexpected = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                unexpected.append(rel + " (a symbolic link)")
            elif p.is_dir():
                if rel not in parents and any(p.iterdir()):  # an empty one holds nothing to lose (engines make some)
                    unexpected.append(rel + "/")
            elif not p.is_file() or rel not in files:
                unexpected.append(rel)
        dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).relative_to(path).as_posix() in parents
                       and not (Path(dirpath) / d).is_symlink()]
    if unexpected:
        unexpected.sort()
        shown = ", ".join(unexpected[:10]) + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else "")
        raise ValueError(f"save: {str(path)!r} is {what}, but it also holds entries its manifest does not list: "
                         f"{shown}; a save replaces the whole directory, so it refuses to delete them: move them "
                         f"out, or save to a new path")


@contextlib.contextmanager
def atomic_directory(path: str | Path, listed: Callable[[Path], set[str] | None] | None = None,
                     what: str = "a saved index") -> Iterator[Path]:
    """Yield a fresh temporary directory; on normal exit it replaces ``path`` atomically.

    ``path`` may be new, an empty directory, or an earlier save whose every entry is a file its own
    manifest lists (``listed(path)`` returns those relative paths, or None when ``path`` is not ``what``);
    any other existing directory is refused with a ValueError naming the unexpected entries, before anything
    is written, because the save replaces the whole directory. On an exception the temporary directory is
    removed and ``path`` is left untouched (a full disk is raised as ``StorageFullError``); temporary
    directories of writers killed earlier are removed first.
    """
    path = Path(path).absolute()
    if path.name.startswith(TMP_PREFIX):
        raise ValueError(f"save: {str(path)!r} starts with {TMP_PREFIX!r}, which marks unfinished saves; choose "
                         f"another name")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"save: {str(path)!r} exists and is not a directory")
    if path.is_dir():
        _check_replaceable(path, listed, what)
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
    except BaseException as e:
        full = not isinstance(e, StorageFullError) and storage_full(e, tmp if tmp.exists() else path.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise StorageFullError(errno.ENOSPC, f"save: the disk holding {path.parent} is full ({e}); nothing was "
                                   f"written to {path}, an earlier save there is untouched") from e
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


# ----------------------------------------------------------------- manifests
def _body_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def write_manifest(root: Path, kind: str, version: int, meta: dict[str, Any], *, name: str = MANIFEST,
                   known: Mapping[str, dict[str, Any]] | None = None) -> None:
    """Checksum every file under ``root`` and write the manifest ``name`` describing them and ``meta``.

    ``known``: size and sha256 of files already hashed (by a nested save's own manifest), by relative path.
    """
    known = known or {}
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != name:
            info = known.get(rel)
            if info is None or info.get("bytes") != p.stat().st_size:
                info = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            files[rel] = {"bytes": info["bytes"], "sha256": info["sha256"]}
    body = {"kind": kind, "format_version": version, **meta, "files": files}
    (root / name).write_text(json.dumps({**body, "manifest_sha256": _body_sha256(body)}, indent=2))


def manifest_files(path: Path, kind: str, name: str = MANIFEST) -> set[str] | None:
    """The relative paths the manifest ``name`` in ``path`` lists, itself included, when it is a manifest of
    ``kind`` (checked against its own checksum); None otherwise. Decides what a new save may replace."""
    try:
        data = json.loads((Path(path) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != kind or not isinstance(data.get("files"), dict):
        return None
    if data.get("manifest_sha256") != _body_sha256({k: v for k, v in data.items() if k != "manifest_sha256"}):
        return None
    return {name, *(rel for rel in data["files"] if isinstance(rel, str))}


def _check_entry(root: Path, rel: Any, info: Any, where: str) -> Path:
    """The file a manifest entry names, refused if the entry could point outside ``root`` or is malformed."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ValueError(f"{where}: the manifest lists a file named {rel!r}; expected a relative path inside the save")
    parts = tuple(rel.split("/"))
    if PurePosixPath(rel).is_absolute() or any(x in ("", ".", "..") for x in parts):
        raise ValueError(f"{where}: the manifest lists {rel!r}, which points outside the save's directory; refused")
    if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and not isinstance(info["bytes"], bool)
            and info["bytes"] >= 0 and isinstance(info.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])):
        raise ValueError(f"{where}: the manifest entry of {rel!r} is {info!r}; expected {{bytes, sha256}}")
    f = root.joinpath(*parts)
    for p in [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]:
        if p.is_symlink():
            raise ValueError(f"{where}: {p} is a symbolic link; a save holds only regular files")
    return f


def read_manifest(root: Path, kind: str, version: int, where: str, what: str, *, name: str = MANIFEST,
                  hash_file: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """The verified manifest ``name`` of the save in directory ``root``; ValueError naming what is wrong.

    Refuses a temporary directory, another kind or format version, a manifest that does not match its own
    checksum, any symbolic link under ``root``, any file it does not list, a listed path that could leave
    ``root``, and a listed file that is missing, of another size or (for every file where ``hash_file(rel)``
    is true; default all) another sha256. ``what`` names the save in messages, e.g. "a saved SMEC".
    """
    if root.name.startswith(TMP_PREFIX):
        raise ValueError(f"{where}: {str(root)!r} is a temporary directory of an unfinished save "
                         f"(prefix {TMP_PREFIX!r}), not {what}")
    if not root.is_dir():
        raise ValueError(f"{where}: {str(root)!r} is not a directory; it is not {what}")
    path = root / name
    if path.is_symlink():
        raise ValueError(f"{where}: {path} is a symbolic link; a save holds only regular files")
    if not path.is_file():
        raise ValueError(f"{where}: {str(root)!r} has no {name}; it is not {what}")
    manifest = read_versioned_json(path, kind, version, where, f"a {kind.rsplit('.', 1)[-1]} manifest")
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
            raise ValueError(f"{where}: {p} is a symbolic link; a save holds only regular files")
        if not p.is_dir() and rel != name and rel not in files:  # a folder's files are checked one by one
            raise ValueError(f"{where}: {p} is not listed in the manifest (added after the save, or the save was "
                             f"tampered with); refused")
    for rel, f in checked.items():
        info = files[rel]
        if not f.is_file():
            raise ValueError(f"{where}: {f} is listed in the manifest but missing")
        size = f.stat().st_size
        if size != info["bytes"]:
            raise ValueError(f"{where}: {f} has {size} bytes; the manifest says {info['bytes']} (truncated or replaced)")
    to_hash = sorted((rel for rel in checked if hash_file is None or hash_file(rel)),
                     key=lambda rel: -files[rel]["bytes"])
    # hashlib releases the GIL: the big files (store, engine) are hashed on as many cores as there are
    with ThreadPoolExecutor(max_workers=max(1, min(len(to_hash), os.cpu_count() or 1))) as pool:
        digests = dict(zip(to_hash, pool.map(lambda rel: sha256_file(checked[rel]), to_hash)))
    for rel, digest in digests.items():
        if digest != files[rel]["sha256"]:
            raise ValueError(f"{where}: {checked[rel]} does not match its sha256 in the manifest; the file is corrupt")
    return manifest
