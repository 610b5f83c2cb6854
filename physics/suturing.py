"""Suturing in a world: one needle and its thread, wired to the solver through one small seam.

Per frame, around the tissue step (the solver is not changed; the thread's hold on the tissue goes through the
solver's own grasp constraints, on `suture_hold` pseudo-instruments with ids from HOLD_ID_BASE up):

    control.instruments += suturing.inputs()       # the pseudo-instruments (no shape, never drawn)
    suturing.before_step(state)                    # each holds its tissue point, pulled to where the thread is
    report = solver.step(state, control, dt, substeps)
    events = suturing.after_step(model, state, report, dt)   # the needle, then the thread, one frame

`polyline()` is the live thread, `threads()` every thread by id for snapshots (the live one 0, then the tied pieces
cut off it), `needle.position`/`needle.orientation` the needle's rigid pose.

Holds: each stitch point a thread passes through has its own hold id (`Slide.hold`, the lowest free one from
HOLD_ID_BASE when it is threaded, at most MAX_HOLDS in all); it keeps it while the thread's slides are re-sorted
by u every step and when a cut moves it to a tied piece, so the solver's grasp on that id stays on that point.

Cutting (physics/thread_cut.py): scissors whose blades close across a thread segment this frame cut it there
(`thread_cut` events: the thread, the piece kept and its id, the stitches freed, the tail above the knot), or the
cut is refused (`thread_cut_refused`, once per closing: in_tissue, no_stitch, below_knot, too_short,
too_many_threads). The needle's side stays the live thread; a tied piece cut off is frozen (`frozen`), a loose
tail dropped.

Knots: every KNOT_EVERY frames (6 a second at 60 Hz; one check costs 0.2-0.7 ms for a 200-segment thread, see
physics/knots.py) the thread is classified (`knot` holds the last result), and a knot that has
become tight (a square, granny or surgeon's knot, under tension) is a `knot_tied` event with its kind, throws,
tight (True), handedness, wraps and position: once per knot, again when a different knot is tight (a further
throw) or when the same one is tied again after it was loose for REARM_CHECKS checks in a row.
"""

from __future__ import annotations

import math

import numpy as np

from physics.control import InstrumentInput
from physics.cutting import blade_length
from physics.instruments import quat_to_matrix, suture_hold
from physics.knots import KnotResult, classify_knot
from physics.model import Model
from physics.needle import Needle, NeedleSpec
from physics.smallvec import norm3
from physics.solver import Event, StepReport
from physics.state import Grasp, State
from physics.suture_thread import Slide, Thread, ThreadSpec, tissue_at
from physics.thread_cut import MAX_THREADS, CutPlan, CutRefusal, FrozenThread, crossed_segments, plan_cut, split_thread

HOLD_ID_BASE = 60_000  # pseudo-instrument ids HOLD_ID_BASE .. HOLD_ID_BASE + MAX_HOLDS - 1
MAX_HOLDS = 64  # 32 stitches' entries and exits


def is_hold(instrument: int) -> bool:
    """Whether a physics instrument id is one of the thread's hold points (not an instrument anyone holds)."""
    return HOLD_ID_BASE <= instrument < HOLD_ID_BASE + MAX_HOLDS


KNOT_EVERY = 10  # frames between knot checks
REARM_CHECKS = 3  # loose checks in a row after which the same knot tied again is a new knot_tied
_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


