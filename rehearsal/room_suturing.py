"""Suturing in a room: how the scenario's needle sits in a needle driver, when it is loaded or rebuilt, and how the
needle's and thread's physics events become room events and skill metrics.

``rehearsal.room.Room`` owns one ``RoomSuturing`` (for a scenario with a ``[suture]`` section) and calls it around
each step: ``refresh`` before it (load the needle into the [suture] hand's driver; after a topology change, the
needle rebuilt on the new mesh), ``news`` after it (the physics events as room events). The seam to the solver
itself is ``physics.suturing.Suturing``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from physics import Control, Model
from physics.instruments import Kind, matrix_to_quat, quat_to_matrix
from physics.solver import Event
from physics.state import State
from physics.suturing import Suturing, is_hold
from rehearsal.hands import instrument_holder
from rehearsal.procedure import placed_stitches
from rehearsal.scenario import Scenario
from rehearsal.skill_metrics import SkillTracker

# How a loaded needle sits in the needle driver's jaws (the driver's frame: hinge at the origin, jaws along +z,
# opening in x-z): the needle's plane across the shaft (its axis along the shaft, so turning the driver about its
# shaft drives the needle along its arc), the tail held between the jaws NEEDLE_GRIP_DEPTH past the hinge, the
# wire across the jaws (along y). A pose for a needle driver holding the needle at (p, R) is
# ``driver_pose_for_needle``'s.
NEEDLE_GRIP_DEPTH = 0.005  # m
# Physics events of the needle and thread the room passes on to everyone as room events (under these names).
SUTURE_EVENTS = {
    "puncture": "puncture",
    "needle_exit": "needle_exit",
    "stitch": "stitch_placed",
    "knot_tied": "knot_tied",
    "needle_grasp": "needle_grasp",
    "needle_release": "needle_release",
    "needle_withdrawn": "needle_withdrawn",
    "tear": "suture_tear",
    "thread_cut": "thread_cut",
    "thread_cut_refused": "thread_cut_refused",
}


def needle_pose_in_driver(radius: float, position, orientation) -> tuple[np.ndarray, np.ndarray]:
    """The pose (centre, quaternion w-x-y-z) of a needle of this arc radius held in a needle driver at the
    given hinge pose, in the room's grip (``NEEDLE_GRIP_DEPTH``): the needle frame is the driver's, its tail
    on the jaws' axis, its centre ``radius`` to the driver's -x."""
    R = quat_to_matrix(np.asarray(orientation, dtype=np.float64) / np.linalg.norm(orientation))
    centre = np.asarray(position, dtype=np.float64) + R @ np.array([-radius, 0.0, NEEDLE_GRIP_DEPTH])
    return centre, matrix_to_quat(R)


def driver_pose_for_needle(radius: float, centre, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The needle driver's hinge pose (position, quaternion w-x-y-z) that holds a needle of this radius with
    its centre at ``centre`` and its frame turned by the 3x3 ``rotation``, in the room's grip (for bots,
    scripts and tests that drive a needle along its arc)."""
    R = np.asarray(rotation, dtype=np.float64)
    return np.asarray(centre, dtype=np.float64) - R @ np.array([-radius, 0.0, NEEDLE_GRIP_DEPTH]), matrix_to_quat(R)


def plain(detail: dict) -> dict:
    """A physics event's data as plain msgpack-able values (numbers, strings, lists), at most 24 keys."""
    out: dict = {}
    for key, value in list(detail.items())[:24]:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, bool | int | float | str):
            out[str(key)] = value
        elif isinstance(value, list | tuple) and len(value) <= 64:
            out[str(key)] = [v if isinstance(v, int | float | str | list) else str(v) for v in value]
    return out


@dataclass(frozen=True)
class SutureNews:
    """One needle or thread event for everyone (a ``rehearsal.room.RoomEvent``'s fields): its room name, plain
    data, the participant who caused it and the physics instrument involved."""

    kind: str
    detail: dict
    by: int | None = None
    instrument: int | None = None


