"""Room lifecycle: the allowed moves, and ended is final."""

import pytest

from rehearsal.lifecycle import RoomState, TransitionError, simulates, transition


def test_the_normal_course_of_a_session():
    state = RoomState.CREATED
    for target in (RoomState.LOBBY, RoomState.RUNNING, RoomState.PAUSED, RoomState.RUNNING, RoomState.ENDED):
        state = transition(state, target)
    assert state is RoomState.ENDED


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (RoomState.CREATED, RoomState.RUNNING),
        (RoomState.LOBBY, RoomState.PAUSED),
        (RoomState.ENDED, RoomState.RUNNING),
        (RoomState.ENDED, RoomState.LOBBY),
        (RoomState.RUNNING, RoomState.LOBBY),
    ],
)
def test_forbidden_moves_raise_with_both_states(current, target):
    with pytest.raises(TransitionError, match=f"from {current.value} to {target.value}"):
        transition(current, target)


def test_only_a_running_room_simulates():
    assert [s for s in RoomState if simulates(s)] == [RoomState.RUNNING]
