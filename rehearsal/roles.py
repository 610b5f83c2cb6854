"""Who may do what in a rehearsal room: roles, actions, and the one table that decides.

The server checks every request against this table before it touches the room; a refusal carries a
reason a person can read and is counted, and never changes the room.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    LEAD_SURGEON = "lead_surgeon"
    ASSISTANT_SURGEON = "assistant_surgeon"
    SCRUB_NURSE = "scrub_nurse"
    MENTOR = "mentor"
    OBSERVER = "observer"


class Action(StrEnum):
    DRIVE_INSTRUMENT = "drive_instrument"  # send poses, jaws and energy for one's own instruments
    HOLD_RETRACTOR = "hold_retractor"
    HAND_INSTRUMENT = "hand_instrument"  # change the instrument type on a surgeon's hand
    PAUSE = "pause"
    RESUME = "resume"
    RESET = "reset"
    INJECT_COMPLICATION = "inject_complication"
    ANNOTATE = "annotate"  # 3D markers and pointers seen by all
    TAKE_OVER_INSTRUMENT = "take_over_instrument"
    REMOVE_PARTICIPANT = "remove_participant"
    END_ROOM = "end_room"
    TOGGLE_FIXTURE = "toggle_fixture"  # switch a virtual fixture on or off (rehearsal/fixtures.py)
    WATCH = "watch"


_SURGEON = {Action.DRIVE_INSTRUMENT, Action.HOLD_RETRACTOR, Action.WATCH}
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.LEAD_SURGEON: frozenset(_SURGEON),
    Role.ASSISTANT_SURGEON: frozenset(_SURGEON),
    Role.SCRUB_NURSE: frozenset({Action.HAND_INSTRUMENT, Action.HOLD_RETRACTOR, Action.WATCH}),
    Role.MENTOR: frozenset(
        {
            Action.PAUSE,
            Action.RESUME,
            Action.RESET,
            Action.INJECT_COMPLICATION,
            Action.ANNOTATE,
            Action.TAKE_OVER_INSTRUMENT,
            Action.REMOVE_PARTICIPANT,
            Action.END_ROOM,
            Action.TOGGLE_FIXTURE,
            Action.WATCH,
        }
    ),
    Role.OBSERVER: frozenset({Action.WATCH}),
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def decide(role: Role | str, action: Action | str) -> Decision:
    """Whether `role` may perform `action`; unknown roles or actions are refused, never raised.
    Answers are cached (every input pose asks): the table is fixed, so an answer never changes."""
    try:
        return _decide_cached(role, action)
    except TypeError:  # unhashable (hostile) arguments: decide without the cache
        return _decide(role, action)


def _decide(role: Role | str, action: Action | str) -> Decision:
    try:
        role, action = Role(role), Action(action)
    except ValueError:
        return Decision(False, f"unknown role {role!r} or action {action!r}")
    if action in PERMISSIONS[role]:
        return Decision(True)
    return Decision(False, f"the {role.value.replace('_', ' ')} role may not {action.value.replace('_', ' ')}")


_decide_cached = functools.lru_cache(maxsize=1024)(_decide)
