"""The whole server end to end: `serve` in a subprocess, HTTP on loopback, headsets over real UDP.

The server runs as `rehearsal.server.serve` (ports 0: it picks free ones and logs them), with its data
directory in tmp_path. The test creates a session with the admin credential the server generated, joins
a lead surgeon, an observer and a mentor with their invites, and drives three socket-pumped netcode
clients (ClientCore + ClientChannels + the snapshot decoder) in bounded loops. Every wait is bounded.
"""

from __future__ import annotations

import base64
import stat
import time

import numpy as np
import pytest

from netcode.messaging.channels import Channel
from netcode.sync.snapshot_decode import SnapshotDecoder
from rehearsal.bots import Headset, ServerProcess, post, pump
from rehearsal.wire import REHEARSAL_REGISTRY


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path / "data")
    try:
        proc.wait_listening()
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, proc.log()


def test_a_team_joins_sees_the_room_and_roles_are_enforced(server):
    started = time.monotonic()
    data_dir = server.data_dir
    credential_file = data_dir / "admin_credential"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "token_key").stat().st_mode) == 0o600
    credential = credential_file.read_text().strip()

    # HTTP: a bad credential is refused; the admin creates a session; unknown scenarios are explained
    assert post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, "wrong")[0] == 401
    status, body = post(server.http_port, "/api/sessions", {"scenario": "no_such"}, credential)
    assert status == 400 and "unknown scenario" in body["error"] and "basic_skills" in body["error"]
    status, session = post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, credential)
    assert status == 201, session
    tickets = {}
    for role, name in (("lead_surgeon", "Dr. Lead"), ("observer", "Student"), ("mentor", "Prof. Mentor")):
        status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"][role], "name": name})
        assert status == 200, ticket
        assert ticket["role"] == role and ticket["session"] == session["session"]
        tickets[role] = ticket
    assert post(server.http_port, "/api/join", {"invite": "not-a-code", "name": "x"})[0] == 403

    surgeon, observer, mentor = (Headset(base64.b64decode(tickets[r]["token"])) for r in tickets)
    team = [surgeon, observer, mentor]
    try:
        # everyone connects, is welcomed with their role, and receives the room in snapshots
        assert pump(team, lambda: all(h.messages["welcome"] for h in team), 10.0), server.log()
        assert surgeon.messages["welcome"][0]["role"] == "lead_surgeon"
        assert observer.messages["welcome"][0]["hands"] == {}
        instrument = surgeon.messages["welcome"][0]["hands"]["right"]
        assert pump(team, lambda: all(h.snapshots_applied >= 10 for h in team), 10.0), server.log()
        assert all(h.decoder.layout is not None and h.decoder.layout.vertex_count > 0 for h in team)
        assert any(e["kind"] == "started" for e in surgeon.messages["event"] + mentor.messages["event"])

        # the surgeon's tracked instrument moves (slowly, above the tissue); every headset sees it
        path = {"y": 0.07, "target": 0.05}

        def surgeon_frame() -> None:
            step = float(np.clip(path["target"] - path["y"], -0.0002, 0.0002))  # 1.8 cm/s at 90 Hz
            path["y"] += step
            surgeon.send_pose([0.0, path["y"], 0.0])

        def sees_instrument_at(h: Headset, y: float) -> bool:
            obj = h.decoder.rigid().get(instrument)
            return obj is not None and abs(obj.positions[1] - y) < 0.001

        assert pump(team, lambda: all(sees_instrument_at(h, 0.05) for h in team), 8.0, surgeon_frame), server.log()
        assert surgeon.messages["input_ack"], "the server acknowledges input samples"
        assert not surgeon.messages["refused"], surgeon.messages["refused"]

        # pressed into the tissue block (top at y = 0.02), the surface the others see gives way
        untouched, _ = observer.decoder.surface()
        path["target"] = 0.012

        def tissue_pressed() -> bool:
            surface, received = observer.decoder.surface()
            return received.all() and float(np.abs(surface - untouched).max()) > 0.003

        assert pump(team, tissue_pressed, 8.0, surgeon_frame), server.log()
        assert not surgeon.messages["refused"], surgeon.messages["refused"]

        # an observer's instrument input is refused (answered, and nothing appears for it)
        objects_before = set(mentor.decoder.rigid())

        def observer_frame() -> None:
            observer.send_pose([0.01, 0.06, 0.0])

        assert pump(team, lambda: bool(observer.messages["refused"]), 5.0, observer_frame), server.log()
        refusal = observer.messages["refused"][0]
        assert refusal["request"] == "input" and "observer" in refusal["reason"]
        pump(team, lambda: False, 0.3)
        assert set(mentor.decoder.rigid()) == objects_before

        # an observer may not pause; a mentor may, and everybody sees it
        observer.command("pause")
        assert pump(team, lambda: any(r["request"] == "command:pause" for r in observer.messages["refused"]), 5.0)
        assert not any(e["kind"] == "pause" for h in team for e in h.messages["event"])
        mentor.command("pause")

        def everyone_saw_pause() -> bool:
            return all(any(e["kind"] == "pause" for e in h.messages["event"]) for h in team)

        assert pump(team, everyone_saw_pause, 5.0), server.log()
        pause = next(e for e in surgeon.messages["event"] if e["kind"] == "pause")
        assert pause["detail"]["state"] == "paused" and pause["by"] == tickets["mentor"]["participant"]
        assert not mentor.messages["refused"]

        # paused: the world holds still even while the surgeon pulls the instrument out
        pump(team, lambda: False, 0.3)
        held = surgeon.decoder.rigid()[instrument].positions.copy()
        surface_before, _ = surgeon.decoder.surface()

        path["target"] = 0.07  # the instrument withdraws: a running room's tissue would spring back
        pump(team, lambda: False, 0.5, surgeon_frame)
        assert np.allclose(surgeon.decoder.rigid()[instrument].positions, held)
        assert np.array_equal(surgeon.decoder.surface()[0], surface_before)
        # every message the server sent decoded against the schema, and every snapshot applied
        assert all(h.undecoded == 0 and h.snapshot_errors == 0 for h in team)
    finally:
        for h in team:
            h.close()
    assert time.monotonic() - started < 30.0
    log = server.log()
    assert credential not in log, "the admin credential must never be logged"
    assert str(credential_file) in log


