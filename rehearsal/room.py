"""A rehearsal room: one scenario's physics world, its participants, and the rules for changing it.

The room is the domain core the server drives: participants join with the identity from their token,
send instrument input and commands, and the server advances the room one tick at a time. Every request
is checked against the role table (rehearsal.roles) and every input is validated before it can reach
physics; refusals are counted and answered, and never change the room.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from physics import Control, InstrumentInput, Model, Solver, StepReport
from physics.instruments import SPECS, InstrumentSpec, Kind
from physics.model import inverted_tets
from physics.pose_guard import PoseLimits
from physics.settle import Settled, settled_state
from physics.solver import Event
from physics.state import InstrumentState, State
from physics.suturing import Suturing
from rehearsal.complications import ComplicationError, Complications
from rehearsal.fixtures import FixtureEnforcer
from rehearsal.hands import HANDS, instrument_holder, instrument_id
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState, TransitionError, simulates, transition
from rehearsal.mentor_commands import MentorCommands
from rehearsal.procedure import Procedure
from rehearsal.recording import Recorder
from rehearsal.requests import DRIVING_ROLES, Participant, Refusal, finite_vector
from rehearsal.response_model import probe_response
from rehearsal.results_store import SessionResult
from rehearsal.roles import Action, Role, decide
from rehearsal.room_suturing import RoomSuturing
from rehearsal.scenario import Scenario, build_world
from rehearsal.skill_metrics import InstrumentSample, SkillTracker

WORKSPACE_MARGIN = 0.5  # m around the anatomy's bounding box that instruments may occupy
# The fastest believable instrument is the physics' own limit (one definition: physics.pose_guard.PoseLimits):
# faster input is a tracking glitch or an attack, and a pose the room accepts is one the solver takes as sent.
MAX_INSTRUMENT_SPEED = PoseLimits().max_speed
MAX_ANNOTATIONS = 64
# Network jitter, and a burst of redundant samples in one packet after a loss: the claimed time between two
# samples may exceed the server's time between receiving them by this much, no more (the speed limit's clock).
RECEIVE_GAP_SLACK = 0.1


class RoomFullError(ValueError):
    """A newcomer beyond the room's capacity (``Scenario.max_participants``)."""


@dataclass(frozen=True)
class RoomEvent:
    """Something the world did that everyone should hear about (a step, a complication, a reset), or that the
    server passes to one person (``grasp_response``: the response model of a new grasp, for its holder).

    by: the participant who caused it; instrument: the physics instrument id involved."""

    kind: str
    detail: dict
    by: int | None = None
    instrument: int | None = None


STEP_EVENTS = {"done": "step_completed", "violated": "step_violated"}


@dataclass
class HandInput:
    """The newest accepted pose of one hand, with the client's sample time (seconds)."""

    position: np.ndarray
    orientation: np.ndarray
    jaw: float
    energy: bool
    sample_time: float
    received_at: float | None = None  # server time it arrived (None: not known, e.g. a replay)


