"""Records a grasp-and-pull force trace from the real engine, for the haptic loop's benchmark.

``python -m rehearsal.haptics_trace [OUT.json]``: the ``basic_skills`` room; a grasper opens in the tissue
block's top, closes (a grasp) and pulls straight up at ``--speed`` for ``--ticks`` ticks at 60 Hz. Each tick
records the instrument's position and the force the tissue exerts on it (N, ``StepReport.instrument_forces``);
the JSON (positions, forces, meta) is what ``netcode.thin_client.haptics_bench`` replays (netcode cannot run
the engine itself: it never imports physics or rehearsal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rehearsal.hands import instrument_id
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario, packaged_scenarios

DT = 1 / 60


def record(speed: float = 0.012, ticks: int = 45, scenario: str = "basic_skills") -> dict:
    """The trace: per pulling tick the instrument position (m) and the tissue's force on it (N)."""
    room = Room("haptics-trace", load_scenario(packaged_scenarios()[scenario]))
    room.join(Identity("haptics-trace", 1, Role.LEAD_SURGEON, "trace"))
    room.start()
    top, centre = room.physics.x.max(0), room.physics.x.mean(0)
    start = np.array([centre[0], top[1] - 0.002, centre[2]])
    key = instrument_id(1, "right")
    positions, forces, t, grasped = [], [], 0.0, False
    for i in range(20 + ticks):
        t += DT
        jaw = 0.6 if i < 10 else 0.0
        lift = max(0, i - 20) * speed * DT
        if (
            room.instrument_input(1, "right", start + np.array([0.0, lift, 0.0]), [0, 0, 0, 1], jaw, False, t)
            is not None
        ):
            raise RuntimeError("the room refused the trace's instrument pose")
        report = room.advance(DT)
        grasped |= any(e.kind == "grasp" for e in report.events)
        if any(e.kind in ("tear", "release") for e in report.events):
            break
        if i >= 20:
            positions.append(room.physics.instruments[key].position.tolist())
            forces.append(report.instrument_forces.get(key, np.zeros(3)).tolist())
    if not grasped:
        raise RuntimeError("the grasper did not grasp: no trace")
    meta = {
        "scenario": scenario,
        "speed_m_s": speed,
        "tick_hz": 60,
        "ticks": len(positions),
        "source": "rehearsal.haptics_trace",
    }
    return {"meta": meta, "positions": positions, "forces": forces}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="JSON file (default: stdout)")
    parser.add_argument("--speed", type=float, default=0.012, help="pull speed (m/s)")
    parser.add_argument("--ticks", type=int, default=45, help="pulling ticks at 60 Hz")
    args = parser.parse_args(argv)
    text = json.dumps(record(args.speed, args.ticks), indent=None)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
