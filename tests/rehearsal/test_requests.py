"""A request's vectors: finite numbers of the right length, or nothing (the room refuses the request)."""

import numpy as np

from rehearsal.requests import finite_vector


def test_a_finite_vector_of_the_right_length_comes_back_as_float64_and_anything_else_is_none():
    np.testing.assert_array_equal(finite_vector([0, 1, 2], 3), [0.0, 1.0, 2.0])
    given = np.array([0.0, 0.5, 1.0])
    assert finite_vector(given, 3) is given  # the input path's arrays are not converted again
    for bad in ([0, 1], [0, np.nan, 1], [0, np.inf, 1], "xyz", None, [[0, 1, 2]], [0, 1, 2, 3]):
        assert finite_vector(bad, 3) is None
