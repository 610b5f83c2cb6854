"""Compile (or load from numba's cache) every physics and snapshot kernel before the server listens."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from netcode.sync.snapshot import RigidSet
from netcode.sync.snapshot_codec import SnapshotServer
from physics.instruments import Kind, look_rotation
from rehearsal.identity import Identity
from rehearsal.live_room import surface_layout
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario


def warm_up(scenario: str | Path) -> None:
    """Each of the scenario's instruments works the tissue once (contact, grasp and its response probe, cut,
    burn) and one snapshot is encoded, so numba compiles (or loads its cache) every kernel now, not in the
    middle of a session. ``scenario``: a packaged scenario's name or a scenario file."""
    spec = load_scenario(scenario)
    room = Room("warm-up", spec)
    surgeon = room.join(Identity("warm-up", 1, Role.LEAD_SURGEON, "warm-up"))
    room.start()
    rest = room.model.rest_positions
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    hinge = np.array([(lo[0] + hi[0]) / 2, hi[1] + 0.01, (lo[2] + hi[2]) / 2])  # jaws reach into the top
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    dt, t = 1.0 / spec.tick_hz, 0.0
    default_threads = numba.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):  # a room's thread steps with the serial kernels
            numba.set_num_threads(threads)
            for kind in spec.instruments:
                surgeon.hands["right"] = Kind(kind)
                for jaw in (1.0, 1.0, 0.6, 0.3, 0.0, 0.0, 1.0):
                    t += dt
                    room.instrument_input(1, "right", hinge, down, jaw, kind == Kind.CAUTERY_HOOK, t)
                    room.advance(dt)
    finally:
        numba.set_num_threads(default_threads)
    layout = surface_layout(room)
    sync = SnapshotServer(layout, triangles=room.model.surface)
    sync.add_client(0)
    rigid = RigidSet(np.zeros(1, np.int64), np.zeros(1, np.int64), hi[None, :], np.array([[0, 0, 0, 1.0]]), np.zeros(1))
    for _ in range(2):
        sync.begin_frame(0.0, room.physics.x[layout.vertex_ids], rigid)
        sync.encode(0)
        sync.on_ack(0, sync.sequence)
