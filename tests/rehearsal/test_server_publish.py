"""Publishing: who gets which tick's snapshot."""

from collections import Counter
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer, _Client
from rehearsal.settings import load_settings


def _snapshots_per_client(tmp_path, observer_hz: float, ticks: int) -> Counter:
    server = RehearsalServer(
        load_settings(None, env={}, data_dir=tmp_path / "data", observer_snapshot_hz=observer_hz), Clock()
    )
    try:
        session = server.create_session("basic_skills")
        live = server.rooms[session]
        live.ticker.stop()
        people = [(3, Role.LEAD_SURGEON), (4, Role.OBSERVER), (5, Role.OBSERVER), (6, Role.MENTOR)]
        for index, role in people:
            client = _Client(index, Identity(session, index, role, role.value), session)
            live.room.join(client.identity)
            server.clients[index] = client
            live.clients.add(index)
            live.sync.add_client(index, budget_bytes=10_000)
        sent: Counter = Counter()

        def send(index, channel, message):
            if channel is Channel.UNRELIABLE and isinstance(message, bytes):
                sent[index] += 1

        server.protocol = SimpleNamespace(now=lambda: 1.0)
        server.channels = SimpleNamespace(send=send, flush=lambda *args: None)
        for _ in range(ticks):
            server._publish(live, None)
        return sent
    finally:
        server.protocol = None
        server.stop()


def test_observers_get_every_other_snapshot_spread_over_the_ticks(tmp_path):
    sent = _snapshots_per_client(tmp_path, 30.0, 12)
    assert sent[3] == 12 and sent[6] == 12  # the people at the table (and the mentor): every tick
    assert sent[4] == 6 and sent[5] == 6  # observers at 30 Hz of a 60 Hz tick


@pytest.mark.parametrize("hz", [0.0, 60.0])
def test_observers_can_get_every_tick(tmp_path, hz):
    assert _snapshots_per_client(tmp_path, hz, 6)[4] == 6
