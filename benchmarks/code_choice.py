"""How ``SMEC(code=...)`` should pick each stage's map, judged on training queries (never test queries).

A ``code=`` fit scores every stage candidate (trained, from-full, PCA of the stage input, PCA of the full vector)
on held-out corpus rows. This benchmark fits it as the library does and, for every candidate, also scores the same
coded index with the data set's *training* queries as unlabelled pseudo-queries (their exact full-dim top-10
among the training rows: no labels, no test queries). It then compares stage-choice rules made on the held-out
rows by what they give on those queries, against PCA of the full vector (the benchmark's "pca" first stage):

- ``best``: the best held-out mean;
- ``pca-1se``: the best PCA map unless another is ahead by one standard error of their per-row difference;
- ``full-1se`` / ``full-2se``: PCA of the full vector unless another is ahead by one / two standard errors (the
  library's rule, ``CODE_SE = 2``).

Each stage's candidates are those of the library's own chain, scored once; a rule is applied to each stage alone.

    python benchmarks/code_choice.py --data ../shared/data/scifact --model all-MiniLM-L6-v2 \\
        --codes rabitq1,rabitq2,pq1,pq2 --json benchmarks/results/code-choice-scifact-all-MiniLM-L6-v2.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe_machine, load_avg, machine_info, with_provenance, write_json  # noqa: E402

from smec_index import SMEC  # noqa: E402
from smec_index.compressor import api  # noqa: E402
from smec_index.compressor.api import candidate_ladder, difference_se, ladder_recall, random_rotation  # noqa: E402
from smec_index.datasets import load_beir  # noqa: E402
from smec_index.index.backends.codes import CODES  # noqa: E402

RULES = ("best", "pca-1se", "full-1se", "full-2se")


def _recall(found: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: recall@10 averaged over the candidate ladder, and within all of ``found``'s columns."""
    top = found.shape[1]
    return ladder_recall(found, exact, candidate_ladder(top)), ladder_recall(found, exact, (top,))


class Probe:
    """Wraps the trainer's coded scoring: each candidate's held-out rows' scores (the library's own) and the
    training queries' scores on the same coded index, gathered per stage."""

    def __init__(self, queries: np.ndarray):
        self.Q = queries
        self.engine = None  # the engine the library's last coded score built (kept only until the next)
        self._exact: tuple | None = None  # (trainer, the queries' exact top-10 among its training rows)
        self.scores: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.stages: list[dict] = []

    def install(self) -> Callable[[], None]:
        """Wrap the trainer's scoring; returns the function that unwraps it."""
        T = api._Trainer
        code_engine, coded, choose = T._code_engine, T._coded_score, T._choose
        probe = self

        def engine(trainer, d):
            e = code_engine(trainer, d)
            probe.engine = e
            return e

        def coded_score(trainer, proj, d, data):
            rows = coded(trainer, proj, d, data)
            e = probe.engine
            Zq = proj(probe.Q)
            if trainer.smec.rotate:
                Zq = Zq @ random_rotation(d, trainer.smec.seed).astype(np.float32)
            train_pos = data.eval_positions(data.train_rows)
            if probe._exact is None or probe._exact[0] is not trainer:  # one fit's training rows never change
                train = trainer._eval_X[train_pos]
                train = train / np.linalg.norm(train, axis=1, keepdims=True)
                probe._exact = (trainer, np.argsort(-(probe.Q @ train.T), axis=1)[:, :10])
            _, found = e.search(np.ascontiguousarray(Zq, dtype=np.float32), min(trainer.cfg.code_candidates,
                                                                                   len(train_pos)))
            exact = probe._exact[1]
            probe.scores.append((rows, *_recall(found, exact)))
            return rows

        def choose_stage(trainer, report, d, candidates, projections, selections):
            probe.scores.clear()
            choose(trainer, report, d, candidates, projections, selections)
            probe.stages.append({"code": trainer.smec.code, "dim": d, "library_choice": report.choice,
                                 "scores": dict(zip(candidates, probe.scores[:len(candidates)]))})

        T._code_engine, T._coded_score, T._choose = engine, coded_score, choose_stage

        def restore() -> None:
            T._code_engine, T._coded_score, T._choose = code_engine, coded, choose
        return restore


