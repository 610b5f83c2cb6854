"""End to end: rooms are independent, a paused room holds still, and only a mentor may pause.

One server process (fixture ``e2e_server``) runs every room here. Two sessions side by side: pausing
room A leaves room B running (B's tissue still gives way under B's surgeon), and a cut in A reaches A's
clients only (B's epoch, triangles and events do not change, and B's snapshots keep coming). In a paused
room the surgeon pushes into and pulls away from the tissue, and the snapshots that keep arriving show
the tissue and the instrument exactly where they were; after the mentor resumes, the same push deforms
the tissue. An assistant surgeon's pause is refused.
"""

from __future__ import annotations

import time

import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from rehearsal.bots import Headset, SurgeonScript
from tests.rehearsal.e2e_helpers import new_session, pump, saw_event, team_of, triangle_set

PRESSED = 0.001  # m: the surface gave way under an instrument (10 quanta of the snapshot codec)


class Descent:
    """A surgeon's right instrument moving towards a target height at a hand's speed (identity rotation:
    the instrument used by test_server_e2e, which leaves the block alone at 5 cm and presses it at 1.2 cm)."""

    def __init__(self, headset: Headset, y: float = 0.07, speed: float = 0.0005) -> None:
        self.headset, self.y, self.target, self.speed = headset, y, y, speed

    def __call__(self) -> None:
        self.y += float(np.clip(self.target - self.y, -self.speed, self.speed))  # 4.5 cm/s at 90 Hz
        self.headset.send_pose([0.0, self.y, 0.0])


def _sees_instrument_at(h: Headset, oid: int, y: float) -> bool:
    obj = h.decoder.rigid().get(oid)
    return obj is not None and abs(obj.positions[1] - y) < 0.001


def _moved(h: Headset, before: np.ndarray) -> float:
    surface, received = h.decoder.surface()
    return float(np.abs(surface - before).max()) if received.all() and surface.shape == before.shape else 0.0


def test_two_rooms_in_one_process_do_not_affect_each_other(e2e_server):
    server = e2e_server
    session_a, session_b = new_session(server), new_session(server)
    assert session_a["session"] != session_b["session"]
    with (
        team_of(server, session_a, "lead_surgeon", "scrub_nurse", "mentor") as team_a,
        team_of(server, session_b, "lead_surgeon", "observer") as team_b,
    ):
        everyone = team_a + team_b
        surgeon_a, nurse_a, mentor_a = team_a
        surgeon_b, observer_b = team_b
        rest_b = observer_b.decoder.surface()[0].copy()

        # the mentor pauses room A; room B hears nothing of it
        mentor_a.command("pause")
        assert pump(everyone, lambda: all(saw_event(h, "pause") for h in team_a), 5.0), server.log()[-4000:]
        pump(everyone, lambda: False, 0.2)
        assert not any(saw_event(h, "pause") for h in team_b)
        surface_a = team_a[0].decoder.surface_grid()

        # ... and room B keeps running: its tissue gives way under B's surgeon, while A's holds still
        press_b = Descent(surgeon_b)
        press_b.target = 0.012
        applied_a = surgeon_a.snapshots_applied
        assert pump(everyone, lambda: _moved(observer_b, rest_b) > PRESSED, 8.0, press_b), server.log()[-4000:]
        assert surgeon_a.snapshots_applied > applied_a + 10  # A is still published, just not simulated
        assert np.array_equal(surgeon_a.decoder.surface_grid(), surface_a)

        mentor_a.command("resume")
        assert pump(everyone, lambda: all(saw_event(h, "resume") for h in team_a), 5.0, press_b)
        assert not any(saw_event(h, "resume") for h in team_b)

        # a cut in room A (the nurse hands the surgeon scissors) changes A's topology, not B's
        epoch_b, triangles_b = observer_b.decoder.epoch, triangle_set(observer_b)
        epoch_a = surgeon_a.decoder.epoch
        nurse_a.command("hand_instrument", to=surgeon_a.welcome["participant"], hand="right", kind="scissors")
        assert pump(everyone, lambda: saw_event(surgeon_a, "hand_instrument"), 5.0, press_b)
        script, started = SurgeonScript(x=0.0025), time.monotonic()

        def frame() -> None:
            press_b()  # B's surgeon keeps pressing
            position, jaw = script.pose(time.monotonic() - started)
            surgeon_a.send_pose(position, script.rotation, jaw)

        applied_b = observer_b.snapshots_applied
        assert pump(everyone, lambda: all(saw_event(h, "cut") for h in team_a), 8.0, frame), server.log()[-4000:]
        assert pump(everyone, lambda: all(h.decoder.epoch > epoch_a for h in team_a), 3.0, frame)
        pump(everyone, lambda: False, 0.3, frame)
        assert all(h.decoder.epoch == epoch_b for h in team_b)
        assert all(triangle_set(h) == triangles_b for h in team_b)
        assert not any(saw_event(h, kind) for h in team_b for kind in ("cut", "hand_instrument"))
        assert observer_b.snapshots_applied > applied_b + 30  # B was served all along
        kinds_a = {e["kind"] for e in surgeon_a.messages["event"]}
        assert {"pause", "resume", "hand_instrument", "cut"} <= kinds_a
        for h in everyone:
            assert h.welcome["session"] == (session_a if h in team_a else session_b)["session"]
            assert not h.messages["refused"], h.messages["refused"]
            assert h.undecoded == 0 and h.snapshot_errors == 0


