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
