"""Suturing in a world: one needle and its thread, wired to the solver through one small seam.

Per frame, around the tissue step (the solver is not changed; the thread's hold on the tissue goes through the
solver's own grasp constraints, on `suture_hold` pseudo-instruments with ids from HOLD_ID_BASE up):

    control.instruments += suturing.inputs()       # the pseudo-instruments (no shape, never drawn)
    suturing.before_step(state)                    # each holds its tissue point, pulled to where the thread is
    report = solver.step(state, control, dt, substeps)
    events = suturing.after_step(model, state, report, dt)   # the needle, then the thread, one frame

`polyline()` is the thread for snapshots, `needle.position`/`needle.orientation` the needle's rigid pose.

Knots: every KNOT_EVERY frames (6 a second at 60 Hz; one check costs about a millisecond for a 200-segment
thread, see physics/knots.py) the thread is classified (`knot` holds the last result), and a knot that has
become tight (a square, granny or surgeon's knot, under tension) is a `knot_tied` event with its kind, throws,
tight (True), handedness, wraps and position: once per knot, again when a different knot is tight (a further
throw) or when the same one is tied again after it was loose for REARM_CHECKS checks in a row.
"""

from __future__ import annotations

import math

import numpy as np

from physics.control import InstrumentInput
from physics.instruments import suture_hold
from physics.knots import KnotResult, classify_knot
from physics.model import Model
from physics.needle import Needle, NeedleSpec
from physics.solver import Event, StepReport
from physics.state import Grasp, State
from physics.suture_thread import Thread, ThreadSpec, tissue_at

HOLD_ID_BASE = 60_000  # pseudo-instrument ids HOLD_ID_BASE .. HOLD_ID_BASE + MAX_HOLDS - 1
MAX_HOLDS = 64  # 32 stitches' entries and exits


def is_hold(instrument: int) -> bool:
    """Whether a physics instrument id is one of the thread's hold points (not an instrument anyone holds)."""
    return HOLD_ID_BASE <= instrument < HOLD_ID_BASE + MAX_HOLDS


KNOT_EVERY = 10  # frames between knot checks
REARM_CHECKS = 3  # loose checks in a row after which the same knot tied again is a new knot_tied
_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


class Suturing:
    """A needle (held by `holder` at the start, or lying at its pose) with a thread swaged to its tail."""

    def __init__(
        self,
        model: Model,
        needle_spec: NeedleSpec,
        thread_spec: ThreadSpec,
        position,
        orientation,
        holder: int | None = None,
        thread_direction=(-1.0, 0.0, 0.0),
    ) -> None:
        self.needle = Needle(needle_spec, model, position, orientation, holder)
        self.thread = Thread(thread_spec, self.needle.tail(), thread_direction)
        self._spec = suture_hold()
        self._ids: dict[int, int] = {}  # id(slide) -> pseudo-instrument id
        self.tears = 0
        self.knot: KnotResult | None = None  # the last knot check's result
        self._frames = 0
        self._tied: tuple | None = None  # the knot last reported tied (kind, throws, wraps, handedness)
        self._loose_checks = 0

    def polyline(self) -> np.ndarray:
        return self.thread.x

    def hold_ids(self) -> list[int]:
        return [HOLD_ID_BASE + i for i in range(len(self.thread.slides[:MAX_HOLDS]))]

    def inputs(self) -> list[InstrumentInput]:
        """The pseudo-instruments for this frame's Control: one per tissue point the thread passes through."""
        return [InstrumentInput(k, self._spec, np.zeros(3), _IDENTITY.copy(), 0.0) for k in self.hold_ids()]

    def before_step(self, state: State) -> None:
        """Give each pseudo-instrument its grasp: the tissue point, pulled to where the thread passes it."""
        for k, slide in zip(self.hold_ids(), self.thread.slides, strict=False):
            target = slide.target if slide.target is not None else slide.point.position(state.x)
            inst = state.instruments.get(k)
            if inst is None:
                continue  # first frame of this hold: the solver creates it; the grasp starts next frame
            inst.grasp = Grasp(
                slide.point.vertices[None, :].astype(np.int32),
                slide.point.weights[None, :].astype(np.float64),
                np.asarray(target, dtype=np.float64)[None, :],
                tear_force=math.inf,
            )

    def after_step(self, model: Model, state: State, report: StepReport, dt: float) -> list[Event]:
        """The needle's and the thread's frame after the tissue's; the holds' forces feed back to the thread."""
        for k, slide in zip(self.hold_ids(), self.thread.slides, strict=False):
            slide.force = np.asarray(report.grasp_forces.get(k, np.zeros(3)), dtype=np.float64).copy()
        events = self.needle.step(model, state, dt)
        events += self.thread.step(model, state, self.needle, dt)
        for slide in self.thread.slides:
            limit = _pull_through_force(model, slide)
            if float(np.linalg.norm(slide.force)) > limit:
                self.tears += 1
                state.counters["suture_pulled_through"] += 1
                events.append(
                    Event(
                        "tear",
                        None,
                        {
                            "by": "suture",
                            "stitch": slide.stitch,
                            "side": slide.side,
                            "force": float(np.linalg.norm(slide.force)),
                            "limit": limit,
                        },
                    )
                )
                slide.force = np.zeros(3)
        self._frames += 1
        if self._frames % KNOT_EVERY == 0:
            events += self.check_knot()
        return events

    def check_knot(self) -> list[Event]:
        """Classify the thread's knot now; a `knot_tied` event when a knot has become tight (see the docstring)."""
        tension = self.thread.tension()
        knot = classify_knot(self.thread.x, tension, radius=self.thread.spec.radius)
        self.knot = knot
        if not (knot.tight and knot.kind is not None):
            self._loose_checks += 1
            if self._loose_checks >= REARM_CHECKS:
                self._tied = None
            return []
        self._loose_checks = 0
        signature = (knot.kind, knot.throws, knot.wraps, knot.handedness)
        if signature == self._tied:
            return []
        self._tied = signature
        detail = {
            "kind": knot.kind,
            "throws": knot.throws,
            "tight": True,
            "handedness": list(knot.handedness),
            "wraps": list(knot.wraps),
            "position": [float(v) for v in knot.centre],
            "extent": knot.extent,
            "tension": tension,
            "crossings": knot.crossings,
        }
        return [Event("knot_tied", None, detail)]


def _pull_through_force(model: Model, slide) -> float:
    """The pull (N) at which a suture cuts through the tissue it holds: strength x a 2 mm bite's area."""
    region = tissue_at(model, slide.point)[1]
    return model.materials[region].strength * 0.002 * 0.002 * 10.0
