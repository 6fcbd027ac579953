"""Shared fixtures: small seeded synthetic data, and the real SciFact data from ../shared/data once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smec_index.datasets import default_data_dir, load_beir

DATA_DIR = default_data_dir()


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


def _require_data() -> Path:
    if not (DATA_DIR / "emb").is_dir():
        pytest.skip(f"real data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def scifact_minilm():
    return load_beir(_require_data(), "all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def scifact_mpnet():
    return load_beir(_require_data(), "all-mpnet-base-v2")
