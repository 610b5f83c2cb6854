"""Set-ups shared by the suturing tests: a small pinned tissue block with a needle in a needle driver above it,
a thread pulled up through one stitch point, a tiny skin block without gravity for knots tied above it, and a
thread tied through a stitch with a tight square knot (for cutting it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from physics import Control, InstrumentInput, Solver, build_model, new_state
from physics.instruments import grasper, look_rotation, matrix_to_quat, needle_driver
from physics.materials import MUSCLE, Material
from physics.needle import Needle, NeedleSpec, TissuePoint
from physics.procedural import tissue_block, vertices_in_box
from physics.suture_thread import Thread, ThreadSpec
from physics.suturing import Suturing
from tests.physics.knot_shapes import SQUARE, thread

DRIVER = 7
DT = 1.0 / 60.0
SKIN = Material("skin", young=3e4, poisson=0.45, density=1000.0, strength=1e5)
STITCH_SEG = 0.002  # m: the segments of ``knotted_stitch``'s thread
# scissor blades along world +z, their plane (local x-z) across a thread along world x: local y is world x
ACROSS_X = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Bench:
    """The world, a needle whose arc dips 0.7 r under the top face, and a driver that turns it about its axis."""

    model: object
    state: object
    solver: Solver
    needle: Needle
    centre: np.ndarray
    hinge: np.ndarray
    driver_rot: np.ndarray
    top: float
    alpha: float = 0.0
    lower: float = 0.0
    shift: np.ndarray | None = None

    def control(self, jaw: float = 0.0, extra: list | None = None) -> Control:
        Rz = rot_z(self.alpha)
        p = self.centre + Rz @ (self.hinge - self.centre) + np.array([0.0, -self.lower, 0.0])
        if self.shift is not None:
            p = p + self.shift
        inputs = [InstrumentInput(DRIVER, needle_driver(), p, matrix_to_quat(Rz @ self.driver_rot), jaw)]
        return Control(inputs + (extra or []))

    def frame(self, jaw: float = 0.0, extra: list | None = None) -> list:
        self.solver.step(self.state, self.control(jaw, extra), DT, 10)
        return self.needle.step(self.model, self.state, DT)


def make_bench(spec: NeedleSpec | None = None, cells=(12, 4, 8)) -> Bench:
    mesh = tissue_block(size=(0.06, 0.02, 0.04), cells=cells)
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(mesh, [MUSCLE], fixed=fixed)
    state = new_state(model)
    spec = spec or NeedleSpec(radius=0.008)
    top = float(mesh.vertices[:, 1].max())
    centre = np.array([float(mesh.vertices[:, 0].mean()), top + 0.3 * spec.radius, float(mesh.vertices[:, 2].mean())])
    phi0 = math.pi + math.asin(0.3) - 0.02 - spec.arc_angle  # the tip just above the surface
    R0 = rot_z(phi0)
    driver_rot = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T
    tail = centre + R0 @ np.array([spec.radius, 0.0, 0.0])
    hinge = tail - driver_rot @ np.array([0.0, 0.0, 0.004])
    needle = Needle(spec, model, centre, matrix_to_quat(R0), holder=DRIVER)
    return Bench(model, state, Solver(model), needle, centre, hinge, driver_rot, top)


def drive_stitch(bench: Bench, max_frames: int = 500) -> list:
    """Press until the puncture, then turn the needle through the tissue until the stitch is placed."""
    events = []
    for _ in range(max_frames):
        if not bench.needle.punctured and not bench.needle.passes:
            bench.lower += 0.0002
        else:
            bench.alpha += 0.01
        events += bench.frame()
        if bench.needle.passes:
            break
    return events


def pull_up_through_point(model, state, e: int) -> Thread:
    """A 40-segment thread lying slack along the top face (a zigzag, half a segment's advance each) from the needle's
    tail to the tissue point at vertex ``e``, through it, and straight up from it; its upper end grasped and pulled
    2 cm up over a second, then held (90 frames at 60 Hz): the thread after, for its one slide."""
    solver = Solver(model)
    x = state.x
    needle, seg = NeedleSpec(), ThreadSpec().segment_length
    flat = [x[e] + np.array([-0.5 * seg * (20 - i), 0.0002, 0.433 * seg * (i % 2)]) for i in range(20)]
    rise = [x[e] + np.array([0.0, seg * i, 0.0]) for i in range(21)]
    su = Suturing(model, needle, ThreadSpec(segments=40), flat[0] - [needle.radius, 0.0, 0.0], np.array([1.0, 0, 0, 0]))
    th = su.thread
    th.x = np.array(flat + rise)
    th.pass_through(TissuePoint(np.array([e] * 3, np.int32), np.array([1.0, 0, 0])), 20.0, 0, "exit")
    end0 = th.x[-1].copy()
    q = look_rotation((0.0, -1.0, 0.0))
    for f in range(90):
        pull = end0 + np.array([0.0, 0.02 * min(1.0, f / 60), 0.0])
        su.before_step(state)
        report = solver.step(state, Control([InstrumentInput(1, grasper(), pull, q, 0.0), *su.inputs()]), DT, 10)
        if f == 0:
            th.grab(1, 40, state)
        su.after_step(model, state, report, DT)
    return th


def knot_world():
    """A 2 x 1 x 2 cm skin block pinned at its base, without gravity (knots are tied well above it)."""
    mesh = tissue_block(size=(0.02, 0.01, 0.02), cells=(2, 1, 2))
    fixed = vertices_in_box(mesh, (-np.inf, -np.inf, -np.inf), (np.inf, 1e-9, np.inf))
    model = build_model(mesh, [SKIN], fixed=fixed)
    model.gravity = np.zeros(3)
    return model, new_state(model)


def knotted_stitch(entry: np.ndarray, exit_: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A thread from the needle (particle 0) along x, through a tight square knot, down to the entry, across to the
    exit and up, in segments of STITCH_SEG: (points, u of the entry, u of the exit)."""
    seg = STITCH_SEG
    knot = thread(SQUARE, 0.004, seg=seg, lead=0.01)
    top = entry + np.array([0.0, 10 * seg, 0.0])
    knot = knot - knot[-1] + top
    down = [top + (entry - top) * i / 10 for i in range(1, 11)]
    across = [entry + (exit_ - entry) * i / 3 for i in range(1, 4)]
    up = [exit_ + np.array([0.0, seg * i, 0.0]) for i in range(1, 11)]
    pts = np.concatenate([knot, down, across, up])
    u_entry = float(len(knot) + 9)
    return pts, u_entry, u_entry + 3.0
