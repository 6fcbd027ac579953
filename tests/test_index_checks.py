"""The argument checks at CompressedIndex's boundary."""

from __future__ import annotations

import numpy as np
import pytest

from smec_index.index.checks import check_ids, check_vectors, is_int


def test_check_vectors_converts_and_finds_non_finite_rows():
    x = check_vectors(np.ones((2, 3), dtype=np.float64), "add", 3)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    big = np.full((3, 4), 3e38, np.float32)  # row sums overflow, values are finite: accepted
    assert check_vectors(big, "add", 4).shape == (3, 4)
    big[2, 1] = -np.inf
    with pytest.raises(ValueError, match=r"add: x has 1 row\(s\) with NaN or inf \(first: row 2\)"):
        check_vectors(big, "add", 4)
    with pytest.raises(ValueError, match=r"search: q has shape \(2, 3, 1\); expected \(n, D\)"):
        check_vectors(np.ones((2, 3, 1)), "search", None, name="q")
    assert check_vectors([[1.0, 2.0]], "train", None).shape == (1, 2)


def test_check_ids_and_is_int():
    np.testing.assert_array_equal(check_ids(np.array([3, 1], dtype=np.uint8), "add_with_ids", 2), [3, 1])
    with pytest.raises(ValueError, match="must fit in int64"):
        check_ids(np.array([2**63], dtype=np.uint64), "add_with_ids", 1)
    with pytest.raises(TypeError, match="got dtype bool"):
        check_ids(np.array([True]), "remove_ids", None)
    assert is_int(np.int32(3)) and not is_int(True) and not is_int(3.0)
