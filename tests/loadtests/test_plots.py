"""Plots are optional: without matplotlib they are skipped with a note; with it they write PNGs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from loadtests import plots
from loadtests.server import parse_metrics, tick_summary

TICKS = np.array([[t / 60, 0.005 + 0.02 * (t % 50 == 0), 0.0, 0.001] for t in range(600)])


def test_without_matplotlib_plots_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert "pip install" in plots.available()
    assert plots.tick_distribution(TICKS, [{"label": "a", "t0": 0, "t1": 10}], "unused.png") is None


def test_with_matplotlib_the_plots_are_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    path = plots.tick_distribution(TICKS, [{"label": "a", "t0": 0, "t1": 10}], tmp_path / "t.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    bots = [{"role": "observer", "down_bytes_per_second": [[0, 1000], [1, 2000]], "rtt_series": [[0.5, 0.01]]}]
    assert plots.bandwidth(bots, tmp_path / "b.png") is not None
    assert plots.rtt(bots, tmp_path / "r.png") is not None
    assert plots.bandwidth([], tmp_path / "none.png") is None  # nothing to draw


def test_tick_summary_takes_exact_quantiles_and_splits_step_from_publishing():
    summary = tick_summary(TICKS)
    assert summary["ticks"] == 600 and summary["p50_ms"] == pytest.approx(5.0)
    assert summary["over_budget_share"] == pytest.approx(12 / 600)
    assert summary["publish_p50_ms"] == pytest.approx(1.0) and summary["step_p50_ms"] == pytest.approx(4.0)
    assert tick_summary(np.zeros((0, 4))) == {"ticks": 0}
    assert tick_summary(TICKS, 100, 200) == {"ticks": 0}


def test_metrics_text_is_parsed_and_bad_lines_are_skipped():
    text = '# HELP x\nx_total 3\ny{le="0.5"} 2\nbroken{ 1\nz notanumber\n\n'
    assert parse_metrics(text) == {("x_total", ""): 3.0, ("y", 'le="0.5"'): 2.0}