def _lead(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float((a - b).mean()), difference_se(a, b)


def apply_rules(scores: dict[str, tuple]) -> tuple[str, dict[str, str]]:
    """(reference PCA map, each rule's kept candidate) from the held-out rows' per-row scores."""
    names = list(scores)
    ref = "pca-full" if "pca-full" in scores else "pca-input"
    best = max(names, key=lambda n: (scores[n][0].mean(), -names.index(n)))
    pcas = [n for n in names if n.startswith("pca")]
    best_pca = max(pcas, key=lambda n: (scores[n][0].mean(), -names.index(n)))
    kept = {"best": best}
    lead, se = _lead(scores[best][0], scores[best_pca][0])
    kept["pca-1se"] = best if lead > se else best_pca
    lead, se = _lead(scores[best][0], scores[ref][0])
    kept["full-1se"] = best if lead > se else ref
    kept["full-2se"] = best if lead > 2 * se else ref
    return ref, kept


def summarise(stages: list[dict]) -> dict[str, dict]:
    """Per rule: gain over PCA of the full vector on training queries (ladder and at the top count)."""
    out = {}
    for rule in RULES:
        gains = []
        for st in stages:
            ref, kept = apply_rules(st["scores"])
            s = st["scores"]
            gains.append((s[kept[rule]][1].mean() - s[ref][1].mean(), s[kept[rule]][2].mean() - s[ref][2].mean()))
        g = np.array(gains)
        out[rule] = {"ladder_mean": float(g[:, 0].mean()), "ladder_behind": int((g[:, 0] < -1e-9).sum()),
                     "ladder_worst": float(g[:, 0].min()), "top_mean": float(g[:, 1].mean()),
                     "top_behind": int((g[:, 1] < -1e-9).sum()), "top_worst": float(g[:, 1].min()),
                     "stages": len(g)}
    return out


def run(data: str, model: str, codes: tuple[str, ...], dims: tuple[int, ...], seed: int, max_queries: int) -> dict:
    ds = load_beir(data, model)
    qids, split, _, _ = ds.supervised_split(seed)
    if split == "test" or "train" not in ds.qrels:
        raise ValueError(f"{data}: no train queries (qrels/train.tsv); this benchmark never reads test queries")
    Q, _ = ds.pairs(qids, split)
    if len(Q) > max_queries:
        Q = Q[np.random.default_rng(seed).permutation(len(Q))[:max_queries]]
    probe = Probe(np.ascontiguousarray(Q, dtype=np.float32))
    restore = probe.install()
    t0 = time.perf_counter()
    try:
        for code in codes:
            print(f"[{time.perf_counter() - t0:6.0f} s] SMEC({dims}, code={code!r})", flush=True)
            SMEC(dims, code=code, seed=seed, progress=False).fit(ds.corpus)
    finally:
        restore()
    stages = [{"code": st["code"], "dim": st["dim"], "library_choice": st["library_choice"],
               "rules": apply_rules(st["scores"])[1],
               "candidates": {n: {"rows": round(float(v[0].mean()), 6), "queries_ladder": round(float(v[1].mean()), 6),
                                  "queries_top": round(float(v[2].mean()), 6)} for n, v in st["scores"].items()}}
              for st in probe.stages]
    return {"data": str(data), "dataset": ds.name, "model": model, "n_corpus": int(ds.corpus.shape[0]),
            "n_train_queries": int(len(Q)), "codes": list(codes), "dims": list(dims), "seed": seed,
            "wall_s": round(time.perf_counter() - t0, 1), "rules": summarise(probe.stages), "stages": stages}


RULE_TEXT = {"best": "best on held-out rows", "pca-1se": "best PCA map unless beaten by 1 SE",
             "full-1se": "PCA of the full vector unless beaten by 1 SE",
             "full-2se": "PCA of the full vector unless beaten by 2 SE (the library's)"}


def table(payload: dict) -> str:
    """Per rule: gain over PCA of the full vector on the training queries, at 100 candidates and on the ladder."""
    lines = ["| rule | stages | gain at 100: mean | behind | worst | gain on the ladder: mean | behind | worst |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rule, r in payload["rules"].items():
        lines.append(f"| {RULE_TEXT[rule]} | {r['stages']} | {r['top_mean']:+.4f} | {r['top_behind']} | "
                     f"{r['top_worst']:+.4f} | {r['ladder_mean']:+.4f} | {r['ladder_behind']} | "
                     f"{r['ladder_worst']:+.4f} |")
    return "\n".join(lines)


def report(payload: dict) -> str:
    """The docs' block: what ran, on which commit, and the rules table."""
    p = payload
    return (f"`{p['command']}`: {p['dataset']} / {p['model']}, {p['n_corpus']:,} documents, "
            f"{p['n_train_queries']:,} training queries (no test query is read); codes {', '.join(p['codes'])}, "
            f"dims {', '.join(map(str, p['dims']))}; commit {p['commit'][:10]}{' (dirty)' if p['dirty'] else ''}; "
            f"{p['wall_s']:,.0f} s; load average {p['load_avg_before']} -> {p['load_avg_after']}.\n\n{table(p)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="a BEIR-layout data set with qrels/train.tsv")
    p.add_argument("--model", required=True, metavar="NAME", help="embedding model under DIR/emb/")
    p.add_argument("--codes", type=lambda t: tuple(t.split(",")), default=("rabitq1", "rabitq2", "pq1", "pq2"))
    p.add_argument("--dims", type=lambda t: tuple(int(x) for x in t.split(",")), default=(128, 112, 64, 32))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-queries", type=int, default=3000, help="a seeded sample of the training queries")
    p.add_argument("--json", metavar="OUT.json")
    a = p.parse_args(argv)
    bad = [c for c in a.codes if c not in CODES or CODES[c].backend not in ("faiss", "faiss-binary")]
    if bad:
        p.error(f"--codes: expected FAISS stage codes, got {bad}")
    from smec_index.report import provenance

    info, load_before, prov = machine_info(), load_avg(), provenance()  # the code as it was at the start
    payload = run(a.data, a.model, a.codes, a.dims, a.seed, a.max_queries)
    payload = with_provenance(payload, "code_choice.py", argv, info, load_before, prov)
    print(f"# code choice: {payload['dataset']} / {a.model}, {payload['n_train_queries']} training queries; "
          f"{describe_machine(info)}")
    for st in payload["stages"]:
        print(f"  {st['code']:8s} {st['dim']:4d} library: {st['library_choice']:10s} " + " ".join(
            f"{n} {c['rows']:.4f}/{c['queries_top']:.4f}" for n, c in st["candidates"].items()))
    print(table(payload))
    if a.json:
        print(f"wrote {write_json(a.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
