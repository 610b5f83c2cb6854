"""The composition root's admin views and actions, and its drain, in process (a Clock, no sockets)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from netcode.messaging.channels import Channel
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.sessions import KICK_DELAY
from rehearsal.settings import load_settings
from tests.rehearsal.link_helpers import RecordingLink


@pytest.fixture
def rig(tmp_path):
    """A server on a Clock whose clients are RecordingLinks (no sockets); rooms' tickers stopped (the Clock
    drives time). Server time differs from the reactor's clock, as it does in a real server."""
    clock = Clock()
    server = RehearsalServer(
        load_settings(None, env={}, data_dir=tmp_path / "data", drain_seconds=10),
        clock,
        server_time=lambda: 1000.0 + clock.seconds(),
    )
    rig = SimpleNamespace(server=server, clock=clock)

    def session() -> str:
        s = server.create_session("basic_skills")
        server.rooms[s].ticker.stop()
        return s

    def connect(session: str, pid: int, role: Role, name: str, key: int | None = None) -> RecordingLink:
        link = RecordingLink(key)
        server.connections.open(link, Identity(session, pid, role, name))
        return link

    rig.session, rig.connect = session, connect
    try:
        yield rig
    finally:
        server.stop()  # the rooms' worker threads


def events(link: RecordingLink, kind: str) -> list[dict]:
    return link.events(kind)


def test_admin_lists_rooms_and_shows_one_in_detail(rig):
    s1, s2 = rig.session(), rig.session()
    rig.connect(s1, 7, Role.LEAD_SURGEON, "Dr. Lead")
    rig.connect(s1, 8, Role.OBSERVER, "Student")
    live = rig.server.rooms[s1]
    live.ticker.record_tick(0.004)  # two ticks' worth of timing, as the ticker records them
    live.ticker.record_tick(0.012)
    rooms = {r["session"]: r for r in rig.server.views.admin_rooms()}
    assert set(rooms) == {s1, s2}
    assert rooms[s1]["participants"] == {"lead_surgeon": 1, "observer": 1}
    assert rooms[s1]["scenario"] == "basic_skills" and rooms[s1]["state"] == "running"  # the lead started it
    assert rooms[s2]["state"] == "lobby"
    assert rooms[s1]["tick_p99_seconds"] == 0.012 and rooms[s2]["tick_p99_seconds"] is None

    detail = rig.server.views.admin_room(s1)
    assert detail["participants"] == [
        {"id": 7, "role": "lead_surgeon", "name": "Dr. Lead", "connected": True},
        {"id": 8, "role": "observer", "name": "Student", "connected": True},
    ]
    assert detail["tick"]["p50_seconds"] == 0.004 and detail["tick"]["p99_seconds"] == 0.012
    assert detail["substeps"]["current"] == detail["substeps"]["nominal"] > 0
    assert {"frame", "physics_step", "steps", "current_step", "complications", "state", "scenario", "counters"} <= set(
        detail
    )
    assert rig.server.views.admin_room("s-nope") is None

    status = rig.server.ops_status()
    room_status = status["room_stats"][rig.server.views.room_label(s1)]  # opaque label: no session ids
    assert room_status["tick_seconds"]["count"] == 2
    assert room_status["participants"] == {"lead_surgeon": 1, "observer": 1}
    assert status["tick_budget_utilisation"] == pytest.approx(0.012 * live.room.scenario.tick_hz)


def test_admin_removes_a_participant_and_ends_a_room(rig):
    s = rig.session()
    lead = rig.connect(s, 7, Role.LEAD_SURGEON, "Dr. Lead")
    observer = rig.connect(s, 8, Role.OBSERVER, "Student")
    with pytest.raises(LookupError):
        rig.server.views.admin_remove_participant(s, 99)
    with pytest.raises(LookupError):
        rig.server.views.admin_remove_participant("s-nope", 8)
    assert rig.server.views.admin_remove_participant(s, 8) == {"session": s, "participant": 8, "removed": True}
    assert events(lead, "remove_participant")[0]["detail"]["who"] == 8
    refused = [(c, m.fields) for c, m in observer.decoded() if m.type == "refused"]
    assert refused and refused[0][0] == Channel.RELIABLE and refused[0][1]["request"] == "connect"
    assert observer.closed is None
    rig.clock.advance(KICK_DELAY)
    assert observer.closed and lead.closed is None
    assert 8 not in rig.server.rooms[s].room.participants and 8 in rig.server.rooms[s].room.removed

    assert rig.server.views.admin_end_room(s) == {"session": s, "state": "ended"}
    assert events(lead, "ended")
    assert rig.server.views.admin_end_room(s)["state"] == "ended"  # twice is harmless
    rig.clock.advance(KICK_DELAY)
    assert s not in rig.server.rooms and lead.closed
    with pytest.raises(LookupError):
        rig.server.views.admin_end_room(s)
    actions = rig.server.admin_actions()  # the ended room's result is kept, for the debrief
    assert [r["session"] for r in actions.list_results()] == [s]
    kept = actions.result(s)
    assert kept["end_state"] == "ended" and [p["name"] for p in kept["participants"]] == ["Dr. Lead"]


def test_drain_notifies_refuses_new_sessions_and_ends_rooms_by_the_deadline(rig):
    busy, idle = rig.session(), rig.session()
    lead = rig.connect(busy, 7, Role.LEAD_SURGEON, "Dr. Lead")
    assert rig.server.sessions.closed() is None and rig.server.ready() is True

    done = rig.server.start_drain()
    assert rig.server.ready() == "draining" and rig.server.sessions.closed()
    with pytest.raises(ValueError, match="draining"):
        rig.server.create_session("basic_skills")
    notice = events(lead, "draining")
    assert len(notice) == 1 and notice[0]["detail"]["seconds"] == pytest.approx(10.0)
    assert notice[0]["detail"]["deadline"] == pytest.approx(1000.0 + 10.0)  # in server time
    assert rig.server.rooms[idle].ending  # nobody in it: ended at once

    for _ in range(36):  # 9 s
        rig.clock.advance(0.25)
    assert idle not in rig.server.rooms and not rig.server.rooms[busy].ending and not done.called
    for _ in range(8):  # past the deadline and the room's KICK_DELAY
        rig.clock.advance(0.25)
    assert events(lead, "ended") and busy not in rig.server.rooms
    rig.clock.advance(0.25)
    assert done.called
    assert rig.server.start_drain() is done


def test_while_draining_only_people_already_in_a_room_may_connect_again(rig):
    busy = rig.session()
    lead = rig.connect(busy, 7, Role.LEAD_SURGEON, "Dr. Lead")
    rig.connect(busy, 9, Role.MENTOR, "Prof")  # someone stays, so the room runs on until the deadline
    rig.server.connections.closed(lead.key, "timeout")  # dropped
    rig.server.start_drain()
    back = rig.connect(busy, 7, Role.LEAD_SURGEON, "Dr. Lead", key=20)
    stranger = rig.connect(busy, 8, Role.OBSERVER, "New", key=21)
    assert "welcome" in [m.type for _, m in back.decoded()] and not back.messages("refused")
    assert [m.type for _, m in stranger.decoded()] == ["refused"]
    assert [f["reason"] for f in stranger.messages("refused")] == ["the server is draining"]
    rig.clock.advance(KICK_DELAY)
    assert stranger.closed and back.closed is None
