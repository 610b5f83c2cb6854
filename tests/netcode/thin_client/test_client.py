"""ThinClient wiring: render sources, epochs, invalid input, message dispatch, and the channels path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Connection, Delivery
from netcode.messaging.messages import Message
from netcode.messaging.peers import ClientChannels
from netcode.protocol.schema import input_ack_fields, response_model_fields
from netcode.thin_client import (
    THIN_CLIENT_REGISTRY,
    InputAck,
    InputReceiver,
    ObjectKind,
    ResponseModel,
    RigidPose,
    SnapshotObject,
    Source,
    ThinClient,
    ThinClientConfig,
    register_thin_client_types,
)

OWN, OTHER, PATCH = 10, 20, 30


def make_client() -> ThinClient:
    return ThinClient(ThinClientConfig(devices=(0, 1), own_objects={OWN: 1}))


def snap(t: float, epoch: int = 0, x: float = 0.0, n: int = 4) -> list[SnapshotObject]:
    return [
        SnapshotObject(OWN, ObjectKind.RIGID, t, pose=RigidPose([9.0, 9.0, 9.0])),
        SnapshotObject(OTHER, ObjectKind.RIGID, t, pose=RigidPose([t, 0.0, 0.0])),
        SnapshotObject(PATCH, ObjectKind.PATCH, t, vertices=np.full((n, 3), x + t), epoch=epoch),
    ]


def feed(client: ThinClient, seconds: float, start: float = 0.0, epoch: int = 0, n: int = 4) -> float:
    """60 Hz snapshots arriving 30 ms after their server time (server clock = local clock here)."""
    t = start
    while t < start + seconds:
        client.on_snapshot(snap(t - 0.03, epoch, n=n), t)
        client.track(t, {0: RigidPose([0, 1, 2]), 1: RigidPose([1, 2, 3], jaw=0.4)})
        t += 1 / 60
    return t


def test_render_sources_and_monotone_render_time():
    client = make_client()
    t = feed(client, 1.0)
    rs = client.render_state(t)
    assert rs.objects[OWN].source is Source.TRACKED and np.allclose(rs.objects[OWN].pose.position, [1, 2, 3])
    assert rs.objects[OTHER].source is Source.INTERPOLATED
    assert rs.objects[PATCH].source is Source.INTERPOLATED and rs.objects[PATCH].vertices.shape == (4, 3)
    # drawn at render_time: x of OTHER equals its server time
    assert abs(rs.objects[OTHER].pose.position[0] - rs.render_time) < 1e-9
    assert 0.029 < rs.latency < 0.05 and rs.delay <= 0.05
    times = [client.render_state(t + i / 90).render_time for i in range(30)]
    assert all(b >= a for a, b in itertools.pairwise(times))


def test_epochs_old_dropped_new_clears_patches_and_grasps():
    client = make_client()
    t = feed(client, 0.5)
    model = ResponseModel(1, OWN, 1, np.array([PATCH]), np.array([0]), np.eye(3)[None], RigidPose([1, 2, 3]))
    assert client.on_grasp(model, t)
    assert client.render_state(t).objects[PATCH].source is Source.PREDICTED
    t = feed(client, 0.3, start=t, epoch=1, n=6)  # a cut: new topology with 6 vertices
    assert client.epoch == 1 and not client.grasps
    before = client.dropped["epoch"]
    client.on_snapshot(snap(t - 0.03, epoch=0), t)
    assert client.dropped["epoch"] == before + 1  # an old-epoch patch is never applied
    rs = client.render_state(t)
    assert rs.objects[PATCH].vertices.shape == (6, 3)
    assert not client.on_grasp(model, t)  # a grasp of the old epoch is refused


def test_a_grasp_of_a_newer_epoch_waits_for_it_and_starts_when_its_first_patch_comes():
    """The grasp message is reliable and the snapshot that brings a new epoch is not: either may come first."""
    client = make_client()
    t = feed(client, 0.5)
    newer = ResponseModel(2, OWN, 1, np.array([PATCH]), np.array([0]), np.eye(3)[None], RigidPose([1, 2, 3]), epoch=1)
    assert client.on_grasp(newer, t) and not client.grasps  # kept, not started on epoch 0's vertices
    released = ResponseModel(
        3, OWN, 1, np.array([PATCH]), np.array([1]), np.eye(3)[None], RigidPose([1, 2, 3]), epoch=1
    )
    client.on_grasp(released, t)
    client.on_release(3, t)  # released before its epoch came: never started
    t = feed(client, 0.3, start=t, epoch=1, n=6)
    assert client.epoch == 1 and list(client.grasps) == [2]
    assert client.render_state(t).objects[PATCH].source is Source.PREDICTED
    for k in range(20):  # bounded: only the newest few wait
        later = ResponseModel(
            10 + k, OWN, 1, np.array([PATCH]), np.array([0]), np.eye(3)[None], RigidPose([1, 2, 3]), epoch=5
        )
        client.on_grasp(later, t)
    t = feed(client, 0.1, start=t, epoch=5, n=6)
    assert sorted(client.grasps) == list(range(22, 30))


def test_invalid_and_wrong_kind_objects_are_counted_not_applied():
    client = make_client()
    client.on_snapshot(snap(0.0), 0.03)
    bad = [
        SnapshotObject(OTHER, ObjectKind.PATCH, 0.1, vertices=np.zeros((2, 3))),  # kind changed
        SnapshotObject(PATCH, ObjectKind.PATCH, 0.1, vertices=np.full((2, 3), np.nan)),
        SnapshotObject(PATCH, ObjectKind.PATCH, 0.1, vertices=np.zeros((2, 2))),
        SnapshotObject(OTHER, ObjectKind.RIGID, 0.1),
    ]
    assert client.on_snapshot(bad, 0.13) == 0
    assert client.dropped["kind"] == 1 and client.dropped["invalid"] == 3


def test_dispatch_of_channel_messages():
    client = make_client()
    t = feed(client, 0.5)
    packet_seq = client.inputs.next_seq - 1
    ack = Message("input_ack", input_ack_fields(InputAck(packet_seq, t + 0.01, 0.002)))
    assert client.dispatch(Delivery(Channel.UNRELIABLE, b"", ack), t + 0.04)
    assert client.clock.synchronised and client.inputs.unacked() == []
    model = ResponseModel(4, OWN, 1, np.array([PATCH]), np.array([1]), np.eye(3)[None], RigidPose([1, 2, 3]))
    grasp = Message("grasp", response_model_fields(model))
    assert client.dispatch(Delivery(Channel.RELIABLE, b"", grasp), t)
    assert 4 in client.grasps
    broken = Message("grasp", response_model_fields(model) | {"columns": 5})
    assert client.dispatch(Delivery(Channel.RELIABLE, b"", broken), t) and client.dropped["invalid"] == 1
    assert client.dispatch(Delivery(Channel.RELIABLE, b"", Message("release", {"grasp_id": 4})), t)
    assert not client.grasps
    assert not client.dispatch(Delivery(Channel.UNRELIABLE, b"", Message("ping", {"time": 1.0})), t)
    assert not client.dispatch(Delivery(Channel.UNRELIABLE, b"raw"), t)


def test_send_frame_over_client_channels_reaches_a_server_connection():
    client = make_client()
    channels = ClientChannels(registry=THIN_CLIENT_REGISTRY, clock=lambda: 0.0)
    channels.connection = Connection(registry=THIN_CLIENT_REGISTRY, now=0.0)  # as on_state_change(CONNECTED) does
    server = Connection(registry=THIN_CLIENT_REGISTRY, now=0.0)
    receiver = InputReceiver()
    got = []
    for frame in range(10):
        t = frame / 90
        assert client.send_frame(channels, t, {0: RigidPose([0, 0, t]), 1: None})
        for payload in channels.connection.generate_packets(t):
            if frame % 3 == 1:
                continue  # lost
            for delivery in server.receive_packet(payload, t + 0.02):
                assert delivery.channel is Channel.UNRELIABLE and delivery.message.type == "input"
                got.extend(receiver.receive(delivery.message.fields["p"], t))
    assert [s.seq for s in got] == list(range(10))
    assert got[-1].poses[1] is None and abs(got[-1].poses[0].position[2] - 9 / 90) < 1e-6


def test_adapter_from_the_codec_decoded_snapshot():
    decode = pytest.importorskip("netcode.sync.snapshot_decode")
    from netcode.thin_client.adapters import from_decoded_snapshot

    snapshot = decode.DecodedSnapshot(
        sequence=5,
        server_time=2.0,
        epoch=3,
        objects=[
            decode.DecodedObject(1, "patch", 5, 2.0, True, np.zeros((4, 3)), vertex_ids=np.arange(4)),
            decode.DecodedObject(
                2, "instrument", 5, 2.0, True, np.ones(3), orientation=np.array([0, 0, 0, 1.0]), jaw=0.3
            ),
        ],
    )
    patch, tool = from_decoded_snapshot(snapshot)
    assert patch.kind is ObjectKind.PATCH and patch.epoch == 3 and patch.vertices.shape == (4, 3)
    assert tool.kind is ObjectKind.RIGID and tool.pose.jaw == 0.3 and np.allclose(tool.pose.position, 1.0)
    client = make_client()
    assert client.on_snapshot([patch, tool], 2.03) == 2 and client.epoch == 3


def test_lost_tracking_falls_back_to_snapshots_and_holds_the_held_tissue():
    client = make_client()
    t = feed(client, 0.5)
    model = ResponseModel(1, OWN, 1, np.array([PATCH]), np.array([0]), np.eye(3)[None], RigidPose([1, 2, 3]))
    client.on_grasp(model, t)
    held = client.render_state(t).objects[PATCH]
    client.track(t + 0.01, {0: RigidPose([0, 1, 2]), 1: None})
    rs = client.render_state(t + 0.01)
    assert rs.objects[OWN].source is not Source.TRACKED and np.allclose(rs.objects[OWN].pose.position, 9.0)
    assert rs.objects[PATCH].source is Source.PREDICTED and np.allclose(rs.objects[PATCH].vertices, held.vertices)


def _codec_stream(frames: int = 3):
    """A snapshot server's join messages and ``frames`` snapshot messages of a 12-vertex scene + one rigid."""
    from netcode.sync.patches import make_patches
    from netcode.sync.snapshot import RigidSet
    from netcode.sync.snapshot_codec import SnapshotServer
    from netcode.sync.snapshot_messages import snapshot_message

    x = np.random.default_rng(0).random((12, 3)) * 0.01
    sync = SnapshotServer(make_patches(np.arange(12), x), triangles=np.array([[0, 1, 2]]))
    sync.add_client(0)
    join = list(sync.join_messages())
    rigid = RigidSet(np.array([OWN]), np.zeros(1, np.int64), x[:1], np.array([[0, 0, 0, 1.0]]), np.zeros(1))
    snapshots = []
    for i in range(frames):
        sync.begin_frame(i / 60, x + i * 0.001, rigid)
        snapshots.append(snapshot_message(sync.encode(0)))
    return join, snapshots


