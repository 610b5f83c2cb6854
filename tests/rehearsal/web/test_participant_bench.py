"""rehearsal.web.participant_bench: its analysis on a synthetic recording, and (slow) one short real run over
WebTransport (the WebSocket run is the same code with ``?transport=websocket``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rehearsal.web.participant_bench import analyse, applied_delay, with_repeats


def recording(prediction_error: float) -> dict:
    """Frames of one vertex moving at 10 mm/s: drawn off the truth by ``prediction_error`` (m), interpolation 40 ms
    behind it; the authoritative history is the truth."""
    times = np.arange(0, 2, 1 / 60)
    truth = lambda t: np.array([0.0, 0.02 + 0.01 * t, 0.0])  # noqa: E731 (server time = local time here)
    frames = []
    for t in times[6:-6]:
        when = t + 0.05
        drawn = truth(when) + np.array([prediction_error, 0.0, 0.0])
        interp = truth(when - 0.04)
        frames.append([t, t, *drawn, *interp, *interp])
    return {
        "sel": {"chosen": [[0, 3]], "byPatch": {"0": [3]}},
        "auth": {"0": [[t, *truth(t)] for t in times]},
        "frames": frames,
        "frameTimes": list(times),
        "descent": [[t, 0.06 - 0.025 * t, 0.06 - 0.025 * max(t - 0.1, 0)] for t in times[:60]],
        "own": [100, 100],
        "gaps": [16.7] * 99 + [300.0],
    }


def test_the_analysis_compares_prediction_with_interpolation_at_the_applied_time():
    figures = analyse(recording(0.0001), owd=0.05)
    errors = figures["held_rms_error_mm"]
    assert errors["predicted"] == pytest.approx(0.1, rel=1e-6)
    assert errors["interpolated"] == pytest.approx(0.4, rel=1e-6)  # 40 ms at 10 mm/s
    assert figures["prediction_error_ratio"] == pytest.approx(0.25, rel=1e-6)
    assert figures["own_instrument"]["display_latency_frames"] == 1
    assert figures["own_instrument"]["server_echo_latency_ms"] == pytest.approx(100, abs=1)
    assert figures["snapshot_gap_ms"]["max"] == 300.0 and figures["snapshot_gap_ms"]["p50"] == pytest.approx(16.7)
    assert figures["page_fps"] == pytest.approx(60, rel=1e-6)


def test_the_time_an_input_is_applied_is_measured_from_the_servers_echo_of_the_instrument():
    rec = recording(0.0001)
    server_now = np.asarray([f[1] for f in rec["frames"]])
    height = lambda t: 0.03 + 0.006 * np.sin(2 * np.pi * t / 1.5)  # noqa: E731 (the scripted hand's height)
    rec["frameInputY"] = list(height(server_now))
    echo_t = np.arange(-0.5, 2.5, 1 / 60)
    rec["echo"] = [[t, height(t - 0.083)] for t in echo_t]  # the server's instrument is there 83 ms later
    assert applied_delay(rec, owd=0.05) == pytest.approx(0.083, abs=0.002)
    assert applied_delay({**rec, "echo": []}, owd=0.05) == 0.05  # no echo: half the round trip
    figures = analyse(rec, owd=0.05)
    assert figures["input_applied_after_server_now_ms"] == pytest.approx(83, abs=2)
    assert figures["at_server_now_plus_half_rtt"]["prediction_error_ratio"] == pytest.approx(0.25, rel=1e-6)
    assert figures["held_rms_error_mm"]["interpolated"] > 0.6  # the truth 33 ms later: interpolation further off


def test_repeated_runs_report_the_first_runs_figures_and_the_medians():
    runs = [analyse(recording(e), owd=0.05) for e in (0.0001, 0.0003, 0.0002)]
    figures = with_repeats(runs)
    assert figures["prediction_error_ratio"] == runs[0]["prediction_error_ratio"]
    assert figures["repeats"]["median_prediction_error_ratio"] == runs[2]["prediction_error_ratio"]
    assert figures["repeats"]["display_latency_frames"] == [1, 1, 1]
    assert "repeats" not in with_repeats(runs[:1])


@pytest.mark.slow
def test_a_short_run_prints_its_json():
    out = subprocess.run(
        [sys.executable, "-m", "rehearsal.web.participant_bench", "--seconds", "2", "--transport", "webtransport"],
        capture_output=True,
        text=True,
        timeout=400,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["impairment"]["rtt_ms"] == 100 and list(report).count("websocket") == 0
    figures = report["webtransport"]
    assert figures["transport"]["name"] == "webtransport" and figures["transport"]["datagramsIn"] > 50
    assert figures["udp_relay"]["up_datagrams"] > 50
    assert figures["frames_compared"] > 10 and figures["held_rms_error_mm"]["interpolated"] > 0
    assert figures["own_instrument"]["display_latency_frames"] == 1
    assert figures["snapshot_gap_ms"]["count"] > 50 and figures["refusals"] == []
