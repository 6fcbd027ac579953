"""Shared fixtures: small seeded synthetic data, and the real SciFact data from ../shared/data once per session."""

from __future__ import annotations

from pathlib import Path

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from smec_index.datasets import default_data_dir, load_beir

DATA_DIR = default_data_dir()

# fits choose their torch threads from the machine's load (``_threads.choose_threads``); a thread count that
# changes between two fits changes float sums in the last bits, and tests compare fits exactly: pin it (a test of
# the choice itself removes the variable), unless the caller set it
os.environ.setdefault("SMEC_INDEX_THREADS", "1")


def _clustered(n: int, D: int, seed: int, n_clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, D)) * np.linspace(2.0, 0.2, D)
    X = centres[rng.integers(0, n_clusters, n)] + rng.normal(scale=0.5, size=(n, D)) * np.linspace(1.0, 0.1, D)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


@pytest.fixture(scope="session")
def synth() -> np.ndarray:
    """600 x 48 clustered, L2-normalised vectors with decaying per-dim scale."""
    return _clustered(600, 48, seed=0)


@pytest.fixture(scope="session")
def synth_supervised(synth):
    """Queries that are distorted, noisy copies of corpus rows, labelled with the row they came from.

    The distortion (a fixed random linear map) is what a supervised adaptor can learn to undo."""
    rng = np.random.default_rng(1)
    rows = rng.choice(synth.shape[0], 80, replace=False)
    distort = np.eye(synth.shape[1]) + rng.normal(scale=0.25, size=(synth.shape[1], synth.shape[1]))
    Q = synth[rows] @ distort + rng.normal(scale=0.05, size=(80, synth.shape[1]))
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    pairs = [(i, int(r), 1.0) for i, r in enumerate(rows)]
    return Q.astype(np.float32), pairs


MISSING_DATA = "real data not found"


def _require_data() -> Path:
    if not (DATA_DIR / "emb").is_dir():
        pytest.skip(f"{MISSING_DATA} {DATA_DIR}")
    return DATA_DIR


def run_benchmark(script: str, *args: object, timeout: int = 600) -> None:
    """Run ``benchmarks/<script>`` with ``args`` in its own process on one passive OpenMP thread, as its
    real-data test needs it; skipped when the real data is absent."""
    _require_data()
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                   timeout=timeout)


def realdata_notice(skip_reasons: list[str], data_dir: Path) -> str | None:
    """The line shown at the end of a run when tests skipped because the real data is absent, else None."""
    n = sum(MISSING_DATA in reason for reason in skip_reasons)
    if not n:
        return None
    return (f"{n} real-data test{'s' if n > 1 else ''} SKIPPED: no SciFact data at {data_dir} (the BEIR-layout "
            f"directory ../shared/data/scifact next to this checkout); those tests did not run")


def pytest_report_header(config) -> str:
    found = (DATA_DIR / "emb").is_dir()
    return f"real data: {DATA_DIR} ({'found' if found else 'NOT FOUND: real-data tests will be skipped'})"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    reasons = [str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
               for r in terminalreporter.stats.get("skipped", [])]
    notice = realdata_notice(reasons, DATA_DIR)
    if notice:
        terminalreporter.write_sep("=", "real data missing", yellow=True, bold=True)
        terminalreporter.write_line(notice, yellow=True, bold=True)


@pytest.fixture(scope="session")
def scifact_minilm():
    return load_beir(_require_data(), "all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def scifact_mpnet():
    return load_beir(_require_data(), "all-mpnet-base-v2")


def write_toy_beir(root: Path, with_train: bool = True, n_docs: int = 6, n_queries: int = 8, dim: int = 4) -> Path:
    """A tiny BEIR-layout directory with one model "toy" (random embeddings); returns root."""
    (root / "qrels").mkdir(parents=True)
    emb = root / "emb" / "toy"
    emb.mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(n_docs)]
    with gzip.open(root / "corpus.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    with gzip.open(root / "queries.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(n_queries))
    rng = np.random.default_rng(0)
    np.save(emb / "corpus.f16.npy", rng.normal(size=(n_docs, dim)).astype(np.float16))
    np.save(emb / "queries.f16.npy", rng.normal(size=(n_queries, dim)).astype(np.float16))
    (emb / "corpus_ids.txt").write_text("\n".join(d["_id"] for d in docs))
    (emb / "query_ids.txt").write_text("\n".join(f"q{i}" for i in range(n_queries)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td2\t2\nq2\td3\t0\nq3\td4\t1\n")
    if with_train:
        (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq5\td0\t1\nq6\td5\t1\n")
    return root
