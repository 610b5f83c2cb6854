"""Publishing: who gets which tick's snapshot."""

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


def _snapshots_per_client(tmp_path, observer_hz: float, ticks: int) -> dict[int, int]:
    server = RehearsalServer(
        load_settings(None, env={}, data_dir=tmp_path / "data", observer_snapshot_hz=observer_hz), Clock()
    )
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        people = [(3, Role.LEAD_SURGEON), (4, Role.OBSERVER), (5, Role.OBSERVER), (6, Role.MENTOR)]
        links = {}
        for key, role in people:
            links[key] = RecordingLink(key)
            server.connections.open(links[key], Identity(session, key, role, role.value))
        for link in links.values():
            link.sent.clear()
        for _ in range(ticks):
            server.publisher.publish(live, None)
        assert all(link.flushes == ticks for link in links.values())  # every link flushed each tick
        return {
            key: sum(1 for c, m in link.sent if c is Channel.UNRELIABLE and isinstance(m, bytes))
            for key, link in links.items()
        }
    finally:
        server.stop()


def test_observers_get_every_other_snapshot_spread_over_the_ticks(tmp_path):
    sent = _snapshots_per_client(tmp_path, 30.0, 12)
    assert sent[3] == 12 and sent[6] == 12  # the people at the table (and the mentor): every tick
    assert sent[4] == 6 and sent[5] == 6  # observers at 30 Hz of a 60 Hz tick


@pytest.mark.parametrize("hz", [0.0, 60.0])
def test_observers_can_get_every_tick(tmp_path, hz):
    assert _snapshots_per_client(tmp_path, hz, 6)[4] == 6


def _room_thread_ticks(tmp_path, name: str, on_room_thread: bool, ticks: int):
    """``ticks`` ticks of a room with a team, each step and (``on_room_thread``) its snapshots prepared as the
    room's thread does (``RoomTicker._advance`` with the publisher's hooks), then published; per link the
    snapshot payloads without their server time, and the server's counters."""
    import msgpack

    from netcode.sync.snapshot import TIME

    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / name, observer_snapshot_hz=30.0), Clock())
    server.publisher.encode_on_room_thread = on_room_thread
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        ticker = live.ticker
        ticker.stop()
        people = [(3, Role.LEAD_SURGEON), (4, Role.OBSERVER), (5, Role.OBSERVER), (6, Role.MENTOR)]
        links = {}
        for key, role in people:
            links[key] = RecordingLink(key)
            server.connections.open(links[key], Identity(session, key, role, role.value))
        server.publisher.publish(live, None)  # the first tick attaches the hooks
        for link in links.values():
            link.sent.clear()
        for _ in range(ticks):
            context = ticker.before_step() if ticker.before_step else None
            control = live.room.control()
            report, _, ticker.prepared = ticker._advance(ticker.dt, ticker.governor.substeps, control, context)
            server.publisher.publish(live, report)
        payloads = {}
        for key, link in links.items():
            sent = [m for c, m in link.sent if c is Channel.UNRELIABLE and isinstance(m, bytes)]
            datas = [msgpack.unpackb(m)["data"] for m in sent]
            assert all(d[1] < 0x80 for d in datas)  # a one-byte sequence: the time is at bytes 2-9
            payloads[key] = [d[:2] + d[2 + TIME.size :] for d in datas]
        return payloads, server.counters
    finally:
        server.stop()


def test_snapshots_prepared_on_the_room_thread_are_the_reactors_bytes(tmp_path):
    """The same ticks with the snapshots encoded on the room's thread after each step, and on the reactor: every
    client gets the same snapshots (observers every other tick), byte for byte but for the server time."""
    off, counters = _room_thread_ticks(tmp_path, "off", True, 8)
    on, reactor_counters = _room_thread_ticks(tmp_path, "on", False, 8)
    assert counters["prepared_snapshot_ticks"] == 8 and counters["prepared_snapshots_dropped"] == 0
    assert reactor_counters["prepared_snapshot_ticks"] == 0
    assert len(off[3]) == 8 and len(off[4]) == 4 and len(off[6]) == 8
    assert off == on


def test_snapshots_prepared_for_an_epoch_that_ended_since_are_dropped_and_the_reactor_encodes(tmp_path):
    from rehearsal.publishing import PreparedSnapshots

    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), Clock())
    try:
        live = server.rooms[server.create_session("basic_skills")]
        live.ticker.stop()
        link = RecordingLink(3)
        server.connections.open(link, Identity(live.room.session, 3, Role.LEAD_SURGEON, "lead"))
        server.publisher.publish(live, None)
        stale = PreparedSnapshots(live.sync.epoch - 1, live.sync.sequence, {3: b"stale"})
        live.ticker.prepared = stale
        link.sent.clear()
        server.publisher.publish(live, None)
        assert server.counters["prepared_snapshots_dropped"] == 1 and live.ticker.prepared is None
        sent = [m for c, m in link.sent if c is Channel.UNRELIABLE and isinstance(m, bytes)]
        assert len(sent) == 1 and b"stale" not in sent[0]  # this tick's snapshot, encoded on the reactor
    finally:
        server.stop()
