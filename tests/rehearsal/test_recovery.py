"""Crash recovery through the server's parts: a server that dies without stopping leaves its sessions, code
books and room checkpoints in the data folder; the next one resumes them and the team rejoins with its codes."""

import time

import numpy as np
from twisted.internet.task import Clock

from netcode.messaging.messages import Message
from netcode.transport.address import Address
from physics.model import add_anchors
from rehearsal.checkpoints import reactor_part, room_part
from rehearsal.join_service import JoinService
from rehearsal.lifecycle import RoomState
from rehearsal.roles import Role
from rehearsal.secrets_store import TOKEN_KEY, server_secret
from rehearsal.server import RehearsalServer
from rehearsal.sessions import INTERRUPTED, RESUME_HOLD_SECONDS
from rehearsal.settings import PROTOCOL_ID, load_settings
from tests.rehearsal.link_helpers import RecordingLink


def _server(data_dir):
    server = RehearsalServer(load_settings(None, env={}, data_dir=data_dir), Clock())
    service = JoinService(
        server_secret(data_dir, TOKEN_KEY),
        PROTOCOL_ID,
        [Address.parse("127.0.0.1:40000")],
        invites=server.invites,
        session_exists=server.sessions.session_open,
    )
    return server, service


def _checkpoint(server, session):
    """What the tick loop does every few seconds, here at once: both parts, then the writer thread."""
    live = server.rooms[session]
    seq = server.journal.last_seq  # what the tick loop passes: the journal entries this checkpoint includes
    server.checkpoints.submit(room_part(live.room, reactor_part(live.room, "basic_skills", live.created_at, seq)))
    assert server.checkpoints.wait_idle()


def test_a_crashed_servers_sessions_resume_and_the_team_rejoins_with_its_codes(tmp_path):
    data = tmp_path / "data"
    first, service = _server(data)
    session = first.create_session("basic_skills")
    first.rooms[session].ticker.stop()
    invites = service.invite_team(session, uses=2)
    lead = service.join(invites[Role.LEAD_SURGEON], "Lead")
    mentor = service.join(invites[Role.MENTOR], "Mentor")
    for ticket in (lead, mentor):
        first.connections.open(RecordingLink(), ticket.identity)
    room = first.rooms[session].room
    assert room.state is RoomState.RUNNING
    assert room.command(mentor.identity.participant, "annotate", position=[0.0, 0.03, 0.0], text="cut here") is None
    for _ in range(5):
        room.advance(1 / 60, substeps=5)
    _checkpoint(first, session)
    gone = first.create_session("basic_skills")  # opened, never checkpointed: it cannot resume
    first.checkpoints.close()  # the process dies here: nothing is stopped, ended or saved

    second, service = _server(data)
    assert second.recover() == [session]
    resumed = second.rooms[session].room
    assert resumed.frame == 5 and resumed.annotations[0]["text"] == "cut here"
    assert not any(p.connected for p in resumed.participants.values())
    assert second.rooms[session].created_at == first.rooms[session].created_at
    assert session in second.sessions.held  # held until the team is back
    assert second.results.session(gone)["end_state"] == INTERRUPTED  # its result is kept, marked
    assert gone not in second.invites.sessions()

    again = service.rejoin(lead.rejoin_code)  # the codes survived, by their keyed hashes
    assert again.identity == lead.identity
    link = RecordingLink()
    second.connections.open(link, again.identity)
    welcome = link.messages("welcome")[0]
    assert welcome["annotations"][0]["text"] == "cut here" and welcome["state"] == "running"
    second.connections.open(RecordingLink(), service.rejoin(mentor.rejoin_code).identity)
    second.reactor.advance(0.1)
    assert session not in second.sessions.held  # everyone is back: the room ticks again
    second.rooms[session].ticker.stop()  # (this fake reactor cannot run steps on the room's thread)
    join_again = service.join(invites[Role.OBSERVER], "Late")  # team invites survived with their uses
    assert join_again.identity.session == session
    second.stop()
    assert second.results.session(session)["frames"] == 5
    third, _ = _server(data)
    assert third.recover() == []  # a session ended on a clean stop does not come back
    third.stop()


def test_a_resumed_room_stops_waiting_for_a_team_that_does_not_come_back(tmp_path):
    data = tmp_path / "data"
    first, service = _server(data)
    session = first.create_session("basic_skills")
    first.rooms[session].ticker.stop()
    first.connections.open(RecordingLink(), service.join(service.invite_team(session)[Role.LEAD_SURGEON], "L").identity)
    _checkpoint(first, session)
    first.checkpoints.close()
    second, _ = _server(data)
    assert second.recover() == [session]
    second.reactor.advance(RESUME_HOLD_SECONDS / 2)
    assert session in second.sessions.held
    ticker = second.rooms[session].ticker
    for _ in range(int(RESUME_HOLD_SECONDS / 0.05) + 2):
        if session not in second.sessions.held:
            break
        second.reactor.advance(0.05)
    assert session not in second.sessions.held
    ticker.stop()  # (this fake reactor cannot run steps on the room's thread)
    second.stop()
    assert time.time() - second.results.session(session)["created_at"] < 60


def test_acknowledged_mentor_actions_and_steps_after_the_last_checkpoint_survive_a_crash(tmp_path):
    data = tmp_path / "data"
    first, service = _server(data)
    session = first.create_session("basic_skills")
    first.rooms[session].ticker.stop()
    invites = service.invite_team(session)
    mentor_link = RecordingLink()
    first.connections.open(RecordingLink(), service.join(invites[Role.LEAD_SURGEON], "Lead").identity)
    first.connections.open(mentor_link, service.join(invites[Role.MENTOR], "Mentor").identity)

    def command(action, **args):
        first.connections.receive(mentor_link.key, Message("command", {"action": action, "args": args}))

    command("annotate", position=[0.0, 0.03, 0.0], text="before")
    _checkpoint(first, session)  # the last checkpoint: it includes the first annotation's journal entry
    command("annotate", position=[0.0, 0.04, 0.0], text="after")
    acks = [e["detail"].get("text") for e in mentor_link.messages("event") if e["kind"] == "annotate"]
    assert acks == ["before", "after"] and first.journal.pending(session) == 2  # on disk by the time of the ack
    room = first.rooms[session].room
    top = np.flatnonzero(room.model.rest_positions[:, 1] > 0.019)
    add_anchors(room.model, top, room.model.rest_positions[top] + [0.0, 0.03, 0.0])  # an invisible retractor
    for _ in range(120):  # what the tick loop does: a step, then its report published on the reactor
        first.sessions.on_report(room, room.advance(1 / 60))
        if room.procedure.current().id != "retract":
            break
    assert any(e["kind"] == "step_completed" for e in mentor_link.messages("event"))  # the team was told
    command("pause")
    first.checkpoints.close()  # the process dies here: no checkpoint after the actions

    second, _ = _server(data)
    assert second.recover() == [session]
    resumed = second.rooms[session].room
    assert [a["text"] for a in resumed.annotations] == ["before", "after"]  # replayed once, on the checkpoint
    assert resumed.procedure.steps[0].id == "retract" and resumed.procedure.steps[0].status == "done"
    assert resumed.state is RoomState.PAUSED
    assert second.counters["journal_replayed"] == 3 and second.counters["journal_not_replayed"] == 0
    second.rooms[session].ticker.stop()
    second.stop()
    assert second.journal.pending(session) == 0  # a closed session takes its journal with it
