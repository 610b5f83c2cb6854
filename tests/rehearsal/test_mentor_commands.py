"""The mentor's and the scrub nurse's commands (rehearsal/mentor_commands.py), through ``Room.command``: each
done by the right role only, bad arguments refused and counted, world changes applied between steps."""

import numpy as np
import pytest

from physics.instruments import Kind
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState
from rehearsal.roles import Role
from rehearsal.scenario import load_scenario
from tests.rehearsal.room_helpers import DOWN, running


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def test_only_the_mentor_pauses_and_a_paused_room_does_not_move(scenario):
    room, ids = running(scenario)
    assert "may not pause" in room.command(ids[Role.ASSISTANT_SURGEON], "pause").reason
    assert room.state is RoomState.RUNNING
    assert room.command(ids[Role.MENTOR], "pause") is None
    before = room.physics.x.copy()
    for _ in range(5):
        assert room.advance(1 / 60) is None
    np.testing.assert_array_equal(room.physics.x, before)
    assert room.command(ids[Role.MENTOR], "resume") is None and room.advance(1 / 60) is not None


def test_complications_annotations_and_unknown_commands(scenario):
    room, ids = running(scenario)
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
    room, ids = running(scenario)
    nurse, assistant = ids[Role.SCRUB_NURSE], ids[Role.ASSISTANT_SURGEON]
    assert room.command(nurse, "hand_instrument", to=assistant, hand="left", kind="scissors") is None
    assert room.command(nurse, "hand_instrument", to=ids[Role.OBSERVER], hand="left", kind="scissors") is not None
    room.leave(assistant)
    assert room.instrument_input(assistant, "left", [0, 0.05, 0], DOWN, sample_time=1.0) is not None
    back = room.join(Identity("s-1", assistant, Role.ASSISTANT_SURGEON, "assistant_surgeon"))
    assert back.identity.role is Role.ASSISTANT_SURGEON and back.hands["left"] is Kind.SCISSORS
    assert room.instrument_input(assistant, "left", [0, 0.05, 0], DOWN, sample_time=2.0) is None


def test_the_mentor_removes_a_participant_and_ends_the_room(scenario):
    room, ids = running(scenario)
    mentor, observer = ids[Role.MENTOR], ids[Role.OBSERVER]
    assert room.command(observer, "remove_participant", who=mentor) is not None
    assert room.command(mentor, "remove_participant", who=observer) is None
    assert observer not in room.participants
    assert room.command(mentor, "end_room") is None and room.state is RoomState.ENDED
    assert room.command(mentor, "resume") is not None  # ended is final
    with pytest.raises(ValueError, match="ended"):
        room.join(Identity("s-1", 99, Role.OBSERVER, "late"))


def test_a_mentor_who_takes_over_an_instrument_drives_it(scenario):
    room, ids = running(scenario)
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
    room, ids = running(scenario)
    mentor = ids[Role.MENTOR]
    assert room.command(mentor, "annotate", position=[0, 0.02, 0], text="cut here") is None
    assert room.command(mentor, "annotate", kind="pointer", position=[0, 0.1, 0], direction=[0, -1, 0]) is None
    assert [a["text"] for a in room.annotations] == ["cut here"]
    assert "direction" in room.command(mentor, "annotate", kind="pointer", position=[0, 0.1, 0]).reason
    assert room.command(mentor, "annotate", kind="laser", position=[0, 0.1, 0]) is not None
    assert room.command(mentor, "annotate", kind="clear") is None
    assert list(room.annotations) == []


def test_a_removed_participant_cannot_come_back(scenario):
    room, ids = running(scenario)
    observer = ids[Role.OBSERVER]
    assert room.command(ids[Role.MENTOR], "remove_participant", who=observer) is None
    with pytest.raises(ValueError, match="removed"):
        room.join(Identity("s-1", observer, Role.OBSERVER, "observer"))
    assert room.end() is None and room.state is RoomState.ENDED


def test_a_reset_replaces_the_world_between_steps_and_clears_complications(scenario):
    room, ids = running(scenario)
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


def test_the_scrub_nurse_holds_a_retractor_but_drives_nothing_else(scenario):
    room, ids = running(scenario)
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
