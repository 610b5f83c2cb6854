"""A game-server process in the fleet, in-process on a fake reactor: it registers its rooms and codes, and
adopts a dead process's room from the checkpoint and journal left in that process's folder; the team rejoins
with its codes there, nothing acknowledged lost."""

import time

from twisted.internet.task import Clock

from netcode.transport.address import Address
from rehearsal.checkpoints import checkpoint_path, reactor_part, room_part
from rehearsal.fleet.member import FleetMember
from rehearsal.join_service import JoinService
from rehearsal.roles import Role
from rehearsal.secrets_store import TOKEN_KEY, server_secret
from rehearsal.server import RehearsalServer
from rehearsal.settings import PROTOCOL_ID, load_settings
from tests.rehearsal.link_helpers import RecordingLink


class _Reactor(Clock):
    """A fake reactor whose callFromThread queues the call for the test to run (``run_from_threads``)."""

    def __init__(self):
        super().__init__()
        self.from_threads = []

    def callFromThread(self, fn, *args):  # noqa: N802 (twisted's name)
        self.from_threads.append((fn, args))

    def run_from_threads(self):
        calls, self.from_threads = self.from_threads, []
        for fn, args in calls:
            fn(*args)
        return len(calls)


def _member(tmp_path, name, directory):
    data = tmp_path / name
    server = RehearsalServer(load_settings(None, env={}, data_dir=data, http_port=0, udp_port=0), _Reactor())
    server.http_port = 1  # not listening: the directory only needs a URL
    member = FleetMember(directory, name, capacity=2, interval=0.05)
    member.prepare(server)
    server.recover()
    service = JoinService(
        server_secret(data, TOKEN_KEY),
        PROTOCOL_ID,
        [Address.parse("127.0.0.1:40000")],
        invites=server.invites,
        session_exists=server.sessions.session_open,
    )
    return server, member, service


def _wait(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_dead_members_room_is_adopted_and_its_team_rejoins_with_its_codes(tmp_path, directory, monkeypatch):
    monkeypatch.setenv("REHEARSAL_TOKEN_KEY", "ab" * 32)  # the fleet shares its token key
    first, first_member, first_service = _member(tmp_path, "p1", directory)
    second, second_member, second_service = _member(tmp_path, "p2", directory)
    session = first.create_session("basic_skills")
    first.rooms[session].ticker.stop()  # (a fake reactor: no steps on the room's thread)
    first_member.attach(first)
    second_member.attach(second)
    invites = first_service.invite_team(session, uses=2)
    lead = first_service.join(invites[Role.LEAD_SURGEON], "Lead")
    mentor = first_service.join(invites[Role.MENTOR], "Mentor")
    for ticket in (lead, mentor):
        first.connections.open(RecordingLink(), ticket.identity)
    room = first.rooms[session].room
    for _ in range(3):
        room.advance(1 / 60, substeps=5)
    live = first.rooms[session]
    first.checkpoints.submit(
        room_part(room, reactor_part(room, "basic_skills", live.created_at, first.journal.last_seq))
    )
    assert first.checkpoints.wait_idle()
    assert room.command(mentor.identity.participant, "annotate", position=[0.0, 0.03, 0.0], text="after") is None
    first.sessions.journal_command(
        session, mentor.identity.participant, "annotate", {"position": [0.0, 0.03, 0.0], "text": "after"}
    )
    assert _wait(
        lambda: (
            directory.route(session) is not None
            and directory.code_session(first.invites.digest(lead.rejoin_code)) == session
        )
    )
    assert directory.route(session).process == "p1"

    first_member.heartbeat.deregister_on_stop = False
    first_member.heartbeat.stop()  # p1 dies: no drain, no goodbye
    first.checkpoints.close()
    directory.client.delete(directory.ns + "alive:p1")  # its TTL runs out
    order = directory.reassign(session, "p1")
    assert order.data_dir == str((tmp_path / "p1").resolve())
    assert _wait(lambda: second.reactor.from_threads)  # p2's heartbeat took the order
    second.reactor.run_from_threads()
    assert second_member.counters["adopted"] == 1
    adopted = second.rooms[session].room
    assert adopted.frame == 3
    assert [a["text"] for a in adopted.annotations] == ["after"]  # journaled after the checkpoint: replayed
    assert not checkpoint_path(tmp_path / "p1", session).exists()
    assert first.store.open_sessions() == []  # the old folder lets go: a restarted p1 would not resume it
    again = second_service.rejoin(lead.rejoin_code)
    assert again.identity == lead.identity
    link = RecordingLink()
    second.connections.open(link, again.identity)
    assert link.messages("welcome")[0]["annotations"][0]["text"] == "after"
    assert _wait(lambda: session in directory.rooms_of("p2"))
    second.rooms[session].ticker.stop()
    second_member.stop()
    second.stop()
    assert directory.route(session) is None  # a clean stop leaves the directory


def test_a_restarted_member_does_not_resume_a_session_that_moved(tmp_path, directory, monkeypatch):
    monkeypatch.setenv("REHEARSAL_TOKEN_KEY", "cd" * 32)
    first, _, _ = _member(tmp_path, "p1", directory)
    session = first.create_session("basic_skills")
    first.rooms[session].ticker.stop()
    first.checkpoints.close()
    directory.client.hset(directory.ns + f"room:{session}", mapping={"owner": "p9", "scenario": "basic_skills"})
    directory.client.set(directory.ns + "alive:p9", "1", px=5000)
    again, _, _ = _member(tmp_path, "p1", directory)
    assert again.resumed == []  # p9 runs it now
    directory.client.delete(directory.ns + "alive:p9")
    third, _, _ = _member(tmp_path, "p1", directory)
    assert third.resumed == []  # not checkpointed: it could not resume (interrupted), but it was tried
    assert third.counters["sessions_interrupted"] == 1


def test_a_draining_member_takes_no_placements_and_its_closed_rooms_leave(tmp_path, directory, monkeypatch):
    monkeypatch.setenv("REHEARSAL_TOKEN_KEY", "ef" * 32)
    server, member, _ = _member(tmp_path, "p1", directory)
    session = server.create_session("basic_skills")
    server.rooms[session].ticker.stop()
    member.attach(server)
    assert _wait(lambda: directory.rooms_of("p1") == {session})
    assert directory.place("basic_skills").process == "p1"
    server.sessions.draining = True  # SIGTERM's drain (RehearsalServer.start_drain)
    server.reactor.advance(0.05)  # the next description of the process
    assert _wait(lambda: directory.candidates()[0].draining)
    assert directory.place("basic_skills") is None
    server.sessions.close_room(session)  # its room finishes
    assert _wait(lambda: directory.rooms_of("p1") == set() and directory.route(session) is None)
    member.stop()
    server.stop()
    assert directory.status() == []
