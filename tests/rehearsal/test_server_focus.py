"""Interest management: where a headset looks (and its instruments) is what ranks higher in its snapshots."""

import numpy as np
from twisted.internet.task import Clock

from netcode.protocol.poses import RigidPose, rotvec_to_quat
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import GAZE_DISTANCE, RehearsalServer, _Client, gaze_point
from rehearsal.settings import load_settings

ROOM = (np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0]))


def test_the_gaze_point_lies_ahead_of_the_head_and_inside_the_room():
    ahead = gaze_point(RigidPose([0.0, 0.5, -0.45]), ROOM)
    np.testing.assert_allclose(ahead, [0.0, 0.5, -0.45 + GAZE_DISTANCE], atol=1e-12)
    turned = gaze_point(RigidPose([0.0, 0.5, 0.9], rotvec_to_quat([0.0, np.pi / 2, 0.0])), ROOM)
    np.testing.assert_allclose(turned, [GAZE_DISTANCE, 0.5, 0.9], atol=1e-9)  # +z turned to +x
    clipped = gaze_point(RigidPose([0.0, 0.5, 0.9]), ROOM)
    assert clipped[2] == 1.0
    assert gaze_point(RigidPose([5.0, 0.5, 0.0]), ROOM) is None


def test_an_observers_focus_is_their_gaze(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        client = _Client(3, Identity(session, 5, Role.OBSERVER, "Student"), session)
        live.room.join(client.identity)
        live.sync.add_client(3, budget_bytes=10_000)
        client.gaze = np.array([0.0, 0.02, 0.01])
        server._set_focus(live, client)
        np.testing.assert_array_equal(live.sync.clients[3].focus, [[0.0, 0.02, 0.01]])
    finally:
        server.stop()
