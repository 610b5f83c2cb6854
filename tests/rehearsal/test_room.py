"""The room's rules: roles enforced, inputs validated, lifecycle respected, returning people restored."""

import numpy as np
import pytest

from physics.instruments import Kind, look_rotation
from physics.model import add_anchors
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario

DOWN = look_rotation((0.0, -1.0, 0.0))


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def _team(room):
    ids = {}
    for k, role in enumerate(Role, start=1):
        room.join(Identity(room.session, k, role, role.value))
        ids[role] = k
    return ids


def _running(scenario):
    room = Room("s-1", scenario)
    ids = _team(room)
    assert room.start() is None and room.state is RoomState.RUNNING
    return room, ids


def test_an_observers_input_changes_nothing(scenario):
    room, ids = _running(scenario)
    refusal = room.instrument_input(ids[Role.OBSERVER], "right", [0, 0.05, 0], DOWN, sample_time=1.0)
    assert refusal is not None and "observer" in refusal.reason
    assert room.control().instruments == []
    assert room.counters["refused_drive_instrument"] == 1


def test_a_surgeons_input_reaches_physics_and_bad_input_never_does(scenario):
    room, ids = _running(scenario)
    lead = ids[Role.LEAD_SURGEON]
    assert room.instrument_input(lead, "right", [0, 0.05, 0], DOWN, 0.5, sample_time=1.0) is None
    bad = [
        ([np.nan, 0.05, 0], DOWN, 1.1, "input_rejected_nonfinite"),
        ([0, 0.05, 0], [0, 0, 0, 0], 1.1, "input_rejected_nonfinite"),
        ([50.0, 0.05, 0], DOWN, 1.1, "input_rejected_out_of_room"),
        ([0.2, 0.05, 0], DOWN, 1.01, "input_rejected_too_fast"),  # 20 m/s
        ("junk", DOWN, 1.1, "input_rejected_nonfinite"),
    ]
    for pos, quat, t, counter in bad:
        assert room.instrument_input(lead, "right", pos, quat, sample_time=t) is not None
        assert room.counters[counter] >= 1
    assert room.instrument_input(lead, "right", [0, 0.06, 0], DOWN, sample_time=0.9) is None  # stale: ignored
    assert room.counters["input_stale"] == 1
    [command] = room.control().instruments
    np.testing.assert_array_equal(command.position, [0, 0.05, 0])
    assert room.advance(1 / 60) is not None


def test_only_the_mentor_pauses_and_a_paused_room_does_not_move(scenario):
    room, ids = _running(scenario)
    assert "may not pause" in room.command(ids[Role.ASSISTANT_SURGEON], "pause").reason
    assert room.state is RoomState.RUNNING
    assert room.command(ids[Role.MENTOR], "pause") is None
    before = room.physics.x.copy()
    for _ in range(5):
        assert room.advance(1 / 60) is None
    np.testing.assert_array_equal(room.physics.x, before)
    assert room.command(ids[Role.MENTOR], "resume") is None and room.advance(1 / 60) is not None


def test_complications_annotations_and_unknown_commands(scenario):
    room, ids = _running(scenario)
    mentor = ids[Role.MENTOR]
    assert room.command(mentor, "inject_complication", complication="bleeder") is None
    assert "already being injected" in room.command(mentor, "inject_complication", complication="bleeder").reason
    assert room.complications.active == []  # takes effect between steps, on the room's thread
    room.advance(1 / 60)
    assert room.complications.active == ["bleeder"]
    [started] = room.take_events()
    assert (
        started.kind == "complication_started" and started.by == mentor and started.detail["kind"] == "bleeding_point"
    )
    assert "already active" in room.command(mentor, "inject_complication", complication="bleeder").reason
    assert "no complication" in room.command(mentor, "inject_complication", complication="zombie").reason
    assert room.progress()["complications"]["active"] == ["bleeder"]
    assert room.command(mentor, "annotate", position=[0, 0.02, 0], text="cut here") is None
    assert room.command(mentor, "annotate", position=[np.inf, 0, 0]) is not None
    assert room.command(mentor, "self_destruct") is not None
    assert room.counters["refused_unknown_command"] == 1