@dataclass
class RoomSuturing:
    """The room's side of its needle and thread (the scenario's ``[suture]``, or one a script put in the room):
    the topology epoch the needle's tables were built for, and this tick's knots and thread cuts (for the
    procedure's knot_tied and thread_cut steps)."""

    scenario: Scenario
    epoch: int = -1
    knots: list[dict] = field(default_factory=list)
    cuts: list[dict] = field(default_factory=list)

    # --- the needle ------------------------------------------------------------------------------------------

    def new(self, model: Model, physics: State, holder: int | None = None) -> Suturing | None:
        """The scenario's needle and thread in this world (None without a [suture] section): in the jaws of
        ``holder`` (a needle driver's physics id, placed in its grip) or lying at the scenario's position (default:
        3 cm above the tissue's middle)."""
        suture = self.scenario.suture
        self.epoch = model.epoch
        if suture is None:
            return None
        if holder is not None and holder in physics.instruments:
            inst = physics.instruments[holder]
            position, orientation = needle_pose_in_driver(suture.needle.radius, inst.position, inst.orientation)
        else:
            holder = None
            rest = model.rest_positions
            top = np.array([*(0.5 * (rest.min(axis=0) + rest.max(axis=0)))])
            top[1] = rest[:, 1].max() + 0.03
            position = np.asarray(suture.needle_position if suture.needle_position is not None else top, float)
            orientation = np.array([1.0, 0.0, 0.0, 0.0])
        return Suturing(model, suture.needle, suture.thread, position, orientation, holder=holder)

    def restored(self, suturing: Suturing | None, model: Model, physics: State) -> Suturing | None:
        """A checkpoint's needle and thread for the world it restored (None: the scenario's needle anew, for a
        checkpoint written before the room had one)."""
        if suturing is None:
            return self.new(model, physics)
        self.epoch = model.epoch
        return suturing

    def refresh(self, suturing: Suturing, model: Model, physics: State, control: Control) -> Suturing:
        """Before a step: the needle loaded into the [suture] hand's needle driver once it is in the world, and
        after a topology change (a split cut adds vertices) the same needle told of the new mesh, mid-pass too.
        Returns the suturing to step (``suturing`` itself unless the needle was loaded)."""
        suture = self.scenario.suture
        needle = suturing.needle
        if suture is not None and suture.loaded and needle.holder is None and untouched(suturing):
            for command in control.instruments:
                held = not is_hold(command.id) and instrument_holder(command.id)[1] == suture.hand
                if held and command.spec.kind is Kind.NEEDLE_DRIVER and command.id in physics.instruments:
                    return self.new(model, physics, command.id)
        if model.epoch != self.epoch:
            needle.notify_model_changed(model)
            self.epoch = model.epoch
        return suturing

    # --- events ----------------------------------------------------------------------------------------------

    def news(self, suturing: Suturing, events: list[Event], elapsed: float, skills: SkillTracker,
             counters) -> list[SutureNews]:  # fmt: skip
        """The needle's and thread's events of one step as room events (the reliable path), scored for the
        holder in ``skills``; every kind counted in ``counters`` under its physics name (``suture_<kind>``).
        The knots tied and the threads cut this step are kept in ``knots`` and ``cuts`` for the procedure."""
        self.knots = []
        self.cuts = []
        needle = suturing.needle
        holder = needle.holder
        if holder is not None and not is_hold(holder):
            force = max(float(np.linalg.norm(needle.force)), float(needle.tip_force))
            skills.note_needle_force(*instrument_holder(holder), force)
        out = []
        for event in events:
            counters[f"suture_{event.kind}"] += 1
            kind = SUTURE_EVENTS.get(event.kind)
            if kind is None:
                continue
            by = event.instrument if event.instrument is not None and not is_hold(event.instrument) else holder
            who = instrument_holder(by) if by is not None and not is_hold(by) else None
            detail = plain(event.detail)
            if event.kind == "puncture" and who is not None:
                skills.note_puncture(*who, elapsed)
            elif event.kind == "stitch":
                detail.update(self.score_stitch(suturing, int(event.detail.get("index", -1)), who, elapsed, skills))
            elif event.kind == "knot_tied":
                self.knots.append(detail)
            elif event.kind == "thread_cut":
                self.cuts.append(detail)
            elif event.kind == "tear" and who is not None:
                skills.note_suture_tear(*who)
            out.append(SutureNews(kind, detail, None if who is None else who[0], by))
        return out

    def score_stitch(self, suturing: Suturing, index: int, who: tuple[int, str] | None, elapsed: float,
                     skills: SkillTracker) -> dict:  # fmt: skip
        """The stitch a pass placed (or its first bite across a wound), against the marked targets: the nearest
        one and its errors (mm), for the event and the holder's skill metrics."""
        stitches, pending = placed_stitches(suturing.needle.passes, self.scenario.suture.targets)
        if pending == index:
            return {"bite": "first"}  # out into the wound: the next pass completes the stitch
        stitch = next((s for s in stitches if s.passes[-1] == index), None)
        if stitch is None:
            return {}
        out: dict = {
            "passes": list(stitch.passes),
            "entry_rest": stitch.entry.tolist(),
            "exit_rest": stitch.exit.tolist(),
        }
        target = stitch.target
        if target is not None:
            out.update(target=target.id, entry_error_mm=stitch.entry_error * 1e3, exit_error_mm=stitch.exit_error * 1e3)
        if who is not None:
            record = skills.note_stitch(
                *who,
                elapsed,
                None if target is None else target.id,
                None if target is None else stitch.entry_error,
                None if target is None else stitch.exit_error,
                None if target is None else target.tolerance,
            )
            if record is not None:
                out.update(passed=record["passed"], time_s=record["time_s"])
        return out


def untouched(suturing: Suturing) -> bool:
    """The needle has done nothing yet: no pass, no stitch, nothing threaded (it may be made anew)."""
    return not suturing.needle.punctured and not suturing.needle.passes and not suturing.thread.slides
