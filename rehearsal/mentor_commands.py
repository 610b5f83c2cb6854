"""The mentor's (and the scrub nurse's) commands in a room: pause, resume, end, reset, inject a complication,
annotate, hand over, take over or hold an instrument, remove a participant, switch a virtual fixture.

``MentorCommands`` holds one handler ``_do_<action>`` per command (``rehearsal.roles.Action``); ``Room``
inherits them and ``Room.command`` calls the one named by the action after the role check. A handler returns
None when it did its command, else a ``Refusal`` (counted in the room's counters where the reason is the
request's, not the role's). World changes are queued for the room's thread (``Room.queue_effect``)."""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

from physics.instruments import InstrumentSpec, Kind
from rehearsal.complications import ComplicationError, Complications
from rehearsal.fixtures import FixtureEnforcer
from rehearsal.hands import HANDS
from rehearsal.lifecycle import RoomState
from rehearsal.requests import DRIVING_ROLES, Participant, Refusal, finite_vector


class MentorCommands:
    """The command handlers of a room (mixed into ``rehearsal.room.Room``, whose state they change)."""

    counters: Counter[str]
    participants: dict[int, Participant]
    annotations: deque[dict]
    complications: Complications
    inputs: dict
    fixtures: FixtureEnforcer
    _specs: dict[Kind, InstrumentSpec]
    _effects: deque[tuple[str, int, object]]

    def _do_pause(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.PAUSED)

    def _do_resume(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.RUNNING)

    def _do_end_room(self, p: Participant) -> Refusal | None:
        return self._lifecycle(RoomState.ENDED)

    def _do_reset(self, p: Participant) -> Refusal | None:
        self.queue_effect("reset", p.identity.participant)
        return None

    def _do_inject_complication(self, p: Participant, complication: object = None) -> Refusal | None:
        try:
            self.complications.check(complication)
        except ComplicationError as exc:
            self.counters["refused_unknown_complication"] += 1
            return Refusal(str(exc))
        if any(kind == "inject" and arg == complication for kind, _, arg in self._effects):
            return Refusal(f"{complication} is already being injected")
        self.queue_effect("inject", p.identity.participant, complication)
        return None

    def _do_annotate(
        self, p: Participant, position: object = None, text: object = "", kind: object = "marker", direction=None
    ) -> Refusal | None:
        """A ``marker`` (kept: late joiners see it), a ``pointer`` (a ray from ``position`` along ``direction``,
        shown now and not kept) or ``clear`` (all markers go). Everyone sees it as the ``annotate`` event."""
        if kind == "clear":
            self.annotations.clear()
            return None
        point = finite_vector(position, 3)
        if point is None or not isinstance(text, str) or len(text) > 200 or kind not in ("marker", "pointer"):
            self.counters["refused_bad_annotation"] += 1
            return Refusal("annotate a marker or pointer at a finite 3D position, with at most 200 characters")
        if kind == "pointer":
            ray = finite_vector(direction, 3)
            if ray is None or np.linalg.norm(ray) < 1e-9:
                self.counters["refused_bad_annotation"] += 1
                return Refusal("a pointer needs a finite, non-zero 3D direction")
            return None
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

    def _do_take_over_instrument(self, p: Participant, hand: object = "right", release: object = False):
        """The mentor drives an instrument in their own hand (``release: true`` puts it down again)."""
        if hand not in HANDS or not self._specs or not isinstance(release, bool):
            return Refusal("take over a left or right instrument (release: true to give it back)")
        if release:
            p.hands.pop(str(hand), None)
            self.inputs.pop((p.identity.participant, str(hand)), None)
            return None
        p.hands[str(hand)] = next(iter(self._specs))
        return None

    def _do_hold_retractor(self, p: Participant, hand: object = "left", release: object = False) -> Refusal | None:
        """Take (or put down) a retractor: a grasper in the given hand that holds tissue out of the way."""
        if hand not in HANDS or not isinstance(release, bool):
            return Refusal("hold a retractor in the left or right hand (release: true to put it down)")
        if release:
            p.hands.pop(str(hand), None)
            self.inputs.pop((p.identity.participant, str(hand)), None)
            return None
        if Kind.GRASPER not in self._specs:
            return Refusal("this scenario has no grasper to retract with")
        p.hands[str(hand)] = Kind.GRASPER
        return None

    def _do_toggle_fixture(self, p: Participant, fixture: object = None, active: object = None) -> Refusal | None:
        """Switch one of the scenario's virtual fixtures on (``active: true``) or off; clients get the new set."""
        if not isinstance(fixture, str) or not isinstance(active, bool):
            self.counters["refused_bad_fixture"] += 1
            return Refusal("toggle a fixture by id, with active: true or false")
        if not self.fixtures.set_active(fixture, active):
            self.counters["refused_bad_fixture"] += 1
            known = ", ".join(self.fixtures.ids()) or "none"
            return Refusal(f"no fixture {fixture!r} in this scenario (its fixtures: {known})"[:250])
        return None

    def _do_remove_participant(self, p: Participant, who: object = None) -> Refusal | None:
        if not isinstance(who, int) or who not in self.participants or who == p.identity.participant:
            self.counters["refused_bad_removal"] += 1
            return Refusal("remove another participant of this room by id")
        self.remove(who)
        return None
