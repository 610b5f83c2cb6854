"""Status shaping helpers: per-reason groups of a flat counter and nearest-rank quantiles."""

from collections import Counter

from rehearsal.status import by_prefix, nearest_rank


def test_by_prefix_carves_a_flat_counter():
    c = Counter({"dropped_bad_mac": 3, "dropped_replay": 1, "dropped_": 9, "connects": 2})
    assert by_prefix(c, "dropped_") == {"bad_mac": 3, "replay": 1}


def test_nearest_rank():
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([4, 1, 3, 2], 0.5) == 2
    assert nearest_rank(range(1, 101), 0.99) == 99
    assert nearest_rank([7], 0.99) == 7
