"""A rehearsal room: one scenario's physics world, its participants, and the rules for changing it.

The room is the domain core the server drives: participants join with the identity from their token,
send instrument input and commands, and the server advances the room one tick at a time. Every request
is checked against the role table (rehearsal.roles) and every input is validated before it can reach
physics; refusals are counted and answered, and never change the room.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from physics import Control, InstrumentInput, Model, StepReport, new_state, step
from physics.instruments import SPECS, InstrumentSpec, Kind
from physics.state import State
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState, TransitionError, simulates, transition
from rehearsal.roles import Action, Role, decide
from rehearsal.scenario import Scenario, build_world

HANDS = ("left", "right")
WORKSPACE_MARGIN = 0.5  # m around the anatomy's bounding box that instruments may occupy
MAX_INSTRUMENT_SPEED = 3.0  # m/s: faster input is a tracking glitch or an attack, not a hand
DRIVING_ROLES = (Role.LEAD_SURGEON, Role.ASSISTANT_SURGEON)


@dataclass
class Participant:
    identity: Identity
    connected: bool = True
    # hand -> instrument kind for the hands this participant drives (surgeons; a mentor who took over)
    hands: dict[str, Kind] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why a request changed nothing (sent back to the participant, and counted)."""

    reason: str


@dataclass
class HandInput:
    """The newest accepted pose of one hand, with the client's sample time (seconds)."""

    position: np.ndarray
    orientation: np.ndarray
    jaw: float
    energy: bool
    sample_time: float


