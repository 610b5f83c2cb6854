"""A room's browser observers share one snapshot stream: encoded once, decodable by each, acknowledged to the
codec only when every member has it; a newcomer, a resync and a laggard are handled without the others' loss."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.snapshot_messages import decode_message
from rehearsal.identity import Identity
from rehearsal.links import UDP
from rehearsal.observer_stream import MAX_LAG, SHARED_OBSERVERS
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

    def join(key: int, role: Role = Role.OBSERVER, transport: str = "websocket") -> RecordingLink:
        link = RecordingLink(key, transport)
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


def test_a_sequence_is_a_baseline_only_once_every_member_acked_it(room):
    server, live, join = room
    a, b = join(4), join(5)
    server.publisher.publish(live, None)
    first = live.sync.sequence
    shared = live.sync.clients[SHARED_OBSERVERS]
    ack(server, a, first)
    assert (shared.acked_seq < 0).all()  # b has not acked it: no baseline yet
    ack(server, b, first)
    assert (shared.acked_seq == first).all()  # both hold it: the next deltas may use it
    server.publisher.publish(live, None)
    assert len(snapshots(a)[-1]) < len(snapshots(a)[0]) // 4


def test_a_newcomer_resets_the_shared_stream_and_a_resync_leaves_it(room):
    from netcode.messaging.messages import Message

    server, live, join = room
    a = join(4)
    server.publisher.publish(live, None)
    full = len(snapshots(a)[-1])
    ack(server, a, live.sync.sequence)
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


def test_a_page_that_stops_acking_gets_its_own_stream(room):
    server, live, join = room
    a, slow = join(4), join(5)
    for _ in range(MAX_LAG + 3):
        server.publisher.publish(live, None)
        ack(server, a, live.sync.sequence)
    assert 5 not in live.observers and 5 in live.sync.clients and 4 in live.observers
    assert server.counters["observers_expelled"] == 1
    assert (live.sync.clients[SHARED_OBSERVERS].acked_seq >= 0).all()  # a's acks are baselines again
    server.publisher.publish(live, None)
    assert snapshots(slow)[-1] is not snapshots(a)[-1]
    own = [len(data) for data in snapshots(slow)[-4:]]
    assert max(own) > 4 * len(snapshots(a)[-1])  # slow: its own stream, starting from full records


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


class _Codec:
    """The codec calls an ObserverGroup makes, recorded."""

    def __init__(self) -> None:
        self.clients: set[object] = set()
        self.acked: list[int] = []

    def add_client(self, key: object, budget_bytes: int | None = None) -> None:
        self.clients.add(key)

    def reset_client(self, key: object) -> None:
        self.acked.clear()

    def remove_client(self, key: object) -> None:
        self.clients.discard(key)

    def on_ack(self, key: object, sequence: int) -> None:
        assert key == SHARED_OBSERVERS
        self.acked.append(sequence)


def test_a_sequence_goes_to_the_codec_when_the_last_of_many_members_acks_it_or_the_holdout_leaves():
    from rehearsal.observer_stream import ObserverGroup

    codec = _Codec()
    group = ObserverGroup(codec, budget_bytes=None)  # type: ignore[arg-type]
    for key in range(32):
        group.add(key)
    for sequence in range(10, 14):
        group.sent(sequence)
    for key in range(31):
        assert group.on_ack(key, 11, 0b1) == []  # 11 and 10 (bit 0): not yet everyone's
        assert group.on_ack(key, 11, 0b1) == []  # a repeated ack counts once
    assert group.on_ack(31, 10, 0) == [10] and codec.acked == [10]  # the last member completes 10 only
    assert group.on_ack(31, 12, 0b11) == [11]  # 12 is the newest (the others lack it), 11 bit 0, 10 bit 1
    for key in range(1, 32):
        group.on_ack(key, 13, 0b1)  # 13 and 12 from all but member 0
    assert codec.acked == [10, 11]
    group.discard(0)  # the holdout leaves: what all the others hold becomes a baseline
    assert codec.acked == [10, 11, 12, 13] and not group.counts
    assert group.on_ack(1, 10**12, 0) == [] and group.newest_ack[1] == 13  # never sent: ignored
