"""Which first stage should ``CompressedIndex(smec)`` pick within its RAM budget? Judged on training queries.

For a data set (or a seeded sample of its rows: a small corpus), SMEC is fitted with its default dims on the
corpus, and every (dim, code) whose RAM a vector fits the default budget (raw float32 / 16: the code, the
8-byte label and the compressor's map to that dim spread over the corpus) is built as an exhaustive coded
index; so is the full vector itself at each code that fits (no map to hold). Each is scored with the data set's
*training* queries as unlabelled pseudo-queries: recall@10 against their exact full-dim top-10 in the corpus,
after reranking 20, 50 and 100 candidates exactly (no labels, no test queries), and the time of one search
(first stage and rerank of 100 candidates, one query at a time, the first 200 queries). The report marks what
``default_first_stage`` picks and the best option, so a change of the rule can be judged on every option.

    python benchmarks/default_stage.py --data ../shared/data/debian --model all-MiniLM-L6-v2 --samples 1400,0 \\
        --json benchmarks/results/default-stage-debian-all-MiniLM-L6-v2.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (describe_machine, load_avg, machine_info, markdown_table, recall,  # noqa: E402
                    with_provenance, write_json)

from smec_index import SMEC, CompressedIndex  # noqa: E402
from smec_index.datasets import load_beir  # noqa: E402
from smec_index.index.backends.codes import LABEL_BYTES, RAM_SHARE, code_bytes  # noqa: E402
from smec_index.metrics import exact_search  # noqa: E402
from smec_index.quality import default_dims  # noqa: E402

CODES = ("float32", "sq8", "rabitq4", "sq4", "rabitq2", "rabitq1")
CANDIDATES = (20, 50, 100)
K = 10
TIMED = 200  # queries timed one at a time per option


def options(X: np.ndarray, Q: np.ndarray, smec: SMEC, truth: np.ndarray) -> list[dict]:
    """Every (dim, code) within the default budget, the full vector included, with its recall@10 per count."""
    n, D = X.shape
    budget = 4 * D / RAM_SHARE
    out = []
    for dim in (D, *smec.dims_):
        share = smec.subset(dim).nbytes / n
        for code in CODES:
            ram = code_bytes(code, dim) + LABEL_BYTES + share
            if ram > budget:
                continue
            index = CompressedIndex(smec, dims=dim, code=code)
            index.train(X)
            index.add(X)
            found = {c: recall(index.search(Q, K, candidates=c)[1], truth, K) for c in CANDIDATES}
            t0 = time.perf_counter()
            for q in Q[:TIMED]:  # one query at a time, first stage and rerank of the default 100 candidates
                index.search(q[None], K)
            ms = (time.perf_counter() - t0) / min(TIMED, Q.shape[0]) * 1e3
            out.append({"dim": int(dim), "code": code, "ram_bytes_per_vector": round(ram, 1),
                        **{f"recall@10 C={c}": round(r, 4) for c, r in found.items()}, "ms_b1": round(ms, 3)})
    return out


def run(data: str, model: str, samples: tuple[int, ...], seed: int, max_queries: int) -> dict:
    ds = load_beir(data, model)
    Q = np.ascontiguousarray(ds.split_queries("train")[0], dtype=np.float32)
    if Q.shape[0] > max_queries:
        Q = Q[np.sort(np.random.default_rng(seed).choice(Q.shape[0], max_queries, replace=False))]
    corpus = np.ascontiguousarray(ds.corpus, dtype=np.float32)
    D = corpus.shape[1]
    t0 = time.perf_counter()
    sets = []
    for size in samples:
        n = corpus.shape[0] if not size or size >= corpus.shape[0] else size
        rows = np.sort(np.random.default_rng(seed).choice(corpus.shape[0], n, replace=False)) if n < corpus.shape[0] \
            else np.arange(n)
        X = corpus[rows]
        _, truth = exact_search(Q, X, K)
        smec = SMEC(default_dims(D), seed=seed, progress=False).fit(X)
        picked = CompressedIndex(smec)  # the library's default, n = the fitted rows
        opts = options(X, Q, smec, truth)
        sets.append({"n_corpus": int(n), "dims": list(smec.dims_), "budget": 4 * D / RAM_SHARE,
                     "picked": {"dim": picked.dims[0], "code": picked.code}, "options": opts})
        print(f"[{time.perf_counter() - t0:6.0f} s] {n:,} rows: picked {picked.dims[0]} {picked.code}", flush=True)
    return {"data": str(data), "dataset": ds.name, "model": model, "dim": D, "n_train_queries": int(Q.shape[0]),
            "seed": seed, "sets": sets, "wall_s": round(time.perf_counter() - t0, 1)}


def table(one: dict) -> str:
    """One corpus size: every option within the budget, the library's pick and the best at 100 candidates marked."""
    if not one["options"]:
        return "nothing fits the budget"
    best = max(o[f"recall@10 C={CANDIDATES[-1]}"] for o in one["options"])
    rows = []
    for o in sorted(one["options"], key=lambda o: (-o["dim"], o["ram_bytes_per_vector"])):
        mark = ("picked" if (o["dim"], o["code"]) == (one["picked"]["dim"], one["picked"]["code"]) else "")
        if o[f"recall@10 C={CANDIDATES[-1]}"] == best:
            mark = (mark + ", " if mark else "") + "best at C=100"
        ms = f"{o['ms_b1']:.2f}" if "ms_b1" in o else "-"
        rows.append([o["dim"], o["code"], f"{o['ram_bytes_per_vector']:.1f}", *[o[f"recall@10 C={c}"] for c in CANDIDATES],
                     ms, mark])
    return markdown_table(["dim", "code", "RAM B/vector", *[f"recall@10 C={c}" for c in CANDIDATES],
                           "ms/query (batch 1, C=100)", ""], rows, ".4f")


def report(payload: dict) -> str:
    """The docs' block: what ran, on which commit, and one table per corpus size."""
    p = payload
    head = (f"`{p['command']}`: {p['dataset']} / {p['model']}, {p['dim']} dims, {p['n_train_queries']:,} training "
            f"queries as pseudo-queries (no test query is read); commit {p['commit'][:10]}"
            f"{' (dirty)' if p['dirty'] else ''}; {p['wall_s']:,.0f} s; load average {p['load_avg_before']} -> "
            f"{p['load_avg_after']}.")
    parts = [head]
    for one in p["sets"]:
        parts.append(f"{one['n_corpus']:,} documents (SMEC dims {', '.join(map(str, one['dims']))}; budget "
                     f"{one['budget']:g} B a vector; the full vector is dim {p['dim']}):\n\n{table(one)}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="a BEIR-layout data set with training queries")
    p.add_argument("--model", required=True, metavar="NAME", help="embedding model under DIR/emb/")
    p.add_argument("--samples", type=lambda t: tuple(int(x) for x in t.split(",")), default=(1400, 0),
                   help="corpus sizes, comma-separated; 0 is the whole corpus (default 1400,0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-queries", type=int, default=1000, help="a seeded sample of the training queries")
    p.add_argument("--json", metavar="OUT.json")
    a = p.parse_args(argv)
    from smec_index.report import provenance

    info, load_before, prov = machine_info(), load_avg(), provenance()  # the code as it was at the start
    payload = run(a.data, a.model, a.samples, a.seed, a.max_queries)
    payload = with_provenance(payload, "default_stage.py", argv, info, load_before, prov)
    print(f"# default stage: {payload['dataset']} / {a.model}; {describe_machine(info)}")
    print(report(payload))
    if a.json:
        print(f"wrote {write_json(a.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
