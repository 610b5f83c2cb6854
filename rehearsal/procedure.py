"""Procedure steps: the scenario's completion checks, evaluated by the server on the room's physics.

Three kinds of check (boxes are in rest coordinates, so they name anatomy, not places in the room):

* ``displacement`` (a goal): done once some tissue vertex in the box has moved at least ``distance`` from
  where it lay when the world opened (settled under gravity, ``physics.settle``: the sag is no retraction) and
  stayed so for ``HOLD_SECONDS`` (a retraction held, not a poke).
* ``divided`` (a goal): done once the live tets whose rest centres lie in the box fall into two or more
  pieces of at least ``PIECE_SHARE`` of the box's tets each (specks left by a cut do not count).
* ``no_energy_near`` (a constraint): holds ("ok") until any tet within ``distance`` of the box is burned
  (cautery damage above zero); then it is "violated" for good, and the energised instrument nearest to
  the burn is blamed.

And four for suturing (a scenario with a ``[suture]`` section; the needle's stitches and the knots come from
the room's ``physics.suturing.Suturing``):

* ``stitch_placed`` (a goal): done once a stitch went in within its target's tolerance of the marked entry and
  came out within it of the marked exit (rest coordinates); a stitch is one pass of the needle, or two across
  a wound (``placed_stitches``); each stitch counts for one step. Its value: the larger of the two errors (m)
  of the best stitch so far.
* ``knot_tied`` (a goal): done once a tight knot is tied (of the required kind, when the check names one); a
  knot completes one such step (an interrupted closure ties one per stitch). Its value: the throws of the knot.
* ``wound_closed`` (a goal): done once at least one stitch is placed and the wound's widest gap
  (``physics.cutting.wound_gap``, over the incision's and the cuts' wound pairs) stays at most ``tolerance``
  for ``HOLD_SECONDS``. Its value: the gap (m).
* ``thread_cut`` (a goal): done once scissors cut the thread of a tied stitch above its knot (a ``thread_cut``
  event, physics/thread_cut.py, with a tight knot and the stitch on the piece cut off or trimmed) leaving a
  tail within ``tail`` ([shortest, longest] m; surgeons leave 3-5 mm), of the target's stitch when the check
  names one; each cut piece counts for one step. Its value: the tail (m) of the last such cut.

A step whose box holds no tissue is a ScenarioError when the procedure is built.
``Procedure`` is the stateful shell: ``evaluate`` runs once per simulated tick on the room's thread and
returns the steps whose status changed; the measures are small pure functions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numba
import numpy as np

from physics.cutting import wound_gap, wound_pairs
from physics.model import Model
from physics.state import State
from rehearsal.scenario import Scenario, ScenarioError, Step, StitchTarget

HOLD_SECONDS = 0.5
PIECE_SHARE = 0.1
GOALS = ("displacement", "divided", "stitch_placed", "knot_tied", "wound_closed", "thread_cut")
BOX_CHECKS = ("displacement", "divided", "no_energy_near")


@dataclass
class StepProgress:
    """Where one step stands: pending/done for goals, ok/violated for constraints."""

    id: str
    title: str
    kind: str
    status: str
    # displacement: largest (m); divided: pieces; no_energy_near: burned tets; stitch_placed: error (m);
    # knot_tied: throws; wound_closed: gap (m); thread_cut: tail (m)
    value: float = 0.0
    time: float | None = None  # room time when the status last changed
    by: int | None = None  # instrument blamed for a violation

    @property
    def goal(self) -> bool:
        return self.kind in GOALS

    def to_dict(self) -> dict:
        out = {"id": self.id, "title": self.title, "kind": self.kind, "status": self.status, "value": self.value}
        if self.time is not None:
            out["time"] = self.time
        if self.by is not None:
            out["instrument"] = self.by
        return out


@numba.njit(cache=True, nogil=True)
def largest_displacement(x: np.ndarray, rest: np.ndarray, ids: np.ndarray) -> float:
    """The farthest any of the vertices ``ids`` has moved from ``rest`` (m); checked every tick, so compiled."""
    most = 0.0
    for i in ids:
        d = (x[i, 0] - rest[i, 0]) ** 2 + (x[i, 1] - rest[i, 1]) ** 2 + (x[i, 2] - rest[i, 2]) ** 2
        most = max(most, d)
    return math.sqrt(most)


def piece_sizes(neighbour: np.ndarray, alive: np.ndarray, tets: np.ndarray) -> list[int]:
    """Sizes of the face-connected pieces that the live tets among ``tets`` form, largest first."""
    member = np.zeros(alive.shape[0], dtype=bool)
    member[tets] = True
    member &= alive
    seen = np.zeros_like(member)
    sizes = []
    for start in np.flatnonzero(member):
        if seen[start]:
            continue
        seen[start] = True
        queue, size = deque([start]), 0
        while queue:
            t = queue.popleft()
            size += 1
            for other in neighbour[t]:
                if other >= 0 and member[other] and not seen[other]:
                    seen[other] = True
                    queue.append(other)
        sizes.append(size)
    return sorted(sizes, reverse=True)


def tet_centres(positions: np.ndarray, tets: np.ndarray) -> np.ndarray:
    return positions[tets].mean(axis=1)


def stitch_errors(entry: np.ndarray, exit_: np.ndarray, target: StitchTarget) -> tuple[float, float]:
    """How far (m) a stitch's entry and exit (rest coordinates) lie from a marked target's."""
    return (
        float(np.linalg.norm(np.asarray(entry, dtype=np.float64) - target.entry)),
        float(np.linalg.norm(np.asarray(exit_, dtype=np.float64) - target.exit)),
    )


def nearest_target(entry: np.ndarray, exit_: np.ndarray, targets) -> tuple[StitchTarget | None, float, float]:
    """The marked target a stitch came closest to (by its larger error), with its entry and exit errors (m)."""
    best: tuple[StitchTarget | None, float, float] = (None, math.inf, math.inf)
    for target in targets:
        e, x = stitch_errors(entry, exit_, target)
        if max(e, x) < max(best[1], best[2]):
            best = (target, e, x)
    return best


@dataclass(frozen=True)
class PlacedStitch:
    """A stitch as the surgeon places it: one pass of the needle, or two across a wound (in at the entry, out
    into the wound; in from the wound, out at the exit); its rest-coordinate entry and exit, nearest target."""

    passes: tuple[int, ...]
    entry: np.ndarray
    exit: np.ndarray
    target: StitchTarget | None
    entry_error: float
    exit_error: float

    @property
    def on_target(self) -> bool:
        t = self.target
        return t is not None and self.entry_error <= t.tolerance and self.exit_error <= t.tolerance


def placed_stitches(passes, targets) -> tuple[list[PlacedStitch], int | None]:
    """The needle's passes (``physics.needle.Stitch``: entry_rest, exit_rest) as stitches, and the index of a
    first bite still waiting for its second. A pass that went in at a target's entry (within its tolerance) but
    came out away from its exit is a first bite: the next pass completes it, from its entry to that pass's exit."""
    stitches: list[PlacedStitch] = []
    pending: int | None = None
    for i, p in enumerate(passes):
        if pending is not None:
            first = passes[pending]
            target, e, x = nearest_target(first.entry_rest, p.exit_rest, targets)
            stitches.append(PlacedStitch((pending, i), first.entry_rest, p.exit_rest, target, e, x))
            pending = None
            continue
        target, e, x = nearest_target(p.entry_rest, p.exit_rest, targets)
        if target is not None and e <= target.tolerance < x:
            pending = i
            continue
        stitches.append(PlacedStitch((i,), p.entry_rest, p.exit_rest, target, e, x))
    return stitches, pending


