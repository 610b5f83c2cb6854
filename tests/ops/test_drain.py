"""ops.drain: announce once, end empty rooms at once and the rest at the deadline, finish bounded."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from ops.drain import Drain


class Rooms:
    """Rooms that the app frees `free_after` seconds after they were ended (like KICK_DELAY)."""

    def __init__(self, clock: Clock, occupied: dict[str, bool], free_after: float | None = 0.5) -> None:
        self.clock = clock
        self.occupied = dict(occupied)
        self.free_after = free_after
        self.ended: list[tuple[str, float]] = []
        self.announced: list[float] = []

    def end(self, session: str) -> None:
        self.ended.append((session, self.clock.seconds()))
        if self.free_after is not None:
            self.clock.callLater(self.free_after, self.occupied.pop, session, None)

    def drain(self, seconds: float) -> Drain:
        return Drain(
            self.clock,
            seconds,
            rooms=lambda: list(self.occupied),
            empty=lambda s: not self.occupied[s],
            end=self.end,
            announce=self.announced.append,
        )


def run(clock: Clock, seconds: float, step: float = 0.05) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)


def test_empty_rooms_end_at_once_busy_ones_at_the_deadline():
    clock = Clock()
    rooms = Rooms(clock, {"busy": True, "idle": False})
    drain = rooms.drain(10.0)
    done = drain.start()
    assert rooms.announced == [10.0]  # the deadline, on the drain's clock
    assert rooms.ended == [("idle", 0.0)]
    run(clock, 9.0)
    assert not done.called and [s for s, _ in rooms.ended] == ["idle"]
    run(clock, 1.5)
    assert [s for s, _ in rooms.ended] == ["idle", "busy"] and rooms.ended[1][1] == pytest.approx(10.0, abs=0.3)
    run(clock, 1.0)
    assert done.called and done.result == 1 and not drain.running
    assert drain.start() is done  # once


def test_a_room_that_empties_during_the_drain_ends_then():
    clock = Clock()
    rooms = Rooms(clock, {"a": True})
    done = rooms.drain(30.0).start()
    run(clock, 2.0)
    rooms.occupied["a"] = False  # the team finished and left
    run(clock, 1.0)
    assert done.called and done.result == 0 and rooms.ended[0][1] == pytest.approx(2.0, abs=0.3)


def test_no_rooms_finishes_at_once_and_a_stuck_app_is_bounded():
    clock = Clock()
    done = Rooms(clock, {}).drain(30.0).start()
    assert done.called
    stuck = Rooms(clock, {"a": True, "b": False}, free_after=None)  # never frees its rooms
    drain = stuck.drain(5.0)
    done = drain.start()
    run(clock, 5.0 + drain.grace + 0.5)
    assert done.called and sorted(s for s, _ in stuck.ended) == ["a", "b"]  # each ended exactly once


def test_a_failing_room_or_notice_does_not_stop_the_drain():
    clock = Clock()
    rooms = Rooms(clock, {"bad": False, "good": False})

    def end(session: str) -> None:
        if session == "bad":
            raise RuntimeError("boom")
        rooms.end(session)

    def announce(deadline: float) -> None:
        raise RuntimeError("no network")

    drain = Drain(clock, 1.0, rooms=lambda: list(rooms.occupied), empty=lambda s: True, end=end, announce=announce)
    done = drain.start()
    run(clock, 1.0 + drain.grace + 0.5)
    assert done.called and [s for s, _ in rooms.ended] == ["good"]


def test_negative_seconds_are_refused():
    with pytest.raises(ValueError):
        Drain(Clock(), -1, rooms=list, empty=bool, end=print, announce=print)