def _delivery(kind: str, data: bytes) -> Delivery:
    return Delivery(Channel.UNRELIABLE, data, Message(kind, {}))


def test_with_a_decoder_dispatch_decodes_interpolates_and_acks_the_snapshots():
    from netcode.sync.snapshot_decode import SnapshotDecoder
    from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY

    decoder = SnapshotDecoder()
    client = ThinClient(ThinClientConfig(devices=(0, 1)), decoder)
    join, snapshots = _codec_stream()
    for message in join:
        assert client.dispatch(_delivery("snap_config" if message is join[0] else "snap_topology", message), 0.0)
    assert not client.snapshot_ack_due
    for i, message in enumerate(snapshots):
        assert client.dispatch(_delivery("snapshot", message), i / 60 + 0.03)
    assert client.snapshot_ack_due and OWN in client.buffers and len(client.buffers) >= 2  # the rigid + patches
    assert client.kinds[OWN] is ObjectKind.RIGID
    rs = client.render_state(0.2)
    assert rs.objects[OWN].source in (Source.INTERPOLATED, Source.EXTRAPOLATED, Source.HELD)

    registry = register_thin_client_types(SNAPSHOT_REGISTRY.copy())  # a client's registry speaks both
    channels = ClientChannels(registry=registry, clock=lambda: 0.0)
    channels.connection = Connection(registry=registry, now=0.0)
    server = Connection(registry=registry, now=0.0)
    assert client.send_snapshot_ack(channels) and not client.send_snapshot_ack(channels)  # one per applied batch
    acks = [d.message.fields for p in channels.connection.generate_packets(0.3) for d in server.receive_packet(p, 0.3)]
    assert acks == [decoder.ack_fields()] and acks[0]["newest"] == decoder.newest_sequence

    assert client.dispatch(_delivery("snapshot", b"\x93garbage"), 0.4)  # counted, never raised
    assert client.dropped["snapshot"] == 1
    assert client.dispatch(_delivery("snapshot", snapshots[-1]), 0.4) and not client.snapshot_ack_due  # a duplicate