def knot_matches(detail: dict, kind: str | None) -> bool:
    """A knot event's data (``{kind, throws, tight, ...}``, physics/knots.py) satisfies a knot_tied check."""
    return detail.get("tight") is True and (kind is None or detail.get("kind") == kind)


class Procedure:
    """The scenario's steps for one world (rebuilt when the world is reset)."""

    def __init__(self, scenario: Scenario, model: Model, start: np.ndarray | None = None) -> None:
        """``start``: the world's positions when it opened (displacement is measured from them; default the
        model's rest shape)."""
        self.steps = [_progress(step) for step in scenario.steps]
        self._checks = {step.id: step.check for step in scenario.steps}
        rest = model.rest_positions
        self._start: np.ndarray | None = None if start is None else np.array(start, dtype=np.float64)
        centres = tet_centres(rest, model.tets)
        used = model.vertex_used()
        self._vertices: dict[str, np.ndarray] = {}
        self._tets: dict[str, np.ndarray] = {}
        self._targets = {t.id: t for t in scenario.suture.targets} if scenario.suture is not None else {}
        self._credited: set[tuple[int, ...]] = set()  # stitches (their passes' indices) that completed a step
        self._cut_credited: set[tuple[int, ...]] = set()  # tied pieces (their stitches) whose cut completed a step
        self._wound: tuple[int, np.ndarray] = (-1, np.zeros((0, 2), np.int32))  # (epoch, pairs)
        _check_targets(scenario, model)
        for step in scenario.steps:
            check = step.check
            if check.kind not in BOX_CHECKS:
                continue
            if check.kind == "displacement":
                self._vertices[step.id] = np.flatnonzero(check.box.contains(rest) & used)
            elif check.kind == "divided":
                self._tets[step.id] = np.flatnonzero(check.box.contains(centres) & model.alive)
            else:
                self._tets[step.id] = np.flatnonzero(check.box.contains(centres, margin=check.distance))
            chosen = self._vertices.get(step.id, self._tets.get(step.id))
            if chosen.size == 0:
                raise ScenarioError(f"{scenario.source.name}: step {step.id!r}: its check's box holds no tissue")
        self._held_since: dict[str, float] = {}
        self._epoch = -1

    def __setstate__(self, state: dict) -> None:
        # A checkpoint pickled before rooms settled has no start: its world began at the rest shape.
        self.__dict__.update({"_start": None, **state})

    def _origin(self, model: Model) -> np.ndarray:
        """What displacement is measured from: the world's start, or the rest shape when none was given."""
        return model.rest_positions if self._start is None else self._start

    def current(self) -> StepProgress | None:
        """The first goal not yet done (what the team works on now)."""
        return next((s for s in self.steps if s.goal and s.status == "pending"), None)

    def summary(self) -> list[dict]:
        return [s.to_dict() for s in self.steps]

    def evaluate(
        self,
        model: Model,
        state: State,
        now: float,
        suturing: object = None,
        knots: list[dict] | tuple = (),
        cuts: list[dict] | tuple = (),
    ) -> list[StepProgress]:
        """Update every step from the world after a tick; returns the steps whose status changed.

        suturing: the room's ``physics.suturing.Suturing`` (its needle's placed stitches); knots: the data of
        this tick's ``knot_tied`` events; cuts: of its ``thread_cut`` events."""
        changed = []
        topology_changed = model.epoch != self._epoch
        self._epoch = model.epoch
        for s in self.steps:
            if s.status in ("done", "violated"):
                continue
            check = self._checks[s.id]
            if s.kind == "displacement":
                s.value = largest_displacement(state.x, self._origin(model), self._vertices[s.id])
                if s.value < check.distance:
                    self._held_since.pop(s.id, None)
                elif now - self._held_since.setdefault(s.id, now) >= HOLD_SECONDS:
                    changed.append(_mark(s, "done", now))
            elif s.kind == "stitch_placed":
                if self._stitch_placed(s, check.target, suturing):
                    changed.append(_mark(s, "done", now))
            elif s.kind == "knot_tied":
                tight = [k for k in knots if knot_matches(k, check.knot)]
                if tight:
                    throws = tight[-1].get("throws")
                    s.value = float(throws) if isinstance(throws, int | float) else 0.0
                    changed.append(_mark(s, "done", now))
                    knots = [k for k in knots if k is not tight[-1]]  # one knot, one step (interrupted stitches)
            elif s.kind == "thread_cut":
                if self._thread_cut(s, check, suturing, cuts):
                    changed.append(_mark(s, "done", now))
            elif s.kind == "wound_closed":
                s.value = self._gap(model, state)
                stitched = suturing is not None and len(suturing.needle.passes) > 0
                if not stitched or self._wound[1].size == 0 or s.value > check.tolerance:
                    self._held_since.pop(s.id, None)
                elif now - self._held_since.setdefault(s.id, now) >= HOLD_SECONDS:
                    changed.append(_mark(s, "done", now))
            elif s.kind == "divided":
                if not topology_changed:
                    continue
                tets = self._tets[s.id]
                big = max(1, int(np.ceil(PIECE_SHARE * tets.size)))
                s.value = float(sum(size >= big for size in piece_sizes(model.neighbour, model.alive, tets)))
                if s.value >= 2:
                    changed.append(_mark(s, "done", now))
            else:
                burned = self._tets[s.id][state.damage[self._tets[s.id]] > 0.0]
                s.value = float(burned.size)
                if burned.size:
                    s.by = _nearest_energised(state, tet_centres(state.x, model.tets[burned]).mean(axis=0))
                    changed.append(_mark(s, "violated", now))
        return changed

    def _stitch_placed(self, s: StepProgress, target_id: str | None, suturing: object) -> bool:
        """Whether a stitch not yet credited hit the target (crediting it); s.value: the best one's error."""
        target = self._targets.get(target_id)
        if suturing is None or target is None or not suturing.needle.passes:
            return False
        best = math.inf
        for stitch in placed_stitches(suturing.needle.passes, self._targets.values())[0]:
            if stitch.passes in self._credited:
                continue
            error = max(stitch_errors(stitch.entry, stitch.exit, target))
            best = min(best, error)
            if error <= target.tolerance:
                self._credited.add(stitch.passes)
                s.value = error
                return True
        s.value = best if math.isfinite(best) else s.value
        return False

    def _thread_cut(self, s: StepProgress, check, suturing: object, cuts: list[dict] | tuple) -> bool:
        """Whether one of this tick's cuts, not yet credited, cut a tied stitch's thread above its knot with a tail
        within the check's (crediting it); s.value: the tail (m) of the last such cut."""
        for cut in cuts:
            tail, stitches = cut.get("tail_mm"), cut.get("stitches")
            if cut.get("tied") is not True or not stitches or not isinstance(tail, int | float):
                continue
            key = tuple(sorted(int(i) for i in stitches))
            if key in self._cut_credited:
                continue
            if check.target is not None and check.target not in self._stitch_targets(suturing, key):
                continue
            s.value = float(tail) / 1e3
            if check.tail[0] <= s.value <= check.tail[1]:
                self._cut_credited.add(key)
                return True
        return False

    def _stitch_targets(self, suturing: object, passes: tuple[int, ...]) -> set[str]:
        """The marked targets of the stitches the needle's passes ``passes`` placed (their nearest targets)."""
        if suturing is None:
            return set()
        stitches = placed_stitches(suturing.needle.passes, self._targets.values())[0]
        return {p.target.id for p in stitches if p.target is not None and set(p.passes) & set(passes)}

    def _gap(self, model: Model, state: State) -> float:
        """The wound's widest gap now (its pairs found again only after a topology change)."""
        if self._wound[0] != model.epoch:
            self._wound = (model.epoch, wound_pairs(model))
        return wound_gap(model, state.x, self._wound[1])


