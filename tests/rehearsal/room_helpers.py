"""A room with its whole team, for the room's tests and its command handlers' tests."""

from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.lifecycle import RoomState
from rehearsal.roles import Role
from rehearsal.room import Room

DOWN = look_rotation((0.0, -1.0, 0.0))


def team(room):
    ids = {}
    for k, role in enumerate(Role, start=1):
        room.join(Identity(room.session, k, role, role.value))
        ids[role] = k
    return ids


def running(scenario):
    room = Room("s-1", scenario)
    ids = team(room)
    assert room.start() is None and room.state is RoomState.RUNNING
    return room, ids