class Room:
    def __init__(self, session: str, scenario: Scenario, model: Model | None = None) -> None:
        self.session = session
        self.scenario = scenario
        self.model = model if model is not None else build_world(scenario)
        self.physics: State = new_state(self.model)
        self.state = RoomState.CREATED
        self.participants: dict[int, Participant] = {}
        self.removed: set[int] = set()  # removed by the mentor: their tokens and rejoin codes stay refused
        self.inputs: dict[tuple[int, str], HandInput] = {}
        self.counters: Counter[str] = Counter()
        self.complications: list[str] = []
        self.annotations: list[dict] = []
        self.frame = 0
        lo, hi = self.model.rest_positions.min(axis=0), self.model.rest_positions.max(axis=0)
        self.workspace = (lo - WORKSPACE_MARGIN, hi + WORKSPACE_MARGIN)
        self._specs: dict[Kind, InstrumentSpec] = {Kind(k): SPECS[Kind(k)]() for k in scenario.instruments}
        self.state = transition(self.state, RoomState.LOBBY)

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
        participant = Participant(identity)
        if identity.role in DRIVING_ROLES and self._specs:
            first = next(iter(self._specs))
            participant.hands = {"right": first}
        self.participants[identity.participant] = participant
        return participant

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
            and decide(p.identity.role, Action.TAKE_OVER_INSTRUMENT).allowed
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
        return handler(p, **args)

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

    def _do_pause(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.PAUSED)

    def _do_resume(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.RUNNING)

    def _do_end_room(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.ENDED)

    def _do_reset(self, p: Participant) -> Refusal | None:
        self.model = build_world(self.scenario)
        self.physics = new_state(self.model)
        self.complications.clear()
        return None

    def _do_inject_complication(self, p: Participant, complication: object = None) -> Refusal | None:
        known = {c.id for c in self.scenario.complications}
        if complication not in known:
            self.counters["refused_unknown_complication"] += 1
            return Refusal(f"no complication {complication!r} in this scenario (known: {', '.join(sorted(known))})")
        self.complications.append(str(complication))
        return None

    def _do_annotate(self, p: Participant, position: object = None, text: object = "") -> Refusal | None:
        point = _finite_vector(position, 3)
        if point is None or not isinstance(text, str) or len(text) > 200:
            self.counters["refused_bad_annotation"] += 1
            return Refusal("an annotation needs a finite 3D position and at most 200 characters of text")
        self.annotations.append({"by": p.identity.participant, "position": point.tolist(), "text": text})
        return None

    def _do_hand_instrument(self, p: Participant, to: object = None, hand: object = "right", kind: object = None):
        target = self.participants.get(to) if isinstance(to, int) else None
        if target is None or target.identity.role not in DRIVING_ROLES or hand not in HANDS:
            self.counters["refused_bad_handover"] += 1
            return Refusal("hand an instrument to a surgeon's left or right hand")
        try:
            instrument = Kind(kind)
        except ValueError:
            instrument = None
        if instrument not in self._specs:
            self.counters["refused_bad_handover"] += 1
            return Refusal(f"this scenario's instruments are {', '.join(k.value for k in self._specs)}")
        target.hands[str(hand)] = instrument
        return None

    def _do_take_over_instrument(self, p: Participant, hand: object = "right") -> Refusal | None:
        if hand not in HANDS or not self._specs:
            return Refusal("take over a left or right instrument")
        p.hands[str(hand)] = next(iter(self._specs))
        return None

    def _do_remove_participant(self, p: Participant, who: object = None) -> Refusal | None:
        if not isinstance(who, int) or who not in self.participants or who == p.identity.participant:
            self.counters["refused_bad_removal"] += 1
            return Refusal("remove another participant of this room by id")
        self.remove(who)
        return None

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
    ) -> Refusal | None:
        """A tracked instrument pose; rejected (and counted) unless it is this participant's, finite, in the
        room, and reachable from the last accepted pose at a human speed. Older samples are ignored."""
        p = self._driver(participant_id, hand)
        if isinstance(p, Refusal):
            return p
        if hand not in p.hands:
            self.counters["input_rejected_no_instrument"] += 1
            return Refusal(f"no instrument in the {hand!r} hand")
        pos, quat = _finite_vector(position, 3), _finite_vector(orientation, 4)
        if pos is None or quat is None or not isinstance(jaw, int | float) or not math.isfinite(jaw):
            self.counters["input_rejected_nonfinite"] += 1
            return Refusal("pose values must be finite numbers")
        if np.linalg.norm(quat) < 0.5:
            self.counters["input_rejected_nonfinite"] += 1
            return Refusal("orientation must be a unit quaternion")
        if np.any(pos < self.workspace[0]) or np.any(pos > self.workspace[1]):
            self.counters["input_rejected_out_of_room"] += 1
            return Refusal("position is outside the room")
        key = (participant_id, hand)
        last = self.inputs.get(key)
        if last is not None:
            if sample_time <= last.sample_time:
                self.counters["input_stale"] += 1
                return None  # late or duplicate sample: the newer one already stands
            speed = np.linalg.norm(pos - last.position) / (sample_time - last.sample_time)
            if speed > MAX_INSTRUMENT_SPEED:
                self.counters["input_rejected_too_fast"] += 1
                return Refusal("instrument moved faster than a hand can")
        self.inputs[key] = HandInput(pos, quat / np.linalg.norm(quat), float(jaw), bool(energy), sample_time)
        return None

    def control(self) -> Control:
        """The physics Control for this tick: every connected driving hand's newest accepted pose."""
        inputs = []
        for (pid, hand), pose in sorted(self.inputs.items()):
            p = self.participants.get(pid)
            if p is None or not p.connected or hand not in p.hands:
                continue
            spec = self._specs[p.hands[hand]]
            instrument_id = pid * len(HANDS) + HANDS.index(hand)
            inputs.append(InstrumentInput(instrument_id, spec, pose.position, pose.orientation, pose.jaw, pose.energy))
        return Control(inputs)

    # --- time --------------------------------------------------------------------------------------------

    def advance(self, dt: float, substeps: int | None = None, control: Control | None = None) -> StepReport | None:
        """One tick: physics only while running (a paused room's tissue does not move).

        The ticker builds `control` on the reactor thread and runs this on the room's worker thread."""
        if not simulates(self.state):
            return None
        control = control if control is not None else self.control()
        report = step(self.model, self.physics, control, dt, substeps or self.scenario.substeps)
        self.frame += 1
        return report


def _finite_vector(value: object, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr
