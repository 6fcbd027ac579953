"""The quality benchmark as a library function and as the benchmarks/quality.py program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_toy_beir

from smec_index.datasets import load_beir
from smec_index.quality import default_dims, run_ablation, run_quality

KEYS = {"method", "dim", "mode", "ndcg@10", "recall@100", "mrr@10", "train_s", "train_threads"}
FAST = dict(max_epochs=2, ads_epochs=1, patience=1, batch_size=16, memory_size=50, neighbour_pool=8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return load_beir(write_toy_beir(tmp_path_factory.mktemp("beir"), n_docs=40, n_queries=10, dim=16), "toy")


def test_default_dims():
    assert default_dims(768) == (256, 128, 64, 32)
    assert default_dims(384) == (128, 64, 32)
    assert default_dims(16) == (8, 4, 2)


def test_run_quality_records(toy):
    recs = run_quality(toy, ["smec", "pca", "truncate"], (8, 4), progress=False, method_options={"smec": FAST})
    assert all(set(r) - {"choice"} == KEYS for r in recs)
    # the torch threads each learned fit trained with (tests pin SMEC_INDEX_THREADS=1); nothing else trains
    assert {r["train_threads"] for r in recs if r["method"] == "smec"} == {1}
    assert {r["train_threads"] for r in recs if r["method"] != "smec"} == {None}
    # what each smec stage kept is recorded with its numbers
    assert {r["choice"] for r in recs if r["method"] == "smec" and r["dim"] in (8, 4)} <= {"trained", "pca-input", "pca-full", "unsupervised"}
    got = {(r["method"], r["dim"], r["mode"]) for r in recs}
    for mode in ("unsupervised", "supervised"):
        assert ("full", 16, mode) in got
        for m in ("smec", "pca", "truncate"):
            assert {(m, 8, mode), (m, 4, mode)} <= got
    assert ("smec", 16, "supervised") in got  # the adapted full vector of a supervised fit
    assert ("smec", 16, "unsupervised") not in got
    pca = {r["mode"]: r["ndcg@10"] for r in recs if r["method"] == "pca" and r["dim"] == 4}
    assert pca["unsupervised"] == pca["supervised"]
    with pytest.raises(ValueError, match="mode must be one of"):
        run_quality(toy, ["pca"], (4,), modes=["semi"], progress=False)


def test_ablation_reuses_known_rows(toy):
    known = [{"method": m, "dim": d, "mode": "supervised", "ndcg@10": v, "train_s": 1.0}
             for m, v in (("mrl", 0.11), ("smec", 0.22)) for d in (8, 4)]
    rows = run_ablation(toy, (8, 4), progress=False, known=known)
    by = {r["variant"]: r for r in rows}
    assert len(rows) == 6
    # method "smec" is the library default (no ADS): it stands for that row, not for "all three", which trains
    assert by["MRL (baseline)"]["ndcg@10@4"] == 0.11 and by["SMEC (library default: SMRL + S-XBM)"]["ndcg@10@8"] == 0.22
    assert by["SMEC (all three)"]["ndcg@10@8"] != 0.22 and by["SMEC (all three)"]["ads"] is True
    assert 0.0 <= by["w/ SMRL"]["ndcg@10@4"] <= 1.0


def test_quality_program_writes_json_and_table(tmp_path, toy):
    out = tmp_path / "q.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(toy.root), "--model", "toy",
         "--methods", "pca,truncate", "--dims", "8,4", "--json", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "| pca |" in res.stdout and "machine:" in res.stdout
    payload = json.loads(out.read_text())
    assert payload["model"] == "toy" and payload["machine"]["cores"] >= 1
    assert {r["method"] for r in payload["records"]} == {"full", "pca", "truncate"}


def test_quality_program_measures_a_small_corpus_cut_from_the_set(tmp_path, toy):
    out = tmp_path / "q.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(toy.root), "--model", "toy",
         "--methods", "pca", "--dims", "8,4", "--sample", "20", "--json", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "20 documents" in res.stdout
    payload = json.loads(out.read_text())
    assert payload["n_corpus"] == 20 and payload["sample"] == 20 and payload["dataset"].endswith("-20")


def test_quality_program_merges_parts(tmp_path, toy):
    def run(*args):
        res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), *args],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout

    common = ["--data", str(toy.root), "--model", "toy", "--dims", "8,4", "--quiet"]
    run(*common, "--methods", "pca", "--mode", "unsupervised", "--json", str(tmp_path / "a.json"))
    run(*common, "--methods", "truncate", "--mode", "supervised", "--json", str(tmp_path / "b.json"))
    out = run("--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(tmp_path / "m.json"))
    assert "merged from 2 parts" in out
    merged = json.loads((tmp_path / "m.json").read_text())
    got = {(r["method"], r["mode"]) for r in merged["records"]}
    assert got == {("full", "unsupervised"), ("pca", "unsupervised"), ("full", "supervised"), ("truncate", "supervised")}
    assert len(merged["parts"]) == 2
    assert merged["parts"][0]["argv"][-1] == str(tmp_path / "a.json")
    # the per-seed records of both parts survive the merge
    assert {(r["method"], r["mode"]) for r in merged["per_seed"]["0"]} == got
    # parts of other seeds (one seed a part) are averaged over every seed
    run(*common, "--methods", "pca", "--mode", "unsupervised", "--seeds", "1", "--json", str(tmp_path / "c.json"))
    out = run("--merge", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--json", str(tmp_path / "s.json"))
    both = json.loads((tmp_path / "s.json").read_text())
    assert both["seed"] == [0, 1] and set(both["per_seed"]) == {"0", "1"}
    one = {str(s): {(r["method"], r["dim"]): r["ndcg@10"] for r in both["per_seed"][str(s)]} for s in (0, 1)}
    for r in both["records"]:
        assert r["seeds"] == 2
        assert r["ndcg@10"] == pytest.approx((one["0"][(r["method"], r["dim"])] + one["1"][(r["method"], r["dim"])]) / 2)


def test_quality_targets_checks_each_goal_on_the_reduced_dims_only():
    from smec_index.report import quality_targets

    def rec(method, dim, mode, v):
        return {"method": method, "dim": dim, "mode": mode, "ndcg@10": v}

    records = [rec("full", 96, "supervised", 0.60), rec("smec", 96, "supervised", 0.70), rec("mrl", 96, "supervised", 0.80),
               rec("smec", 32, "supervised", 0.66), rec("mrl", 32, "supervised", 0.64),
               rec("search-adaptor", 32, "supervised", 0.65), rec("smec", 16, "supervised", 0.55),
               rec("mrl", 16, "supervised", 0.56), rec("search-adaptor", 16, "supervised", 0.50),
               rec("smec", 32, "unsupervised", 0.50), rec("pca", 32, "unsupervised", 0.47)]
    rows = [line.split(" | ") for line in quality_targets(records).splitlines()[2:]]
    got = {r[1]: (r[3], r[4].rstrip(" |")) for r in rows}
    assert not any("at 96" in goal for goal in got)  # the full dim's adapted vector is not a goal
    assert got["smec >= max(mrl, search-adaptor) at 32"] == ("+1.00", "met")
    assert got["smec >= max(mrl, search-adaptor) at 16"] == ("-1.00", "not met")
    # mean of 32 and 16: smec 0.605, mrl 0.600 -> +0.50 < +1.0
    assert got["smec >= mrl + 1.0 pt, mean of 32 and 16"] == ("+0.50", "not met")
    assert got["smec >= pca at 32"] == ("+3.00", "met")
    assert got["smec >= pca + 1.5 pt, mean of 32"] == ("+3.00", "met")
    # labels never hurt: supervised smec 0.66 at 32 against unsupervised 0.50
    assert got["smec >= unsupervised smec - 0.3 pt at 32"] == ("+16.00", "met")
    worse = quality_targets([rec("smec", 32, "supervised", 0.496), rec("smec", 32, "unsupervised", 0.50)])
    assert "| smec >= unsupervised smec - 0.3 pt at 32 | 0.4960 vs 0.5000 | -0.40 | not met |" in worse
    assert quality_targets([rec("pca", 32, "unsupervised", 0.4)]) == ""


def test_quality_program_runs_several_data_sets_and_sums_them_up(tmp_path, toy):
    other = write_toy_beir(tmp_path / "other", n_docs=40, n_queries=12, dim=16)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(toy.root), str(other), "--model", "toy",
         "--methods", "pca", "--dims", "8,4", "--mode", "unsupervised", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "Summary across data sets" in res.stdout
    summary = res.stdout.split("Summary across data sets")[1]
    assert f"| {toy.name} | unsupervised | pca |" in summary and "| other | unsupervised | pca |" in summary
    assert {f.name for f in tmp_path.glob("quality-*.json")} == {f"quality-{toy.name}-toy.json", "quality-other-toy.json"}


def test_save_figure_writes_atomically_creates_folders_and_closes_the_figure(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smec_index.report import save_figure

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    path = save_figure(fig, tmp_path / "deep" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number) and [p.name for p in path.parent.iterdir()] == ["plot.png"]
    # a failed write leaves the previous file whole, no temporary file, and the figure closed
    fig, ax = plt.subplots()
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in path.parent.iterdir()] == ["plot.png"]
    assert not plt.fignum_exists(fig.number)


def test_unlabelled_mode_fits_smec_on_the_training_queries_without_qrels(toy, monkeypatch):
    """``unlabelled``: smec gets the training queries' vectors and no qrels; pca and truncate run as without
    them; mrl and search-adaptor, which cannot use them, are left out."""
    from smec_index.compressor import SMEC

    calls = []
    real = SMEC.fit
    monkeypatch.setattr(SMEC, "fit", lambda self, corpus, queries=None, qrels=None:
                        calls.append((self.method, queries is not None, qrels is not None)) or real(self, corpus, queries, qrels))
    recs = run_quality(toy, ["smec", "mrl", "pca"], (8, 4), modes=["unlabelled"], progress=False,
                       method_options={"smec": FAST})
    assert calls == [("smec", True, False), ("pca", False, False)]
    assert {(r["method"], r["dim"]) for r in recs} == {("full", 16), ("smec", 8), ("smec", 4), ("pca", 8), ("pca", 4)}
    assert {r["mode"] for r in recs} == {"unlabelled"}


def test_quality_targets_for_unlabelled_queries():
    from smec_index.report import quality_targets

    def rec(method, dim, mode, v):
        return {"method": method, "dim": dim, "mode": mode, "ndcg@10": v}

    records = [rec("smec", 32, "unlabelled", 0.52), rec("pca", 32, "unlabelled", 0.47),
               rec("smec", 32, "unsupervised", 0.525)]
    rows = [line.split(" | ") for line in quality_targets(records).splitlines()[2:]]
    got = {(r[0].lstrip("| "), r[1]): (r[3], r[4].rstrip(" |")) for r in rows}
    assert got[("unlabelled", "smec >= pca at 32")] == ("+5.00", "met")
    assert got[("unlabelled", "smec >= pca + 1.5 pt, mean of 32")] == ("+5.00", "met")
    # queries never hurt: 0.52 against the fit without them, 0.525
    assert got[("unlabelled", "smec >= unsupervised smec - 0.3 pt at 32")] == ("-0.50", "not met")


def test_quality_program_takes_a_list_of_modes_and_checks_the_unlabelled_goals(tmp_path, toy):
    out, png = tmp_path / "q.json", tmp_path / "q.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(toy.root), "--model", "toy",
           "--methods", "smec,pca", "--dims", "8,4", "--quiet"]
    res = subprocess.run(cmd + ["--mode", "unsupervised,unlabelled", "--json", str(out), "--plot", str(png)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert {r["mode"] for r in payload["records"]} == {"unsupervised", "unlabelled"}
    assert "nDCG@10, unlabelled:" in res.stdout
    assert "| unlabelled | smec >= unsupervised smec - 0.3 pt at 4 |" in res.stdout
    assert png.stat().st_size > 1000
    bad = subprocess.run(cmd + ["--mode", "semi"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "a comma list of unsupervised, supervised, unlabelled; got 'semi'" in bad.stderr
