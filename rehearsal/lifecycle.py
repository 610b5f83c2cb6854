"""A room's lifecycle: created -> lobby -> running <-> paused -> ended (ended is final)."""

from __future__ import annotations

from enum import StrEnum


class RoomState(StrEnum):
    CREATED = "created"
    LOBBY = "lobby"
    RUNNING = "running"
    PAUSED = "paused"
    ENDED = "ended"


TRANSITIONS: dict[RoomState, frozenset[RoomState]] = {
    RoomState.CREATED: frozenset({RoomState.LOBBY, RoomState.ENDED}),
    RoomState.LOBBY: frozenset({RoomState.RUNNING, RoomState.ENDED}),
    RoomState.RUNNING: frozenset({RoomState.PAUSED, RoomState.ENDED}),
    RoomState.PAUSED: frozenset({RoomState.RUNNING, RoomState.ENDED}),
    RoomState.ENDED: frozenset(),
}


class TransitionError(ValueError):
    """A lifecycle change the room's current state does not allow."""


def transition(current: RoomState, target: RoomState) -> RoomState:
    """The new state, or TransitionError with both states named."""
    if target not in TRANSITIONS[current]:
        raise TransitionError(f"a room cannot go from {current.value} to {target.value}")
    return target


def simulates(state: RoomState) -> bool:
    """Physics advances only while running: a paused room's tissue does not move."""
    return state is RoomState.RUNNING
