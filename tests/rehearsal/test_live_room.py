"""A live room's audience: snapshot acks handed to the codec once, and interest management (gaze, focus)."""

import random

import numpy as np
from twisted.internet.task import Clock

from netcode.protocol.poses import RigidPose, rotvec_to_quat
from rehearsal.identity import Identity
from rehearsal.links import UDP
from rehearsal.live_room import GAZE_DISTANCE, Client, gaze_point
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink

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
        # a headset's observer (UDP): a browser observer shares the room's observer stream, which has no focus
        server.connections.open(RecordingLink(3, UDP), Identity(session, 5, Role.OBSERVER, "Student"))
        client = live.clients[3]
        client.gaze = np.array([0.0, 0.02, 0.01])
        live.set_focus(client)
        np.testing.assert_array_equal(live.sync.clients[3].focus, [[0.0, 0.02, 0.01]])
    finally:
        server.stop()


def test_events_carry_the_session_clock_beside_the_server_clock(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        link = RecordingLink(3, UDP)
        server.connections.open(link, Identity(session, 5, Role.OBSERVER, "Student"))
        live.room.elapsed = 75.5  # simulated seconds since the room began
        live.broadcast_event("annotate", by=5, detail={"text": "look here"})
        (event,) = [m for _, m in link.decoded() if m.type == "event" and m.fields["kind"] == "annotate"]
        assert event.fields["session_time"] == 75.5  # what the console shows (1:15), not the monotonic clock
        assert "server_time" in event.fields
    finally:
        server.stop()


def test_fresh_acks_name_every_acknowledged_snapshot_once_under_reordering():
    """The codec gets ``newest`` with every ack (applying it again is a no-op there) and, from the bits, only
    snapshots no earlier ack named: together every acknowledged snapshot, none of the bits twice."""
    rng = random.Random(5)
    client = Client(RecordingLink(0), Identity("s", 1, Role.OBSERVER, "o"))
    handed: set[int] = set()
    named: set[int] = set()
    applied: set[int] = set()
    for newest in range(1, 400):
        applied |= {s for s in range(newest - 40, newest + 1) if s >= 0 and rng.random() < 0.9}
        ack = max(0, max(applied) - rng.choice([0, 0, 0, 3, 40]))  # mostly the newest, sometimes a late, reordered ack
        bits = sum(1 << i for i in range(32) if ack - 1 - i in applied)
        named |= {ack} | {ack - 1 - i for i in range(32) if bits >> i & 1}
        fresh_bits = client.fresh_acks(ack, bits)
        fresh = [ack - 1 - i for i in range(32) if fresh_bits >> i & 1]
        assert not handed & set(fresh)  # never a snapshot the codec already had
        handed |= {ack, *fresh}
    assert handed == named


def test_fresh_acks_survive_hostile_numbers():
    client = Client(RecordingLink(0), Identity("s", 1, Role.OBSERVER, "o"))
    for newest, bits in [(2**63, 2**64 - 1), (-5, 3), (0, 0), (2**40, 1), (7, 2**64 - 1)]:
        assert 0 <= client.fresh_acks(newest, bits) < 2**32
