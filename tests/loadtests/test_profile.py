"""The capacity run's reactor profile: a cProfile dump summarised per room tick."""

import cProfile

from loadtests.server import profile_summary


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def test_a_profile_is_summarised_per_room_tick_by_own_and_cumulative_time(tmp_path):
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        _busy(2000)
    profile.disable()
    path = tmp_path / "reactor.pstats"
    profile.dump_stats(str(path))
    summary = profile_summary(path, ticks=10, top=5)
    assert summary["room_ticks"] == 10 and summary["total_us_per_tick"] > 0
    busy = next(r for r in summary["top_cumulative"] if r["function"].endswith(":_busy"))
    assert busy["calls_per_tick"] == 2.0 and busy["cum_us_per_tick"] >= busy["own_us_per_tick"] > 0
    assert 0 < len(summary["top_own_time"]) <= 5
    assert profile_summary(tmp_path / "missing.pstats", ticks=10) == {}
