"""``smec-index demo``: SMEC against PCA and truncation on real data, with real indexes, in a table and a plot.

On a BEIR-layout data set (by default the SciFact copy shipped in ``smec_index/data``) it fits SMEC
unsupervised (corpus only) and supervised (the train queries' judgements), PCA and truncation; builds
one FAISS index per method and dim; searches the held-out test queries without and with full-dim
rerank; and reports nDCG@10, Recall@100, MRR@10 and queries per second per dim, next to the full-dim
index. Training uses the library defaults (``DEMO_TRAINING`` is empty), the same recipe as ``smec-index
bench`` and ``train``: on the shipped MiniLM data both fits together take about 90 s on two cores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from .compressor import SMEC
from .data import DEMO_MODEL, demo_data_dir
from .datasets import BeirDataset, load_beir
from .index import CompressedIndex
from .index.backends import make_backend
from .metrics import evaluate
from .quality import default_dims, eval_split
from .report import (best_time, curves_by_label, describe_environment, environment, human_bytes, markdown_table,
                     plot_ndcg_vs_bytes, write_json)

__all__ = ["DemoSettings", "DEMO_TRAINING", "FAST", "run_demo", "subsample", "demo_table", "plot_demo", "answer_query",
           "QUERY_TRAINING"]

# Training options of the demo on top of the library defaults: none, so its numbers are what users get from
# ``smec-index train`` and the benchmarks (FAST below shortens training for the CI smoke test only). Options
# given on the command line are added here.
DEMO_TRAINING: dict = {}
# ``demo --query`` answers while the user waits: its one fit starts from the PCA rotation and trains one epoch of
# dimension selection and at most two of adaptation (a few seconds here, against about a minute with the defaults).
QUERY_TRAINING = dict(init="pca", max_epochs=2, ads_epochs=1, patience=1)
FITS = (("smec", "supervised"), ("smec", "unsupervised"), ("pca", "unsupervised"), ("truncate", "unsupervised"))
LEARNED = ("smec", "mrl", "search-adaptor")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains and builds. ``max_docs``/``max_queries`` subsample the data (the CI variant)."""

    dims: tuple[int, ...] | None = None  # None: default_dims(D)
    training: dict = field(default_factory=lambda: dict(DEMO_TRAINING))
    spec: str = "HNSW32"
    ef_search: int = 64
    candidates: int = 100
    k_eval: int = 100
    qps_repeats: int = 5
    qps_seconds: float = 0.5
    max_docs: int | None = None
    max_queries: int | None = None


# The CI smoke variant: 600 documents, 60 test and 120 train queries, two dims, one epoch a phase, a small
# S-XBM memory and fewer mined negatives. Its numbers only show that every step runs.
FAST = DemoSettings(training=dict(init="pca", max_epochs=1, ads_epochs=1, patience=1, batch_size=128,
                                  memory_size=500, neighbour_pool=50, mined=50, negatives=16),
                    qps_repeats=1, qps_seconds=0.0, max_docs=600, max_queries=60)


