"""A participant over the browser's WebSocket against the real server (a subprocess, loopback): an assistant joins
with their invite code, drives their instrument with the thin client's input packets and gets what a headset gets
(input acks, the grasp's response model, their forces, the grasp event); inputs go through the same checks as UDP
ones (roles, pose guard, malformed packets), and an observer's forged input is refused and counted."""

from __future__ import annotations

import json
import time

import msgpack
import numpy as np
import pytest

from netcode.protocol.forces import force_report_from_fields
from netcode.protocol.poses import RigidPose
from netcode.thin_client.input_sender import InputSender
from rehearsal.bots import ServerProcess, SurgeonScript, get
from rehearsal.web import websocket
from rehearsal.wire import DEVICE_HEAD, DEVICE_RIGHT, to_wire_quat
from tests.rehearsal.e2e_helpers import new_session, running_server
from tests.rehearsal.web.ws_client import OP_BINARY, WsClient, is_message


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("ws-participant") / "data") as proc:
        yield proc


def refusals(server: ServerProcess) -> dict[str, float]:
    """rehearsal_refusals_total by reason, from /metrics."""
    status, body = get(server.http_port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("rehearsal_refusals_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('reason="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def joined_id(joined: dict) -> int:
    """The participant id of a ``joined`` answer (decimal text: ids are 63-bit)."""
    return int(joined["participant"])


def input_fields(sender: InputSender, t: float, pose: RigidPose, device: int = DEVICE_RIGHT) -> dict:
    sender.add_sample(t, {device: pose})
    return {"p": sender.packet(t)}


def test_an_assistant_drives_over_websocket_and_gets_acks_the_grasp_and_their_forces(server):
    session = new_session(server)
    page = WsClient(server.http_port)
    try:
        joined = page.join(session["invites"]["assistant_surgeon"], "Asa")
        assert joined["role"] == "assistant_surgeon"
        welcome = page.until(is_message("welcome"))
        hand_object = welcome.fields["hands"]["right"]
        sender = InputSender((DEVICE_RIGHT,))
        script = SurgeonScript(x=-0.01, lift=0.012)
        rotation = to_wire_quat(script.rotation)
        seen: dict[str, object] = {}
        t0 = time.monotonic()
        last_sent = 0.0
        page.sock.settimeout(0.005)
        while time.monotonic() - t0 < 8.0 and not {"grasp", "grasp_event", "pull"} <= set(seen):
            now = time.monotonic()
            if now - last_sent >= 1 / 60:
                last_sent = now
                position, jaw = script.pose(now - t0)
                page.send_message("input", input_fields(sender, now, RigidPose(position, rotation, jaw)))
            try:
                frame = page.recv()
            except TimeoutError:
                continue
            kind = getattr(frame, "type", None)
            if kind == "input_ack":
                seen["ack"] = frame.fields
            elif kind == "grasp":
                seen["grasp"] = frame.fields
            elif kind == "event" and frame.fields["kind"] == "grasp":
                seen["grasp_event"] = frame.fields
            elif kind == "forces":
                report = force_report_from_fields(frame.fields)
                row = list(report.objects).index(hand_object) if hand_object in report.objects else None
                if row is not None and "grasp" in seen and np.linalg.norm(report.grasp[row]) > 0.05:
                    seen["pull"] = float(np.linalg.norm(report.grasp[row]))
            elif kind == "refused":
                raise AssertionError(f"refused: {frame.fields}")
        assert "ack" in seen and seen["ack"]["seq"] >= 10, seen.keys()
        assert seen["grasp"]["instrument"] == hand_object and seen["grasp"]["device"] == DEVICE_RIGHT
        assert len(seen["grasp"]["objects"]) >= 4  # the response model's vertices
        assert seen["grasp_event"]["instrument"] == hand_object and seen["grasp_event"]["by"] == joined_id(joined)
        assert seen["pull"] > 0.05  # the grasp's pull on the tissue, in this participant's forces
    finally:
        page.close()


def test_a_too_fast_or_malformed_input_is_refused_like_over_udp_and_the_link_stays(server):
    session = new_session(server)
    page = WsClient(server.http_port)
    try:
        page.join(session["invites"]["assistant_surgeon"], "Asa")
        page.until(is_message("welcome"))
        sender = InputSender((DEVICE_RIGHT,))
        rotation = to_wire_quat(SurgeonScript(0.0).rotation)
        t = time.monotonic()
        page.send_message("input", input_fields(sender, t, RigidPose([0.0, 0.06, 0.0], rotation, 1.0)))
        page.send_message("input", input_fields(sender, t + 0.01, RigidPose([0.5, 0.06, 0.0], rotation, 1.0)))
        refused = page.until(is_message("refused", request="input"))
        assert "fast" in refused.fields["reason"] or "speed" in refused.fields["reason"], refused.fields
        time.sleep(0.6)  # past the refusal answer interval
        page.send_message("input", {"p": b"\x01\x01\x01\x00\x00\x00\x00\x00\x02"})  # a header and no sample
        refused = page.until(is_message("refused", request="input"))
        assert "malformed input packet" in refused.fields["reason"]
        oversized = msgpack.packb({"v": 1, "t": "input", "p": bytes(2000)})  # over the 1,100-byte bound of `p`
        page.send_frame(OP_BINARY, oversized)  # refused by the registry: no handler sees it
        refused = page.until(is_message("refused", request="message"))
        assert "malformed message" in refused.fields["reason"]
        page.send_message("ping", {"time": 3.5})
        assert page.until(is_message("pong", time=3.5))  # the link is still there
    finally:
        page.close()


def test_an_observer_pages_forged_input_is_refused_and_counted(server):
    session = new_session(server)
    page = WsClient(server.http_port)
    try:
        page.join(session["invites"]["observer"], "Olive")
        page.until(is_message("welcome"))
        before = refusals(server).get("role", 0.0)
        sender = InputSender((DEVICE_HEAD, DEVICE_RIGHT))
        t = time.monotonic()
        sender.add_sample(t, {DEVICE_RIGHT: RigidPose([0.0, 0.06, 0.0]), DEVICE_HEAD: RigidPose([0.0, 0.4, 0.3])})
        page.send_message("input", {"p": sender.packet(t)})
        refused = page.until(is_message("refused", request="input"))
        assert "observer" in refused.fields["reason"]
        deadline = time.monotonic() + 5
        while refusals(server).get("role", 0.0) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refusals(server).get("role", 0.0) >= before + 1
        page.send_frame(OP_BINARY, b"\xc1")  # garbage msgpack: a bad frame, answered, the page stays
        assert page.until(is_message("refused", request="message"))
        assert page.until(is_message("snapshot"))
        status, body = get(server.http_port, f"/admin/rooms/{session['session']}", server.credential())
        assert status == 200 and json.loads(body)["state"] in ("lobby", "running")
        assert websocket.MAX_FRAME_BYTES >= 1100
    finally:
        page.close()
