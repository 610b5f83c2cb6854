"""Publishing a room with a suture: every client gets the needle as a rigid object (its shape once, reliably)
and the thread as its own unreliable stream, under the client's snapshot budget."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.sync.snapshot import DEFAULT_CONFIG
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.thread_polyline import THREAD_ENVELOPE, ThreadDecoder, read_thread_header
from netcode.thin_client.client import ThinClient, ThinClientConfig
from physics.needle import NeedleSpec, TissuePoint
from physics.suture_thread import Slide, ThreadSpec
from physics.suturing import Suturing, is_hold
from physics.thread_cut import FrozenThread
from rehearsal.identity import Identity
from rehearsal.links import UDP
from rehearsal.publishing import NEEDLE_OBJECT
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.wire import REHEARSAL_REGISTRY
from tests.rehearsal.link_helpers import RecordingLink

BOUND = DEFAULT_CONFIG.positions.max_error


@pytest.fixture
def room(tmp_path):
    clock = Clock()  # the server's time too: 1/60 s a frame (move advances it)
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), clock, server_time=clock.seconds)
    session = server.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()

    def join(key: int, role: Role = Role.LEAD_SURGEON, transport: str = "websocket") -> RecordingLink:
        link = RecordingLink(key, transport=transport)
        server.connections.open(link, Identity(session, key, role, role.value))
        return link

    try:
        yield server, live, join, clock
    finally:
        server.stop()


def add_suture(live) -> Suturing:
    top = live.room.model.rest_positions.max(axis=0)
    centre = live.room.model.rest_positions.mean(axis=0)
    su = Suturing(
        live.room.model,
        NeedleSpec(radius=0.01),
        ThreadSpec(segments=40),
        np.array([centre[0], top[1] + 0.02, centre[2]]),
        np.array([np.cos(0.3), 0.0, np.sin(0.3), 0.0]),  # (w, x, y, z): turned about y
    )
    live.room.suturing = su
    return su


def move(su: Suturing, frame: int, clock: Clock) -> None:
    """A pull: the needle rises and the thread follows it, swaying (one frame later)."""
    clock.advance(1 / 60)
    su.needle.position = su.needle.position + np.array([0.0, 0.0004, 0.0])
    x = su.thread.x
    sway = 0.0003 * np.sin(np.arange(len(x)) / 6.0 + frame / 4.0)
    su.thread.x = x + np.stack([np.zeros(len(x)), 0.0004 * np.linspace(1, 0, len(x)), sway], axis=1)


def delivered(link: RecordingLink) -> list[tuple[Channel, Message, bytes]]:
    out = []
    for channel, message in link.sent:
        data = message if isinstance(message, bytes) else REHEARSAL_REGISTRY.encode(message)
        out.append((channel, REHEARSAL_REGISTRY.decode(data), data))
    link.sent.clear()
    return out


def test_clients_get_the_needle_as_a_rigid_object_and_the_thread_within_the_bound(room):
    server, live, join, clock = room
    su = add_suture(live)
    surgeon, observer = join(3), join(4, Role.OBSERVER)
    snapshots, threads = SnapshotDecoder(), ThreadDecoder(DEFAULT_CONFIG)
    setups = []
    for frame in range(12):
        move(su, frame, clock)
        server.publisher.publish(live, None)
        for channel, message, data in delivered(surgeon):
            if message.type in ("snap_config", "snap_topology", "snapshot"):
                snapshots.on_message(data)
            elif message.type == "snap_suture":
                assert channel is Channel.RELIABLE
                setups.append(message.fields)
            elif message.type == "snap_thread":
                assert channel is Channel.UNRELIABLE
                threads.apply(message.fields["data"])
        needle = snapshots.rigid()[NEEDLE_OBJECT]
        assert needle.kind == "needle" and needle.jaw is None
        assert np.abs(needle.positions - su.needle.position).max() <= BOUND
        q = su.needle.orientation  # (w, x, y, z) in physics; (x, y, z, w) on the wire
        assert abs(abs(float(np.dot(needle.orientation, [q[1], q[2], q[3], q[0]]))) - 1.0) < 1e-6
        assert threads.points().shape == su.polyline().shape
        assert np.abs(threads.points() - su.polyline()).max() <= BOUND
    assert setups == [
        {"needle": NEEDLE_OBJECT, "radius": 0.01, "arc": su.needle.spec.arc_angle, "wire_radius": 0.0004,
         "thread_radius": su.thread.spec.radius}
    ]  # fmt: skip
    assert threads.missing_baselines == 0
    assert server.counters["thread_messages"] >= 12 * 2  # the surgeon and the (shared) observer stream
    kinds = [m.type for _, m, _ in delivered(observer)]
    assert "snap_suture" in kinds and "snap_thread" in kinds


def test_a_room_without_a_suture_sends_no_needle_and_no_thread(room):
    server, live, join, _clock = room
    surgeon = join(3)
    server.publisher.publish(live, None)
    kinds = {m.type for _, m, _ in delivered(surgeon)}
    assert "snapshot" in kinds and not kinds & {"snap_suture", "snap_thread"}
    assert NEEDLE_OBJECT not in server.publisher.rigid_set(live).ids


def test_the_thread_shares_the_snapshot_budget_and_deltas_follow_thread_acks_over_udp(room):
    server, live, join, clock = room
    su = add_suture(live)
    headset = join(5, transport=UDP)
    base = live.sync.clients[5].budget_bytes
    threads = ThreadDecoder(DEFAULT_CONFIG)
    ages = []
    for frame in range(10):
        move(su, frame, clock)
        server.publisher.publish(live, None)
        sent = delivered(headset)
        snapshot = sum(len(m.fields["data"]) for _, m, _ in sent if m.type == "snapshot")
        thread = [m.fields["data"] for _, m, _ in sent if m.type == "snap_thread"]
        assert snapshot + sum(len(t) + THREAD_ENVELOPE for t in thread) <= base
        for data in thread:
            ages.append(read_thread_header(data).age)
            threads.apply(data)
        if frame % 3 != 2:  # some acks are lost
            server.connections.receive(5, Message("thread_ack", threads.ack_fields()))
    assert ages[0] == 0 and all(a > 0 for a in ages[1:])  # one full record, then deltas against acked frames
    assert threads.missing_baselines == 0
    assert np.abs(threads.points() - su.polyline()).max() <= BOUND
    # a resync (the client lost a baseline) starts the thread afresh: its shape again, then a full record
    server.connections.receive(5, Message("snap_resync", {"reason": "thread baseline"}))
    move(su, 11, clock)
    server.publisher.publish(live, None)
    sent = delivered(headset)
    assert [m.type for _, m, _ in sent].count("snap_suture") == 1
    assert [read_thread_header(m.fields["data"]).age for _, m, _ in sent if m.type == "snap_thread"] == [0]


def test_the_thin_client_holds_the_needle_and_the_thread_to_render(room):
    server, live, join, clock = room
    su = add_suture(live)
    headset = join(6, transport=UDP)
    client = ThinClient(ThinClientConfig(devices=(0,)), SnapshotDecoder())
    acks = []

    class Channels:  # the headset's channels: its acks reach the server at once
        def send(self, channel, message):
            acks.append((channel, message))
            server.connections.receive(headset.key, message)
            return True

    now = 0.0
    for frame in range(8):
        move(su, frame, clock)
        server.publisher.publish(live, None)
        for _, message, data in delivered(headset):
            delivery = type("D", (), {"message": message, "data": data})()
            assert client.dispatch(delivery, now) or message.type not in ("snap_thread", "snap_suture")
        client.send_thread_ack(Channels())
        now += 1 / 60
    newest = clock.seconds()  # (no clock sync here: the server's time is the client's)
    state = client.render_state(newest + (newest - client.render_time(newest)))  # render_time = the newest frame
    assert state.suture is not None and state.suture.needle == NEEDLE_OBJECT
    assert state.thread is not None and np.abs(state.thread - su.polyline()).max() <= BOUND
    needle = state.objects[NEEDLE_OBJECT].pose
    arc = state.suture.needle_points(needle, 24)
    assert np.abs(arc - su.needle.polyline(24)).max() < 2e-4  # the drawn arc is the physics' arc
    assert client.dropped["thread"] == 0
    assert {m.type for _, m in acks} == {"thread_ack"}
    # a thread delta whose baseline the client lacks: it asks for a resync, and a bad message is dropped
    client.thread_decoder.reset()
    move(su, 9, clock)
    server.publisher.publish(live, None)
    for _, message, data in delivered(headset):
        client.dispatch(type("D", (), {"message": message, "data": data})(), now)
    assert client.dropped["thread"] == 1 and client.resync_due
    client.send_thread_ack(Channels())
    assert acks[-1][0] is Channel.RELIABLE and acks[-1][1].type == "snap_resync"
    bad = Message("snap_thread", {"data": b"\x01\x02"})
    client.dispatch(type("D", (), {"message": bad, "data": b""})(), now)
    assert client.dropped["thread"] == 2


def test_a_thread_or_needle_the_physics_lost_is_not_sent_and_nothing_raises(room):
    server, live, join, clock = room
    su = add_suture(live)
    surgeon = join(3)
    server.publisher.publish(live, None)
    delivered(surgeon)
    su.thread.x = np.full_like(su.thread.x, np.nan)
    su.needle.position = np.array([np.nan, 0.0, 0.0])
    move(su, 1, clock)
    server.publisher.publish(live, None)  # no exception into the reactor
    kinds = [m.type for _, m, _ in delivered(surgeon)]
    assert "snapshot" in kinds and "snap_thread" not in kinds
    assert server.counters["thread_frames_refused"] == 1
    assert NEEDLE_OBJECT not in server.publisher.rigid_set(live).ids


def test_without_the_suture_any_more_the_clients_get_their_whole_budget_back(room):
    server, live, join, clock = room
    su = add_suture(live)
    join(3)
    budget = live.sync.clients[3].budget_bytes
    move(su, 1, clock)
    server.publisher.publish(live, None)
    assert live.sync.clients[3].budget_bytes < budget  # the thread took its share
    live.room.suturing = None
    server.publisher.publish(live, None)
    assert live.sync.clients[3].budget_bytes == budget


def test_the_suturing_scenarios_room_publishes_its_needle_and_falling_thread(tmp_path):
    clock = Clock()
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), clock, server_time=clock.seconds)
    try:
        session = server.create_session("suturing")
        live = server.rooms[session]
        live.ticker.stop()
        room = live.room
        assert room.suturing is not None
        link = RecordingLink(3, transport=UDP)
        server.connections.open(link, Identity(session, 3, Role.LEAD_SURGEON, "Dr. Stitch"))
        room.start()
        snapshots, threads = SnapshotDecoder(), ThreadDecoder(DEFAULT_CONFIG)
        for _ in range(20):  # the thread settles under gravity onto the pad: it moves every frame
            clock.advance(1 / 60)
            report = room.advance(1 / 60)
            server.publisher.publish(live, report)
            for _, message, data in delivered(link):
                if message.type in ("snap_config", "snap_topology", "snapshot"):
                    snapshots.on_message(data)
                elif message.type == "snap_thread":
                    threads.apply(message.fields["data"])
                    server.connections.receive(3, Message("thread_ack", threads.ack_fields()))
        truth = room.suturing.polyline()
        assert threads.points().shape == truth.shape and np.abs(threads.points() - truth).max() <= BOUND
        needle = snapshots.rigid()[NEEDLE_OBJECT]
        assert needle.kind == "needle" and np.abs(needle.positions - room.suturing.needle.position).max() <= BOUND
        assert threads.missing_baselines == 0
    finally:
        server.stop()


def test_the_threads_hold_points_are_never_sent_as_instruments(room):
    server, live, join, _clock = room
    surgeon = join(3)
    su = add_suture(live)
    triangle = live.room.model.surface[0].astype(np.int32)
    su.thread.pass_through(TissuePoint(triangle, np.full(3, 1 / 3)), 0.5, 0, "entry")
    live.room.advance(1 / 60)  # the solver creates the hold's pseudo-instrument for the thread's tissue point
    assert any(is_hold(k) for k in live.room.physics.instruments)
    assert not any(is_hold(k) for k in live.room.instruments())
    rigid = server.publisher.rigid_set(live)
    assert set(rigid.ids) == {NEEDLE_OBJECT}  # no participant holds anything yet: the needle alone
    server.publisher.publish(live, None)
    forces = [m for _, m, _ in delivered(surgeon) if m.type == "forces"]
    assert not forces  # a hold point is nobody's instrument: no forces row for it either


def cut_off_piece(live, su: Suturing) -> np.ndarray:
    """A tied piece of thread as a cut leaves it (physics/thread_cut.py): frozen through two surface points."""
    tri = live.room.model.surface[0].astype(np.int32)
    x = live.room.physics.x
    pts = np.stack([x[tri[0]] + [0.0, 0.002 * i, 0.0] for i in range(4)] + [x[tri[1]] + [0.0, 0.001, 0.0]])
    one = np.array([1.0, 0.0, 0.0])
    slides = [Slide(TissuePoint(np.full(3, v, np.int32), one), u, 0, side, np.zeros(3))
              for v, u, side in ((tri[0], 0.5, "entry"), (tri[1], 3.5, "exit"))]  # fmt: skip
    su.frozen.append(FrozenThread(1, pts, slides, live.room.physics, su.thread.spec.radius))
    return pts


def test_every_thread_is_sent_by_id_the_live_one_as_before_and_the_thin_client_draws_them_all(room):
    server, live, join, clock = room
    su = add_suture(live)
    piece = cut_off_piece(live, su)
    headset = join(6, transport=UDP)
    client = ThinClient(ThinClientConfig(devices=(0,)), SnapshotDecoder())
    acks = []

    class Channels:
        def send(self, channel, message):
            acks.append(message)
            server.connections.receive(headset.key, message)
            return True

    now = 0.0
    for frame in range(6):
        move(su, frame, clock)
        server.publisher.publish(live, None)
        for _, message, data in delivered(headset):
            if message.type == "snap_thread":
                fields = message.fields
                if "thread" not in fields:  # the live thread: the one-thread bytes, no id field
                    assert data == REHEARSAL_REGISTRY.encode(Message("snap_thread", {"data": fields["data"]}))
                else:
                    assert fields["thread"] == 1
            client.dispatch(type("D", (), {"message": message, "data": data})(), now)
        client.send_thread_ack(Channels())
        now += 1 / 60
    assert {m.fields.get("thread", 0) for m in acks if m.type == "thread_ack"} == {0, 1}
    track = server.publisher.threads[live]
    assert set(track.streams) == {0, 1} and track.streams[1].clients[6].acked is not None  # acked by id
    newest = clock.seconds()
    state = client.render_state(newest + (newest - client.render_time(newest)))
    assert set(state.threads) == {0, 1}
    assert np.abs(state.threads[0] - su.polyline()).max() <= BOUND and state.thread is not None
    assert np.abs(state.threads[1] - piece).max() <= BOUND
    assert client.dropped["thread"] == 0 and server.counters["thread_acks_unknown"] == 0
    # a piece that is gone is sent as a thread of no points: the client stops drawing it
    su.frozen.clear()
    move(su, 7, clock)
    server.publisher.publish(live, None)
    for _, message, data in delivered(headset):
        client.dispatch(type("D", (), {"message": message, "data": data})(), now + 1 / 60)
    state = client.render_state(clock.seconds() + 1.0)
    assert set(state.threads) == {0}
    # an ack of an id out of range is counted, never raised; a message of one is dropped by the client
    server.connections.receive(6, Message("thread_ack", {"newest": 1, "bits": 0, "thread": 99}))
    assert server.counters["thread_acks_unknown"] == 1
    bad = Message("snap_thread", {"thread": 16, "data": b"\x01"})
    client.dispatch(type("D", (), {"message": bad, "data": b""})(), now)
    assert client.dropped["thread"] == 1
