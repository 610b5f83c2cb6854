"""End to end: a server process SIGKILLed mid-session comes back on its data folder with the session, and the
team rejoins with its rejoin codes (the tick loop's own checkpoints, written by the writer thread)."""

import base64
import time

from rehearsal.bots import Headset, ServerProcess, post, pump
from rehearsal.checkpoints import checkpoint_path
from tests.rehearsal.e2e_helpers import Team, new_session, saw_event, team_of


def test_a_sigkilled_server_resumes_its_session_and_the_team_rejoins(tmp_path):
    data = tmp_path / "data"
    first = ServerProcess(data)
    second = None
    try:
        first.wait_listening()
        session = new_session(first)
        with team_of(first, session, "mentor", "observer") as team:
            mentor, _ = team
            sent = time.time()
            mentor.command("annotate", position=[0.0, 0.05, 0.0], text="kept")
            assert pump(team, lambda: all(saw_event(h, "annotate") for h in team), 5.0)
            path = checkpoint_path(data, session["session"])  # a checkpoint written after the command
            assert pump(team, lambda: path.exists() and path.stat().st_mtime > sent, 5.0), first.log()[-3000:]
            codes = [h.ticket["rejoin_code"] for h in team]
            participants = [h.ticket["participant"] for h in team]
            first.proc.kill()
            first.proc.wait(timeout=10)
        second = ServerProcess(data)
        second.wait_listening()
        tickets = [post(second.http_port, "/api/rejoin", {"rejoin_code": code}) for code in codes]
        assert [status for status, _ in tickets] == [200, 200], tickets
        with Team(Headset(base64.b64decode(t["token"]), name=t["name"]) for _, t in tickets) as back:
            assert pump(back, lambda: all(h.welcome and h.snapshots_applied > 0 for h in back), 15.0), second.log()
            assert [h.welcome["participant"] for h in back] == participants
            assert all(h.welcome["session"] == session["session"] for h in back)
            assert back[0].welcome["annotations"][0]["text"] == "kept"
        status, body = post(second.http_port, "/api/join", {"invite": session["invites"]["observer"], "name": "new"})
        assert status == 200 and body["session"] == session["session"]  # the team invites survived too
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
        if second is not None:
            assert second.stop() == 0, second.log()[-3000:]


def test_a_mentor_action_acknowledged_just_before_a_sigkill_is_there_after_the_restart(tmp_path):
    """No waiting for a checkpoint after the command: the server is killed as soon as the mentor hears the
    command's event (its ack). The action journal has it by then (rehearsal.journal); a checkpoint taken in
    the milliseconds before the kill may have it too (test_recovery.py proves the journal alone does)."""
    data = tmp_path / "data"
    first = ServerProcess(data)
    second = None
    try:
        first.wait_listening()
        session = new_session(first)
        with team_of(first, session, "mentor") as team:
            [mentor] = team
            path = checkpoint_path(data, session["session"])  # the room has a checkpoint to resume from
            assert pump(team, lambda: path.exists(), 5.0), first.log()[-3000:]
            mentor.command("annotate", position=[0.0, 0.05, 0.0], text="acked")
            assert pump(team, lambda: saw_event(mentor, "annotate"), 5.0)
            first.proc.kill()  # right after the ack
            first.proc.wait(timeout=10)
            code = mentor.ticket["rejoin_code"]
        second = ServerProcess(data)
        second.wait_listening()
        status, ticket = post(second.http_port, "/api/rejoin", {"rejoin_code": code})
        assert status == 200, ticket
        with Team([Headset(base64.b64decode(ticket["token"]), name=ticket["name"])]) as back:
            assert pump(back, lambda: back[0].welcome is not None, 15.0), second.log()
            assert [a["text"] for a in back[0].welcome["annotations"]] == ["acked"]
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
        if second is not None:
            assert second.stop() == 0, second.log()[-3000:]
