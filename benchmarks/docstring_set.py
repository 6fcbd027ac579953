"""A held-out retrieval set that no default was chosen on: Python docstrings, built from what is installed.

SciFact and debian are the development sets; every choice in the library was made on their training queries.
This builds a third set of another domain to check, before a change lands, that it carries over: documents are
the bodies of the docstrings of functions and classes (everything after the one-line summary) in installed
packages and the standard library, queries are the summaries (a summary shared by two docstrings is dropped, so
each query has one relevant document), a third of the documents get a query (two thirds of those train, one
third test). Vectors come from the bundled all-MiniLM-L6-v2 (no download). Then run ``quality.py`` or
``bytes.py`` with ``--data OUT``.

    python benchmarks/docstring_set.py --out /tmp/pydoc [--docs 20000] [--seed 0] [--roots DIR ...]

The set depends on what is installed: ``meta.json`` records the roots, every package's version and the counts.
Needs the ``embed`` extra (sentence-transformers and the bundled model).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import sys
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import machine_info  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
# packages read by default (those installed); the standard library is added unless --roots is given
PACKAGES = ("numpy", "scipy", "torch", "pandas", "sklearn", "transformers", "faiss", "sentence_transformers",
            "huggingface_hub", "matplotlib", "networkx", "sympy", "PIL", "requests", "urllib3", "setuptools", "pip",
            "jinja2", "tqdm", "tokenizers", "safetensors", "fsspec", "filelock", "packaging", "qdrant_client",
            "hnswlib", "pytest", "_pytest", "hypothesis", "click", "yaml", "attr", "pydantic", "grpc", "google",
            "certifi", "charset_normalizer", "idna", "mpmath", "psutil")
STDLIB_SKIP = ("site-packages", "test", "idlelib", "lib2to3")
SUMMARY_CHARS = (25, 200)  # a query's length in characters, inclusive
BODY_MIN, BODY_MAX = 150, 1500  # characters of a document: shorter bodies are dropped, longer ones cut


@dataclass(frozen=True)
class Doc:
    """One docstring: its id, its body (the document) and its summary (the query)."""

    id: str
    body: str
    summary: str


def default_roots() -> list[Path]:
    """The installed packages of ``PACKAGES`` and the standard library's modules and packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    std = Path(sysconfig.get_paths()["stdlib"])
    roots = [site / p for p in PACKAGES if (site / p).exists()]
    roots += sorted(p for p in std.iterdir() if (p.is_dir() and p.name not in STDLIB_SKIP and not p.name.startswith("."))
                    or p.suffix == ".py")
    return roots


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for p in sorted(root.rglob("*.py")):
        if not {"tests", "test"} & set(p.relative_to(root).parts[:-1]):
            yield p


def extract(roots: Iterable[Path]) -> list[Doc]:
    """Every docstring under ``roots`` with a summary of ``SUMMARY_CHARS`` and a body of at least ``BODY_MIN``
    characters, in file order; bodies seen before and summaries that occur more than once are dropped."""
    found: list[tuple[str, str, str]] = []
    for root in roots:
        root = Path(root)
        for f in _files(root):
            try:
                tree = ast.parse(f.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError, RecursionError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                doc = ast.get_docstring(node)
                parts = doc.strip().split("\n\n", 1) if doc else []
                if len(parts) < 2:
                    continue
                summary, body = " ".join(parts[0].split()), " ".join(parts[1].split())[:BODY_MAX]
                if SUMMARY_CHARS[0] <= len(summary) <= SUMMARY_CHARS[1] and len(body) >= BODY_MIN:
                    found.append((f"{root.name}:{node.name}", body, summary))
    counts = Counter(summary.lower() for _, _, summary in found)
    docs, bodies = [], set()
    for name, body, summary in found:
        h = hashlib.sha1(body.encode()).hexdigest()
        if counts[summary.lower()] == 1 and h not in bodies:
            bodies.add(h)
            docs.append(Doc(f"{name}:{h[:8]}", body, summary))
    return docs


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def build(out: Path, roots: list[Path] | None = None, n_docs: int = 20_000, seed: int = 0,
          model: Any = None) -> dict:
    """Write the set to ``out`` in BEIR layout with the model's vectors; returns (and writes to
    ``out/emb/<model>/meta.json``) what it holds and where it came from."""
    if n_docs < 3:
        raise ValueError(f"docstring_set: n_docs must be at least 3, got {n_docs}")
    from smec_index.text.encoder import load_model

    roots = default_roots() if roots is None else [Path(r) for r in roots]
    docs = extract(roots)
    n_found = len(docs)
    if n_found < 3:
        raise SystemExit(f"docstring_set: {n_found} docstrings found under {len(roots)} roots; at least 3 needed")
    random.Random(seed).shuffle(docs)
    docs = docs[:n_docs]
    asked = docs[: len(docs) // 3]
    train, test = asked[: 2 * len(asked) // 3], asked[2 * len(asked) // 3:]
    emb = out / "emb" / MODEL
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    emb.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "corpus.jsonl.gz", ({"_id": d.id, "title": "", "text": d.body} for d in docs))
    _write_jsonl(out / "queries.jsonl.gz", ({"_id": "q:" + d.id, "text": d.summary} for d in asked))
    for split, part in (("train", train), ("test", test)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q:{d.id}\t{d.id}\t1" for d in part]
        (out / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    st, _ = load_model(model or MODEL, progress=False)
    t = time.perf_counter()
    Q = st.encode([d.summary for d in asked], normalize_embeddings=True, batch_size=64)
    tq = time.perf_counter() - t
    C = st.encode([d.body for d in docs], normalize_embeddings=True, batch_size=64)
    tc = time.perf_counter() - t - tq
    np.save(emb / "corpus.f16.npy", np.asarray(C, dtype=np.float16))
    np.save(emb / "queries.f16.npy", np.asarray(Q, dtype=np.float16))
    (emb / "corpus_ids.txt").write_text("".join(d.id + "\n" for d in docs))
    (emb / "query_ids.txt").write_text("".join("q:" + d.id + "\n" for d in asked))
    dists = metadata.packages_distributions()
    versions = {d: metadata.version(d) for r in roots for d in dists.get(r.name, [])}
    info = {"model": MODEL, "dim": int(C.shape[1]), "n_docs": len(docs), "n_found": n_found, "train_queries": len(train),
            "test_queries": len(test), "seed": seed, "roots": [str(r) for r in roots], "versions": versions,
            "timings": {"queries_s": round(tq, 1), "corpus_s": round(tc, 1)}, "machine": machine_info()}
    (emb / "meta.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="directory to write the set to")
    p.add_argument("--docs", type=int, default=20_000, help="documents kept after the seeded shuffle (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--roots", nargs="+", type=Path, help="files or directories to read (default: PACKAGES and the "
                                                           "standard library)")
    a = p.parse_args(argv)
    info = build(a.out, a.roots, a.docs, a.seed)
    print(f"wrote {a.out}: {info['n_docs']:,} documents, {info['train_queries']:,} train and {info['test_queries']:,} "
          f"test queries ({info['timings']['corpus_s']:.0f} s to embed the corpus)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
