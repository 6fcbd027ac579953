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

from ._progress import tqdm_disable
from .compressor import SMEC
from .data import DEMO_MODEL, demo_data_dir
from .datasets import BeirDataset, load_beir
from .index import CompressedIndex
from .index.backends import make_backend
from .metrics import evaluate
from .quality import default_dims, eval_split
from .report import (best_time, describe_environment, environment, human_bytes, markdown_table, save_figure,
                     write_json)

__all__ = ["DemoSettings", "DEMO_TRAINING", "FAST", "run_demo", "subsample", "demo_tables", "plot_demo", "answer_query",
           "code_bytes", "provenance",
           "QUERY_TRAINING"]

# Training options of the demo on top of the library defaults: none, so its numbers are what users get from
# ``smec-index train`` and the benchmarks (FAST below shortens training for the CI smoke test only). Options
# given on the command line are added here.
DEMO_TRAINING: dict = {}
# ``demo --query`` answers while the user waits: its one fit starts from the PCA rotation and trains one epoch of
# dimension selection and at most two of adaptation (a few seconds here, against about a minute with the defaults).
QUERY_TRAINING = dict(init="pca", max_epochs=2, ads_epochs=1, patience=1)
FITS = (("smec", "supervised"), ("smec", "unsupervised"), ("pca", "unsupervised"), ("truncate", "unsupervised"))
QUANTIZED = ("SQ8", "RaBitQ")  # FAISS codecs the demo puts SMEC's unsupervised dims in
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


def code_bytes(spec: str, dim: int) -> int:
    """Bytes per vector of the codes a FAISS spec stores at ``dim`` (its graph or lists not counted):
    4 x dim for float32 engines (HNSW, Flat), the codec's size for quantizers (SQ8: dim, RaBitQ: dim/8 + 8)."""
    base = spec.split(",")[-1] if "," in spec else spec
    if base.startswith(("HNSW", "Flat")) and "SQ" not in spec:
        return 4 * dim
    return int(faiss.index_factory(dim, base, faiss.METRIC_INNER_PRODUCT).sa_code_size())


def _label(r: dict) -> str:
    """How a configuration reads in the tables and the plot: "SMEC (no labels) SQ8", "PCA", "full, RaBitQ"."""
    names = {"smec": "SMEC", "pca": "PCA", "truncate": "truncation", "full": "full"}
    name = names.get(r["method"], r["method"])
    if r["method"] == "smec":
        name += " (labels)" if r["mode"] == "supervised" else " (no labels)"
    return name if r["codes"] == "float32" else f"{name}, {r['codes']}"


def demo_tables(payload: dict) -> str:
    """The demo's two tables from its JSON payload: without labels first (SMEC unsupervised, PCA, truncation,
    quantized codes, full-dim RaBitQ), then with labels (supervised SMEC); one row per configuration and dim,
    nDCG@10 and QPS without and with full-dim rerank."""
    records = payload["records"]
    get = {(r["panel"], _label(r), r["dim"], r["rerank"]): r for r in records}
    D = payload["dim"]

    def table(panel: str) -> str:
        rows, seen = [], set()
        order = sorted({(r["dim"], r["bytes_per_vector"], _label(r)) for r in records if r["panel"] == panel},
                       key=lambda t: (-t[0], -t[1], t[2]))
        for dim, nbytes, label in order:
            if (dim, label) in seen:
                continue
            seen.add((dim, label))
            plain, rr = get.get((panel, label, dim, "none")), get.get((panel, label, dim, "full"))
            cell = lambda r, key, fmt: "-" if r is None else format(r[key], fmt)  # noqa: E731
            rows.append([label, f"{dim} (full)" if dim == D else dim, nbytes, f"{D * 4 / nbytes:.0f}x",
                         cell(plain, "ndcg@10", ".4f"), cell(rr, "ndcg@10", ".4f"),
                         cell(plain, "qps", ",.0f"), cell(rr, "qps", ",.0f")])
        return markdown_table(["configuration", "dim", "bytes/vector", "vs float32 full", "nDCG@10",
                               "+ rerank", "QPS", "QPS + rerank"], rows)

    overlap = payload.get("overlap", {})
    note = ""
    if overlap.get("test_relevant"):
        note = (f"\n\nWith labels (supervised SMEC, trained on the {payload['n_train_queries']} train queries' "
                f"judgements). On this data set {overlap['shared']} of the {overlap['test_relevant']} documents "
                f"relevant to a test query are also positives of a train query, which inflates these numbers: "
                f"treat them as an upper bound.\n\n")
    else:
        note = "\n\nWith labels (supervised SMEC):\n\n"
    return ("Without labels (the corpus only):\n\n" + table("unsupervised") + note + table("supervised"))