def test_the_nurse_hands_instruments_and_a_returning_surgeon_keeps_them(scenario):
    room, ids = _running(scenario)
    nurse, assistant = ids[Role.SCRUB_NURSE], ids[Role.ASSISTANT_SURGEON]
    assert room.command(nurse, "hand_instrument", to=assistant, hand="left", kind="scissors") is None
    assert room.command(nurse, "hand_instrument", to=ids[Role.OBSERVER], hand="left", kind="scissors") is not None
    room.leave(assistant)
    assert room.instrument_input(assistant, "left", [0, 0.05, 0], DOWN, sample_time=1.0) is not None
    back = room.join(Identity("s-1", assistant, Role.ASSISTANT_SURGEON, "assistant_surgeon"))
    assert back.identity.role is Role.ASSISTANT_SURGEON and back.hands["left"] is Kind.SCISSORS
    assert room.instrument_input(assistant, "left", [0, 0.05, 0], DOWN, sample_time=2.0) is None


def test_the_mentor_removes_a_participant_and_ends_the_room(scenario):
    room, ids = _running(scenario)
    mentor, observer = ids[Role.MENTOR], ids[Role.OBSERVER]
    assert room.command(observer, "remove_participant", who=mentor) is not None
    assert room.command(mentor, "remove_participant", who=observer) is None
    assert observer not in room.participants
    assert room.command(mentor, "end_room") is None and room.state is RoomState.ENDED
    assert room.command(mentor, "resume") is not None  # ended is final
    with pytest.raises(ValueError, match="ended"):
        room.join(Identity("s-1", 99, Role.OBSERVER, "late"))


def test_tokens_for_another_session_are_refused_and_rooms_are_independent(scenario):
    a, b = Room("a", scenario), Room("b", scenario)
    with pytest.raises(ValueError, match="another session"):
        a.join(Identity("b", 1, Role.OBSERVER, "x"))
    _team(a)
    a.start()
    b.start()
    a.instrument_input(1, "right", [0, 0.0, 0], DOWN, 0.0, sample_time=1.0)  # press into a's tissue
    for _ in range(5):
        a.advance(1 / 60)
        b.advance(1 / 60)
    assert not np.array_equal(a.physics.x, b.physics.x)
    np.testing.assert_allclose(b.physics.x, b.model.rest_positions, atol=2e-3)


def test_a_mentor_who_takes_over_an_instrument_drives_it(scenario):
    room, ids = _running(scenario)
    mentor = ids[Role.MENTOR]
    assert room.instrument_input(mentor, "left", [0, 0.05, 0], DOWN, sample_time=1.0) is not None
    assert room.command(mentor, "take_over_instrument", hand="left") is None
    assert room.instrument_input(mentor, "left", [0, 0.05, 0], DOWN, sample_time=1.0) is None
    assert room.instrument_input(mentor, "right", [0, 0.05, 0], DOWN, sample_time=1.0) is not None
    assert len(room.control().instruments) == 1
    assert room.command(mentor, "take_over_instrument", hand="left", release=True) is None
    assert room.control().instruments == []
    assert room.instrument_input(mentor, "left", [0, 0.05, 0], DOWN, sample_time=2.0) is not None


def test_markers_stay_for_late_joiners_pointers_do_not_and_clear_removes_markers(scenario):
    room, ids = _running(scenario)
    mentor = ids[Role.MENTOR]
    assert room.command(mentor, "annotate", position=[0, 0.02, 0], text="cut here") is None
    assert room.command(mentor, "annotate", kind="pointer", position=[0, 0.1, 0], direction=[0, -1, 0]) is None
    assert [a["text"] for a in room.annotations] == ["cut here"]
    assert "direction" in room.command(mentor, "annotate", kind="pointer", position=[0, 0.1, 0]).reason
    assert room.command(mentor, "annotate", kind="laser", position=[0, 0.1, 0]) is not None
    assert room.command(mentor, "annotate", kind="clear") is None
    assert list(room.annotations) == []


def test_a_removed_participant_cannot_come_back(scenario):
    room, ids = _running(scenario)
    observer = ids[Role.OBSERVER]
    assert room.command(ids[Role.MENTOR], "remove_participant", who=observer) is None
    with pytest.raises(ValueError, match="removed"):
        room.join(Identity("s-1", observer, Role.OBSERVER, "observer"))
    assert room.end() is None and room.state is RoomState.ENDED