TARGET_REACH = 0.005  # m: a marked stitch point this far from the tissue's surface (at rest) is a typo


def _check_targets(scenario: Scenario, model: Model) -> None:
    """Every marked stitch point lies on (near) the tissue's surface at rest, or the scenario is refused."""
    if scenario.suture is None or not scenario.suture.targets:
        return
    surface = model.rest_positions[np.unique(model.surface)]
    for target in scenario.suture.targets:
        for side, point in (("entry", target.entry), ("exit", target.exit)):
            gap = float(np.min(np.linalg.norm(surface - np.asarray(point), axis=1)))
            if gap > TARGET_REACH:
                raise ScenarioError(
                    f"{scenario.source.name}: suture target {target.id!r}: its {side} is {gap * 1e3:.1f} mm from "
                    f"the tissue's surface (at most {TARGET_REACH * 1e3:.0f} mm)"
                )


def _progress(step: Step) -> StepProgress:
    status = "pending" if step.check.kind in GOALS else "ok"
    return StepProgress(step.id, step.title, step.check.kind, status)


def _mark(s: StepProgress, status: str, now: float) -> StepProgress:
    s.status, s.time = status, now
    return s


def _nearest_energised(state: State, point: np.ndarray) -> int | None:
    """The physics id of the energised instrument closest to ``point`` (None when none is energised)."""
    near = [(float(np.linalg.norm(i.position - point)), key) for key, i in state.instruments.items() if i.energy]
    return min(near)[1] if near else None