def test_a_cut_becomes_a_new_snapshot_epoch_that_clients_apply(tmp_path):
    """In process, no sockets: a surgeon's scissors cut the block; the published topology and snapshots
    (what ``Publisher.publish`` sends the surgeon's link) bring a client's decoder to the server's new surface."""
    from twisted.internet.task import Clock

    from physics.instruments import Kind, look_rotation
    from rehearsal.identity import Identity
    from rehearsal.roles import Role
    from rehearsal.server import RehearsalServer
    from rehearsal.settings import Settings
    from tests.rehearsal.link_helpers import RecordingLink

    server = RehearsalServer(Settings(data_dir=tmp_path / "data", record=False), Clock())
    session = server.sessions.create_session("basic_skills")
    live = server.rooms[session]
    live.ticker.stop()
    live.pool.stop()
    room = live.room
    surgeon = Identity(session, 7, Role.LEAD_SURGEON, "Dr. Cut")
    link = RecordingLink(0)
    server.connections.open(link, surgeon)
    room.participants[7].hands["right"] = Kind.SCISSORS
    joined, link.sent[:] = list(link.sent), []
    sent = link.sent

    decoder = SnapshotDecoder()
    for _, message in joined:  # the join messages (snap_config, snap_topology) come as encoded bytes
        if isinstance(message, bytes):
            decoder.on_message(message)
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    t, events = 0.0, []
    for jaw in [1.0] * 3 + [0.5, 0.0, 0.0, 0.0]:
        t += 1 / 60
        assert room.instrument_input(7, "right", [0.0025, 0.03, 0.0], down, jaw, False, t) is None
        server.publisher.publish(live, room.advance(1 / 60))
        for channel, message in sent:
            data = message if isinstance(message, bytes) else REHEARSAL_REGISTRY.encode(message)
            decoded = REHEARSAL_REGISTRY.decode(data)
            assert channel == (
                Channel.UNRELIABLE if decoded.type in ("snapshot", "input_ack", "forces") else Channel.RELIABLE
            )
            if decoded.type == "event":
                events.append(decoded.fields)
            elif decoded.type in ("snap_topology", "snapshot") and decoder.on_message(data):
                live.sync.on_ack_fields(0, **decoder.ack_fields())
        sent.clear()
    cuts = [e for e in events if e["kind"] == "cut"]
    assert cuts and cuts[0]["by"] == 7 and cuts[0]["instrument"] == live.object_id(7, "right")
    assert server.counters["topology_epochs"] >= 1
    assert decoder.epoch == live.sync.epoch > 1
    assert decoder.layout == live.sync.layout
    assert set(decoder.layout.vertex_ids.tolist()) == set(np.unique(room.model.surface).tolist())
    for _ in range(5):  # full records of the new epoch arrive within the byte budget
        server.publisher.publish(live, room.advance(1 / 60))
        for _, message in sent:
            data = message if isinstance(message, bytes) else REHEARSAL_REGISTRY.encode(message)
            if REHEARSAL_REGISTRY.decode(data).type == "snapshot" and decoder.on_message(data):
                live.sync.on_ack_fields(0, **decoder.ack_fields())
        sent.clear()
    surface, received = decoder.surface()
    assert received.all()
    truth = room.physics.x[decoder.layout.vertex_ids]
    assert np.abs(surface - truth).max() < 2e-4  # the codec's error bound (0.1 mm) plus a frame of motion
