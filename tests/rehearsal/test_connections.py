"""Connections: what any transport's Link gets on open, receive and closed (the contract WebSocket links rely on)."""

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Delivery
from netcode.messaging.messages import Message
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.sessions import KICK_DELAY
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


@pytest.fixture
def server(tmp_path):
    clock = Clock()
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data"), clock, clock=clock.seconds)
    try:
        yield server
    finally:
        server.stop()


def _room(server) -> str:
    session = server.create_session("basic_skills")
    server.rooms[session].ticker.stop()
    return session


def test_open_joins_the_room_and_welcomes_the_client(server):
    session = _room(server)
    lead = RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    kinds = [m.type for _, m in lead.decoded()]
    assert kinds[:2] == ["snap_config", "snap_topology"] and "welcome" in kinds
    welcome = lead.messages("welcome")[0]
    assert welcome["participant"] == 7 and welcome["role"] == "lead_surgeon" and set(welcome["hands"]) == {"right"}
    assert lead.events("joined")[0]["detail"]["participant"] == 7 and lead.events("started")
    assert all(channel is Channel.RELIABLE for channel, _ in lead.sent)
    live = server.rooms[session]
    assert live.clients[lead.key].link is lead and lead.key in live.sync.clients

    observer = RecordingLink()
    server.connections.open(observer, Identity(session, 8, Role.OBSERVER, "Student"))
    assert [e["detail"]["participant"] for e in lead.events("joined")] == [7, 8]  # the room hears of newcomers
    assert observer.messages("welcome")[0]["hands"] == {}


@pytest.mark.parametrize(
    ("case", "reason"),
    [("unknown", "unknown or ended session"), ("removed", "the mentor removed this participant from the session")],
)
def test_a_refused_open_gets_a_refusal_then_its_link_is_closed(server, case, reason):
    session = _room(server)
    if case == "removed":
        server.rooms[session].room.join(Identity(session, 9, Role.OBSERVER, "Gone"))
        server.rooms[session].room.remove(9)
    link = RecordingLink()
    server.connections.open(link, Identity(session if case == "removed" else "s-nope", 9, Role.OBSERVER, "x"))
    assert [(c, m.type, m.fields["request"]) for c, m in link.decoded()] == [(Channel.RELIABLE, "refused", "connect")]
    assert link.messages("refused")[0]["reason"] == reason
    assert link.closed is None and link.key not in server.connections.clients
    server.reactor.advance(KICK_DELAY)
    assert link.closed == reason and server.counters["connects_refused"] == 1


def test_receive_dispatches_messages_and_refuses_what_a_client_does_not_send(server):
    session = _room(server)
    link = RecordingLink()
    server.connections.open(link, Identity(session, 3, Role.MENTOR, "Prof"))
    link.sent.clear()
    server.connections.receive(link.key, Message("ping", {"time": 4.5}))
    assert link.sent == [(Channel.UNRELIABLE, Message("pong", {"time": 4.5}))]
    server.connections.receive(link.key, Delivery(Channel.RELIABLE, b"", Message("command", {"action": "pause"})))
    assert link.events("pause") and server.rooms[session].room.state.value == "paused"
    server.connections.receive(link.key, Message("welcome", {}))
    assert link.messages("refused")[-1]["request"] == "message:welcome"
    server.connections.receive(12345, Message("ping", {"time": 1.0}))  # an unknown key: ignored
    server.connections.receive(link.key, None)  # a delivery that did not decode: ignored


def test_closed_leaves_the_room_and_tells_the_others(server):
    session = _room(server)
    lead, mentor = RecordingLink(), RecordingLink()
    server.connections.open(lead, Identity(session, 7, Role.LEAD_SURGEON, "Dr. Lead"))
    server.connections.open(mentor, Identity(session, 3, Role.MENTOR, "Prof"))
    live = server.rooms[session]
    server.connections.closed(lead.key, "timeout")
    assert mentor.events("left")[0]["detail"] == {"participant": 7, "reason": "timeout"}
    assert lead.key not in live.clients and lead.key not in live.sync.clients
    assert not live.room.participants[7].connected and live.empty_since is None
    server.connections.closed(lead.key, "timeout")  # twice: nothing more
    assert len(mentor.events("left")) == 1
    server.connections.closed(mentor.key, "closed")
    assert live.empty_since is not None