def subsample(ds: BeirDataset, max_docs: int, max_queries: int, seed: int = 0) -> BeirDataset:
    """A smaller copy of ``ds``: up to ``max_queries`` evaluation and 2x that many training queries, their
    judged documents, and random other documents up to ``max_docs``."""
    rng = np.random.default_rng(seed)
    docs = set(ds.doc_ids)
    query_row = {q: i for i, q in enumerate(ds.query_ids)}
    train_qids, train_split, eval_qids, eval_name = ds.supervised_split(seed)
    pick = lambda ids, n: sorted(rng.choice(ids, min(n, len(ids)), replace=False).tolist())  # noqa: E731
    chosen = {eval_name: pick(eval_qids, max_queries), train_split: pick(train_qids, 2 * max_queries)}
    if train_split == eval_name:
        chosen = {eval_name: sorted(set(chosen[eval_name]) | set(pick(train_qids, 2 * max_queries)))}
    judged = sorted({ds.doc_row(d) for split, qids in chosen.items() for q in qids for d in ds.qrels[split][q]
                     if d in docs})
    others = np.setdiff1d(np.arange(len(ds.doc_ids)), judged)
    fill = rng.choice(others, max(0, min(max_docs - len(judged), others.size)), replace=False)
    rows = np.sort(np.concatenate([np.asarray(judged, dtype=np.int64), fill.astype(np.int64)]))
    doc_ids = [ds.doc_ids[i] for i in rows]
    keep = set(doc_ids)
    qids = sorted({q for v in chosen.values() for q in v}, key=query_row.__getitem__)
    qrows = [query_row[q] for q in qids]
    qrels = {split: {q: {d: s for d, s in ds.qrels[split][q].items() if d in keep} for q in v}
             for split, v in chosen.items()}
    return BeirDataset(f"{ds.name}-sample", ds.model, ds.root, ds.corpus[rows], ds.queries[qrows], doc_ids, qids,
                       qrels)


def _fit(method: str, mode: str, dims: tuple[int, ...], ds: BeirDataset, Qt, pairs, s: DemoSettings,
         seed: int, progress: bool) -> tuple[SMEC, float]:
    opts = s.training if method in LEARNED else {}
    t0 = time.perf_counter()
    smec = SMEC(dims, method, seed=seed, progress=progress, **opts)
    if mode == "supervised":
        smec.fit(ds.corpus, queries=Qt, qrels=pairs)
    else:
        smec.fit(ds.corpus)
    return smec, time.perf_counter() - t0


def _qps(search: Callable[[], object], nq: int, repeats: int, min_seconds: float) -> float:
    """Queries per second of ``search`` (one batch of ``nq``): the best of ``repeats`` runs and of those in
    ``min_seconds``, FAISS on one thread (per-core numbers, which other jobs on a shared machine disturb
    less than OpenMP's thread team)."""
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return nq / best_time(search, repeats, min_seconds)
    finally:
        faiss.omp_set_num_threads(prev)


def _metrics(I: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict) -> dict:
    run = {q: [doc_ids[j] for j in row if j >= 0] for q, row in zip(qids, I)}
    return evaluate(run, qrels)


def demo_table(records: list[dict], dims: tuple[int, ...], D: int) -> str:
    """The demo's table: one row per dim (largest last: the full dim), nDCG@10 per method, QPS of SMEC."""
    get = {(r["method"], r["mode"], r["dim"], r["rerank"]): r for r in records}
    cols = [("smec", "supervised", "none"), ("smec", "unsupervised", "none"), ("pca", "unsupervised", "none"),
            ("truncate", "unsupervised", "none"), ("smec", "supervised", "full")]
    rows = []
    for d in sorted(dims) + [D]:
        full = d == D
        cells = []
        for m, mode, rr in cols:
            r = get.get((m, mode, d, rr)) or (get[("full", "-", D, "none")] if full and rr == "none" else None)
            cells.append(r["ndcg@10"] if r else "-")
        qps_rec = get[("full", "-", D, "none")] if full else get[("smec", "supervised", d, "none")]
        qps_rr = "-" if full else f"{get[('smec', 'supervised', d, 'full')]['qps']:,.0f}"
        rows.append([f"{d} (full)" if full else d, 4 * d, f"{D / d:.0f}x" if D % d == 0 else f"{D / d:.1f}x",
                     *cells, f"{qps_rec['qps']:,.0f}", qps_rr])
    return markdown_table(["dim", "bytes/vector", "compression", "nDCG@10 SMEC sup", "SMEC unsup", "PCA",
                           "truncation", "SMEC sup + rerank", "QPS 1 thread", "QPS + rerank"], rows)