def test_a_reset_replaces_the_world_between_steps_and_clears_complications(scenario):
    room, ids = _running(scenario)
    mentor = ids[Role.MENTOR]
    room.command(mentor, "inject_complication", complication="stiff")
    room.advance(1 / 60)
    old_model = room.model
    assert room.command(mentor, "reset") is None
    assert room.model is old_model
    room.take_events()
    room.advance(1 / 60)
    assert room.model is not old_model and room.complications.active == []
    assert [e.kind for e in room.take_events()] == ["world_reset"]


def test_step_progress_is_evaluated_every_tick_and_reported_once(scenario):
    room, _ = _running(scenario)
    assert room.progress()["current_step"] == "retract"
    top = np.flatnonzero(room.model.rest_positions[:, 1] > 0.019)
    add_anchors(room.model, top, room.model.rest_positions[top] + [0.0, 0.03, 0.0])  # an invisible retractor
    for _ in range(90):
        room.advance(1 / 60)
    kinds = [e.kind for e in room.take_events()]
    assert kinds == ["step_completed"]
    assert room.progress()["current_step"] == "divide"


def test_the_scrub_nurse_holds_a_retractor_but_drives_nothing_else(scenario):
    room, ids = _running(scenario)
    nurse = ids[Role.SCRUB_NURSE]
    assert room.instrument_input(nurse, "left", [0, 0.05, 0], DOWN, sample_time=1.0) is not None
    assert room.command(nurse, "hold_retractor", hand="left") is None
    assert room.instrument_input(nurse, "left", [0, 0.05, 0], DOWN, sample_time=1.1) is None
    assert room.instrument_input(nurse, "right", [0, 0.05, 0], DOWN, sample_time=1.1) is not None
    [retractor] = room.control().instruments
    assert retractor.spec.kind is Kind.GRASPER
    assert room.command(nurse, "hold_retractor", hand="left", release=True) is None
    assert room.control().instruments == []
    assert "may not hold retractor" in room.command(ids[Role.OBSERVER], "hold_retractor").reason


def test_the_speed_limit_judges_the_claimed_gap_by_the_servers_receive_times(scenario):
    room, ids = _running(scenario)
    lead = ids[Role.LEAD_SURGEON]
    assert room.instrument_input(lead, "right", [0, 0.05, 0], DOWN, sample_time=1.0, received_at=100.0) is None
    # a 0.3 m jump claiming a million seconds passed, 11 ms after the last sample arrived: refused
    refusal = room.instrument_input(lead, "right", [0.3, 0.05, 0], DOWN, sample_time=1e6, received_at=100.011)
    assert refusal is not None and room.counters["input_rejected_too_fast"] == 1
    # the same jump after the server itself saw 0.3 s pass is a human speed (1.5 m/s incl. the slack): accepted
    assert room.instrument_input(lead, "right", [0.3, 0.05, 0], DOWN, sample_time=1e6, received_at=100.3) is None
    # redundant samples that arrive together keep their claimed spacing (the claim is the smaller gap)
    for k in range(1, 4):
        x = 0.3 + 0.01 * k
        assert (
            room.instrument_input(lead, "right", [x, 0.05, 0], DOWN, sample_time=1e6 + 0.011 * k, received_at=100.5)
            is None
        )


def test_a_room_admits_at_most_its_capacity_and_returning_people_always(scenario):
    import dataclasses

    room = Room("s-1", dataclasses.replace(scenario, max_participants=2))
    room.join(Identity("s-1", 1, Role.LEAD_SURGEON, "a"))
    room.join(Identity("s-1", 2, Role.OBSERVER, "b"))
    with pytest.raises(ValueError, match="the room is full"):
        room.join(Identity("s-1", 3, Role.OBSERVER, "c"))
    room.leave(2)
    room.join(Identity("s-1", 3, Role.OBSERVER, "c"))  # a seat came free
    with pytest.raises(ValueError, match="the room is full"):
        room.join(Identity("s-1", 4, Role.OBSERVER, "d"))
    # someone who was in the room comes back even when newcomers filled it (a dropped headset keeps its seat)
    assert room.join(Identity("s-1", 2, Role.OBSERVER, "b")).identity.participant == 2
    assert room.counters["refused_room_full"] == 2
