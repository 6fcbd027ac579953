"""benchmarks/train_time.py: times the fits of each mode and says which have a target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import _require_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_time  # noqa: E402


@pytest.mark.realdata
def test_train_time_times_an_unlabelled_fit_without_a_target(tmp_path, capsys):
    _require_data()
    out = tmp_path / "t.json"
    assert train_time.main(["--n", "600", "--threads", "1", "--modes", "unsupervised,unlabelled",
                            "--json", str(out)]) == 0
    recs = {r["mode"]: r for r in json.loads(out.read_text())["records"]}
    assert recs["unsupervised"]["target_s"] == 60.0 and recs["unsupervised"]["met"] in (True, False)
    assert recs["unlabelled"]["target_s"] is None and recs["unlabelled"]["met"] is None
    assert "no target" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_time.main(["--n", "600", "--modes", "semi", "--json", str(out)])


def test_lift_keeps_inner_products_and_widens():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:5] + 0.1 * rng.standard_normal((5, 24)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    lx, lq = train_time.lift(x, 200, seed=1), train_time.lift(q, 200, seed=1, stream=1)
    assert lx.shape == (50, 200) and lq.shape == (5, 200) and lx.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(lx, axis=1), 1.0, atol=1e-5)
    # the same isometry for corpus and queries: query-document similarities survive up to the small noise
    np.testing.assert_allclose(lq @ lx.T, q @ x.T, atol=0.02)
    assert np.array_equal(lx, train_time.lift(x, 200, seed=1))  # seeded
    # the noise spans every dim: nothing of rank 24 stays
    assert np.linalg.matrix_rank(lx) == 50
    with pytest.raises(ValueError, match="at least"):
        train_time.lift(x, 10)


@pytest.mark.realdata
def test_train_time_lift_fits_a_wider_model_without_a_target(tmp_path):
    _require_data()
    out = tmp_path / "t.json"
    assert train_time.main(["--n", "600", "--threads", "1", "--modes", "unsupervised", "--lift", "1024",
                            "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    (rec,) = payload["records"]
    assert rec["dim"] == 1024 and rec["target_s"] is None and rec["met"] is None
    assert "lifted to 1024" in payload["data"]
    with pytest.raises(SystemExit):
        train_time.main(["--n", "600", "--lift", "512", "--json", str(out)])