def _example(ds: BeirDataset, index: CompressedIndex, q: np.ndarray, qid: str, qrels: dict, dim: int) -> str:
    """One test query with the titles of its top 3 at the smallest dim with rerank; [x] marks a judged hit."""
    if not (ds.root / "corpus.jsonl.gz").is_file() or not (ds.root / "queries.jsonl.gz").is_file():
        return ""
    texts, queries = ds.corpus_texts(), ds.query_texts()
    _, I = index.search(q[None, :], 3, dim=dim, rerank="full")
    lines = [f'Example, SMEC supervised at {dim} dims + rerank: "{queries.get(qid, qid)}"']
    for j in I[0]:
        doc = ds.doc_ids[j]
        mark = "[x]" if qrels[qid].get(doc, 0) > 0 else "[ ]"
        title = texts.get(doc, doc)
        lines.append(f"  {mark} {title[:100] + ('...' if len(title) > 100 else '')}")
    return "\n".join(lines)


def plot_demo(payload: dict, path: str | Path) -> Path:
    """The demo's PNG from its JSON payload: nDCG@10 against bytes per vector, one line per method."""
    records = payload["records"]
    label = lambda r: (None if r["method"] == "full" else  # noqa: E731
                       f"{r['method']} ({r['mode']})" + (" + rerank" if r["rerank"] == "full" else ""))
    shown = [r for r in records if r["rerank"] == "none" or (r["method"], r["mode"]) == ("smec", "supervised")]
    full = next(r for r in records if r["method"] == "full")
    return plot_ndcg_vs_bytes(curves_by_label(shown, label), path,
                              f"{payload['dataset']} / {payload['model']}: nDCG@10 against memory",
                              reference=full["ndcg@10"])