class Room(MentorCommands):
    """One room (see the module doc); its command handlers are ``rehearsal.mentor_commands``'s."""

    def __init__(
        self, session: str, scenario: Scenario, model: Model | None = None, settle_frames: int | None = None
    ) -> None:
        """The world opens settled (``physics.settle``: stepped with no instruments until the tissue is at rest,
        remembered per scenario), so the first person in sees it lying still, not falling onto the table;
        ``settle_frames`` steps exactly that many frames instead (a replay of a recording that says how many;
        0: the model's rest shape, as rooms opened before settling)."""
        self.session = session
        self.scenario = scenario
        self.model = model if model is not None else build_world(scenario)
        self.physics: State
        self.settled: Settled  # what settling did for the current world (its frames go into the recording)
        self.physics, self.settled = self._settled_start(settle_frames)
        self._solver: Solver | None = None  # for self.model; a new one when the model is replaced (reset, restore)
        self.state = RoomState.CREATED
        self.participants: dict[int, Participant] = {}
        self.removed: set[int] = set()  # removed by the mentor: their tokens and rejoin codes stay refused
        self.inputs: dict[tuple[int, str], HandInput] = {}
        self._control_times: tuple[Control | None, dict[int, float]] = (None, {})  # the last control's sample times
        self.counters: Counter[str] = Counter()
        self.procedure = Procedure(scenario, self.model, self.physics.x)
        self.complications = Complications(scenario)
        # one per session (a reset does not wipe what people did before it), judged by the scenario's limits
        limits = scenario.suture.limits if scenario.suture is not None else None
        self.skills = SkillTracker(thresholds=scenario.skill_limits, suture_limits=limits)
        self.instrument_forces: dict[int, float] = {}  # physics instrument id -> tissue force on it (N), last tick
        self.annotations: deque[dict] = deque(maxlen=MAX_ANNOTATIONS)  # the newest; late joiners get them
        self.frame = 0
        self.elapsed = 0.0  # simulated seconds since the room was created (a reset does not rewind it)
        self._recorder: Recorder | None = None
        # World changes asked for on the reactor thread, applied by advance() on the room's thread between
        # steps (so a step never sees the Model change under it); events go the other way.
        self._effects: deque[tuple[str, int, object]] = deque(maxlen=64)
        self._events: deque[RoomEvent] = deque(maxlen=4096)
        lo, hi = self.model.rest_positions.min(axis=0), self.model.rest_positions.max(axis=0)
        self.workspace = (lo - WORKSPACE_MARGIN, hi + WORKSPACE_MARGIN)
        self._workspace_bounds = (self.workspace[0].tolist(), self.workspace[1].tolist())
        self._specs: dict[Kind, InstrumentSpec] = {Kind(k): SPECS[Kind(k)]() for k in scenario.instruments}
        # the scenario's virtual fixtures, enforced on every pose control() hands to physics; their on/off state
        # (a mentor's toggle_fixture) outlives a reset
        self.fixtures = FixtureEnforcer.for_model(scenario.fixtures, self.model)
        self._fixture_contact: dict[int, tuple[bool, float | None]] = {}  # instrument -> (touching, deviation)
        self._energy_cut: set[int] = set()  # instruments whose pressed pedal a no-energy zone cut last tick
        # the scenario's needle and thread (None without a [suture] section): stepped around the solver in advance()
        # (its room side, loading and events: rehearsal.room_suturing)
        self._sutures = RoomSuturing(scenario)
        self.suturing: Suturing | None = self._sutures.new(self.model, self.physics)
        self.state = transition(self.state, RoomState.LOBBY)

    @property
    def recorder(self) -> Recorder | None:
        """The room's recording (None: not recorded)."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        """A fresh recording is told how many frames the world settled, so its replay starts from the same state
        (a resumed one already says so)."""
        self._recorder = recorder
        if recorder is not None:
            recorder.settled(self.settled.frames)

    def _settled_start(self, frames: int | None = None) -> tuple[State, Settled]:
        """The start state of ``self.model``: settled at the scenario's own tick, substeps and solver."""
        s = self.scenario
        return settled_state(self.model, 1.0 / s.tick_hz, s.substeps, s.solver, frames=frames)

    # --- people ------------------------------------------------------------------------------------------

    def join(self, identity: Identity) -> Participant:
        """Add a participant, or give a returning one their role and instruments back."""
        if identity.session != self.session:
            raise ValueError("this token is for another session")
        if self.state is RoomState.ENDED:
            raise ValueError("this session has ended")
        if identity.participant in self.removed:
            raise ValueError("the mentor removed this participant from the session")
        known = self.participants.get(identity.participant)
        if known is not None:
            known.connected = True
            return known
        if self.connected_count() >= self.scenario.max_participants:
            self.counters["refused_room_full"] += 1
            raise RoomFullError(f"the room is full ({self.scenario.max_participants} people)")
        participant = Participant(identity)
        if identity.role in DRIVING_ROLES and self._specs:
            first = next(iter(self._specs))
            participant.hands = {"right": first}
            suture = self.scenario.suture
            if suture is not None:  # the needle driver in the [suture] hand, a grasper (if any) in the other
                other = next(h for h in HANDS if h != suture.hand)
                participant.hands = {suture.hand: Kind.NEEDLE_DRIVER}
                if identity.role is Role.ASSISTANT_SURGEON and Kind.SCISSORS in self._specs:
                    participant.hands = {suture.hand: Kind.SCISSORS}  # the assistant cuts the tied stitches' thread
                if Kind.GRASPER in self._specs:
                    participant.hands[other] = Kind.GRASPER
        self.participants[identity.participant] = participant
        return participant

    def connected_count(self) -> int:
        """People connected to the room now (what its capacity, ``Scenario.max_participants``, bounds)."""
        return sum(p.connected for p in self.participants.values())

    def leave(self, participant_id: int) -> None:
        """A participant disconnected: their instruments are withdrawn (grasps released) until they return."""
        p = self.participants.get(participant_id)
        if p is not None:
            p.connected = False
            for hand in HANDS:
                self.inputs.pop((participant_id, hand), None)

    # --- requests ----------------------------------------------------------------------------------------

    def _allowed(self, participant_id: int, action: Action) -> Participant | Refusal:
        p = self.participants.get(participant_id)
        if p is None or not p.connected:
            self.counters["refused_unknown_participant"] += 1
            return Refusal("not a participant of this room")
        decision = decide(p.identity.role, action)
        if not decision.allowed:
            self.counters[f"refused_{action.value}"] += 1
            return Refusal(decision.reason)
        return p

    def _driver(self, participant_id: int, hand: str) -> Participant | Refusal:
        """Who may send input for a hand: a role that drives, or a mentor driving the hand they took over."""
        p = self.participants.get(participant_id)
        if (
            p is not None
            and p.connected
            and hand in p.hands
            and (
                decide(p.identity.role, Action.TAKE_OVER_INSTRUMENT).allowed
                or decide(p.identity.role, Action.HOLD_RETRACTOR).allowed
            )
        ):
            return p
        return self._allowed(participant_id, Action.DRIVE_INSTRUMENT)

    def command(self, participant_id: int, action: Action | str, **args: object) -> Refusal | None:
        """A mentor or nurse command; None when done, a Refusal (counted) otherwise."""
        try:
            action = Action(action)
        except ValueError:
            self.counters["refused_unknown_command"] += 1
            return Refusal(f"unknown command {action!r}")
        p = self._allowed(participant_id, action)
        if isinstance(p, Refusal):
            return p
        handler = getattr(self, f"_do_{action.value}", None)
        if handler is None:
            self.counters["refused_unknown_command"] += 1
            return Refusal(f"{action.value} is not a command")
        outcome = handler(p, **args)
        if outcome is None and self.recorder is not None:
            self.recorder.command(participant_id, action.value, args)  # for the debrief's timeline
        return outcome

    def replay_command(self, participant_id: int, action: str, args: dict) -> Refusal | None:
        """A command the action journal kept (``rehearsal.journal``: allowed and done before a crash), done again
        on the room resumed from an older checkpoint. Its role was checked when it was done, and its author
        need not be connected now; it is recorded again (the recording resumes at the checkpoint)."""
        p = self.participants.get(participant_id)
        try:
            handler = getattr(self, f"_do_{Action(action).value}", None)
        except ValueError:
            handler = None
        if p is None or handler is None or not isinstance(args, dict):
            return Refusal(f"cannot replay {action!r} by {participant_id}")
        try:
            outcome = handler(p, **args)
        except TypeError:
            return Refusal(f"{action}: unexpected arguments {sorted(args)}")
        if outcome is None and self.recorder is not None:
            self.recorder.command(participant_id, str(action), args)
        return outcome

    def replay_step(self, progress: dict) -> bool:
        """A step's completion (or violation) the action journal kept, put back into the resumed procedure;
        False when the step is unknown or already settled."""
        step = next((s for s in self.procedure.steps if s.id == progress.get("id")), None)
        status = progress.get("status")
        if step is None or status not in STEP_EVENTS or step.status in STEP_EVENTS:
            return False
        step.status = str(status)
        value, at = progress.get("value"), progress.get("time")
        if isinstance(value, int | float):
            step.value = float(value)
        if isinstance(at, int | float):
            step.time = float(at)
        return True

    def step_events(self) -> list[RoomEvent]:
        """The step events (completed, violated) waiting in ``take_events()``, left there: what the server
        journals before it publishes them (on the reactor thread, between two steps)."""
        return [e for e in self._events if e.kind in STEP_EVENTS.values()]

    def _lifecycle(self, target: RoomState) -> Refusal | None:
        try:
            self.state = transition(self.state, target)
        except TransitionError as exc:
            self.counters["refused_transition"] += 1
            return Refusal(str(exc))
        return None

    def start(self) -> Refusal | None:
        """The lobby opens into the running session (the server starts it when the team is in)."""
        return self._lifecycle(RoomState.RUNNING)

    def end(self) -> Refusal | None:
        """End the session (the server does, e.g. after it has been empty too long)."""
        return self._lifecycle(RoomState.ENDED)

    def queue_effect(self, kind: str, by: int, arg: object = None) -> None:
        """A world change (``reset``, or ``inject`` with a complication id) for the next advance()."""
        if kind not in ("reset", "inject"):
            raise ValueError(f"unknown world change {kind!r}")
        self._effects.append((kind, by, arg))

    def queued_effects(self) -> list[tuple[str, int, object]]:
        """The world changes queued for the next advance(), oldest first (what a checkpoint must keep)."""
        return list(self._effects)

    def remove(self, participant_id: int) -> bool:
        """Take a participant out for good (their tokens and rejoin codes stay refused); False if unknown."""
        if participant_id not in self.participants:
            return False
        self.leave(participant_id)
        del self.participants[participant_id]
        self.removed.add(participant_id)
        return True

    # --- input -------------------------------------------------------------------------------------------

    def instrument_input(
        self,
        participant_id: int,
        hand: str,
        position: object,
        orientation: object,
        jaw: object = 0.0,
        energy: object = False,
        sample_time: float = 0.0,
        received_at: float | None = None,
    ) -> Refusal | None:
        """A tracked instrument pose; rejected (and counted) unless it is this participant's, finite, in the
        room, and reachable from the last accepted pose at a human speed. Older samples are ignored.

        The speed is judged over the client's claimed time between the two samples, but never over more than
        the server's own time between receiving them (``received_at``, server seconds) plus
        ``RECEIVE_GAP_SLACK``: a client cannot make a jump look slow by claiming a long gap."""
        p = self._driver(participant_id, hand)
        if isinstance(p, Refusal):
            return p
        if hand not in p.hands:
            self.counters["input_rejected_no_instrument"] += 1
            return Refusal(f"no instrument in the {hand!r} hand")
        pos, quat = finite_vector(position, 3), finite_vector(orientation, 4)
        if pos is None or quat is None or not isinstance(jaw, int | float) or not math.isfinite(jaw):
            self.counters["input_rejected_nonfinite"] += 1
            return Refusal("pose values must be finite numbers")
        norm = math.sqrt(quat.dot(quat))  # np.linalg.norm's formula (same bits), without its overhead
        if norm < 0.5:
            self.counters["input_rejected_nonfinite"] += 1
            return Refusal("orientation must be a unit quaternion")
        xyz = pos.tolist()  # plain floats: a few comparisons cost less than numpy calls on 3 values
        lo, hi = self._workspace_bounds
        if not (lo[0] <= xyz[0] <= hi[0] and lo[1] <= xyz[1] <= hi[1] and lo[2] <= xyz[2] <= hi[2]):
            self.counters["input_rejected_out_of_room"] += 1
            return Refusal("position is outside the room")
        key = (participant_id, hand)
        last = self.inputs.get(key)
        if last is not None:
            if sample_time <= last.sample_time:
                self.counters["input_stale"] += 1
                return None  # late or duplicate sample: the newer one already stands
            gap = sample_time - last.sample_time
            if received_at is not None and last.received_at is not None:
                gap = min(gap, max(0.0, received_at - last.received_at) + RECEIVE_GAP_SLACK)
            speed = math.dist(xyz, last.position.tolist()) / gap
            if speed > MAX_INSTRUMENT_SPEED:
                self.counters["input_rejected_too_fast"] += 1
                return Refusal("instrument moved faster than a hand can")
        self.inputs[key] = HandInput(pos, quat / norm, float(jaw), bool(energy), sample_time, received_at)
        return None

    def control(self) -> Control:
        """The physics Control for this tick: every connected driving hand's newest accepted pose (their sample
        times are kept for the skill metrics of this tick; the ticker builds the next control only after)."""
        inputs = []
        times = {}
        for (pid, hand), pose in sorted(self.inputs.items()):
            p = self.participants.get(pid)
            if p is None or not p.connected or hand not in p.hands:
                continue
            spec = self._specs[p.hands[hand]]
            iid = instrument_id(pid, hand)
            position, energy = self._apply_fixtures(iid, pid, hand, spec, pose)
            inputs.append(InstrumentInput(iid, spec, position, pose.orientation, pose.jaw, energy))
            times[iid] = pose.sample_time
        for gone in set(self._fixture_contact) - set(times):
            self.fixtures.forget(gone)
            del self._fixture_contact[gone]
            self._energy_cut.discard(gone)
        control = Control(inputs)
        self._control_times = (control, times)
        return control

    def _apply_fixtures(
        self, iid: int, pid: int, hand: str, spec: InstrumentSpec, pose: HandInput
    ) -> tuple[np.ndarray, bool]:
        """The pose's hinge position and energy after the virtual fixtures (``rehearsal.fixtures``); a tip stopped
        on entering a forbidden region, or a pedal cut in a no-energy zone, is counted and announced."""
        outcome = self.fixtures.constrain(iid, spec, pose.position, pose.orientation, pose.energy)
        self._fixture_contact[iid] = (bool(outcome.stopped_by) or self.fixtures.touching(iid), outcome.deviation)
        for fixture in outcome.entered:
            self.counters["fixture_violations"] += 1
            self.skills.note_fixture_violation(pid, hand)
            self._fixture_event("fixture_violation", {"fixture": fixture, "hand": hand}, pid, iid)
        if outcome.energy_cut is not None:
            self.counters["fixture_energy_cut_ticks"] += 1
            if iid not in self._energy_cut:  # the pedal was not being cut last tick
                self.counters["fixture_energy_cuts"] += 1
                self._fixture_event("energy_cut", {"fixture": outcome.energy_cut, "hand": hand}, pid, iid)
            self._energy_cut.add(iid)
        else:
            self._energy_cut.discard(iid)
        return outcome.position, outcome.energy

    def replay_fixture_event(self, record: dict) -> None:
        """A recorded fixture event (a replay): a violation is scored again (the recorded control is already
        enforced, so replaying it stops no tip)."""
        iid = record.get("instrument")
        if record.get("kind") == "fixture_violation" and isinstance(iid, int) and iid >= 0:
            self.skills.note_fixture_violation(*instrument_holder(iid))

    def _fixture_event(self, kind: str, detail: dict, pid: int, iid: int) -> None:
        self._events.append(RoomEvent(kind, detail, by=pid, instrument=iid))
        if self.recorder is not None:
            self.recorder.fixture_event(kind, pid, iid, detail)  # for the debrief's timeline

    # --- time --------------------------------------------------------------------------------------------

    def advance(
        self,
        dt: float,
        substeps: int | None = None,
        control: Control | None = None,
        sample_times: dict[int, float] | None = None,
    ) -> StepReport | None:
        """One tick: queued world changes, then physics only while running (a paused room's tissue does not
        move), then the procedure checks and complications. Their events wait in take_events().

        The ticker builds `control` on the reactor thread and runs this on the room's worker thread;
        `sample_times` (instrument id -> pose sample time) stand in for control()'s when given (a replay)."""
        self._apply_effects()
        if not simulates(self.state):
            return None
        control = control if control is not None else self.control()
        if sample_times is not None:
            self._control_times = (control, sample_times)
        substeps = substeps or self.scenario.substeps
        if self.recorder is not None:
            built, times = self._control_times
            self.recorder.tick(dt, substeps, control, times if built is control else None)
        if self._solver is None or self._solver.model is not self.model:
            self._solver = Solver(self.model, mode=self.scenario.solver)
        stepped = control
        if self.suturing is not None:
            self.suturing = self._sutures.refresh(self.suturing, self.model, self.physics, control)
            stepped = Control([*control.instruments, *self.suturing.inputs()])
            self.suturing.before_step(self.physics)
        report = self._solver.step(self.physics, stepped, dt, substeps)
        self.frame += 1
        self.elapsed += dt
        knots: list[dict] = []
        cuts: list[dict] = []
        if self.suturing is not None:
            self._suture_events(self.suturing.after_step(self.model, self.physics, report, dt))
            knots = self._sutures.knots  # this tick's knot_tied data, for the procedure
            cuts = self._sutures.cuts  # and its thread_cut data
        self._count_solver_health(report)
        self._observe_skills(control, report)
        self._probe_new_grasps(report, dt, substeps)
        for s in self.procedure.evaluate(self.model, self.physics, self.elapsed, self.suturing, knots, cuts):
            self._events.append(RoomEvent(STEP_EVENTS[s.status], s.to_dict(), instrument=s.by))
            if s.status == "violated" and s.by is not None:
                self.skills.note_misapplied_energy(*instrument_holder(s.by))
        for detail in self.complications.update(self.physics, dt, self.elapsed):
            self._events.append(RoomEvent("bleeding_stopped", detail))
        return report

    # --- suturing ----------------------------------------------------------------------------------------

    def restore_suturing(self, suturing: Suturing | None) -> None:
        """A checkpoint's needle and thread, for the world it restored into ``self.model`` (None: the scenario's
        needle anew, for a checkpoint written before the room had one)."""
        self.suturing = self._sutures.restored(suturing, self.model, self.physics)

    def _suture_events(self, events: list[Event]) -> None:
        """The needle's and thread's events as room events (the reliable path), scored for the holder."""
        for news in self._sutures.news(self.suturing, events, self.elapsed, self.skills, self.counters):
            self._events.append(RoomEvent(news.kind, news.detail, by=news.by, instrument=news.instrument))

    def _count_solver_health(self, report: StepReport) -> None:
        """Solver health for ops (kept across resets): speed clamps and non-finite resets every step, and
        once a second the inverted tets (a count per check, so a tet inverted for 3 s counts 3)."""
        self.counters["solver_speed_clamped"] += report.counts.get("speed_clamped", 0)
        self.counters["solver_nonfinite_resets"] += report.counts.get("nonfinite_resets", 0)
        if self.frame % self.scenario.tick_hz == 0:
            self.counters["solver_inverted"] += inverted_tets(self.model, self.physics.x)

    def _observe_skills(self, control: Control, report: StepReport) -> None:
        """Feed the skill metrics the poses physics used and the forces it measured; tears count as damage."""
        samples = []
        forces: dict[int, float] = {}
        built, times = self._control_times
        times = times if built is control else {}  # a control from elsewhere (a replay): tick times
        for command in control.instruments:
            inst = self.physics.instruments.get(command.id)
            if inst is None:
                continue
            force = report.instrument_forces.get(command.id)
            forces[command.id] = 0.0 if force is None else math.hypot(*force.tolist())
            participant, hand = instrument_holder(command.id)
            touching, deviation = self._fixture_contact.get(command.id, (False, None))
            samples.append(
                InstrumentSample(
                    participant=participant,
                    hand=hand,
                    kind=inst.spec.kind.value,
                    position=inst.position,
                    orientation=inst.orientation,
                    jaw=float(inst.jaw),
                    energy=bool(inst.energy),
                    force=forces[command.id],
                    sample_time=times.get(command.id),
                    fixture_contact=touching,
                    guide_deviation=deviation,
                )
            )
        self.skills.observe(self.elapsed, samples)
        self.instrument_forces = forces
        for event in report.events:
            if event.kind == "tear" and event.instrument is not None:
                self.skills.note_damage(*instrument_holder(event.instrument), 1)

    def instruments(self) -> dict[int, InstrumentState]:
        """The instruments people hold, by physics id: the suture's hold points (``Kind.SUTURE_HOLD``, ids from
        ``physics.suturing.HOLD_ID_BASE``) are pseudo-instruments of the physics, never drawn, sent or given to a
        participant. (Participant ids are random 63-bit numbers, so their instrument ids are mostly far above.)"""
        return {k: v for k, v in self.physics.instruments.items() if v.spec.kind is not Kind.SUTURE_HOLD}

    def surface_vertices(self) -> np.ndarray:
        """The ids of the vertices on the tissue's surface now, sorted (int64): what snapshots carry."""
        return np.unique(self.model.surface).astype(np.int64)

    def _probe_new_grasps(self, report: StepReport, dt: float, substeps: int) -> None:
        """Measure each new grasp's response model (for the holder's prediction) while the world is ours."""
        for event in report.events:
            inst = self.physics.instruments.get(event.instrument) if event.kind == "grasp" else None
            if inst is None:
                continue
            surface = self.surface_vertices()
            response = probe_response(
                self.model, self.physics, event.instrument, surface, dt, substeps, mode=self.scenario.solver
            )
            if response is not None:
                pose = {"position": inst.position.copy(), "orientation": inst.orientation.copy(), "jaw": inst.jaw}
                detail = {"response": response, "baseline": pose}
                self._events.append(RoomEvent("grasp_response", detail, instrument=event.instrument))

    def _apply_effects(self) -> None:
        while self._effects:
            kind, by, arg = self._effects.popleft()
            if kind == "reset":  # the world anew, settled again (a replay's reset names the frames it took)
                self.model = build_world(self.scenario)
                self.physics, self.settled = self._settled_start(arg if type(arg) is int else None)
                self.procedure = Procedure(self.scenario, self.model, self.physics.x)
                self.complications = Complications(self.scenario)
                self.suturing = self._sutures.new(self.model, self.physics)
                self._events.append(RoomEvent("world_reset", {}, by=by))
            else:
                try:
                    detail = self.complications.inject(str(arg), self.model, self.physics)
                except ComplicationError as exc:
                    self._events.append(RoomEvent("complication_failed", {"complication": arg, "reason": str(exc)}, by))
                    continue
                if self._solver is not None:  # a complication may add anchors (adhesions)
                    self._solver.notify_model_changed()
                self._events.append(RoomEvent("complication_started", detail, by=by))
            if self.recorder is not None:
                fields = {"settled": self.settled.frames} if kind == "reset" else {} if arg is None else {"id": arg}
                self.recorder.effect(kind, **fields)

    def take_events(self) -> list[RoomEvent]:
        """The events since the last call, oldest first (the server broadcasts them)."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def result(self, created_at: float, ended_at: float) -> SessionResult:
        """What this session leaves in the results store (wall-clock times from the server)."""
        progress = self.progress()
        skills = self.skills.report()["participants"]
        return SessionResult(
            session=self.session,
            scenario=self.scenario.name,
            created_at=created_at,
            ended_at=ended_at,
            end_state=self.state.value,
            frames=self.frame,
            simulated_seconds=self.elapsed,
            steps=progress["steps"],
            complications=progress["complications"],
            participants=[
                {
                    "participant": pid,
                    "role": p.identity.role.value,
                    "name": p.identity.name,
                    "skills": skills.get(str(pid), {}),
                }
                for pid, p in sorted(self.participants.items())
            ],
            counters=dict(self.counters),
            recording=None if self.recorder is None else str(self.recorder.path),
        )

    def progress(self) -> dict:
        """Procedure steps and complications, for a late joiner's welcome, the status line and the results."""
        current = self.procedure.current()
        return {
            "steps": self.procedure.summary(),
            "current_step": None if current is None else current.id,
            "complications": self.complications.summary(),
        }
