"""Record a suture thread's motion from the physics, for the thread sync benchmark (``netcode.sync.thread_bench``).

A needle driver presses a curved needle into a pinned tissue block until it punctures, turns it through the tissue
along its arc (the stitch), then pulls it up and away, drawing the 200-segment thread through both holes: the
polyline each frame is what ``snap_thread`` carries. netcode does not import physics, so the recording is made here
and read there (as ``physics.trace_recorder`` does for the snapshot bench).

    python -m rehearsal.suture_trace --out suture.npz [--segments 200] [--pull-frames 240]

The file (numpy ``.npz``, ``format`` = ``suture-trace/1``): ``points`` (F, n, 3) float64 metres, the thread per
frame; ``needle_position`` (F, 3), ``needle_orientation`` (F, 4) (w, x, y, z); ``phase`` (F,) int8: 0 press,
1 stitch, 2 pull; ``dt`` (s).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from physics import Control, InstrumentInput, Solver, build_model, new_state
from physics.cli_types import positive_int
from physics.environment import Environment
from physics.instruments import matrix_to_quat, needle_driver
from physics.materials import MUSCLE
from physics.needle import NeedleSpec
from physics.procedural import tissue_block, vertices_in_box
from physics.suture_thread import ThreadSpec
from physics.suturing import Suturing

FORMAT = "suture-trace/1"
DRIVER = 7
DT = 1.0 / 60.0
PHASES = ("press", "stitch", "pull")


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def record(segments: int = 200, pull_frames: int = 240, max_stitch_frames: int = 700, log=None) -> dict:
    """Drive the scene (see the module doc); the recorded arrays."""
    mesh = tissue_block(size=(0.06, 0.02, 0.04), cells=(12, 4, 8))
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(mesh, [MUSCLE], fixed=fixed)
    model.environment = Environment.table(-0.001)
    state = new_state(model)
    solver = Solver(model)
    spec = NeedleSpec(radius=0.008)
    top = float(mesh.vertices[:, 1].max())
    centre = np.array([float(mesh.vertices[:, 0].mean()), top + 0.3 * spec.radius, float(mesh.vertices[:, 2].mean())])
    phi0 = math.pi + math.asin(0.3) - 0.02 - spec.arc_angle  # the tip just above the surface
    driver_rot = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T
    tail = centre + _rot_z(phi0) @ np.array([spec.radius, 0.0, 0.0])
    hinge = tail - driver_rot @ np.array([0.0, 0.0, 0.004])
    su = Suturing(model, spec, ThreadSpec(segments=segments), centre, matrix_to_quat(_rot_z(phi0)), holder=DRIVER)
    alpha, lower, lift = 0.0, 0.0, np.zeros(3)
    points, positions, orientations, phases = [], [], [], []
    pulled = 0
    started = time.perf_counter()
    for frame in range(max_stitch_frames + pull_frames):
        if not su.needle.punctured and not su.needle.passes:
            phase, lower = 0, lower + 0.0002
        elif alpha < 5.6 and not su.needle.passes:
            phase, alpha = 1, alpha + 0.012
        else:
            phase, pulled = 2, pulled + 1
            lift = lift + np.array([0.0004, 0.0008, 0.0])  # up and away: the thread slides through the holes
        rz = _rot_z(alpha)
        p = centre + rz @ (hinge - centre) + np.array([0.0, -lower, 0.0]) + lift
        driver = InstrumentInput(DRIVER, needle_driver(), p, matrix_to_quat(rz @ driver_rot), 0.0)
        su.before_step(state)
        report = solver.step(state, Control([driver, *su.inputs()]), DT, 10)
        su.after_step(model, state, report, DT)
        points.append(np.array(su.polyline(), np.float64))
        positions.append(np.array(su.needle.position, np.float64))
        orientations.append(np.array(su.needle.orientation, np.float64))
        phases.append(phase)
        if log is not None and frame % 60 == 0:
            print(f"frame {frame} ({PHASES[phase]}), {time.perf_counter() - started:.1f} s", file=log, flush=True)
        if pulled >= pull_frames:
            break
    return {
        "format": np.array(FORMAT),
        "points": np.stack(points),
        "needle_position": np.stack(positions),
        "needle_orientation": np.stack(orientations),
        "phase": np.array(phases, np.int8),
        "dt": np.array(DT),
        "stitches": np.array(len(su.needle.passes)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--segments", type=positive_int, default=200, help="thread segments (default 200)")
    parser.add_argument("--pull-frames", type=positive_int, default=240, help="frames of the pull after the stitch")
    args = parser.parse_args(argv)
    trace = record(args.segments, args.pull_frames, log=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **trace)
    frames = len(trace["points"])
    print(f"wrote {args.out}: {frames} frames, {int(trace['stitches'])} stitch(es)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