class Suturing:
    """A needle (held by `holder` at the start, or lying at its pose) with a thread swaged to its tail, and the tied
    pieces scissors cut off it (physics/thread_cut.py: frozen, holding their stitches)."""

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
        self.tears = 0
        self.knot: KnotResult | None = None  # the last knot check's result
        self._frames = 0
        self._tied: tuple | None = None  # the knot last reported tied (kind, throws, wraps, handedness)
        self._loose_checks = 0
        self.frozen: list[FrozenThread] = []  # tied pieces cut off the thread (thread ids 1 .. MAX_THREADS - 1)
        self._blades: dict[int, float] = {}  # each pair of scissors' opening last frame
        self._refused: set[int] = set()  # scissors whose closing was refused (told once per closing)
        self._targets: dict[int, np.ndarray | None] = {}  # id(frozen slide) -> its hold's target (None: slack)
        self._taut: dict[int, bool] = {}  # id(frozen slide) -> held this frame
        self._held: tuple | None = None  # _assign_holds' last (points, their holds, the held ones by hold id)
        self._limits: dict[tuple, tuple] = {}  # (id(point), epoch, id(tets)) -> (the point, its tissue region)

    def __setstate__(self, state: dict) -> None:
        """A checkpoint pickled before threads could be cut: no tied pieces, no scissors seen."""
        self.__dict__.update(state)
        for name, default in (("frozen", list), ("_blades", dict), ("_refused", set), ("_targets", dict),
                              ("_taut", dict)):  # fmt: skip
            self.__dict__.setdefault(name, default())
        self.__dict__.setdefault("_held", None)
        self.__dict__.setdefault("_limits", {})

    def polyline(self) -> np.ndarray:
        return self.thread.x

    def threads(self) -> list[tuple[int, np.ndarray]]:
        """Every thread as (thread id, polyline): the live one on the needle (id 0) first, then the tied pieces."""
        return [(0, self.thread.x), *((f.id, f.x) for f in self.frozen)]

    def _slides(self) -> list[Slide]:
        """Every stitch point held: the live thread's, then the frozen pieces'."""
        out = list(self.thread.slides)
        for f in self.frozen:
            out += f.slides
        return out

    def _assign_holds(self) -> list[Slide]:
        """Give each stitch point without a hold the lowest free hold id (at most MAX_HOLDS in all; beyond, none),
        so that a point keeps its pseudo-instrument, and its grasp, while the thread's slides are re-sorted and
        when a cut moves it to a frozen piece. Returns the held points in hold id order."""
        slides = self._slides()
        last = self._held
        if (
            last is not None
            and len(last[0]) == len(slides)
            and all(a is b and a.hold == h for a, b, h in zip(last[0], slides, last[1], strict=True))
        ):
            return list(last[2])  # the same points with the holds assigned last time (inputs, before_step, after_step)
        used: set[int] = set()
        for s in slides:
            if s.hold >= 0 and (s.hold in used or not is_hold(s.hold)):
                s.hold = -1  # a duplicate (a copied slide): assigned afresh
            if s.hold >= 0:
                used.add(s.hold)
        free = (HOLD_ID_BASE + i for i in range(MAX_HOLDS) if HOLD_ID_BASE + i not in used)
        for s in slides:
            if s.hold < 0:
                s.hold = next(free, -1)
        held = sorted((s for s in slides if s.hold >= 0), key=lambda s: s.hold)
        self._held = (slides, [s.hold for s in slides], held)
        return list(held)

    def hold_ids(self) -> list[int]:
        """The holds in this frame's Control: every live stitch point's, and a frozen piece's taut ones only (a
        slack tied stitch costs the solver nothing; a taut one is held from the frame after it pulls taut)."""
        return [s.hold for s in self._assign_holds() if self._taut.get(id(s), True)]

    def inputs(self) -> list[InstrumentInput]:
        """The pseudo-instruments for this frame's Control: one per tissue point a thread holds (``hold_ids``)."""
        return [InstrumentInput(k, self._spec, np.zeros(3), _IDENTITY.copy(), 0.0) for k in self.hold_ids()]

    def _frozen_targets(self, state: State) -> None:
        """Each frozen piece follows the tissue now (``FrozenThread.frame``), and where its stitch points are pulled
        (None: slack); the next frame's inputs and before_step use them (the tissue does not move between a step's
        end and the next's start)."""
        self._targets, self._taut = {}, {}
        for f in self.frozen:
            for slide, target in zip(f.slides, f.frame(state.x), strict=True):
                self._targets[id(slide)] = target
                self._taut[id(slide)] = target is not None

    def before_step(self, state: State) -> None:
        """Give each pseudo-instrument its grasp: the tissue point, pulled to where the thread passes it (a frozen
        piece's: only where its loop is taut, see physics/thread_cut.py)."""
        targets: dict[int, np.ndarray | None] = dict(self._targets)
        for slide in self.thread.slides:
            targets[id(slide)] = slide.target if slide.target is not None else slide.point.position(state.x)
        for slide in self._assign_holds():
            inst = state.instruments.get(slide.hold)
            if inst is None:
                continue  # first frame of this hold (or a slack frozen one, not in the Control): no grasp yet
            target = targets.get(id(slide))
            if target is None:
                inst.grasp = None  # a slack frozen stitch: the tissue is free there
                continue
            inst.grasp = Grasp(
                slide.point.vertices[None, :].astype(np.int32),
                slide.point.weights[None, :].astype(np.float64),
                np.asarray(target, dtype=np.float64)[None, :],
                tear_force=math.inf,
            )

    def after_step(self, model: Model, state: State, report: StepReport, dt: float) -> list[Event]:
        """The needle's and the thread's frame after the tissue's; the holds' forces feed back to the thread.
        Scissors closing across a thread this frame cut it first (``cut_with``); the frozen pieces follow the
        tissue."""
        forces = report.grasp_forces
        for slide in self._slides():
            if slide.hold >= 0:
                force = forces.get(slide.hold)
                slide.force = np.zeros(3) if force is None else np.array(force, dtype=np.float64)
        events = self.needle.step(model, state, dt)
        events += self._scissors(state)
        events += self.thread.step(model, state, self.needle, dt)
        self._frozen_targets(state)  # the frozen pieces follow the tissue, and where their holds pull
        for slide in self._slides():
            limit = self._pull_through_limit(model, slide)
            force = norm3(slide.force)
            if force > limit:
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
                            "force": force,
                            "limit": limit,
                        },
                    )
                )
                slide.force = np.zeros(3)
        self._assign_holds()
        self._frames += 1
        if self._frames % KNOT_EVERY == 0:
            events += self.check_knot()
        return events

    def _pull_through_limit(self, model: Model, slide: Slide) -> float:
        """``_pull_through`` at a stitch point, its tissue region kept per point until the model's topology
        changes (read for every point every frame; the material's strength is read afresh)."""
        key = (id(slide), model.epoch, id(model.tets))
        hit = self._limits.get(key)
        if hit is None or hit[0] is not slide:
            if len(self._limits) >= 4 * MAX_HOLDS:  # bounded: points come and go with cuts and slips
                self._limits.clear()
            hit = self._limits[key] = (slide, tissue_at(model, slide.point)[1])
        return _pull_through(model, hit[1])

    # --- cutting the thread --------------------------------------------------------------------------------------

    def _scissors(self, state: State) -> list[Event]:
        """Every pair of scissors whose blades closed this frame, tried against the threads."""
        events: list[Event] = []
        jaws: dict[int, float] = {}
        for k, inst in state.instruments.items():
            if not inst.spec.cuts:
                continue
            before = self._blades.get(k, inst.jaw)
            jaws[k] = inst.jaw
            if inst.jaw > before:
                self._refused.discard(k)  # opening again: a new closing may be refused (and told) again
            elif inst.jaw < before:
                length = blade_length(inst.spec.capsules)
                rotation = quat_to_matrix(inst.orientation)
                events += self.cut_with(k, inst.position, rotation, before, inst.jaw, length, state)
        self._blades = jaws
        return events

    def cut_with(self, instrument: int | None, position, rotation, jaw_before: float, jaw_after: float,
                 length: float, state: State) -> list[Event]:  # fmt: skip
        """Blades of this length closing from jaw_before to jaw_after (rad) at the pose (position, 3x3 rotation):
        every thread segment they cross is cut (physics/thread_cut.py), highest first; `thread_cut` events, or
        one `thread_cut_refused` per closing of an instrument."""
        events: list[Event] = []
        for thread_id in [0, *(f.id for f in self.frozen)]:
            x = self.thread.x if thread_id == 0 else self._frozen(thread_id).x
            segments, fractions = crossed_segments(x, position, rotation, jaw_before, jaw_after, length)
            for k, t in sorted(zip(segments.tolist(), fractions.tolist(), strict=True), reverse=True):
                event = self._cut(thread_id, int(k), float(t), instrument, state)
                if event is None:
                    break  # the piece was dropped: nothing more of it to cut
                if event.kind == "thread_cut_refused":
                    if instrument in self._refused:
                        continue
                    self._refused.add(instrument)
                events.append(event)
                if thread_id != 0 and event.kind == "thread_cut":
                    break  # a frozen piece cut once: its other segments' indices are the old piece's
        return events

    def _frozen(self, thread_id: int) -> FrozenThread:
        return next(f for f in self.frozen if f.id == thread_id)

    def _cut(self, thread_id: int, k: int, t: float, instrument: int | None, state: State) -> Event | None:
        """One cut of thread `thread_id` at segment k (t along it): the event (None: that thread is gone)."""
        live = thread_id == 0
        if not live and all(f.id != thread_id for f in self.frozen):
            return None
        piece = None if live else self._frozen(thread_id)
        x = self.thread.x if live else piece.x
        if k > x.shape[0] - 2:
            return None
        slides = self.thread.slides if live else piece.slides
        radius = self.thread.spec.radius
        # Tight by its size alone, not the thread's tension: a knot pulled tight stays tied when the hands let go.
        knot = classify_knot(x, None, radius=radius) if x.shape[0] >= 4 else None
        plan = plan_cut(x, slides, k, t, knot, live)
        where = [float(v) for v in (1.0 - t) * x[k] + t * x[k + 1]]
        if isinstance(plan, CutPlan) and live and plan.kept is not None and len(self.frozen) + 1 >= MAX_THREADS:
            plan = CutRefusal("too_many_threads", k)
        if isinstance(plan, CutRefusal):
            state.counters["thread_cut_refused"] += 1
            return Event("thread_cut_refused", instrument, {"thread": thread_id, "reason": plan.reason,
                                                            "segment": k, "position": where})  # fmt: skip
        v = self.thread.v if live else np.zeros_like(x)
        first, second = split_thread(x, v, slides, k)
        kept_id = None
        if live:
            self.thread.keep(first.x, first.v, first.slides)
            if plan.kept is not None:
                kept_id = min(set(range(1, MAX_THREADS)) - {f.id for f in self.frozen})  # the lowest free id
                self.frozen.append(FrozenThread(kept_id, second.x, second.slides, state, radius))
            self._tied, self._loose_checks = None, 0  # the live thread's knot went with the piece
        else:
            kept = first if plan.kept == "first" else second
            index = self.frozen.index(piece)
            if kept.x.shape[0] >= 2:
                kept_id = thread_id
                self.frozen[index] = FrozenThread(thread_id, kept.x, kept.slides, state, radius)
            else:
                del self.frozen[index]
        state.counters["thread_cuts"] += 1
        detail = {
            "thread": thread_id,
            "piece": kept_id,
            "kept": "frozen" if kept_id is not None and kept_id != 0 else "dropped",
            "segment": k,
            "position": where,
            "stitches": list(plan.freed),
            "tied": plan.tied,
            "tail_mm": None if plan.tail is None else plan.tail * 1e3,
            "knot": None if knot is None or not plan.tied else knot.kind,
            "left_m": float(np.linalg.norm(np.diff(self.thread.x, axis=0), axis=1).sum()),
        }
        if not live:
            detail["kept"] = "frozen" if kept_id is not None else "dropped"
        return Event("thread_cut", instrument, detail)

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


def _pull_through(model: Model, region: int) -> float:
    """The pull (N) at which a suture cuts through the tissue (of a region) it holds: strength x a 2 mm bite's area."""
    return model.materials[region].strength * 0.002 * 0.002 * 10.0
