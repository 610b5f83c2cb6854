"""The composition root's admin views and actions, and its drain, in process (a Clock, no sockets)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import KICK_DELAY, RehearsalServer, _Client
from rehearsal.settings import load_settings


@pytest.fixture
def rig(tmp_path):
    """A server on a Clock with stand-ins for the UDP side; rooms' tickers stopped (the Clock drives time)."""
    clock = Clock()
    server = RehearsalServer(load_settings(None, env={}, data_dir=tmp_path / "data", drain_seconds=10), clock)
    sent: list[tuple[int, Channel, object]] = []
    disconnected: list[int] = []
    server.protocol = SimpleNamespace(
        now=lambda: 1000.0 + clock.seconds(),  # server time differs from the reactor's clock
        core=SimpleNamespace(disconnect=lambda i, now: disconnected.append(i), stats={}, drops={}),
        disconnect_all=lambda: None,
    )
    server.channels = SimpleNamespace(
        send=lambda i, c, m: sent.append((i, c, m)) or True, peers={}, on_connect=lambda *args: None
    )
    rig = SimpleNamespace(server=server, clock=clock, sent=sent, disconnected=disconnected, next_index=0)

    def session() -> str:
        s = server.create_session("basic_skills")
        server.rooms[s].ticker.stop()
        return s

    def connect(session: str, pid: int, role: Role, name: str) -> int:
        identity = Identity(session, pid, role, name)
        live = server.rooms[session]
        live.room.join(identity)
        index = rig.next_index
        rig.next_index += 1
        server.clients[index] = _Client(index, identity, session)
        live.clients.add(index)
        return index

    rig.session, rig.connect = session, connect
    try:
        yield rig
    finally:
        server.stop()  # the rooms' worker threads


def events(rig, index: int, kind: str) -> list[dict]:
    return [m.fields for i, c, m in rig.sent if i == index and m.type == "event" and m.fields["kind"] == kind]


def test_admin_lists_rooms_and_shows_one_in_detail(rig):
    s1, s2 = rig.session(), rig.session()
    rig.connect(s1, 7, Role.LEAD_SURGEON, "Dr. Lead")
    rig.connect(s1, 8, Role.OBSERVER, "Student")
    live = rig.server.rooms[s1]
    live.ticker._timed(0.004)  # two ticks' worth of timing, as the ticker records them
    live.ticker._timed(0.012)
    rooms = {r["session"]: r for r in rig.server.admin_rooms()}
    assert set(rooms) == {s1, s2}
    assert rooms[s1]["participants"] == {"lead_surgeon": 1, "observer": 1}
    assert rooms[s1]["scenario"] == "basic_skills" and rooms[s1]["state"] == "lobby"
    assert rooms[s1]["tick_p99_seconds"] == 0.012 and rooms[s2]["tick_p99_seconds"] is None

    detail = rig.server.admin_room(s1)
    assert detail["participants"] == [
        {"id": 7, "role": "lead_surgeon", "name": "Dr. Lead", "connected": True},
        {"id": 8, "role": "observer", "name": "Student", "connected": True},
    ]
    assert detail["tick"]["p50_seconds"] == 0.004 and detail["tick"]["p99_seconds"] == 0.012
    assert detail["substeps"]["current"] == detail["substeps"]["nominal"] > 0
    assert {"frame", "physics_step", "steps", "current_step", "complications", "state", "scenario", "counters"} <= set(
        detail
    )
    assert rig.server.admin_room("s-nope") is None

    status = rig.server.ops_status()
    room_status = status["room_stats"][s1]
    assert room_status["tick_seconds"]["count"] == 2
    assert room_status["participants"] == {"lead_surgeon": 1, "observer": 1}
    assert status["tick_budget_utilisation"] == pytest.approx(0.012 * live.room.scenario.tick_hz)


