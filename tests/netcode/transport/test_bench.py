"""The transport benchmark's harness runs end to end on a tiny load (its speed is its own business)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_runs_a_small_load_and_reports_json():
    small = ["--clients", "3", "--seconds", "1", "--in-rate", "30", "--out-rate", "20"]
    out = subprocess.run(
        [sys.executable, "-m", "netcode.transport.bench", *small],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    report = json.loads(out)
    assert report["clients_connected"] == 3
    assert report["packets_in_per_second"] > 0 and report["packets_out_per_second"] > 0
    assert report["rtt_ms"]["samples"] > 0 and report["rtt_ms"]["p50"] > 0
    assert set(report["goal"]) == {"target", "passed"}
    assert report["server_drops"] == {}


def test_bench_rejects_bad_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "netcode.transport.bench", "--payload", "5000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--payload" in result.stderr
