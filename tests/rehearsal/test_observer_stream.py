"""A room's browser observers share one snapshot stream: encoded once, decodable by each, a baseline once
written to every member; a newcomer, a resync and a page that cannot keep up are handled without the others'
loss."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.snapshot_messages import decode_message
from rehearsal.identity import Identity
from rehearsal.links import UDP
from rehearsal.observer_stream import SHARED_OBSERVERS
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


@pytest.fixture
def room(tmp_path):
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    session = server.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()

    def join(key: int, role: Role = Role.OBSERVER, transport: str = "websocket", kind=RecordingLink) -> RecordingLink:
        link = kind(key, transport)
        server.connections.open(link, Identity(session, key, role, f"p{key}"))
        return link

    try:
        yield server, live, join
    finally:
        server.stop()


def snapshots(link: RecordingLink) -> list[bytes]:
    """The snapshot messages a link got since its sends were last cleared (encoded bytes, in order)."""
    return [m for c, m in link.sent if c is Channel.UNRELIABLE and isinstance(m, bytes)]


def sync_bytes(link: RecordingLink) -> list[bytes]:
    out = []
    for _, m in link.sent:
        if isinstance(m, bytes):
            try:
                if decode_message(m)[0] in ("snap_config", "snap_topology", "snap_predictor", "snapshot"):
                    out.append(m)
            except ValueError:
                continue
    return out


def ack(server, link: RecordingLink, sequence: int) -> None:
    from netcode.messaging.messages import Message

    server.connections.receive(link.key, Message("snap_ack", {"newest": sequence, "bits": 0}))


def test_browser_observers_get_one_encoding_and_each_decodes_it(room):
    server, live, join = room
    a, b = join(4), join(5)
    headset_observer = join(6, transport=UDP)
    assert 4 in live.observers and 5 in live.observers and 6 not in live.observers
    for _ in range(3):
        server.publisher.publish(live, None)
    shared_a, shared_b = snapshots(a), snapshots(b)
    assert len(shared_a) == 3 and all(x is y for x, y in zip(shared_a, shared_b, strict=True))  # the same bytes
    assert len(snapshots(headset_observer)) == 3 and snapshots(headset_observer)[0] is not shared_a[0]
    assert server.counters["snapshots_shared"] == 3
    for link in (a, b):
        decoder = SnapshotDecoder()
        for data in sync_bytes(link):
            decoder.on_message(data)
        positions, received = decoder.surface()
        assert received.all() and positions.shape[0] == live.sync.layout.vertex_count


def test_a_shared_snapshot_is_a_baseline_once_written_to_every_member(room):
    server, live, join = room
    a, b = join(4), join(5)
    server.publisher.publish(live, None)
    first = live.sync.sequence
    shared = live.sync.clients[SHARED_OBSERVERS]
    assert (shared.acked_seq == first).all()  # no page acked it: a WebSocket delivers what was written
    server.publisher.publish(live, None)
    assert len(snapshots(a)[-1]) < len(snapshots(a)[0]) // 4 and snapshots(a)[-1] is snapshots(b)[-1]
    for _ in range(3):
        server.publisher.publish(live, None)
    for link in (a, b):  # each page decodes the deltas without ever having acked
        decoder = SnapshotDecoder()
        for data in sync_bytes(link):
            decoder.on_message(data)
        assert decoder.missing_baselines == 0
        assert decoder.surface()[1].all()


def test_a_page_ack_dates_its_view_but_a_forged_one_does_not(room):
    server, live, join = room
    a = join(4)
    server.publisher.publish(live, None)
    ack(server, a, live.sync.sequence)
    assert server.connections.clients[a.key].ack_base == live.sync.sequence
    ack(server, a, live.sync.sequence + 10**6)  # never sent
    assert server.connections.clients[a.key].ack_base == live.sync.sequence


def test_a_newcomer_resets_the_shared_stream_and_a_resync_leaves_it(room):
    from netcode.messaging.messages import Message

    server, live, join = room
    a = join(4)
    server.publisher.publish(live, None)
    full = len(snapshots(a)[-1])
    server.publisher.publish(live, None)
    assert len(snapshots(a)[-1]) < full // 4
    b = join(5)  # joins late: the next shared snapshot is full again, for both
    server.publisher.publish(live, None)
    assert len(snapshots(b)) == 1 and snapshots(a)[-1] is snapshots(b)[-1] and len(snapshots(b)[-1]) > full // 2
    server.connections.receive(b.key, Message("snap_resync", {}))
    assert 5 not in live.observers and 5 in live.sync.clients  # its own stream now
    server.publisher.publish(live, None)
    assert snapshots(a)[-1] is not snapshots(b)[-1]
    server.connections.closed(a.key, "gone")
    assert SHARED_OBSERVERS not in live.sync.clients  # the last member took the shared client with it


class _SlowLink(RecordingLink):
    """A page whose socket is paused (it does not keep up): unreliable sends are dropped, as WebSocketLink's."""

    paused = False

    def send(self, channel: Channel, message) -> bool:
        if self.paused and channel is Channel.UNRELIABLE:
            return False
        return super().send(channel, message)


def test_a_page_that_cannot_take_a_shared_snapshot_gets_its_own_stream(room):
    server, live, join = room
    a, slow = join(4), join(5, kind=_SlowLink)
    server.publisher.publish(live, None)
    slow.paused = True
    server.publisher.publish(live, None)  # dropped for slow: it leaves the group, a keeps its baselines
    assert 5 not in live.observers and 5 in live.sync.clients and 4 in live.observers
    assert server.counters["observers_expelled"] == 1
    assert (live.sync.clients[SHARED_OBSERVERS].acked_seq >= 0).all()  # the others kept their baselines
    slow.paused = False
    server.publisher.publish(live, None)
    assert snapshots(slow)[-1] is not snapshots(a)[-1]
    assert len(snapshots(slow)[-1]) > 4 * len(snapshots(a)[-1])  # its own stream, starting from full records
    decoder = SnapshotDecoder()
    for data in sync_bytes(slow):
        decoder.on_message(data)
    assert decoder.missing_baselines == 0 and decoder.surface()[1].all()


def test_without_sharing_each_browser_observer_has_its_own_stream(tmp_path):
    settings = load_settings(None, env={}, data_dir=tmp_path / "data", share_observer_stream=False)
    server = RehearsalServer(settings, Clock())
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        links = [RecordingLink(key) for key in (4, 5)]
        for link in links:
            server.connections.open(link, Identity(session, link.key, Role.OBSERVER, "o"))
        server.publisher.publish(live, None)
        assert not live.observers and 4 in live.sync.clients and 5 in live.sync.clients
        assert snapshots(links[0])[-1] is not snapshots(links[1])[-1]
    finally:
        server.stop()