def test_admin_removes_a_participant_and_ends_a_room(rig):
    s = rig.session()
    lead = rig.connect(s, 7, Role.LEAD_SURGEON, "Dr. Lead")
    observer = rig.connect(s, 8, Role.OBSERVER, "Student")
    with pytest.raises(LookupError):
        rig.server.admin_remove_participant(s, 99)
    with pytest.raises(LookupError):
        rig.server.admin_remove_participant("s-nope", 8)
    assert rig.server.admin_remove_participant(s, 8) == {"session": s, "participant": 8, "removed": True}
    assert events(rig, lead, "remove_participant")[0]["detail"]["who"] == 8
    refused = [(c, m.fields) for i, c, m in rig.sent if i == observer and m.type == "refused"]
    assert refused and refused[0][0] == Channel.RELIABLE and refused[0][1]["request"] == "connect"
    rig.clock.advance(KICK_DELAY)
    assert observer in rig.disconnected
    assert 8 not in rig.server.rooms[s].room.participants and 8 in rig.server.rooms[s].room.removed

    assert rig.server.admin_end_room(s) == {"session": s, "state": "ended"}
    assert events(rig, lead, "ended")
    assert rig.server.admin_end_room(s)["state"] == "ended"  # twice is harmless
    rig.clock.advance(KICK_DELAY)
    assert s not in rig.server.rooms
    with pytest.raises(LookupError):
        rig.server.admin_end_room(s)
    actions = rig.server.admin_actions()  # the ended room's result is kept, for the debrief
    assert [r["session"] for r in actions.list_results()] == [s]
    kept = actions.result(s)
    assert kept["end_state"] == "ended" and [p["name"] for p in kept["participants"]] == ["Dr. Lead"]


def test_drain_notifies_refuses_new_sessions_and_ends_rooms_by_the_deadline(rig):
    busy, idle = rig.session(), rig.session()
    lead = rig.connect(busy, 7, Role.LEAD_SURGEON, "Dr. Lead")
    assert rig.server._closed() is None and rig.server.ready() is True

    done = rig.server.start_drain()
    assert rig.server.ready() == "draining" and rig.server._closed()
    with pytest.raises(ValueError, match="draining"):
        rig.server.create_session("basic_skills")
    notice = events(rig, lead, "draining")
    assert len(notice) == 1 and notice[0]["detail"]["seconds"] == pytest.approx(10.0)
    assert notice[0]["detail"]["deadline"] == pytest.approx(1000.0 + 10.0)  # in server time
    assert rig.server.rooms[idle].ending  # nobody in it: ended at once

    for _ in range(36):  # 9 s
        rig.clock.advance(0.25)
    assert idle not in rig.server.rooms and not rig.server.rooms[busy].ending and not done.called
    for _ in range(8):  # past the deadline and the room's KICK_DELAY
        rig.clock.advance(0.25)
    assert events(rig, lead, "ended") and busy not in rig.server.rooms
    rig.clock.advance(0.25)
    assert done.called
    assert rig.server.start_drain() is done


def test_while_draining_only_people_already_in_a_room_may_connect_again(rig):
    busy = rig.session()
    rig.connect(busy, 7, Role.LEAD_SURGEON, "Dr. Lead")
    rig.connect(busy, 9, Role.MENTOR, "Prof")  # someone stays, so the room runs on until the deadline
    rig.server.rooms[busy].room.leave(7)  # dropped
    rig.server.start_drain()
    back, stranger = Identity(busy, 7, Role.LEAD_SURGEON, "Dr. Lead"), Identity(busy, 8, Role.OBSERVER, "New")
    rig.server._on_connect(20, 7, back.to_user_data(), None)
    rig.server._on_connect(21, 8, stranger.to_user_data(), None)
    sent_to = {i: [getattr(m, "type", "encoded") for j, c, m in rig.sent if j == i] for i in (20, 21)}
    assert "welcome" in sent_to[20] and "refused" not in sent_to[20]
    assert sent_to[21] == ["refused"]
    assert [m.fields["reason"] for i, c, m in rig.sent if i == 21] == ["the server is draining"]
