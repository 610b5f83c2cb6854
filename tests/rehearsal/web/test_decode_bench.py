"""rehearsal.web.decode_bench on a small scene: the JS and Python figures, and its argument checks."""

from __future__ import annotations

import json

import pytest


def test_decode_bench_reports_js_and_python_decode_times(browser):
    """A small scene through rehearsal.web.decode_bench.run (in the session's Chromium)."""
    from rehearsal.web.decode_bench import run

    report = json.loads(json.dumps(run(grid=16, frames=40, runs=1, browser=browser)))  # printable as JSON
    assert 0 < report["vertices"] < 16 * 16  # the cut and the burn removed some
    assert report["snapshots"] == 40 and report["rejected"] == 0
    for side in ("javascript", "python"):
        decode = report[side]["decode"]
        assert 0 < decode["median_ms"] <= decode["p99_ms"] <= decode["max_ms"]
    assert report["javascript"]["cross_origin_isolated"] is True
    assert report["javascript"]["timer_resolution_ms"] < 0.05
    assert len(report["javascript"]["topology_ms"]) == 3  # the join's, the cut's and the burn's
    assert isinstance(report["goal_met"], bool)


def test_decode_bench_refuses_bad_arguments(capsys):
    from rehearsal.web.decode_bench import main

    with pytest.raises(SystemExit) as exc:
        main(["--grid", "2"])
    assert exc.value.code == 2
    assert "--grid" in capsys.readouterr().err
