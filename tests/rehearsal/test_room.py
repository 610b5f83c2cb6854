"""The room's rules: roles enforced, inputs validated, lifecycle respected, returning people restored."""

from dataclasses import replace

import numpy as np
import pytest

from physics.model import add_anchors
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario
from tests.rehearsal.room_helpers import DOWN, running, team


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


def test_an_observers_input_changes_nothing(scenario):
    room, ids = running(scenario)
    refusal = room.instrument_input(ids[Role.OBSERVER], "right", [0, 0.05, 0], DOWN, sample_time=1.0)
    assert refusal is not None and "observer" in refusal.reason
    assert room.control().instruments == []
    assert room.counters["refused_drive_instrument"] == 1


def test_a_surgeons_input_reaches_physics_and_bad_input_never_does(scenario):
    room, ids = running(scenario)
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


def test_a_scenario_that_asks_for_the_implicit_solver_steps_its_room_with_it(scenario):
    room, ids = running(replace(scenario, solver="implicit"))
    lead = ids[Role.LEAD_SURGEON]
    rest = room.physics.x.copy()
    for k in range(6):  # the grasper comes down onto the block and presses
        assert room.instrument_input(lead, "right", [0, 0.012 - 0.001 * k, 0], DOWN, 0.0, sample_time=k / 60) is None
        room.advance(1 / 60)
    assert room._solver.mode == "implicit"
    assert np.all(np.isfinite(room.physics.x)) and np.abs(room.physics.x - rest).max() > 1e-5


def test_tokens_for_another_session_are_refused_and_rooms_are_independent(scenario):
    a, b = Room("a", scenario), Room("b", scenario)
    with pytest.raises(ValueError, match="another session"):
        a.join(Identity("b", 1, Role.OBSERVER, "x"))
    team(a)
    a.start()
    b.start()
    a.instrument_input(1, "right", [0, 0.0, 0], DOWN, 0.0, sample_time=1.0)  # press into a's tissue
    for _ in range(5):
        a.advance(1 / 60)
        b.advance(1 / 60)
    assert not np.array_equal(a.physics.x, b.physics.x)
    np.testing.assert_allclose(b.physics.x, b.model.rest_positions, atol=2e-3)


def test_step_progress_is_evaluated_every_tick_and_reported_once(scenario):
    room, _ = running(scenario)
    assert room.progress()["current_step"] == "retract"
    top = np.flatnonzero(room.model.rest_positions[:, 1] > 0.019)
    add_anchors(room.model, top, room.model.rest_positions[top] + [0.0, 0.03, 0.0])  # an invisible retractor
    for _ in range(90):
        room.advance(1 / 60)
    kinds = [e.kind for e in room.take_events()]
    assert kinds == ["step_completed"]
    assert room.progress()["current_step"] == "divide"


def test_the_speed_limit_judges_the_claimed_gap_by_the_servers_receive_times(scenario):
    room, ids = running(scenario)
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


def test_a_room_judges_skills_by_its_scenarios_limits():
    """``[skill_limits]`` of the scenario reach the room's tracker, so results and debriefs judge by them."""
    basic = load_scenario("basic_skills")
    room = Room("s-limits", basic)
    assert room.skills.thresholds == basic.skill_limits
    assert room.skills.report()["thresholds"]["path_length_m"] == basic.skill_limits.path_length_m


def test_a_room_opens_with_its_tissue_at_rest_and_a_reset_opens_at_rest_again(scenario):
    """The world settles before anyone sees it (physics.settle): the first person in does not watch the
    tissue fall onto the table, and a second room of the scenario gets the same start from memory."""
    room, ids = running(scenario)
    assert room.settled.at_rest and room.settled.frames > 0
    assert not np.array_equal(room.physics.x, room.model.rest_positions)  # it sagged before the room opened
    assert room.physics.frame == 0 and room.frame == 0
    start = room.physics.x.copy()
    room.advance(1 / 60)  # nobody touches it: it stays where it lies
    assert np.abs(room.physics.x - start).max() < 1e-5
    other = Room("s-2", scenario)
    assert other.settled.seconds == 0.0 and other.settled.frames == room.settled.frames
    np.testing.assert_array_equal(other.physics.x, start)
    assert other.physics.x is not room.physics.x
    room.physics.x[:] += 0.01  # a room moves its own arrays only
    assert room.command(ids[Role.MENTOR], "reset") is None
    room.advance(1 / 60)
    assert np.abs(room.physics.x - start).max() < 1e-5  # the reset world is the settled one again
    exact = Room("s-3", scenario, settle_frames=3)
    assert exact.settled.frames == 3 and exact.settled.reason == "frames"
    rest_shape = Room("s-4", scenario, settle_frames=0)
    np.testing.assert_array_equal(rest_shape.physics.x, rest_shape.model.rest_positions)
