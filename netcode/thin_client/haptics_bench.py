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
  10 s of pushing into (and of holding against) a 1,000 N/m wall at ``--rtt``, with
  ``energy_gain_unprotected_j`` without the passivity controller.

``--max-damping`` and ``--energy-margin`` set the passivity controller (the trade between force error and
energy: CLIENT.md section 8).
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


def pull(rtt: float, config: HapticConfig) -> dict:
    s, forces, direction, meta = load_trace(TRACE)
    law = trace_law(s, forces, direction)

    def intent(t: float) -> np.ndarray:
        ramp = min(max((t - 0.2) / 0.75, 0.0), 1.0)
        return direction * s[-1] * (0.5 - 0.5 * np.cos(np.pi * ramp))

    local = simulate(law, intent, duration=2.0, rtt=rtt, config=config)
    naive = simulate(law, intent, duration=2.0, rtt=rtt, config=HapticConfig(local_model=False, passivity=False))
    return {
        "force_error": round(local.force_error(0.2), 4),
        "force_error_naive": round(naive.force_error(0.2), 4),
        "peak_force_n": round(float(np.abs(local.truth).max()), 3),
        "pull_work_j": local.work,
        "trace": {"scenario": meta.get("scenario"), "ticks": len(s), "pull_mm": round(float(s[-1]) * 1e3, 2)},
    }


def wall(rtt: float, config: HapticConfig) -> tuple[float, float]:
    """(most energy put out with, and without, the controller) over 10 s pushing in and out, and holding."""

    def pushing(t: float) -> np.ndarray:
        return np.array([0.0, 0.004 - 0.008 * (0.5 - 0.5 * np.cos(np.pi * t)), 0.0])

    def holding(t: float) -> np.ndarray:
        return np.array([0.0, 0.004 - 0.008 * min(t / 0.5, 1.0), 0.0])

    unprotected = HapticConfig(passivity=False)
    works = [simulate(wall_law(1000.0), i, duration=10.0, rtt=rtt, config=config).work for i in (pushing, holding)]
    active = [
        simulate(wall_law(1000.0), i, duration=10.0, rtt=rtt, config=unprotected).work for i in (pushing, holding)
    ]
    return max(works), max(active)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="real-time run of the loop's thread (s)")
    parser.add_argument("--rtt", type=float, default=0.1, help="round trip of the simulated network (s)")
    parser.add_argument("--max-damping", type=float, default=HapticConfig().max_damping, help="N s/m")
    parser.add_argument("--energy-margin", type=float, default=HapticConfig().energy_margin, help="J")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 600 and 0 <= args.rtt <= 2):
        parser.error("--seconds must be in (0, 600] and --rtt in [0, 2]")
    try:
        config = HapticConfig(max_damping=args.max_damping, energy_margin=args.energy_margin)
    except ValueError as exc:
        parser.error(str(exc))
    result = {"rtt_s": args.rtt, "max_damping": config.max_damping, "energy_margin": config.energy_margin}
    result.update(real_time(args.seconds))
    pulled = pull(args.rtt, config)
    wall_work, unprotected = wall(args.rtt, config)
    pull_work = pulled.pop("pull_work_j")
    result.update(pulled)
    result["energy_gain_j"] = max(wall_work, pull_work)
    result["energy_gain_unprotected_j"] = round(unprotected, 4)
    result["goals"] = {"rate_hz": 1000, "jitter_p99_ms": 0.2, "force_error": 0.2, "energy_gain_j": 0.0}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