def _example(ds: BeirDataset, index: CompressedIndex, q: np.ndarray, qid: str, qrels: dict, dim: int) -> str:
    """One test query with the titles of its top 3 at the smallest dim with rerank; [x] marks a judged hit."""
    if not (ds.root / "corpus.jsonl.gz").is_file() or not (ds.root / "queries.jsonl.gz").is_file():
        return ""
    texts, queries = ds.corpus_texts(), ds.query_texts()
    _, I = index.search(q[None, :], 3, dim=dim, rerank="full")
    lines = [f'Example, SMEC without labels at {dim} dims + rerank: "{queries.get(qid, qid)}"']
    for j in I[0]:
        doc = ds.doc_ids[j]
        mark = "[x]" if qrels[qid].get(doc, 0) > 0 else "[ ]"
        title = texts.get(doc, doc)
        lines.append(f"  {mark} {title[:100] + ('...' if len(title) > 100 else '')}")
    return "\n".join(lines)


def _git(*argv: str) -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(command: str | None) -> dict:
    """Where the numbers come from: the git commit of this checkout and whether it had uncommitted changes
    (None outside a git checkout), the command line, and the threads torch and FAISS had."""
    import sys

    import torch

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status),
            "command_line": command if command is not None else " ".join(["smec-index", *sys.argv[1:]]),
            "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads(),
                        "faiss_qps": 1}}


def plot_demo(payload: dict, path: str | Path) -> Path | None:
    """The demo's PNG: nDCG@10 against bytes per vector, without labels (left) and with labels (right), each
    point labelled with its dims and codes; None (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = payload["records"]
    full = next(r for r in records if r["method"] == "full" and r["codes"] == "float32")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, panel, title in ((axes[0], "unsupervised", "without labels"),
                             (axes[1], "supervised", "with labels (inflated on SciFact: train/test overlap)")):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        lines: dict[str, list[dict]] = {}
        for r in records:
            if r["panel"] == panel and not (r["method"] == "full" and r["codes"] == "float32"):
                lines.setdefault(_label(r) + (" + rerank" if r["rerank"] == "full" else ""), []).append(r)
        for label, pts in sorted(lines.items()):
            pts.sort(key=lambda r: r["bytes_per_vector"])
            ax.plot([r["bytes_per_vector"] for r in pts], [r["ndcg@10"] for r in pts], marker="o",
                    ls="--" if label.endswith("rerank") else "-", label=label)
            for r in pts:
                ax.annotate(f"{r['dim']}{'' if r['codes'] == 'float32' else ' ' + r['codes']}",
                            (r["bytes_per_vector"], r["ndcg@10"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(full["ndcg@10"], color="grey", ls=":", label=f"full {full['dim']} dims, float32 ({full['ndcg@10']:.3f})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per vector (codes of the searched index)")
        ax.set_title(f"{payload['dataset']} / {payload['model']}: {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("nDCG@10")
    return save_figure(fig, path)


def _load_average() -> float | None:
    """The 1-minute load average (timings on a shared machine are only as good as it was quiet)."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _overlap(ds: BeirDataset, qrels: dict, pairs) -> dict:
    """How many documents relevant to an evaluation query are also positives of a training query."""
    test = {d for q in qrels for d, s in qrels[q].items() if s > 0}
    train = {ds.doc_ids[d] for _, d, r in pairs if r > 0}
    return {"test_relevant": len(test), "shared": len(test & train)}


