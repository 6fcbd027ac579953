"""Row norms and normalisation shared by the compressor, the data loader and the indexes."""

import numpy as np
import pytest

from smec_index._rows import inv_row_norms, normalise_rows, row_norms


def test_normalise_rows_unit_float32_contiguous_and_zero_rows_stay_zero():
    X = np.asfortranarray(np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float64))
    Y = normalise_rows(X)
    assert Y.dtype == np.float32 and Y.flags.c_contiguous
    np.testing.assert_allclose(Y[0], [0.6, 0.8], rtol=1e-7)
    assert not Y[1].any() and np.isfinite(Y).all()
    assert X[0, 0] == 3.0  # the input is left alone


def test_normalise_rows_in_place_divides_the_callers_array():
    X = np.array([[0.0, 2.0], [5.0, 0.0]], dtype=np.float32)
    Y = normalise_rows(X, in_place=True)
    assert np.shares_memory(X, Y)
    np.testing.assert_array_equal(X, [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize("n", [1, 4])
def test_inv_row_norms_scalar_path_matches_rows(n):
    X = np.random.default_rng(n).standard_normal((n, 7)).astype(np.float32)
    inv = inv_row_norms(X)
    assert isinstance(inv, float) if n == 1 else inv.shape == (n, 1)
    np.testing.assert_allclose(np.asarray(inv).reshape(-1), 1.0 / np.linalg.norm(X, axis=1), rtol=1e-6)
    np.testing.assert_allclose(row_norms(X), np.linalg.norm(X, axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(inv_row_norms(np.zeros((n, 3), np.float32))), 1e12, rtol=1e-6)  # floored
