"""benchmarks/docstring_set.py: a retrieval set of docstrings (summary -> body), in BEIR layout with real vectors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from text_helpers import sentence_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import docstring_set  # noqa: E402

from smec_index.datasets import load_beir  # noqa: E402

BODY = "Parameters: x, the value to {0}; returns it {1} times over, with the units kept and the sign as given. " * 2


def _module(names: list[tuple[str, str, str]]) -> str:
    """Source with one function per (name, summary, body)."""
    return "".join(f'def {n}():\n    """{s}\n\n    {b}\n    """\n\n' for n, s, b in names)


def _tree(root: Path, n: int = 12) -> Path:
    pkg = root / "pkg"
    (pkg / "tests").mkdir(parents=True)
    fns = [(f"f{i}", f"Compute the thing number {i} of the model.", BODY.format(f"scale {i}", i)) for i in range(n)]
    fns += [("short_summary", "Too short.", BODY.format("a", 1)),
            ("short_body", "A summary that is long enough to keep.", "Too little."),
            ("twin_a", "The same summary in two places here.", BODY.format("twin a", 2)),
            ("twin_b", "The same summary in two places here.", BODY.format("twin b", 3)),
            ("copy", "Another summary over a body seen before.", BODY.format("scale 0", 0))]
    (pkg / "mod.py").write_text(_module(fns))
    (pkg / "tests" / "test_mod.py").write_text(_module([("hidden", "A summary that sits in a tests folder.",
                                                          BODY.format("t", 9))]))
    (pkg / "broken.py").write_text("def (:\n")
    return pkg


def test_extract_keeps_one_document_per_unique_summary(tmp_path):
    docs = docstring_set.extract([_tree(tmp_path)])
    names = [d.id.split(":")[1] for d in docs]
    # too short a summary or body, a summary shared by two, a body seen before, a tests folder: all left out
    assert names == [f"f{i}" for i in range(12)]
    assert docs[0].summary == "Compute the thing number 0 of the model."
    assert docs[0].body.startswith("Parameters: x, the value to scale 0;") and "\n" not in docs[0].body
    assert all(d.id.startswith("pkg:") for d in docs) and len({d.id for d in docs}) == len(docs)


def test_build_writes_a_beir_set_whose_queries_find_their_documents(tmp_path):
    pkg = _tree(tmp_path / "src", n=30)
    info = docstring_set.build(tmp_path / "set", [pkg], n_docs=24, seed=1, model=sentence_model())
    assert (info["n_found"], info["n_docs"], info["train_queries"], info["test_queries"]) == (30, 24, 5, 3)
    ds = load_beir(tmp_path / "set", docstring_set.MODEL)
    assert ds.corpus.shape == (24, 384) and ds.queries.shape == (8, 384)
    Q, qids, qrels = ds.split_queries("test")
    assert len(qids) == 3 and all(len(qrels[q]) == 1 and qrels[q].get(q[2:]) == 1 for q in qids)
    # the same seed gives the same set; the vectors are the model's, so each query is nearest its own body here
    again = docstring_set.build(tmp_path / "again", [pkg], n_docs=24, seed=1, model=sentence_model())
    assert again["n_docs"] == 24 and load_beir(tmp_path / "again", docstring_set.MODEL).doc_ids == ds.doc_ids
    Qtr, tr_ids, _ = ds.split_queries("train")
    top = np.argmax(np.vstack([Qtr, Q]) @ ds.corpus.T, axis=1)
    hits = [ds.doc_ids[j] == q[2:] for j, q in zip(top, tr_ids + qids)]
    assert sum(hits) >= 6
    meta = json.loads((tmp_path / "set" / "emb" / docstring_set.MODEL / "meta.json").read_text())
    assert meta["roots"] == [str(pkg)] and meta["seed"] == 1 and "machine" in meta


def test_build_refuses_too_few_documents(tmp_path):
    with pytest.raises(ValueError, match="n_docs must be at least 3, got 2"):
        docstring_set.build(tmp_path / "set", [tmp_path], n_docs=2)
    with pytest.raises(SystemExit, match="0 docstrings found"):
        docstring_set.build(tmp_path / "set", [tmp_path], n_docs=10, model=sentence_model())