def test_a_paused_room_holds_still_and_an_assistant_cannot_pause(e2e_server):
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "assistant_surgeon", "mentor", "observer") as team:
        surgeon, assistant, mentor, observer = team
        right = surgeon.welcome["hands"]["right"]
        hand = Descent(surgeon)
        hand.target = 0.05  # above the block
        assert pump(team, lambda: _sees_instrument_at(observer, right, 0.05), 5.0, hand), server.log()[-4000:]

        # the assistant surgeon may not pause: refused, and nothing changes
        assistant.channels.send(Channel.RELIABLE, Message("command", {"action": "pause", "id": 7}))
        assert pump(team, lambda: bool(assistant.messages["refused"]), 5.0, hand)
        refusal = assistant.messages["refused"][0]
        assert refusal["request"] == "command:pause" and refusal["id"] == 7
        assert "assistant surgeon role may not pause" in refusal["reason"]
        pump(team, lambda: False, 0.2, hand)
        assert not any(saw_event(h, "pause") for h in team)

        # the mentor pauses: everybody sees it
        mentor.command("pause")
        assert pump(team, lambda: all(saw_event(h, "pause") for h in team), 5.0, hand), server.log()[-4000:]
        pump(team, lambda: False, 0.3, hand)  # the last running snapshots land
        frozen = {h.name: h.decoder.surface_grid() for h in team}
        held = observer.decoder.rigid()[right].positions.copy()
        applied = observer.snapshots_applied

        # the surgeon pushes 3.8 cm down into the block, then pulls up past where they started: nothing moves
        def still() -> bool:
            assert all(np.array_equal(h.decoder.surface_grid(), frozen[h.name]) for h in team), "tissue moved"
            assert np.allclose(observer.decoder.rigid()[right].positions, held), "instrument moved"
            return False

        hand.target = 0.012
        pump(team, lambda: still() or hand.y <= 0.012, 3.0, hand)
        pump(team, still, 0.3, hand)
        hand.target = 0.07
        pump(team, lambda: still() or hand.y >= 0.07, 3.0, hand)
        assert hand.y >= 0.07
        assert observer.snapshots_applied > applied + 60, "snapshots kept coming while paused"
        assert not surgeon.messages["refused"], surgeon.messages["refused"]

        # resumed, the same push deforms the tissue (so the stillness above was the pause)
        mentor.command("resume")
        assert pump(team, lambda: all(saw_event(h, "resume") for h in team), 5.0, hand)
        hand.target = 0.012
        rest = observer.decoder.surface()[0].copy()
        assert pump(team, lambda: _moved(observer, rest) > PRESSED, 8.0, hand), server.log()[-4000:]
        assert not mentor.messages["refused"] and not surgeon.messages["refused"]
        assert all(h.undecoded == 0 and h.snapshot_errors == 0 for h in team)


def test_a_complication_reaches_everyone_and_an_unknown_one_is_refused(e2e_server):
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "mentor", "observer") as team:
        _surgeon, mentor, _observer = team
        mentor.command("inject_complication", complication="no_such_thing")
        assert pump(team, lambda: bool(mentor.messages["refused"]), 5.0)
        assert "bleeder" in mentor.messages["refused"][0]["reason"]  # the refusal names the known ones
        mentor.command("inject_complication", complication="bleeder")

        def everyone_told(e: dict) -> bool:
            return e["detail"]["complication"] == "bleeder" and e["by"] == mentor.welcome["participant"]

        assert pump(team, lambda: all(saw_event(h, "inject_complication", everyone_told) for h in team), 5.0)
        assert all(sum(e["kind"] == "inject_complication" for e in h.messages["event"]) == 1 for h in team)