def run_demo(
    data: str | Path | None = None,
    model: str | None = None,
    out: str | Path = "smec-demo",
    settings: DemoSettings | None = None,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the demo, print its table through ``echo``, write ``demo.json`` and ``demo.png`` into ``out``.

    Returns the JSON payload. ``data``/``model`` default to the shipped SciFact with all-MiniLM-L6-v2.
    """
    from tqdm.auto import tqdm

    s = settings or DemoSettings()
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"demo: --out {str(out)!r} exists and is not a directory")
    shipped = data is None
    data = demo_data_dir() if shipped else Path(data)
    ds = load_beir(data, model or DEMO_MODEL)
    if s.max_docs is not None:
        ds = subsample(ds, s.max_docs, s.max_queries or 100, seed)
    D = ds.dim
    dims = tuple(s.dims) if s.dims is not None else (default_dims(D)[-2:] if s.max_docs else default_dims(D))
    if max(dims) >= D:
        raise ValueError(f"demo: dims {dims} must all be < the embedding dim {D}")
    Qe, qids, qrels, Qt, pairs = eval_split(ds, seed)
    echo(f"smec-index demo: {ds.name} / {ds.model} ({D} dims): {len(ds.doc_ids):,} documents, "
         f"{len(qids)} test queries; supervised training on {Qt.shape[0]} train queries")
    env = environment()
    echo(f"machine: {describe_environment(env)}")

    models, train_s = {}, {}
    for method, mode in FITS:
        smec, secs = _fit(method, mode, dims, ds, Qt, pairs, s, seed, progress)
        models[(method, mode)], train_s[f"{method}/{mode}"] = smec, round(secs, 2)
        echo(f"  fitted {method} ({mode}) in {secs:.1f} s")

    t0 = time.perf_counter()
    records: list[dict] = []
    indexes: dict[tuple, CompressedIndex] = {}
    steps = [(m, d) for m in FITS for d in dims]
    k = min(s.k_eval, len(ds.doc_ids))
    for (method, mode), d in tqdm(steps, desc="indexes", disable=not progress, leave=False):
        smec = models[(method, mode)]
        index = CompressedIndex(smec, dims=(d,), backend="faiss", spec=s.spec, params={"efSearch": s.ef_search},
                                rerank="none", candidates=s.candidates)
        index.train(ds.corpus)
        index.add(ds.corpus)
        indexes[(method, mode, d)] = index
        for rerank in ("none", "full"):
            _, I = index.search(Qe, k, rerank=rerank)
            qps = _qps(lambda: index.search(Qe, 10, rerank=rerank), len(qids), s.qps_repeats, s.qps_seconds)
            records.append({"method": method, "mode": mode, "dim": d, "rerank": rerank, "bytes_per_vector": 4 * d,
                            **_metrics(I, qids, ds.doc_ids, qrels), "qps": round(qps, 1),
                            "train_s": train_s[f"{method}/{mode}"]})
    sup = models[("smec", "supervised")]
    for method, mode, vectors in (("full", "-", ds.corpus), ("smec", "supervised", sup.transform(ds.corpus, D))):
        backend = make_backend("faiss", D, "ip", {"spec": s.spec, "params": {"efSearch": s.ef_search}})
        backend.add(np.arange(len(ds.doc_ids), dtype=np.int64), vectors)
        Qd = Qe if method == "full" else sup.transform(Qe, D)
        _, I = backend.search(Qd, k)
        qps = _qps(lambda: backend.search(Qd, 10), len(qids), s.qps_repeats, s.qps_seconds)
        records.append({"method": method, "mode": mode, "dim": D, "rerank": "none", "bytes_per_vector": 4 * D,
                        **_metrics(I, qids, ds.doc_ids, qrels), "qps": round(qps, 1),
                        "train_s": train_s["smec/supervised"] if method == "smec" else 0.0})
    echo(f"  built and searched {len(steps) + 2} {s.spec} indexes in {time.perf_counter() - t0:.1f} s")

    echo("")
    echo(demo_table(records, dims, D))
    echo(f"\nnDCG@10 on the {len(qids)} test queries; bytes/vector = float32 vectors of the searched dim; "
         f"rerank = the top {s.candidates} rescored with the full vectors (the adapted ones for supervised SMEC); "
         f"QPS = one batch, k=10, FAISS {s.spec} (efSearch {s.ef_search}) on one thread, this machine.")
    example = _example(ds, indexes[("smec", "supervised", min(dims))], Qe[0], qids[0], qrels, min(dims))
    if example:
        echo("\n" + example)

    payload = {"command": "smec-index demo", "data": "smec_index/data/scifact" if shipped else str(data),
               "shipped_data": shipped, "dataset": ds.name, "model": ds.model, "dim": D,
               "dims": list(dims), "n_docs": len(ds.doc_ids), "n_test_queries": len(qids),
               "n_train_queries": int(Qt.shape[0]), "seed": seed, "settings": asdict(replace(s, dims=dims)),
               "environment": env, "train_s": train_s, "records": records,
               "wall_s": round(time.perf_counter() - t_start, 1)}
    json_path = write_json(out / "demo.json", payload)
    png = plot_demo(payload, out / "demo.png")
    echo(f"\nwrote {json_path} and {png} ({payload['wall_s']:.0f} s in all)")
    return payload


def answer_query(
    query: str,
    data: str | Path | None = None,
    model: str | None = None,
    dim: int = 64,
    k: int = 5,
    seed: int = 0,
    progress: bool = True,
    training: dict | None = None,
    encoder: object | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """``smec-index demo --query``: answer a typed question on the shipped SciFact data.

    Encodes ``query`` live with the data's model (the bundled all-MiniLM-L6-v2 by default, or ``encoder``),
    fits supervised SMEC to ``dim`` on the precomputed corpus embeddings (``QUERY_TRAINING``, a few seconds),
    and prints the top ``k`` at ``dim`` dims with full-dim rerank beside exact full-dim search, with the
    bytes each keeps per document and in all. Returns both rankings and the byte counts.
    """
    from .text import Encoder

    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"demo: --query must be a non-empty text, got {query!r}")
    ds = load_beir(demo_data_dir() if data is None else Path(data), model or DEMO_MODEL)
    if not 0 < dim < ds.dim:
        raise ValueError(f"demo: --dim must be in 1..{ds.dim - 1} (the embeddings have {ds.dim} dims), got {dim}")
    enc = encoder if encoder is not None else Encoder(ds.model, progress=progress)
    if enc.dim != ds.dim:
        raise ValueError(f"demo: the encoder makes {enc.dim}-dim vectors; the data's {ds.model} embeddings have {ds.dim}")
    t0 = time.perf_counter()
    q = enc.encode([query], progress=False)
    encode_s = time.perf_counter() - t0
    _, _, _, Qt, pairs = eval_split(ds, seed)
    t0 = time.perf_counter()
    smec = SMEC((dim,), "smec", seed=seed, progress=progress, **(training or QUERY_TRAINING))
    smec.fit(ds.corpus, queries=Qt, qrels=pairs)
    fit_s = time.perf_counter() - t0
    index = CompressedIndex(smec, dims=(dim,), spec="Flat", rerank="full", candidates=100, full_store="memory")
    index.train(ds.corpus)
    index.add(ds.corpus)
    t0 = time.perf_counter()
    Dc, Ic = index.search(q, k)
    compressed_s = time.perf_counter() - t0
    full = make_backend("faiss", ds.dim, "ip", {"spec": "Flat"})
    full.add(np.arange(len(ds.doc_ids), dtype=np.int64), ds.corpus)
    t0 = time.perf_counter()
    Df, If = full.search(q, k)
    full_s = time.perf_counter() - t0

    n = len(ds.doc_ids)
    mem = index.memory_usage()
    searched = mem["backends"]
    rerank_bytes = mem["full_store"]
    full_bytes = full.nbytes
    texts = ds.corpus_texts()
    rows_c = [(ds.doc_ids[int(j)], float(s)) for s, j in zip(Dc[0], Ic[0]) if j >= 0]
    rows_f = [(ds.doc_ids[int(j)], float(s)) for s, j in zip(Df[0], If[0]) if j >= 0]
    in_full = {d for d, _ in rows_f}
    short = lambda d: " ".join(texts.get(d, d).split())[:70]  # noqa: E731

    echo(f'Query: "{query}"  ({ds.name}, {n:,} documents, {ds.model}; encoded in {encode_s * 1e3:.0f} ms; '
         f"SMEC {dim} fitted in {fit_s:.1f} s)")
    echo("")
    echo(f"SMEC {dim} dims + full-dim rerank of the top 100 ({compressed_s * 1e3:.1f} ms):")
    for r, (d, s) in enumerate(rows_c, 1):
        echo(f"  {r}. [{d:>8}] {s:.3f}  {short(d)}{'' if d in in_full else '   (not in the full-dim top ' + str(k) + ')'}")
    echo(f"Full {ds.dim} dims, exact ({full_s * 1e3:.1f} ms):")
    for r, (d, s) in enumerate(rows_f, 1):
        echo(f"  {r}. [{d:>8}] {s:.3f}  {short(d)}")
    same = len(in_full & {d for d, _ in rows_c})
    echo("")
    echo(f"Same documents in both top {k}: {same} of {k}.")
    echo(f"Bytes: SMEC searches {4 * dim} B/document ({human_bytes(searched)} for {n:,} documents) and reads the "
         f"full {4 * ds.dim} B vectors of only 100 candidates for the rerank (all {human_bytes(rerank_bytes)} of them "
         f"can stay on disk with full_store='mmap'); full-dim search scans {4 * ds.dim} B/document "
         f"({human_bytes(full_bytes)}), {ds.dim / dim:.0f}x more.")
    return {"query": query, "dim": dim, "k": k, "smec": rows_c, "full": rows_f, "same": same,
            "bytes_per_doc": {"smec": 4 * dim, "full": 4 * ds.dim},
            "bytes": {"smec_index": int(searched), "smec_rerank_store": int(rerank_bytes), "full_index": int(full_bytes)},
            "encode_s": encode_s, "fit_s": fit_s}
