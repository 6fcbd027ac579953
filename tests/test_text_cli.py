"""The command line from texts: build --texts, search --text, demo --query."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import run
from text_helpers import sentence_model

from smec_index.data import demo_data_dir
from smec_index.datasets import iter_jsonl
from smec_index.text import encoder as encoder_module


@pytest.fixture(autouse=True)
def shared_model(monkeypatch, tmp_path):
    """Every Encoder the CLI makes gets the session's already loaded model (same weights, no second load) and
    a cache in the test's own directory."""
    real = encoder_module.load_model

    def load(model="all-MiniLM-L6-v2", device=None, progress=True):
        return (sentence_model(), "all-MiniLM-L6-v2") if model == "all-MiniLM-L6-v2" else real(model, device, progress)

    monkeypatch.setattr(encoder_module, "load_model", load)
    monkeypatch.setenv("SMEC_INDEX_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def corpus(tmp_path):
    """80 SciFact claims as a BEIR JSON-lines corpus (short texts: quick to encode)."""
    recs = list(iter_jsonl(demo_data_dir() / "queries.jsonl.gz"))[:80]
    path = tmp_path / "claims.jsonl"
    path.write_text("".join(json.dumps({"_id": f"c{r['_id']}", "title": "", "text": r["text"]}) + "\n" for r in recs))
    return path, recs


def test_build_texts_then_search_text(corpus, tmp_path, capsys):
    path, recs = corpus
    out_dir = tmp_path / "ti"
    code, out, err = run(["build", "--texts", path, "--dims", "32", "--spec", "Flat", "--out", out_dir, "--quiet"],
                         capsys)
    assert code == 0, err
    assert re.search(r"built TextIndex\(80 texts, encoder='all-MiniLM-L6-v2' \(384 dims\), dims=\(32,\)", out)
    query = recs[5]["text"]
    code, out, err = run(["search", "--index", out_dir, "--text", query, "-k", "3"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "id", "score", "text"] and len(lines) == 4
    first = lines[1].split(maxsplit=3)
    assert first[:2] == ["1", f"c{recs[5]['_id']}"] and float(first[2]) > 0.99 and first[3] == query[:100]
    code, out, _ = run(["search", "--index", out_dir, "--text", query, "-k", "2", "--json", "--rerank", "none"], capsys)
    res = json.loads(out)
    assert res["rerank"] == "none" and [h["rank"] for h in res["hits"]] == [1, 2]
    assert res["hits"][0]["id"] == f"c{recs[5]['_id']}" and res["hits"][0]["text"] == query
    code, out, _ = run(["info", out_dir], capsys)
    assert code == 0 and re.search(r"vectors\s+80 ", out)


def test_build_texts_with_a_query_log(corpus, tmp_path, capsys):
    """--query-log: query texts without judgements; the compressor is fitted on them as unlabelled queries (250
    of them: a fifth, 50, held out to choose the stages)."""
    path, _ = corpus
    log = tmp_path / "log.txt"
    recs = list(iter_jsonl(demo_data_dir() / "queries.jsonl.gz"))[80:330]
    log.write_text("".join(r["text"].replace("\n", " ") + "\n" for r in recs))
    code, out, err = run(["build", "--texts", path, "--query-log", log, "--dims", "32", "--spec", "Flat", "--out",
                          tmp_path / "ti", "--quiet"], capsys)
    assert code == 0, err
    from smec_index.text import TextIndex

    smec = TextIndex.load(tmp_path / "ti").index.smec
    assert not smec.supervised_ and {r["held_out"] for r in smec.reports_} == {"queries"}


def test_text_cli_errors(corpus, tmp_path, capsys):
    path, _ = corpus
    cases = [
        (["build", "--texts", tmp_path / "none.jsonl", "--out", tmp_path / "o"], 1, "--texts: .*none.jsonl does not exist"),
        (["build", "--texts", path, "--corpus", "X.npy", "--out", tmp_path / "o"], 1, "--corpus goes with embeddings"),
        (["build", "--out", tmp_path / "o"], 1, "build needs --compressor MODEL_DIR and --corpus X.npy .* or --texts"),
        (["build", "--texts", path, "--dims", "512", "--out", tmp_path / "o"], 1, "must all be below the encoder's dim 384"),
        (["search", "--index", tmp_path], 2, "one of the arguments --queries --text is required"),
        (["search", "--index", tmp_path, "--text", "q"], 1, "is not a text index"),
        (["search", "--index", tmp_path, "--queries", "Q.npy", "--encoder", "m"], 1, "--encoder goes with --text"),
        (["demo", "--query", "x", "--fast"], 1, "--fast and --dims apply to the benchmark demo"),
        (["build", "--compressor", tmp_path, "--corpus", "X.npy", "--query-log", path, "--out", tmp_path / "o"], 1,
         "--query-log goes with --texts"),
        (["build", "--texts", path, "--query-log", path, "--method", "pca", "--out", tmp_path / "o"], 1,
         "queries without qrels train smec's listwise distillation"),
        (["demo", "--query", "  "], 1, "--query must be a non-empty text"),
    ]
    for argv, status, pattern in cases:
        code, _, err = run(argv, capsys)
        assert code == status and re.search(pattern, err), (argv, err)
    assert not (tmp_path / "o").exists()


def test_demo_query(capsys):
    code, out, err = run(["demo", "--query", "Vitamin D supplements prevent bone fractures", "--quiet"], capsys)
    assert code == 0, err
    assert "SMEC 64 dims + full-dim rerank of the top 100" in out and "Full 384 dims, exact" in out
    assert len(re.findall(r"^  [1-5]\. \[ *\d+\] 0\.\d{3}  ", out, re.M)) == 10
    assert re.search(r"SMEC searches 256 B/document \(1\.3 MiB for 5,183 documents\)", out)
    assert "full-dim search scans 1536 B/document (7.6 MiB), 6x more" in out
    same = int(re.search(r"Same documents in both top 5: (\d) of 5", out).group(1))
    assert same >= 3


def test_vector_search_of_a_text_index_prints_document_ids(corpus, tmp_path, capsys):
    import numpy as np

    from smec_index.text import TextIndex

    path, recs = corpus
    code, out, err = run(["build", "--texts", path, "--dims", "32", "--spec", "Flat", "--out", tmp_path / "ti",
                          "--quiet"], capsys)
    assert code == 0, err
    distinct = len({r["text"] for r in recs})  # a few claims repeat
    repeats = f", {80 - distinct} repeats of other texts" if distinct < 80 else ""
    assert f"80 texts: {distinct} encoded by the model{repeats}; embedding cache: {tmp_path / 'cache'}" in out, out
    np.save(tmp_path / "Q.npy", TextIndex.load(tmp_path / "ti").index.reconstruct_n(5, 2))  # documents 5 and 6
    code, out, err = run(["search", "--index", tmp_path / "ti", "--queries", tmp_path / "Q.npy", "-k", "2", "--json"],
                         capsys)
    assert code == 0, err
    firsts = [r["ids"][0] for r in json.loads(out)["results"]]
    assert firsts == [f"c{recs[5]['_id']}", f"c{recs[6]['_id']}"]  # document ids, not internal slots 5 and 6
    code, out, _ = run(["search", "--index", tmp_path / "ti", "--queries", tmp_path / "Q.npy", "-k", "1"], capsys)
    assert out.startswith(f"query 0: c{recs[5]['_id']} (")
    # the same texts again: every embedding comes from the cache, and the message says so
    code, out, err = run(["build", "--texts", path, "--dims", "32", "--spec", "Flat", "--out", tmp_path / "ti2",
                          "--quiet"], capsys)
    assert code == 0 and f"80 texts: 0 encoded by the model, {distinct} read from the embedding cache{repeats};" in out
    code, out, err = run(["build", "--texts", path, "--dims", "32", "--spec", "Flat", "--out", tmp_path / "ti3",
                          "--cache", "none", "--quiet"], capsys)
    assert code == 0 and f"80 texts: {distinct} encoded by the model{repeats}; no embedding cache" in out, err


def test_plain_text_ids_are_rows_counted_from_0(corpus, tmp_path, capsys):
    _, recs = corpus
    lines = [r["text"] for r in recs[:30]]
    (tmp_path / "docs.txt").write_text("\n".join(lines) + "\n")
    code, _, err = run(["build", "--texts", tmp_path / "docs.txt", "--dims", "16", "--method", "pca", "--spec", "Flat",
                        "--out", tmp_path / "ti", "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run(["search", "--index", tmp_path / "ti", "--text", lines[0], "-k", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["hits"][0]["id"] == "0", (out, err)  # the first line is row 0
