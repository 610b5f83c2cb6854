"""A split cut through a room's tissue reaches a client: new vertex ids in the layout, the same surface triangles.

In process, no sockets (like test_server_e2e's cut): the surgeon's scissors split the block; what
``Publisher.publish`` sends the surgeon's link is decoded by a ``SnapshotDecoder`` and the triangle list is
replayed from the ``snap_topology`` messages as the browser's decoder does (adds, then removes).
"""

from __future__ import annotations

import numpy as np
from twisted.internet.task import Clock

from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.snapshot_messages import parse_topology
from physics.instruments import Kind, look_rotation
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import Settings
from rehearsal.wire import REHEARSAL_REGISTRY
from tests.rehearsal.link_helpers import RecordingLink


def _key(t) -> tuple[int, int, int]:
    return tuple(sorted(int(v) for v in t))


def test_a_split_cut_gives_the_client_the_servers_surface(tmp_path):
    server = RehearsalServer(Settings(data_dir=tmp_path / "data", record=False), Clock())
    session = server.sessions.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()
    live.pool.stop()
    room = live.room
    n0 = room.model.n_vertices
    server.connections.open(link := RecordingLink(0), Identity(session, 7, Role.LEAD_SURGEON, "Dr. Cut"))
    room.participants[7].hands["right"] = Kind.SCISSORS
    decoder, triangles, events = SnapshotDecoder(), set(), []

    def deliver() -> None:
        nonlocal triangles
        for _, message in link.sent:
            data = message if isinstance(message, bytes) else REHEARSAL_REGISTRY.encode(message)
            decoded = REHEARSAL_REGISTRY.decode(data)
            if decoded.type == "event":
                events.append(decoded.fields)
            if decoded.type == "snap_topology":
                update = parse_topology(decoded.fields)
                if update.cause == "full":
                    triangles = set()
                triangles |= {_key(t) for t in update.added_triangles}
                triangles -= {_key(t) for t in update.removed_triangles}
            if decoded.type in ("snap_config", "snap_topology", "snapshot") and decoder.on_message(data):
                live.sync.on_ack_fields(0, **decoder.ack_fields())
        link.sent.clear()

    deliver()  # the join: snap_config and the full topology
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    t = 0.0
    for jaw in [1.0] * 3 + [0.5, 0.0, 0.0, 0.0] + [0.0] * 6:
        t += 1 / 60
        assert room.instrument_input(7, "right", [0.0025, 0.03, 0.0], down, jaw, False, t) is None
        server.publisher.publish(live, room.advance(1 / 60))
        deliver()
    cuts = [e for e in events if e["kind"] == "cut"]
    assert cuts and sum(e["detail"]["vertices"] for e in cuts) == room.model.n_vertices - n0 > 0
    assert room.model.n_live_tets == room.model.n_tets  # split, nothing removed
    # the layout holds the appended vertices (ids past the old count), as patches the client decoded
    assert decoder.epoch == live.sync.epoch and decoder.layout == live.sync.layout
    ids = decoder.layout.vertex_ids
    assert set(ids.tolist()) == set(np.unique(room.model.surface).tolist())
    assert (ids >= n0).sum() > 0
    assert triangles == {_key(t) for t in room.model.surface}
    surface, received = decoder.surface()
    assert received.all()
    assert np.abs(surface - room.physics.x[ids]).max() < 2e-4  # the codec's error bound plus a frame of motion
