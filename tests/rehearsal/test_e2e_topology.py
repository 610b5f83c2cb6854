"""End to end: a cut made by the surgeon reaches every client with the same topology.

The server runs in a subprocess (fixture ``e2e_server``); a lead surgeon, a scrub nurse, a mentor and an
observer join with their invites and connect over loopback UDP. The nurse hands the surgeon scissors
(``hand_instrument``), the surgeon closes them through the tissue block, and every client must end at
the same snapshot epoch with the same patch layout and the same triangle list (replayed from the
reliable ``snap_topology`` messages). A late joiner then gets the full current topology and state, then
deltas; and when the mentor resets the world, every client gets the uncut block back in full.
"""

from __future__ import annotations

import time

import numpy as np

from rehearsal.bots import SurgeonScript
from tests.rehearsal.e2e_helpers import connect, join, new_session, pump, saw_event, team_of, triangle_set


def _same_layout(a, b) -> bool:
    return np.array_equal(a.vertex_ids, b.vertex_ids) and np.array_equal(a.offsets, b.offsets)


def test_a_cut_reaches_every_client_with_the_same_topology(e2e_server):
    server = e2e_server
    session = new_session(server)
    with team_of(server, session, "lead_surgeon", "scrub_nurse", "mentor", "observer") as team:
        surgeon, nurse, mentor, observer = team
        surgeon_id = surgeon.welcome["participant"]
        right = surgeon.welcome["hands"]["right"]
        start_epoch = surgeon.decoder.epoch
        start_triangles = triangle_set(observer)
        assert start_triangles and all(h.decoder.epoch == start_epoch for h in team)
        assert all(triangle_set(h) == start_triangles for h in team)

        # the scenario's first instrument is the grasper: the scrub nurse hands the surgeon scissors
        nurse.command("hand_instrument", to=surgeon_id, hand="right", kind="scissors")

        def handed(e: dict) -> bool:
            return e["detail"]["kind"] == "scissors" and e["detail"]["object"] == right

        assert pump(team, lambda: all(saw_event(h, "hand_instrument", handed) for h in team), 5.0), server.log()
        assert not nurse.messages["refused"], nurse.messages["refused"]

        # the surgeon descends over the block with open scissors and closes them: the block is cut
        script = SurgeonScript(x=0.0025)
        started = time.monotonic()

        def surgeon_frame() -> None:
            position, jaw = script.pose(time.monotonic() - started)
            surgeon.send_pose(position, script.rotation, jaw)

        def all_cut() -> bool:
            return all(saw_event(h, "cut") for h in team)

        assert pump(team, all_cut, 8.0, surgeon_frame), server.log()[-4000:]
        assert not surgeon.messages["refused"], surgeon.messages["refused"]
        # let the jaws finish closing (more cuts may follow), then stop moving and let everything arrive
        pump(team, lambda: time.monotonic() - started > 2.0, 3.0, surgeon_frame)

        def settled() -> bool:
            epochs = {h.decoder.epoch for h in team}
            cuts = {sum(1 for e in h.messages["event"] if e["kind"] == "cut") for h in team}
            return len(epochs) == 1 and len(cuts) == 1

        assert pump(team, settled, 5.0), [h.decoder.epoch for h in team]
        pump(team, lambda: False, 0.3)  # nothing more in flight
        assert settled()

        cuts = [e for e in surgeon.messages["event"] if e["kind"] == "cut"]
        assert all(e["by"] == surgeon_id and e["instrument"] == right for e in cuts)
        assert sum(e["detail"]["tets"] for e in cuts) > 0, "the scissors removed tets"
        for h in team:  # every client saw the same cuts, in the same order
            assert [e["detail"] for e in h.messages["event"] if e["kind"] == "cut"] == [e["detail"] for e in cuts]
        final_epoch = surgeon.decoder.epoch
        assert final_epoch > start_epoch
        triangles = triangle_set(observer)
        assert triangles != start_triangles
        for h in team:
            assert h.decoder.epoch == final_epoch
            assert _same_layout(h.decoder.layout, observer.decoder.layout)
            assert triangle_set(h) == triangles
            assert h.undecoded == 0 and h.snapshot_errors == 0
        # the layout names exactly the vertices of the triangles every client holds
        vertices = {v for t in triangles for v in t}
        assert set(observer.decoder.layout.vertex_ids.tolist()) == vertices

        # snapshots of the new epoch fill every client's surface
        assert pump(team, lambda: all(h.decoder.surface()[1].all() for h in team), 5.0)

        # a late joiner gets the current topology in full (the same triangles and layout), then state
        late = connect(join(server, session, "observer", "Late Student"))
        team.append(late)
        assert pump(team, lambda: late.welcome is not None and late.decoder.surface()[1].all(), 8.0), server.log()
        assert late.decoder.epoch == final_epoch
        assert [f["cause"] for f in late.messages["snap_topology"]] == ["full"]
        assert triangle_set(late) == triangles
        assert _same_layout(late.decoder.layout, observer.decoder.layout)
        # then deltas: after the first full records, what changes (the surgeon lifts the closed scissors)
        # travels against what the client acknowledged
        applied_before = len(late.decoder.applied)
        lift = {"y": script.HINGE_WORK}

        def lift_frame() -> None:
            lift["y"] = min(lift["y"] + 0.0002, script.HINGE_ABOVE)
            surgeon.send_pose([script.x, lift["y"], script.z], script.rotation, 0.0)

        assert pump(team, lambda: len(late.decoder.applied) >= applied_before + 30, 5.0, lift_frame)
        first_full = late.decoder.applied[0]
        assert any(o.full for o in first_full.objects)
        later = [o for s in late.decoder.applied[applied_before:] for o in s.objects]
        assert later and not all(o.full for o in later), "snapshots after the full state are deltas"
        assert late.undecoded == 0 and late.snapshot_errors == 0
        # the late joiner's tissue is the one the others see (the codec's 0.1 mm plus a little motion)
        assert float(np.abs(late.decoder.surface()[0] - observer.decoder.surface()[0]).max()) < 1e-3

        # the mentor resets the world: every client (the late joiner too) gets the uncut block back in full
        mentor.command("reset")

        def all_reset() -> bool:
            return all(saw_event(h, "reset") and h.decoder.epoch > final_epoch for h in team)

        assert pump(team, all_reset, 5.0), server.log()[-4000:]
        pump(team, lambda: False, 0.2)
        for h in team:
            assert h.messages["snap_topology"][-1]["cause"] == "full"
            assert h.decoder.epoch == late.decoder.epoch
            assert triangle_set(h) == start_triangles
        assert pump(team, lambda: all(h.decoder.surface()[1].all() for h in team), 5.0)
        assert all(h.undecoded == 0 and h.snapshot_errors == 0 for h in team)
