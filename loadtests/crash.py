"""``make load-crash``: SIGKILL the server mid-session and show the team back in the same session in 10 s.

A server in a fresh data folder; a team (lead surgeon, mentor, observer) joins one session. The lead grasps
the top of the block and lifts it until the ``retract`` step is completed, and keeps holding; the mentor
annotates. Once the room's checkpoint holds both, the mentor annotates once more and the server is
SIGKILLed (no drain, no goodbye) as soon as that is acknowledged, while the grasp is held: that last action
survives by the action journal (``rehearsal.journal``), whether or not a checkpoint caught it in time. A
new server starts on the same data folder; each member trades their rejoin code for a
fresh connect token (``/api/rejoin``) and reconnects, the lead holding the same pose. Checked: every member
is back in the same session, the welcome shows the step done and the annotation, snapshots flow again
and the grasp carries on; then, after a clean stop, the session's result has the step, its recording
replays (``rehearsal.replay``) to the result's frame count. Printed as JSON: ``recovery_seconds`` (SIGKILL
to the whole team receiving snapshots again), its parts, and each check. Loopback only; every wait bounded.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.run import Run, load_run
from loadtests.server import LoadServer, create_room
from rehearsal.bots import Headset, ServerProcess, SurgeonScript, post, pump
from rehearsal.checkpoints import checkpoint_path
from rehearsal.replay import replay
from rehearsal.results_store import RESULTS_FILE, ResultsStore

RECOVERY_GOAL_SECONDS = 10.0
ROLES = ("lead_surgeon", "mentor", "observer")
NOTE = "divide here"
LAST_NOTE = "acked, then killed"  # the mentor's action acknowledged just before the SIGKILL
GRASP_X = -0.015  # where the demo's lead retracts
LIFT = 0.015  # m: the retract step asks for 1 cm


def _rejoin(server: ServerProcess, code: str, name: str) -> Headset:
    status, ticket = post(server.http_port, "/api/rejoin", {"rejoin_code": code})
    if status != 200:
        raise RuntimeError(f"rejoining as {name} failed: {status} {ticket}")
    headset = Headset(base64.b64decode(ticket["token"]), name=name)
    headset.ticket = ticket
    return headset


def _join(server: ServerProcess, invite: str, name: str) -> Headset:
    status, ticket = post(server.http_port, "/api/join", {"invite": invite, "name": name})
    if status != 200:
        raise RuntimeError(f"joining as {name} failed: {status} {ticket}")
    headset = Headset(base64.b64decode(ticket["token"]), name=name)
    headset.ticket = ticket
    return headset


def _step_done(headset: Headset, step: str) -> bool:
    return any(
        e["kind"] == "step_completed" and e.get("detail", {}).get("id") == step for e in headset.messages["event"]
    )


def run_crash(
    out: Path | None = None, *, scenario: str = "basic_skills", say: Callable[[str], None] = print
) -> dict[str, Any]:
    """The crash run (see the module doc), on the run skeleton; returns the report with ``passed``."""
    with load_run("crash", out, say, scenario=scenario, goal_seconds=RECOVERY_GOAL_SECONDS) as run:
        team: list[Headset] = []
        run.on_close.append(lambda: [h.close() for h in team])
        data = run.folder / "server"  # both processes use this data folder
        try:
            _crash_and_recover(run, data, scenario, team)
        finally:
            for i, server in enumerate(run.servers.servers):
                (run.folder / f"server-{i + 1}.log").write_text(server.log())
    return run.report


def _crash_and_recover(run: Run, data: Path, scenario: str, team: list[Headset]) -> None:
    report, say = run.report, run.say
    say("crash: starting the server")
    first = run.server("server")
    room = create_room(first, scenario)
    session = room["session"]
    team[:] = [_join(first, room["invites"][role], role) for role in ROLES]
    lead, mentor, _ = team
    if not pump(team, lambda: all(h.connected and h.welcome for h in team), 10.0):
        raise RuntimeError("the team did not connect")
    script = SurgeonScript(GRASP_X, lift=LIFT)
    started = time.monotonic()

    def drive() -> None:
        position, jaw = script.pose(time.monotonic() - started)
        lead.send_pose(position, script.rotation, jaw)

    say("crash: the lead grasps and lifts; waiting for the retract step")
    if not pump(team, lambda: _step_done(lead, "retract"), 20.0, each_frame=drive):
        raise RuntimeError("the retract step was not completed")
    sent = time.time()
    mentor.command("annotate", position=[0.0, 0.05, 0.0], text=NOTE)
    if not pump(team, lambda: lead.events["annotate"] > 0, 5.0, each_frame=drive):
        raise RuntimeError("the annotation was not acknowledged")
    report["annotation_ack_seconds"] = round(time.time() - sent, 3)
    ckpt = checkpoint_path(data, session)  # the first checkpoint written after the command was sent
    saved = pump(team, lambda: ckpt.exists() and ckpt.stat().st_mtime > sent, 10.0, each_frame=drive)
    report["annotation_checkpointed_seconds"] = round(ckpt.stat().st_mtime - sent, 3) if saved else None
    pump(team, lambda: False, 0.5, each_frame=drive)  # mid-session: still holding
    codes = [(h.name, h.ticket["rejoin_code"], h.ticket["participant"]) for h in team]
    held_pose = script.pose(time.monotonic() - started)
    acks, last_sent = mentor.events["annotate"], time.time()
    mentor.command("annotate", position=[0.0, 0.06, 0.0], text=LAST_NOTE)
    if not pump(team, lambda: mentor.events["annotate"] > acks, 5.0, each_frame=drive):
        raise RuntimeError("the last annotation was not acknowledged")

    say("crash: SIGKILL, as soon as the last annotation was acknowledged")
    killed = time.monotonic()
    report["last_action_in_a_checkpoint_at_kill"] = ckpt.stat().st_mtime > last_sent  # else: only the journal
    first.proc.kill()
    first.proc.wait(timeout=10)
    for h in team:
        h.sock.close()
    team.clear()

    second = run.servers.add(LoadServer(data))  # the same data folder
    second.wait_listening(60.0)
    listening = time.monotonic()
    team[:] = [_rejoin(second, code, name) for name, code, _ in codes]
    lead = team[0]

    def hold() -> None:
        lead.send_pose(held_pose[0], script.rotation, held_pose[1])

    back = pump(team, lambda: all(h.connected and h.welcome for h in team), 10.0, each_frame=hold)
    rejoined = time.monotonic()
    flowing = back and pump(team, lambda: all(h.snapshots_applied > 0 for h in team), 20.0, each_frame=hold)
    recovered = time.monotonic()
    pump(team, lambda: False, 1.0, each_frame=hold)  # carry on a moment under the lead's hand
    welcome = lead.welcome or {}
    steps = {s["id"]: s["status"] for s in welcome.get("progress", {}).get("steps", [])}
    report.update(
        session=session,
        restart_to_listening_seconds=round(listening - killed, 3),
        rejoin_seconds=round(rejoined - listening, 3),
        recovery_seconds=round(recovered - killed, 3) if flowing else None,
    )
    checks = {
        "recovered_in_time": flowing and recovered - killed <= RECOVERY_GOAL_SECONDS,
        "same_session": all((h.welcome or {}).get("session") == session for h in team),
        "same_participants": [(h.welcome or {}).get("participant") for h in team] == [p for _, _, p in codes],
        "step_done_after_restart": steps.get("retract") == "done",
        "annotation_after_restart": any(a.get("text") == NOTE for a in welcome.get("annotations", [])),
        "acked_action_after_restart": any(a.get("text") == LAST_NOTE for a in welcome.get("annotations", [])),
        "grasp_carried_on": not lead.messages["release"],
    }
    say("crash: stopping cleanly; checking the result and the recording")
    for h in team:
        h.close()
    team.clear()
    second.stop()
    results = ResultsStore(data / RESULTS_FILE)
    result = results.session(session) or {}
    results.close()
    done = {s["id"]: s["status"] for s in result.get("steps", [])}
    report["result_end_state"] = result.get("end_state")
    checks["result_step_done"] = done.get("retract") == "done"
    recording = result.get("recording")
    checks["recording_intact"] = False
    if recording and Path(recording).exists():
        replayed = replay(Path(recording))
        report["recording_frames"] = replayed.frame
        checks["recording_intact"] = replayed.frame == result.get("frames") and replayed.frame > 0
    report["checks"] = checks
    report["passed"] = all(checks.values())
