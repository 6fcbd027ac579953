"""The ``smec-index`` command line: every subcommand's happy path, --help, and its bad-input messages."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from conftest import write_toy_beir

from smec_index import SMEC, read_index
from smec_index.cli import build_parser, main
from smec_index.demo import FAST

SUBCOMMANDS = ("demo", "train", "build", "search", "bench", "advise", "info")
TINY = ["--max-epochs", "1", "--ads-epochs", "1", "--patience", "1"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) -> (exit status, stdout, stderr); argparse's exits count as statuses."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def files(tmp_path_factory, synth, synth_supervised):
    """X.npy (600 x 48), Q.npy (80 x 48), qrels.tsv (query row, doc row, 1), ids.txt, and a trained PCA model."""
    root = tmp_path_factory.mktemp("cli")
    Q, pairs = synth_supervised
    np.save(root / "X.npy", synth.astype(np.float16))
    np.save(root / "Q.npy", Q)
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{int(r)}\n" for q, d, r in pairs))
    (root / "ids.txt").write_text("\n".join(str(1000 + 3 * i) for i in range(synth.shape[0])))
    SMEC((16, 8), "pca").fit(synth).save(root / "pca")
    return root


def test_console_script_is_declared():
    eps = metadata.entry_points(group="console_scripts")
    assert any(ep.name == "smec-index" and ep.value == "smec_index.cli:main" for ep in eps)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: smec-index {command}")
    if command in ("demo", "train", "bench", "advise", "build", "search"):
        assert "--quiet" in out


def test_parser_lists_every_subcommand():
    text = build_parser().format_help()
    assert all(c in text for c in SUBCOMMANDS)


def test_train_build_search_info(files, tmp_path, capsys, synth):
    model, index_dir = tmp_path / "model", tmp_path / "index"
    code, out, err = run(["train", "--corpus", files / "X.npy", "--dims", "16,8", "--out", model, "--quiet", *TINY],
                         capsys)
    assert code == 0, err
    assert "trained smec (unsupervised)" in out and SMEC.load(model).dims_ == (16, 8)
    code, out, err = run(["build", "--compressor", model, "--corpus", files / "X.npy", "--ids", files / "ids.txt",
                          "--dims", "8,16", "--spec", "HNSW32", "--param", "efSearch=32", "--out", index_dir, "--quiet"],
                         capsys)
    assert code == 0, err
    index = read_index(index_dir)
    assert index.ntotal == 600 and index.dims == (8, 16) and index.backends[8].options()["params"] == {"efSearch": 32}
    code, out, err = run(["search", "--index", index_dir, "--queries", files / "Q.npy", "-k", "3", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    D, I = index.search(np.load(files / "Q.npy"), 3)
    assert got["k"] == 3 and got["dim"] == 8 and got["rerank"] == "full" and len(got["results"]) == 80
    assert [r["ids"] for r in got["results"]] == I.tolist()
    assert np.allclose([r["scores"] for r in got["results"]], D, atol=1e-5)
    assert all(i >= 1000 and (i - 1000) % 3 == 0 for r in got["results"] for i in r["ids"])  # the --ids ids
    code, out, err = run(["search", "--index", index_dir, "--queries", files / "Q.npy", "-k", "2", "--rerank", "none"],
                         capsys)
    assert code == 0 and out.startswith("query 0: ") and len(out.splitlines()) == 80 and "QPS" in err
    code, out, err = run(["info", index_dir], capsys)
    assert code == 0, err
    assert re.search(r"vectors\s+600 \(caller-chosen int64 ids\)", out)
    assert re.search(r"dims\s+8, 16: search at 8, rerank 'full'", out) and "format version 1" in out
    assert "smec, dims 16, 8, unsupervised" in out and "B/vector" in out
    code, out, _ = run(["info", index_dir, "--json", "--no-verify"], capsys)
    info = json.loads(out)
    assert info["ntotal"] == 600 and info["dims"] == [8, 16] and info["total_bytes"] == sum(info["bytes"].values())


def test_train_supervised_from_files(files, tmp_path, capsys):
    code, out, err = run(["train", "--corpus", files / "X.npy", "--queries", files / "Q.npy", "--qrels",
                          files / "qrels.tsv", "--dims", "8", "--method", "search-adaptor", "--out",
                          tmp_path / "m", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert "(supervised)" in out and SMEC.load(tmp_path / "m").supervised_


def test_train_on_unlabelled_queries(files, tmp_path, capsys):
    """--queries without --qrels: smec distils on them (80 queries: a fifth is too few to hold out, so held-out
    rows score the stages); with --data, --mode unlabelled takes the train split's queries without their
    judgements."""
    code, out, err = run(["train", "--corpus", files / "X.npy", "--queries", files / "Q.npy", "--dims", "16,8",
                          "--out", tmp_path / "m", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert "(unsupervised, 80 unlabelled queries)" in out
    smec = SMEC.load(tmp_path / "m")
    assert not smec.supervised_ and {r["held_out"] for r in smec.reports_} == {"rows"}
    assert all("corpus-only" in r["candidates"] for r in smec.reports_)
    data = write_toy_beir(tmp_path / "beir", n_docs=120, n_queries=40, dim=16)
    code, out, err = run(["train", "--data", data, "--model", "toy", "--mode", "unlabelled", "--dims", "8,4",
                          "--out", tmp_path / "m2", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert "unlabelled queries)" in out and not SMEC.load(tmp_path / "m2").supervised_


def test_train_with_a_code_and_build_with_it(files, tmp_path, capsys):
    """--code fits a quantization-aware compressor; build then indexes with that code; bad uses are refused."""
    code, out, err = run(["train", "--corpus", files / "X.npy", "--dims", "16,8", "--code", "rabitq1", "--out",
                          tmp_path / "m", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert SMEC.load(tmp_path / "m").code == "rabitq1"
    code, out, err = run(["build", "--compressor", tmp_path / "m", "--corpus", files / "X.npy", "--out",
                          tmp_path / "ix", "--quiet"], capsys)
    assert code == 0, err
    assert read_index(tmp_path / "ix").code == "rabitq1"
    code, out, err = run(["info", tmp_path / "ix"], capsys)
    assert code == 0 and "code rabitq1" in out and "stages chosen for code rabitq1" in out
    code, _, err = run(["train", "--corpus", files / "X.npy", "--dims", "8", "--code", "qdrant-int8", "--out",
                        tmp_path / "bad", "--quiet", *TINY], capsys)
    assert code == 1 and "--code: SMEC: code must be None or one of" in err and not (tmp_path / "bad").exists()
    code, _, err = run(["train", "--corpus", files / "X.npy", "--queries", files / "Q.npy", "--qrels",
                        files / "qrels.tsv", "--dims", "8", "--code", "rabitq1", "--out", tmp_path / "bad", "--quiet",
                        *TINY], capsys)
    assert code == 1 and "needs unsupervised training" in err and not (tmp_path / "bad").exists()


def test_train_on_a_data_dir_and_bench(tmp_path, capsys):
    data = write_toy_beir(tmp_path / "beir", n_docs=40, n_queries=10, dim=16)
    code, out, err = run(["train", "--data", data, "--model", "toy", "--mode", "supervised", "--dims", "8,4",
                          "--out", tmp_path / "m", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert "toy" in out and SMEC.load(tmp_path / "m").supervised_
    code, out, err = run(["bench", "--data", data, "--model", "toy", "--methods", "pca,truncate", "--dims", "8,4",
                          "--json", tmp_path / "b.json", "--plot", tmp_path / "b.png", "--quiet"], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "b.json").read_text())
    keys = {"method", "dim", "mode", "ndcg@10", "recall@100", "mrr@10", "train_s", "train_threads"}
    assert all(set(r) == keys for r in payload["records"])
    assert {(r["method"], r["dim"]) for r in payload["records"]} >= {("pca", 8), ("truncate", 4), ("full", 16)}
    assert (tmp_path / "b.png").stat().st_size > 1000
    pca8 = next(r for r in payload["records"] if (r["method"], r["dim"], r["mode"]) == ("pca", 8, "unsupervised"))
    assert f"| pca | - | {pca8['ndcg@10']:.4f} |" in out  # columns: full dim, then 8, 4


def test_advise_table_and_recommendation_agree(files, tmp_path, capsys):
    code, out, err = run(["advise", "--corpus", files / "X.npy", "--compressor", files / "pca", "--target", "0.9",
                          "--candidates", "40", "--n-vectors", "1000000", "--json", tmp_path / "a.json", "--quiet"],
                         capsys)
    assert code == 0, err
    advice = json.loads((tmp_path / "a.json").read_text())
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \|.*\| ([a-z ]+) \|$", out, re.M)}
    assert rows == {r["dim"]: r["meets"] for r in advice["rows"]}
    first = next((d for d in sorted(rows) if rows[d] != "no"), None)
    assert advice["dim"] == first
    if first is not None:
        how = "with full-dim rerank" if rows[first] == "with rerank" else "without rerank"
        assert f"Recommended: {first} dims {how}" in out and "For 1,000,000 vectors" in out


def test_advise_on_a_data_dir_trains_and_uses_test_queries(tmp_path, capsys):
    data = write_toy_beir(tmp_path / "beir", n_docs=60, n_queries=10, dim=16)
    code, out, err = run(["advise", "--data", data, "--model", "toy", "--method", "pca", "--dims", "8,4", "-k", "5",
                          "--candidates", "20", "--quiet"], capsys)
    assert code == 0, err
    assert "pca (unsupervised), queries: 3 held-out queries" in out  # the toy test split judges 3 queries


def test_demo_fast_end_to_end(tmp_path, capsys):
    code, out, err = run(["demo", "--fast", "--quiet", "--out", tmp_path / "demo"], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    assert payload["n_docs"] == FAST.max_docs and payload["n_test_queries"] == FAST.max_queries
    assert payload["dims"] == [64, 32]
    prov = payload["provenance"]
    assert prov["command_line"].startswith("smec-index demo --fast") and prov["threads"]["faiss_qps"] == 1
    assert prov["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["commit"])
    assert 0 < payload["overlap"]["shared"] <= payload["overlap"]["test_relevant"]
    assert payload["train_threads"]["smec/supervised"] == 1 and payload["train_threads"]["pca/unsupervised"] is None
    records = payload["records"]
    for r in records:
        assert {"panel", "method", "mode", "codes", "dim", "rerank", "bytes_per_vector", "ndcg@10", "recall@100",
                "mrr@10", "qps", "train_s"} <= set(r)
        assert 0.0 <= r["ndcg@10"] <= 1.0 and r["qps"] > 0
    got = {(r["panel"], r["method"], r["codes"], r["dim"], r["rerank"]): r for r in records}
    # without labels first: SMEC, PCA, truncation, each with and without rerank; SMEC as SQ8 and RaBitQ codes;
    # full-dim RaBitQ with exact rerank; labels only in the second table
    for method in ("smec", "pca", "truncate"):
        assert {("unsupervised", method, "float32", 32, rr) for rr in ("none", "full")} <= set(got)
    assert got[("unsupervised", "smec", "SQ8", 32, "none")]["bytes_per_vector"] == 32
    assert got[("unsupervised", "smec", "RaBitQ", 32, "none")]["bytes_per_vector"] == 32 // 8 + 8
    assert got[("unsupervised", "full", "RaBitQ", 384, "full")]["bytes_per_vector"] == 384 // 8 + 8
    assert all(r["mode"] == "supervised" for r in records if r["panel"] == "supervised")
    first, second = out.index("Without labels"), out.index("With labels")
    assert first < second and "also positives of a train query" in out
    # the printed tables are the JSON: the 32-dim SMEC rows cell by cell
    line = next(ln for ln in out[:second].splitlines() if ln.startswith("| SMEC (no labels) | 32 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    plain, rr = got[("unsupervised", "smec", "float32", 32, "none")], got[("unsupervised", "smec", "float32", 32, "full")]
    assert cells[2:] == ["128", "12x", f"{plain['ndcg@10']:.4f}", f"{rr['ndcg@10']:.4f}", f"{plain['qps']:,.0f}",
                         f"{rr['qps']:,.0f}"]
    line = next(ln for ln in out[second:].splitlines() if ln.startswith("| SMEC (labels) | 32 |"))
    assert f"{got[('supervised', 'smec', 'float32', 32, 'none')]['ndcg@10']:.4f}" in line
    full = got[("unsupervised", "full", "float32", 384, "none")]
    assert re.search(rf"^\| full \| 384 \(full\) \| 1536 \| 1x \| {full['ndcg@10']:.4f} \|", out, re.M)
    assert "Example, SMEC without labels at 32 dims + rerank" in out


def test_demo_runs_without_matplotlib(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = run(["demo", "--fast", "--quiet", "--out", tmp_path / "demo"], capsys)
    assert code == 0, err
    assert (tmp_path / "demo" / "demo.json").is_file() and not (tmp_path / "demo" / "demo.png").exists()
    assert "no plot: pip install matplotlib" in out


# ----------------------------------------------------------------------------- bad input
def _bad_cases(f: Path, t: Path) -> list[tuple[list, int, str]]:
    X, Q, pca = f / "X.npy", f / "Q.npy", f / "pca"
    return [
        (["train", "--corpus", t / "missing.npy", "--out", t / "o"], 1, "--corpus: .*missing.npy does not exist"),
        (["train", "--corpus", X, "--dims", "abc", "--out", t / "o"], 2,
         "argument --dims: expected comma-separated positive integers such as 128,64,32, got 'abc'"),
        (["train", "--corpus", X, "--dims", "64,32", "--out", t / "o"], 1, "--dims: 64,32 must all be below the input dim 48"),
        (["train", "--corpus", X, "--qrels", f / "bad_qrels.tsv", "--out", t / "o"], 1,
         "--qrels judges rows of --queries; give --queries too"),
        (["train", "--corpus", X, "--queries", Q, "--method", "pca", "--out", t / "o"], 1,
         "--queries without --qrels train smec's listwise distillation; got --method pca"),
        (["train", "--corpus", f / "ints.npy", "--out", t / "o"], 1,
         r"--corpus: expected a 2-D float array \(n, D\) with n >= 1, got shape \(5, 3\), dtype int64"),
        (["train", "--corpus", f / "qrels.tsv", "--out", t / "o"], 1, "--corpus: .* is not a .npy array file"),
        (["train", "--corpus", X, "--queries", Q, "--qrels", f / "bad_qrels.tsv", "--out", t / "o"], 1,
         "--qrels: line 2 of .* is '0 x 1'; expected query_row<TAB>doc_row<TAB>relevance"),
        (["train", "--corpus", X, "--queries", Q, "--qrels", f / "far_qrels.tsv", "--out", t / "o"], 1,
         "--qrels: line 1 .* refers to query row 0 / doc row 9999; --queries has 80 rows and --corpus 600"),
        (["train", "--corpus", X, "--out", t / "o", "--max-epochs", "0"], 2,
         "argument --max-epochs: expected a positive integer, got '0'"),
        (["train", "--corpus", X, "--method", "zip", "--out", t / "o"], 2, "argument --method: invalid choice: 'zip'"),
        (["train", "--out", t / "o"], 2, "one of the arguments --data --corpus is required"),
        (["train", "--corpus", X, "--out", f / "occupied"], 1,
         "--out: .*occupied exists and is not a saved SMEC model; a save replaces the whole directory"),
        (["build", "--compressor", pca, "--corpus", f / "X20.npy", "--out", t / "o"], 1,
         r"--corpus: expected a 2-D float array \(n, 48\) with n >= 1, got shape \(600, 20\)"),
        (["build", "--compressor", pca, "--corpus", X, "--ids", f / "short_ids.txt", "--out", t / "o"], 1,
         "--ids: .* has 3 ids; expected 600, one per corpus row"),
        (["build", "--compressor", pca, "--corpus", X, "--dims", "7", "--out", t / "o"], 1,
         r"--dims: 7 not trained in .*pca \(it has 16, 8\); add a dim to a trained model with SMEC.extend"),
        (["build", "--compressor", pca, "--corpus", X, "--backend", "hnswlib", "--spec", "Flat", "--out", t / "o"], 1,
         "--spec and --param are FAISS options; --backend is 'hnswlib'"),
        (["build", "--compressor", pca, "--corpus", X, "--spec", "Bogus99", "--out", t / "o"], 1,
         "index_factory.*Bogus99.* failed"),
        (["build", "--compressor", t / "nomodel", "--corpus", X, "--out", t / "o"], 1, "--compressor: .* does not exist"),
        (["search", "--index", t / "noindex", "--queries", Q], 1, "--index: .*noindex does not exist"),
        (["search", "--index", f / "idx", "--queries", Q, "-k", "0"], 2, "argument -k: expected a positive integer"),
        (["search", "--index", f / "idx", "--queries", f / "X20.npy"], 1, r"expected a 2-D float array \(n, 48\)"),
        (["search", "--index", f / "idx", "--queries", Q, "--dim", "16"], 1,
         r"search: dim must be one of the configured dims \(8,\), got 16"),
        (["bench", "--methods", "smec,nope"], 2, "argument --methods: expected comma-separated names from"),
        (["bench", "--data", t / "nodata", "--model", "toy"], 1, "load_beir: data directory .* does not exist"),
        (["advise", "--corpus", X, "--target", "1.5"], 2, r"argument --target: expected a number in \(0, 1\]"),
        (["advise", "--corpus", X, "--data", t], 2, "argument --data: not allowed with argument --corpus"),
        (["advise", "--corpus", X, "--compressor", pca, "--method", "pca"], 1,
         "--method and training options apply when advise trains the compressor"),
        (["info", f], 1, "read_index: .* has no manifest.json; it is not a saved CompressedIndex"),
        (["demo", "--data", t / "nodata", "--out", t / "o"], 1, "load_beir: data directory .* does not exist"),
        (["demo", "--dims", "512", "--out", t / "o"], 1, r"demo: dims \(512,\) must all be < the embedding dim 384"),
        (["demo", "--out", f / "qrels.tsv"], 1, "demo: --out '.*qrels.tsv' exists and is not a directory"),
        (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
    ]


@pytest.fixture(scope="module")
def bad_files(files):
    np.save(files / "ints.npy", np.zeros((5, 3), dtype=np.int64))
    np.save(files / "X20.npy", np.zeros((600, 20), dtype=np.float32))
    (files / "bad_qrels.tsv").write_text("query-id\tcorpus-id\tscore\n0 x 1\n")
    (files / "far_qrels.tsv").write_text("0\t9999\t1\n")
    (files / "short_ids.txt").write_text("1\n2\n3\n")
    (files / "occupied").mkdir(exist_ok=True)
    (files / "occupied" / "keep.txt").write_text("user data")
    main(["build", "--compressor", str(files / "pca"), "--corpus", str(files / "X.npy"), "--dims", "8",
          "--out", str(files / "idx"), "--quiet"])
    return files


@pytest.mark.parametrize("case", range(len(_bad_cases(Path("f"), Path("t")))))
def test_bad_input_one_line_and_nothing_written(case, bad_files, tmp_path, capsys):
    argv, status, pattern = _bad_cases(bad_files, tmp_path)[case]
    code, out, err = run(argv, capsys)
    assert code == status, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything was written
    assert (bad_files / "occupied" / "keep.txt").read_text() == "user data"


# ----------------------------------------------------------------------------- traps a new user hit (issue 19)
def test_train_and_build_replace_an_earlier_save_only_with_force(files, tmp_path, capsys):
    model, index_dir = tmp_path / "model", tmp_path / "index"
    assert run(["train", "--corpus", files / "X.npy", "--method", "pca", "--dims", "16,8", "--out", model], capsys)[0] == 0
    before = (model / "config.json").read_bytes()
    code, _, err = run(["train", "--corpus", files / "X.npy", "--method", "pca", "--dims", "8", "--out", model], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "--out: " in err and "already holds a saved SMEC model; pass --force to replace it" in err
    assert (model / "config.json").read_bytes() == before and SMEC.load(model).dims_ == (16, 8)
    code, _, err = run(["train", "--corpus", files / "X.npy", "--method", "pca", "--dims", "8", "--out", model,
                        "--force"], capsys)
    assert code == 0, err
    assert SMEC.load(model).dims_ == (8,)
    build = ["build", "--compressor", model, "--corpus", files / "X.npy", "--spec", "Flat", "--out", index_dir]
    assert run(build, capsys)[0] == 0
    code, _, err = run(build, capsys)
    assert code == 1 and "already holds a saved index; pass --force" in err
    assert run([*build, "--force"], capsys)[0] == 0


def test_dims_in_any_order_are_sorted(files, tmp_path, capsys):
    code, _, err = run(["train", "--corpus", files / "X.npy", "--method", "pca", "--dims", "8,16,8", "--out",
                        tmp_path / "m"], capsys)
    assert code == 0, err
    assert SMEC.load(tmp_path / "m").dims_ == (16, 8)


def test_info_takes_index_like_search(files, tmp_path, capsys):
    build = ["build", "--compressor", files / "pca", "--corpus", files / "X.npy", "--spec", "Flat", "--out", tmp_path / "ix"]
    assert run(build, capsys)[0] == 0
    code, out, err = run(["info", "--index", tmp_path / "ix"], capsys)
    assert code == 0 and re.search(r"vectors\s+600 ", out), err
    code, _, err = run(["info", "--index", tmp_path / "ix", files], capsys)
    assert code == 1 and "disagree" in err
    code, _, err = run(["info"], capsys)
    assert code == 1 and "give INDEX_DIR or --index" in err


def test_advise_does_not_train_smec_unasked(files, tmp_path, capsys):
    code, _, err = run(["advise", "--corpus", files / "X.npy"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "no --compressor" in err and "--train" in err and "minutes" in err
    code, out, err = run(["advise", "--corpus", files / "X.npy", "--train", "--dims", "8", "--quiet", *TINY], capsys)
    assert code == 0, err
    assert "training smec on" in err and "Recommended" in out or "No dim" in out
    code, _, err = run(["advise", "--corpus", files / "X.npy", "--train", "--compressor", files / "pca"], capsys)
    assert code == 1 and "exclude each other" in err


def test_qrels_with_document_ids_get_a_hint(files, tmp_path, capsys):
    (tmp_path / "beir.tsv").write_text("query-id\tcorpus-id\tscore\n1\t31715818\t1\n")
    code, _, err = run(["train", "--corpus", files / "X.npy", "--queries", files / "Q.npy", "--qrels",
                        tmp_path / "beir.tsv", "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "doc row 31715818" in err and "0-based row numbers" in err and "--data DIR --mode supervised" in err


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """One latent "meaning" per text, embedded by two random "models" of the same dim (each a random linear map
    plus its own common direction, the anisotropy real embedding models have): a corpus and queries from model
    A, the same queries from model B, and an index of the corpus."""
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(5)
    D, L = 192, 32
    centres = rng.normal(size=(30, L))
    latent = centres[rng.integers(0, 30, 700)] + 0.5 * rng.normal(size=(700, L))
    unit = lambda A: (A / np.linalg.norm(A, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    model = lambda W, m: lambda Z: unit(Z @ W + m)  # noqa: E731
    A = model(rng.normal(size=(L, D)), 3.0 * rng.normal(size=D))
    B = model(rng.normal(size=(L, D)), 3.0 * rng.normal(size=D))
    np.save(root / "X.npy", A(latent[:600]))
    np.save(root / "QA.npy", A(latent[600:]))
    np.save(root / "QB.npy", B(latent[600:]))
    SMEC((16,), "pca").fit(np.load(root / "X.npy")).save(root / "pca")
    assert main(["build", "--compressor", str(root / "pca"), "--corpus", str(root / "X.npy"), "--spec", "Flat",
                 "--out", str(root / "ix"), "--quiet"]) == 0
    return root


def test_queries_of_another_model_get_a_warning(two_models, capsys):
    from smec_index.cli import FOREIGN_RATIO, foreign_queries

    index = read_index(two_models / "ix")
    own, other = foreign_queries(index, np.load(two_models / "QA.npy")), foreign_queries(index, np.load(two_models / "QB.npy"))
    assert own > 2 * FOREIGN_RATIO and other < FOREIGN_RATIO / 2, (own, other)
    code, out, err = run(["search", "--index", two_models / "ix", "--queries", two_models / "QA.npy"], capsys)
    assert code == 0 and "warning" not in err
    code, out, err = run(["search", "--index", two_models / "ix", "--queries", two_models / "QB.npy"], capsys)
    assert code == 0 and len(out.splitlines()) == 100  # a warning, not a refusal
    assert "# warning: --queries" in err and "same embedding model" in err


def test_fewer_than_k_results_are_announced(files, tmp_path, capsys):
    build = ["build", "--compressor", files / "pca", "--corpus", files / "X.npy", "--spec", "Flat", "--out", tmp_path / "ix"]
    assert run(build, capsys)[0] == 0
    code, out, err = run(["search", "--index", tmp_path / "ix", "--queries", files / "Q.npy", "-k", "700", "--json"],
                         capsys)
    assert code == 0, err
    assert all(len(r["ids"]) == 600 for r in json.loads(out)["results"])
    assert "# note: -k 700: 80 of 80 queries got fewer than 700 results (fewest 600): the index holds 600 vectors" in err
    code, out, err = run(["search", "--index", tmp_path / "ix", "--queries", files / "Q.npy", "-k", str(2**31)], capsys)
    assert code == 0 and "the index holds 600 vectors" in err  # k is capped at ntotal: no 8 GiB allocation
    code, out, err = run(["search", "--index", tmp_path / "ix", "--queries", files / "Q.npy", "-k", "5"], capsys)
    assert code == 0 and "# note" not in err


def test_inputs_of_the_wrong_kind_are_named(files, tmp_path, capsys):
    (tmp_path / "Q.txt").write_text("0.1 0.2 0.3\n")
    (tmp_path / "big_ids.txt").write_text("\n".join(str(2**76 if i == 3 else i) for i in range(600)))
    cases = [
        (["search", "--index", files / "X.npy", "--queries", files / "Q.npy"], "--index: .*X.npy is a file; expected a directory"),
        (["search", "--index", files / "idx", "--queries", tmp_path / "Q.txt"],
         r"--queries: .*Q.txt is not a .npy array file \(text\); expected a float matrix written by numpy.save"),
        (["build", "--compressor", files / "pca", "--corpus", files / "X.npy", "--ids", tmp_path / "big_ids.txt",
          "--id-type", "int", "--out", tmp_path / "o"],
         r"--ids: line 4 of .* \(corpus row 3\) is 7555786372591432341913\d+; ids must be in 0..2\*\*63-1"),
        (["build", "--compressor", files / "X.npy", "--corpus", files / "X.npy", "--out", tmp_path / "o"],
         "--compressor: .* is a file; expected a model directory"),
        (["info", files / "X.npy"], "INDEX_DIR: .* is a file"),
    ]
    for argv, pattern in cases:
        code, _, err = run(argv, capsys)
        assert code == 1 and err.count("\n") == 1 and re.search(pattern, err), (argv, err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("error, words", [
    (OSError(28, "No space left on device", "/full/index/a.bin"), "no space left on the disk while writing .*o"),
    (RuntimeError("Error in faiss::FileIOWriter::operator() at io.cpp:100: Error: 'ret == size' failed: write error"),
     "FAISS failed while writing .*: 'ret == size' failed: write error"),
    (MemoryError("Unable to allocate 8.00 GiB"), "not enough memory while writing"),
    (OverflowError("Python int too large to convert to C long"), "a number is out of range"),
])
def test_machine_errors_are_one_line(files, tmp_path, capsys, monkeypatch, error, words):
    from smec_index.index import CompressedIndex

    def fail(self, path):
        raise error

    monkeypatch.setattr(CompressedIndex, "save", fail)
    code, _, err = run(["build", "--compressor", files / "pca", "--corpus", files / "X.npy", "--spec", "Flat",
                        "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(words, err), err


def test_safetensors_errors_are_one_line(files, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    def fail(self, path):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, message: "No space left on device" })')

    monkeypatch.setattr(SMEC, "save", fail)
    code, _, err = run(["train", "--corpus", files / "X.npy", "--method", "pca", "--dims", "8", "--out", tmp_path / "m"],
                       capsys)
    assert code == 1 and err.count("\n") == 1 and "no space left on the disk while writing" in err, err


def test_a_bug_keeps_its_traceback(files, tmp_path, monkeypatch):
    def fail(self, path):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(SMEC, "save", fail)
    with pytest.raises(RuntimeError, match="invariant"):
        main(["train", "--corpus", str(files / "X.npy"), "--method", "pca", "--dims", "8", "--out", str(tmp_path / "m")])


def test_progress_bars_only_on_a_terminal(files, tmp_path, capsys):
    from smec_index._progress import tqdm_disable

    assert (tqdm_disable(False), tqdm_disable(True), tqdm_disable("always")) == (True, None, False)
    argv = ["train", "--corpus", files / "X.npy", "--dims", "8", *TINY]
    code, _, err = run([*argv, "--out", tmp_path / "a"], capsys)  # captured stderr is not a terminal
    assert code == 0 and "\r" not in err and "stage" not in err, err
    code, _, err = run([*argv, "--out", tmp_path / "b", "--progress"], capsys)
    assert code == 0 and "\r" in err, err
    code, _, err = run([*argv, "--out", tmp_path / "c", "--progress", "--quiet"], capsys)
    assert code == 2 and "not allowed with argument" in err
