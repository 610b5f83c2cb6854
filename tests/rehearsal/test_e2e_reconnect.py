"""End to end: a client that drops and reconnects gets its role, its instruments and the full state back.

Two ways to drop: a clean disconnect (the netcode disconnect packets), and a silent one (the headset's
socket just closes, as when its Wi-Fi goes: the server notices when the connection times out, after the
token's 10 s timeout). Either way the participant comes back on a new socket with a fresh token from
``/api/rejoin`` (its personal rejoin code; a connect token is single-use) and must get the same
participant id, role and instrument object ids (including an instrument the scrub nurse handed over
meanwhile), the current topology in full, a complete surface, and the right to drive again.
"""

from __future__ import annotations

import numpy as np

from rehearsal.bots import Headset, post
from rehearsal.join_service import CONNECTION_TIMEOUT_SECONDS
from rehearsal.wire import DEVICE_LEFT, DEVICE_RIGHT
from tests.rehearsal.e2e_helpers import Team, connect, new_session, pump, saw_event, team_of, triangle_set


def _rejoin(server, ticket: dict) -> Headset:
    status, fresh = post(server.http_port, "/api/rejoin", {"rejoin_code": ticket["rejoin_code"]})
    assert status == 200, fresh
    for key in ("session", "participant", "role", "name"):
        assert fresh[key] == ticket[key], key
    assert fresh["token"] != ticket["token"]
    return connect(fresh, devices=(DEVICE_LEFT, DEVICE_RIGHT))  # it has an instrument in each hand now


def _sees_instrument_at(h: Headset, oid: int, y: float) -> bool:
    obj = h.decoder.rigid().get(oid)
    return obj is not None and abs(obj.positions[1] - y) < 0.001


def _assert_back_with_everything(server, team: Team, returned: Headset, witness: Headset, welcome: dict) -> None:
    """`returned` (reconnected) is welcomed as before, holds the room as `witness` sees it, and drives."""
    assert pump(team, lambda: returned.welcome is not None, 5.0), server.log()[-4000:]
    again = returned.welcome
    for key in ("session", "participant", "role", "name", "hands"):
        assert again[key] == welcome[key], key
    assert again["state"] == "running"
    assert pump(team, lambda: bool(returned.decoder.surface()[1].all()), 5.0), server.log()[-4000:]
    # full state first: the current topology in full, full records of the surface
    assert [f["cause"] for f in returned.messages["snap_topology"]] == ["full"]
    assert any(o.full for o in returned.decoder.applied[0].objects)
    assert returned.decoder.epoch == witness.decoder.epoch
    assert np.array_equal(returned.decoder.layout.vertex_ids, witness.decoder.layout.vertex_ids)
    assert triangle_set(returned) == triangle_set(witness)
    assert float(np.abs(returned.decoder.surface()[0] - witness.decoder.surface()[0]).max()) < 1e-3
    # its role came back: both its instruments follow it again, and everyone sees them move
    right, left = welcome["hands"]["right"], welcome["hands"]["left"]

    def both_hands() -> None:
        returned.send_pose([0.0, 0.065, 0.0], device=DEVICE_RIGHT)
        returned.send_pose([0.02, 0.07, 0.0], device=DEVICE_LEFT)

    def both_see_them() -> bool:
        return all(
            _sees_instrument_at(h, right, 0.065) and _sees_instrument_at(h, left, 0.07) for h in (witness, returned)
        )

    assert pump(team, both_see_them, 5.0, both_hands), server.log()[-4000:]
    assert not returned.messages["refused"], returned.messages["refused"]
    assert returned.undecoded == 0 and returned.snapshot_errors == 0


def _surgeon_with_two_instruments(server, team: Team) -> dict:
    """The nurse hands the surgeon scissors for the left hand; the surgeon shows the right instrument.
    Returns the welcome the surgeon should get again (hands: both instruments)."""
    surgeon, nurse, observer = team
    welcome = dict(surgeon.welcome)
    assert welcome["role"] == "lead_surgeon" and set(welcome["hands"]) == {"right"}
    nurse.command("hand_instrument", to=welcome["participant"], hand="left", kind="scissors")
    assert pump(team, lambda: all(saw_event(h, "hand_instrument") for h in team), 5.0), server.log()[-4000:]
    left = next(e for e in surgeon.messages["event"] if e["kind"] == "hand_instrument")["detail"]["object"]
    right = welcome["hands"]["right"]
    assert left != right
    assert pump(team, lambda: _sees_instrument_at(observer, right, 0.06), 5.0, lambda: surgeon.send_pose([0, 0.06, 0]))
    welcome["hands"] = {"right": right, "left": left}
    return welcome


def test_a_surgeon_who_disconnects_and_rejoins_gets_role_instruments_and_state_back(e2e_server):
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "scrub_nurse", "observer") as team:
        surgeon, _nurse, observer = team
        welcome = _surgeon_with_two_instruments(server, team)
        pid = welcome["participant"]

        surgeon.close()  # a clean disconnect
        team.remove(surgeon)
        assert pump(team, lambda: saw_event(observer, "left", lambda e: e["by"] == pid), 3.0), server.log()[-4000:]

        returned = _rejoin(server, surgeon.ticket)
        team.append(returned)
        _assert_back_with_everything(server, team, returned, observer, welcome)
        assert saw_event(observer, "joined", lambda e: e["by"] == pid)


def test_a_surgeon_whose_headset_drops_silently_rejoins_at_once(e2e_server):
    """The headset vanishes (no disconnect packet) and comes straight back: the rejoin replaces the
    connection the server still holds (else netcode ignores the new token until the old one times out)."""
    server = e2e_server
    with team_of(server, new_session(server), "lead_surgeon", "scrub_nurse", "observer") as team:
        surgeon, _nurse, observer = team
        welcome = _surgeon_with_two_instruments(server, team)
        pid = welcome["participant"]

        surgeon.sock.close()  # no disconnect packet: the server still holds the connection
        team.remove(surgeon)
        returned = _rejoin(server, surgeon.ticket)
        team.append(returned)
        assert pump(team, lambda: returned.welcome is not None, CONNECTION_TIMEOUT_SECONDS / 2), (
            returned.core.state.name,
            server.log()[-4000:],
        )
        _assert_back_with_everything(server, team, returned, observer, welcome)
        # the others saw the stale connection go and the participant come back
        kinds = [
            e["kind"] for e in observer.messages["event"] if e.get("by") == pid and e["kind"] in ("left", "joined")
        ]
        assert kinds[-2:] == ["left", "joined"]
