"""The permission table: every role's rights, and refusals that explain themselves."""

import pytest

from rehearsal.roles import PERMISSIONS, Action, Role, decide


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    [
        (Role.OBSERVER, Action.DRIVE_INSTRUMENT, False),
        (Role.OBSERVER, Action.WATCH, True),
        (Role.LEAD_SURGEON, Action.DRIVE_INSTRUMENT, True),
        (Role.ASSISTANT_SURGEON, Action.PAUSE, False),
        (Role.SCRUB_NURSE, Action.HAND_INSTRUMENT, True),
        (Role.SCRUB_NURSE, Action.HOLD_RETRACTOR, True),
        (Role.SCRUB_NURSE, Action.DRIVE_INSTRUMENT, False),
        (Role.MENTOR, Action.PAUSE, True),
        (Role.MENTOR, Action.INJECT_COMPLICATION, True),
        (Role.MENTOR, Action.REMOVE_PARTICIPANT, True),
        (Role.LEAD_SURGEON, Action.REMOVE_PARTICIPANT, False),
    ],
)
def test_decisions(role, action, allowed):
    decision = decide(role, action)
    assert decision.allowed is allowed
    assert bool(decision.reason) is not allowed


def test_refusal_names_role_and_action():
    assert decide("observer", "drive_instrument").reason == "the observer role may not drive instrument"


def test_unknown_role_or_action_is_refused_not_raised():
    assert not decide("janitor", "pause").allowed
    assert not decide(Role.MENTOR, "launch_missiles").allowed


def test_only_mentors_steer_the_room_and_everyone_may_watch():
    steering = {Action.PAUSE, Action.RESUME, Action.RESET, Action.INJECT_COMPLICATION, Action.END_ROOM}
    for role, actions in PERMISSIONS.items():
        assert Action.WATCH in actions
        assert bool(actions & steering) == (role is Role.MENTOR)
