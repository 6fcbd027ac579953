"""Reading texts: BEIR-style JSON lines (gzipped or not), plain text with one document a line, or a Python list.

A document's text is ``(title + " " + text).strip()``, the recipe of ``../shared/data`` (and of BEIR's and
MTEB's sentence-transformers wrappers), so embeddings made here match the shipped ones.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["read_texts", "doc_text", "check_texts", "check_ids", "check_id_list"]


def doc_text(record: dict[str, Any]) -> str:
    """``(title + " " + text).strip()`` of a BEIR record."""
    return (str(record.get("title") or "") + " " + str(record.get("text") or "")).strip()


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".json", ".ndjson", ".ndjson.gz"))


def read_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` from a file: BEIR JSON lines (``{"_id", "title", "text"}``; ``.jsonl`` or ``.jsonl.gz``)
    or plain text (one document a line, blank lines skipped; ids are the line numbers counted from 0, as
    strings, like every row number in this package: the first line is "0").

    A ``.gz`` suffix means gzip either way. Raises ValueError naming the file and line of a malformed record.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"read_texts: path must be a str or pathlib.Path, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"read_texts: {str(p)!r} is not a file")
    opener = gzip.open if p.suffix == ".gz" else open
    ids: list[str] = []
    texts: list[str] = []
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            if _is_jsonl(p):
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"read_texts: line {n} of {p} is not JSON ({e.msg}); expected "
                                         f'{{"_id", "title", "text"}} per line') from None
                    if not isinstance(rec, dict) or "_id" not in rec or not ("text" in rec or "title" in rec):
                        raise ValueError(f"read_texts: line {n} of {p} is {line.strip()[:80]!r}; expected an object "
                                         f'with "_id" and "text" (and optionally "title")')
                    ids.append(str(rec["_id"]))
                    texts.append(doc_text(rec))
            else:
                for n, line in enumerate(f):
                    text = line.strip()
                    if text:
                        ids.append(str(n))
                        texts.append(text)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"read_texts: {p} is not readable UTF-8 text ({e})") from None
    if not texts:
        raise ValueError(f"read_texts: {p} holds no document")
    return ids, texts


def check_texts(texts: Any, where: str, name: str = "texts") -> list[str]:
    """A non-empty list of str, else a TypeError/ValueError naming the argument, what was expected and what came."""
    if texts is None:
        raise TypeError(f"{where}: {name} is None; expected a list of str")
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{where}: {name} is a single {type(texts).__name__}; expected a list of str "
                        f"(wrap one text in a list)")
    if not isinstance(texts, Sequence):
        raise TypeError(f"{where}: {name} must be a list of str, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{where}: {name} is empty; expected at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{where}: {name}[{i}] is {type(t).__name__} ({t!r:.60}); expected str")
    return list(texts)


def check_ids(ids: Any, n: int, where: str) -> list[str | int]:
    """``n`` distinct ids, each a str or an int (not a bool), else a TypeError/ValueError naming the problem."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{where}: ids must be a list of str or int, got {type(ids).__name__}")
    if len(ids) != n:
        raise ValueError(f"{where}: ids has {len(ids)} items and texts {n}; expected one id per text")
    out: list[str | int] = []
    for i, x in enumerate(ids):
        if isinstance(x, np.integer):
            x = int(x)
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise TypeError(f"{where}: ids[{i}] is {type(x).__name__} ({x!r:.60}); expected str or int")
        out.append(x)
    seen: set = set()
    for i, x in enumerate(out):
        if x in seen:
            raise ValueError(f"{where}: ids repeat: {x!r} (at ids[{i}] and earlier); expected distinct ids")
        seen.add(x)
    return out


def check_id_list(ids: Any, where: str) -> list[str | int]:
    """A list of distinct ids of any length (for removal), refusing a single id given bare."""
    if isinstance(ids, (str, int, np.integer)) and not isinstance(ids, bool):
        raise TypeError(f"{where}: ids must be a list of ids, got a single {type(ids).__name__} (wrap it in a list)")
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        ids = ids.tolist()
    if not isinstance(ids, Sequence) or isinstance(ids, bytes):
        raise TypeError(f"{where}: ids must be a list of str or int, got {type(ids).__name__}")
    return check_ids(ids, len(ids), where)