def run_demo(
    data: str | Path | None = None,
    model: str | None = None,
    out: str | Path = "smec-demo",
    settings: DemoSettings | None = None,
    seed: int = 0,
    progress: bool | str = True,
    echo: Callable[[str], None] = print,
    command: str | None = None,
) -> dict:
    """Run the demo, print its tables through ``echo``, write ``demo.json`` (and ``demo.png`` when matplotlib
    is installed) into ``out``.

    Returns the JSON payload. ``data``/``model`` default to the shipped SciFact with all-MiniLM-L6-v2.
    ``command`` is the command line recorded in the JSON (default: this process's arguments).
    """
    from tqdm.auto import tqdm

    s = settings or DemoSettings()
    t_start = time.perf_counter()
    prov = provenance(command)  # the code that runs is the checkout as it is now
    load_start = _load_average()
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

    models, train_s, train_threads = {}, {}, {}
    for method, mode in FITS:
        smec, secs = _fit(method, mode, dims, ds, Qt, pairs, s, seed, progress)
        models[(method, mode)], train_s[f"{method}/{mode}"] = smec, round(secs, 2)
        train_threads[f"{method}/{mode}"] = smec.train_threads_
        echo(f"  fitted {method} ({mode}) in {secs:.1f} s"
             + (f" on {smec.train_threads_} torch thread(s)" if smec.train_threads_ else ""))

    t0 = time.perf_counter()
    records: list[dict] = []
    indexes: dict[tuple, CompressedIndex] = {}
    k = min(s.k_eval, len(ds.doc_ids))
    # (method, mode, codes, spec) per dim: float32 HNSW for every compressor, and SMEC's unsupervised dims as
    # quantized codes (flat scans of 1 byte a dim, and 1 bit a dim + 8 bytes)
    configs = [(m, mode, "float32", s.spec) for m, mode in FITS]
    configs += [("smec", "unsupervised", codes, codes) for codes in QUANTIZED]
    steps = [(c, d) for c in configs for d in dims]
    for (method, mode, codes, spec), d in tqdm(steps, desc="indexes", disable=tqdm_disable(progress), leave=False):
        smec = models[(method, mode)]
        params = {"efSearch": s.ef_search} if spec.startswith("HNSW") else {}
        index = CompressedIndex(smec, dims=(d,), backend="faiss", spec=spec, params=params, rerank="none",
                                candidates=s.candidates)
        index.train(ds.corpus)
        index.add(ds.corpus)
        indexes[(method, mode, codes, d)] = index
        for rerank in ("none", "full"):
            _, I = index.search(Qe, k, rerank=rerank)
            qps = _qps(lambda: index.search(Qe, 10, rerank=rerank), len(qids), s.qps_repeats, s.qps_seconds)
            records.append({"panel": mode, "method": method, "mode": mode, "codes": codes, "spec": spec, "dim": d,
                            "rerank": rerank, "bytes_per_vector": code_bytes(spec, d),
                            **_metrics(I, qids, ds.doc_ids, qrels), "qps": round(qps, 1),
                            "train_s": train_s[f"{method}/{mode}"]})
    sup = models[("smec", "supervised")]
    full_specs = [("full", "-", "float32", s.spec, ds.corpus, Qe, "unsupervised"),
                  ("full", "-", "RaBitQ", "RaBitQ", ds.corpus, Qe, "unsupervised"),
                  ("smec", "supervised", "float32", s.spec, sup.transform(ds.corpus, D), sup.transform(Qe, D),
                   "supervised")]
    for method, mode, codes, spec, vectors, Qd, panel in full_specs:
        params = {"efSearch": s.ef_search} if spec.startswith("HNSW") else {}
        backend = make_backend("faiss", D, "ip", {"spec": spec, "params": params})
        if not backend.is_trained:
            backend.train(vectors)
        backend.add(np.arange(len(ds.doc_ids), dtype=np.int64), vectors)
        reranks = ("none", "full") if codes != "float32" else ("none",)
        for rerank in reranks:
            search = (lambda n, b=backend, Qd=Qd: b.search(Qd, n)) if rerank == "none" else \
                (lambda n, b=backend, X=vectors, Qd=Qd: _exact_rerank(b, X, Qd, n, s.candidates))
            _, I = search(k)
            qps = _qps(lambda: search(10), len(qids), s.qps_repeats, s.qps_seconds)
            records.append({"panel": panel, "method": method, "mode": mode, "codes": codes, "spec": spec, "dim": D,
                            "rerank": rerank, "bytes_per_vector": code_bytes(spec, D),
                            **_metrics(I, qids, ds.doc_ids, qrels), "qps": round(qps, 1),
                            "train_s": train_s["smec/supervised"] if method == "smec" else 0.0})
    n_built = len(steps) + len(full_specs)
    echo(f"  built and searched {n_built} FAISS indexes ({len(dims) * len(FITS) + 2} {s.spec}, "
         f"{len(dims) * len(QUANTIZED) + 1} quantized) in {time.perf_counter() - t0:.1f} s")

    payload = {"command": "smec-index demo", "data": "smec_index/data/scifact" if shipped else str(data),
               "shipped_data": shipped, "dataset": ds.name, "model": ds.model, "dim": D,
               "dims": list(dims), "n_docs": len(ds.doc_ids), "n_test_queries": len(qids),
               "n_train_queries": int(Qt.shape[0]), "seed": seed, "settings": asdict(replace(s, dims=dims)),
               "overlap": _overlap(ds, qrels, pairs), "provenance": prov,
               "environment": env, "load_avg_1min": {"start": load_start, "end": _load_average()},
               "train_s": train_s, "train_threads": train_threads, "records": records,
               "wall_s": round(time.perf_counter() - t_start, 1)}
    echo("")
    echo(demo_tables(payload))
    echo(f"\nnDCG@10 on the {len(qids)} test queries; bytes/vector = the codes the searched index stores per "
         f"vector (float32: 4 x dims; SQ8: 1 byte a dim; RaBitQ: 1 bit a dim + 8 bytes; an HNSW graph adds its "
         f"links: 2 x M x 4 bytes a vector for HNSW M); + rerank = the top {s.candidates} "
         f"rescored with the full float32 vectors (the adapted ones with labels), which stay in RAM or on disk; "
         f"QPS = one batch, k=10, FAISS on one thread, this machine (float32: {s.spec}, efSearch {s.ef_search}; "
         f"quantized: flat scans).")
    example = _example(ds, indexes[("smec", "unsupervised", "float32", min(dims))], Qe[0], qids[0], qrels, min(dims))
    if example:
        echo("\n" + example)
    payload["wall_s"] = round(time.perf_counter() - t_start, 1)
    json_path = write_json(out / "demo.json", payload)
    png = plot_demo(payload, out / "demo.png")
    wrote = f"{json_path} and {png}" if png else f"{json_path} (no plot: pip install matplotlib for demo.png)"
    echo(f"\nwrote {wrote} ({payload['wall_s']:.0f} s in all)")
    return payload


def _exact_rerank(backend, X: np.ndarray, Q: np.ndarray, k: int, candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``candidates`` of ``backend`` rescored exactly with the full vectors ``X``; the best ``k``."""
    _, C = backend.search(Q, max(k, candidates))
    S = np.einsum("qd,qcd->qc", Q, X[np.maximum(C, 0)])
    S[C < 0] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, 1), np.take_along_axis(C, order, 1)


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
    q = enc.encode([query], progress=False, cache=False)  # a one-off text: not worth a cache entry
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
