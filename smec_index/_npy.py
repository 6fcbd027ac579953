"""Reading ``.npy`` files that come from outside: never unpickled, and checked from the header alone (magic,
dtype, declared size against the file's size) before anything is allocated. Shared by every module that
reads one (the data loader, the saved indexes, the CLI's inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NotNpyError", "npy_data_offset", "load_npy"]


class NotNpyError(ValueError):
    """A file given where a ``.npy`` array is expected is not one (text, CSV, a pickle, ``.npz``, damaged)."""


def npy_data_offset(path: Path, where: str = "read_index", name: str = "") -> tuple[int, tuple[int, ...], np.dtype, bool]:
    """Byte offset of the data in a ``.npy`` file, with its shape, dtype and Fortran flag (header only);
    ``NotNpyError`` (a ValueError starting with ``where``, naming the argument ``name``) when it is not one."""
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise NotNpyError(f"{where}: {name + ' ' if name else ''}{path} is not a .npy file (it starts with {magic!r}); expected an array "
                              f"written by numpy.save")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise NotNpyError(f"{where}: {path} is a .npy file of format version {version}; expected 1.0 or 2.0")
        except NotNpyError:
            raise
        except (ValueError, SyntaxError, TypeError) as e:
            raise NotNpyError(f"{where}: {path} has a damaged .npy header ({e})") from None
        return f.tell(), tuple(shape), np.dtype(dtype), bool(fortran)


def load_npy(path: str | Path, where: str, name: str = "the file", *, mmap_mode: Any = None) -> np.ndarray:
    """A ``.npy`` array read without ever unpickling, after checking from its header alone that it is a
    ``.npy`` file (``NotNpyError`` otherwise: a text file, a pickle, an ``.npz``), that it holds plain numbers
    (not Python objects) and that the file has exactly the bytes its declared shape needs, so a crafted header
    declaring 2**40 rows is refused before anything is allocated. ``mmap_mode`` as ``np.load``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{where}: {name} {str(path)!r} is not a file")
    offset, shape, dtype, _ = npy_data_offset(path, where, name)
    if dtype.hasobject:
        raise NotNpyError(f"{where}: {name} {path} holds Python objects (dtype {dtype}); refused: expected numbers")
    need = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    size = path.stat().st_size
    if size != need:
        raise ValueError(f"{where}: {name} {path} has {size} bytes; its header declares {dtype} {shape}, which needs "
                         f"{need} (truncated, padded or damaged)")
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