def test_without_a_decoder_snapshot_messages_are_the_callers():
    client = make_client()
    _, snapshots = _codec_stream(1)
    assert not client.dispatch(_delivery("snapshot", snapshots[0]), 0.0)
    with pytest.raises(RuntimeError):
        client.on_snapshot_message(snapshots[0], 0.0)
    assert not client.send_snapshot_ack(ClientChannels(registry=THIN_CLIENT_REGISTRY, clock=lambda: 0.0))


def test_own_objects_learnt_later_are_drawn_from_tracking():
    client = ThinClient(ThinClientConfig(devices=(0, 1)))
    t = feed(client, 0.5)
    assert client.render_state(t).objects[OTHER].source is Source.INTERPOLATED
    client.own(OTHER, 1)
    rs = client.render_state(t)
    assert rs.objects[OTHER].source is Source.TRACKED and np.allclose(rs.objects[OTHER].pose.position, [1, 2, 3])
    with pytest.raises(ValueError):
        client.own(OTHER, 7)  # not a tracked device


def test_a_clock_step_restarts_the_delay_measured_through_the_old_offset():
    """Snapshots that arrived before the first clock exchange measured their transit with offset 0; once the
    clock steps to the server's (4 s behind here) the lag must follow at once, not slew off 4 s at 0.1 s/s."""
    client = ThinClient(ThinClientConfig(devices=(1,)))
    offset = -4.0  # server clock = local clock - 4 s
    t = 10.0
    for _ in range(30):  # 0.5 s of snapshots, 30 ms in flight, before any exchange
        client.on_snapshot(snap(t + offset - 0.03), t)
        client.track(t, {1: RigidPose([0, 0, 0])})
        t += 1 / 60
    sent_seq = client.inputs.next_seq - 1
    client.on_input_ack(InputAck(sent_seq, t + offset - 0.005, 0.0), t)  # a 10 ms round trip, just now
    assert client.clock.synchronised and abs(client.server_now(t) - (t + offset)) < 0.01
    for _ in range(30):
        client.on_snapshot(snap(t + offset - 0.03), t)
        t += 1 / 60
    rs = client.render_state(t)
    assert rs.delay <= 0.05 and 0.02 < rs.latency < 0.04, (rs.delay, rs.latency)
    assert rs.server_now - rs.render_time < 0.1  # remote objects drawn ~latency + delay late, not seconds
    assert abs(rs.objects[OTHER].pose.position[0] - rs.render_time) < 0.02
