"""Haptic loop benchmark: real-time rate and jitter, force error at 100 ms RTT in a grasp and pull, energy gain.

``python -m netcode.thin_client.haptics_bench [--seconds S] [--rtt R]`` prints one JSON object on stdout:

* ``rate_hz``, ``jitter_p99_ms``, ``jitter_max_ms``, ``late_cycles``: the loop on its own thread in real time
  for ``--seconds`` against a simulated hand (goal 1 kHz, p99 |period - 1 ms| <= 0.2 ms);
* ``force_error``: RMS |rendered - the engine's force at the hand's position| / RMS |engine force| during a
  grasp and pull at ``--rtt`` (goal <= 0.2), with ``force_error_naive`` (holding the newest server force) for
  comparison. The force law is ``haptics_pull_trace.json``: the real engine's instrument force along a
  grasp-and-pull in the ``basic_skills`` room (``python -m rehearsal.haptics_trace``), replayed against the
  displacement along the pull;
* ``energy_gain_j``: the most energy the rendered force put into the hand (J, goal <= 0) over that pull and
  10 s of pushing into a 1,000 N/m wall at ``--rtt``, with ``energy_gain_unprotected_j`` without the
  passivity controller.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from netcode.thin_client.haptics import HapticConfig, HapticLoop
from netcode.thin_client.haptics_devices import SimulatedHand
from netcode.thin_client.haptics_sim import load_trace, simulate, trace_law, wall_law

TRACE = Path(__file__).with_name("haptics_pull_trace.json")


def real_time(seconds: float) -> dict:
    """The loop's own thread for ``seconds``: achieved rate and period jitter."""
    hand = SimulatedHand(lambda t: np.zeros(3), start=time.perf_counter())
    loop = HapticLoop(hand, 1)
    loop.on_force(np.array([0.0, 0.5, 0.0]), np.zeros(3))
    start = time.perf_counter()
    loop.start()
    time.sleep(seconds)
    loop.stop(timeout=2.0)
    elapsed = time.perf_counter() - start
    periods = np.array(loop.periods)
    jitter = np.abs(periods - 1.0 / loop.config.rate_hz) * 1e3
    return {
        "rate_hz": round(loop.stats.cycles / elapsed, 1),
        "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 4) if jitter.size else None,
        "jitter_max_ms": round(float(jitter.max()), 4) if jitter.size else None,
        "late_cycles": loop.stats.late_cycles,
    }


def pull(rtt: float) -> dict:
    s, forces, direction, meta = load_trace(TRACE)
    law = trace_law(s, forces, direction)

    def intent(t: float) -> np.ndarray:
        ramp = min(max((t - 0.2) / 0.75, 0.0), 1.0)
        return direction * s[-1] * (0.5 - 0.5 * np.cos(np.pi * ramp))

    local = simulate(law, intent, duration=2.0, rtt=rtt)
    naive = simulate(law, intent, duration=2.0, rtt=rtt, config=HapticConfig(local_model=False, passivity=False))
    return {
        "force_error": round(local.force_error(0.2), 4),
        "force_error_naive": round(naive.force_error(0.2), 4),
        "peak_force_n": round(float(np.abs(local.truth).max()), 3),
        "pull_work_j": local.work,
        "trace": {"scenario": meta.get("scenario"), "ticks": len(s), "pull_mm": round(float(s[-1]) * 1e3, 2)},
    }


def wall(rtt: float) -> tuple[float, float]:
    def intent(t: float) -> np.ndarray:
        return np.array([0.0, 0.004 - 0.008 * (0.5 - 0.5 * np.cos(np.pi * t)), 0.0])

    passive = simulate(wall_law(1000.0), intent, duration=10.0, rtt=rtt)
    active = simulate(wall_law(1000.0), intent, duration=10.0, rtt=rtt, config=HapticConfig(passivity=False))
    return passive.work, active.work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="real-time run of the loop's thread (s)")
    parser.add_argument("--rtt", type=float, default=0.1, help="round trip of the simulated network (s)")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 600 and 0 <= args.rtt <= 2):
        parser.error("--seconds must be in (0, 600] and --rtt in [0, 2]")
    result = {"rtt_s": args.rtt, **real_time(args.seconds)}
    pulled = pull(args.rtt)
    wall_work, unprotected = wall(args.rtt)
    pull_work = pulled.pop("pull_work_j")
    result.update(pulled)
    result["energy_gain_j"] = max(wall_work, pull_work)
    result["energy_gain_unprotected_j"] = round(unprotected, 4)
    result["goals"] = {"rate_hz": 1000, "jitter_p99_ms": 0.2, "force_error": 0.2, "energy_gain_j": 0.0}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
