"""The browser's WebSocket link against the real rehearsal server (a subprocess, loopback): a page joins a room
like a headset, gets the same join messages and snapshots, and is held to the same roles and refusals."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rehearsal.bots import Headset, ServerProcess, get, post, pump
from rehearsal.live_room import HEAD_OBJECT_BASE
from rehearsal.web import websocket
from rehearsal.wire import DEVICE_HEAD, DEVICE_RIGHT
from tests.rehearsal.e2e_helpers import new_session, running_server
from tests.rehearsal.web.test_ws_endpoint import self_signed
from tests.rehearsal.web.ws_client import OP_BINARY, WsClient, is_message


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("ws") / "data") as proc:
        yield proc


def room_state(server: ServerProcess, session: str) -> str:
    status, body = get(server.http_port, f"/admin/rooms/{session}", server.credential())
    assert status == 200, body
    return json.loads(body)["state"]


def test_an_observer_page_gets_the_join_messages_and_snapshots_it_can_ack(server):
    session = new_session(server)
    page = WsClient(server.http_port)
    try:
        joined = page.join(session["invites"]["observer"], "Olive")
        assert joined["role"] == "observer" and joined["session"] == session["session"]
        types = []
        welcome = page.until(lambda f: (types.append(getattr(f, "type", None)) or True) and is_message("welcome")(f))
        assert types[:2] == ["snap_config", "snap_topology"]
        assert welcome.fields["role"] == "observer" and welcome.fields["name"] == "Olive"
        snapshot = page.until(is_message("snapshot"))
        assert snapshot.fields
        page.send_message("snap_ack", {"newest": 1, "bits": 0})
        page.send_message("ping", {"time": 7.25})
        assert page.until(is_message("pong", time=7.25))
    finally:
        page.close()


@contextmanager
def mentor_and_observer(server: ServerProcess, session: dict) -> Iterator[tuple[WsClient, WsClient]]:
    """A mentor's page and an observer's page of ``session``, both welcomed; closed at the end."""
    mentor, observer = WsClient(server.http_port), WsClient(server.http_port)
    try:
        mentor.join(session["invites"]["mentor"], "Mina")
        mentor.until(is_message("welcome"))
        observer.join(session["invites"]["observer"], "Oscar")
        observer.until(is_message("welcome"))
        yield mentor, observer
    finally:
        mentor.close()
        observer.close()


def test_a_forged_command_from_an_observer_is_refused_and_changes_nothing(server):
    session = new_session(server)
    with mentor_and_observer(server, session) as (_mentor, observer):
        assert room_state(server, session["session"]) == "running"  # the mentor started it
        observer.send_message("command", {"action": "pause", "id": 9})
        refused = observer.until(is_message("refused", request="command:pause"))
        assert refused.fields["id"] == 9 and "observer" in refused.fields["reason"]
        assert room_state(server, session["session"]) == "running"
        observer.send_message("command", {"action": "end_room", "args": {"bogus": 1}})
        assert observer.until(is_message("refused", request="command:end_room"))
        assert room_state(server, session["session"]) == "running"


def test_a_mentor_pause_over_websocket_pauses_the_room_and_everyone_hears_it(server):
    session = new_session(server)
    with mentor_and_observer(server, session) as (mentor, observer):
        mentor.send_message("command", {"action": "pause", "id": 1})
        event = observer.until(is_message("event", kind="pause"))
        assert event.fields["detail"]["state"] == "paused"
        assert room_state(server, session["session"]) == "paused"
        mentor.send_message("command", {"action": "resume"})
        assert observer.until(is_message("event", kind="resume"))
        assert room_state(server, session["session"]) == "running"


def test_an_expired_or_wrong_code_is_refused_and_the_room_is_unaffected(server):
    session = new_session(server)
    watcher = WsClient(server.http_port)
    try:
        watcher.join(session["invites"]["observer"], "Olive")
        watcher.until(is_message("welcome"))
        bad = WsClient(server.http_port)
        bad.send_text({"join": {"invite": session["invites"]["observer"][:-2] + "xx", "name": "Eve"}})
        frames = bad.messages_until_closed()
        assert any(is_message("refused", request="connect")(f) for f in frames)
        assert bad.closed.code == websocket.CLOSE_REFUSED
        status, ended = post(server.http_port, f"/admin/rooms/{session['session']}/end", {}, server.credential())
        assert status == 200, ended
        late = WsClient(server.http_port)
        late.send_text({"join": {"invite": session["invites"]["mentor"], "name": "Late"}})
        frames = late.messages_until_closed()
        reasons = [f.fields["reason"] for f in frames if is_message("refused", request="connect")(f)]
        assert reasons and "ended" in reasons[0]
    finally:
        watcher.close()


def test_malformed_frames_close_only_that_page(server):
    session = new_session(server)
    bad, good = WsClient(server.http_port), WsClient(server.http_port)
    try:
        bad.join(session["invites"]["observer"], "Mallory")
        good.join(session["invites"]["observer"], "Bob")
        good.until(is_message("welcome"))
        for _ in range(websocket.MAX_BAD_FRAMES + 2):
            bad.send_frame(OP_BINARY, b"\x92\x01\x02")
        bad.messages_until_closed()
        assert bad.closed.code in (websocket.CLOSE_POLICY, None)
        good.send_message("ping", {"time": 1.0})
        assert good.until(is_message("pong", time=1.0))
        good.send_message("snap_ack", {"newest": 2, "bits": 1})
        assert good.until(is_message("snapshot"))
    finally:
        bad.close()
        good.close()


def test_the_metrics_count_the_browser_side(server):
    session = new_session(server)
    page = WsClient(server.http_port)
    try:
        page.join(session["invites"]["observer"], "Olive")
        page.until(is_message("snapshot"))
        page.send_text({"page_error": "ReferenceError: oops"})
        page.send_message("ping", {"time": 2.0})
        page.until(is_message("pong", time=2.0))
        status, body = get(server.http_port, "/metrics")
        assert status == 200
        values = {}
        for line in body.decode().splitlines():
            if line.startswith(("rehearsal_web_observers ", "rehearsal_websocket_bytes_sent_total ", "rehearsal_page")):
                name, value = line.split()
                values[name] = float(value)
        assert values["rehearsal_web_observers"] >= 1
        assert values["rehearsal_websocket_bytes_sent_total"] > 1000
        assert values["rehearsal_page_errors_total"] >= 1
    finally:
        page.close()


def test_a_page_gets_the_roster_the_headsets_and_the_room_health(server):
    session = new_session(server)
    status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"]["lead_surgeon"], "name": "Lea"})
    assert status == 200, ticket
    surgeon = Headset(base64.b64decode(ticket["token"]), name="Lea", devices=(DEVICE_HEAD, DEVICE_RIGHT))
    page = WsClient(server.http_port)
    try:
        assert pump([surgeon], lambda: surgeon.welcome is not None, 15.0)
        page.join(session["invites"]["observer"], "Olive")
        roster = page.until(is_message("event", kind="roster")).fields["detail"]
        lea = next(p for p in roster["participants"] if p["name"] == "Lea")
        assert lea["role"] == "lead_surgeon" and lea["participant"] == ticket["participant"]
        head = lea["objects"]["head"]
        assert head >= HEAD_OBJECT_BASE and lea["objects"]["right"] < HEAD_OBJECT_BASE
        assert {c["id"] for c in roster["complications"]} == {"bleeder", "stiff"}
        t0 = time.monotonic()

        def frame() -> None:
            surgeon.send_pose([0.0, 0.45, 0.35], device=DEVICE_HEAD)
            surgeon.send_pose([0.0, 0.06, 0.0], jaw=1.0)

        def sees_head() -> bool:
            rigid = surgeon.decoder.rigid()
            return head in rigid and rigid[head].kind == "head"

        assert pump([surgeon], lambda: sees_head() and time.monotonic() - t0 > 1.2, 10.0, each_frame=frame)
        assert abs(surgeon.decoder.rigid()[head].positions[1] - 0.45) < 0.01

        def lea_holds(frame) -> bool:  # a room_health after the hand's pose and an ack of Lea reached the room
            if not is_message("event", kind="room_health")(frame):
                return False
            rows = [p for p in frame.fields["detail"]["participants"] if p["participant"] == ticket["participant"]]
            return bool(rows and rows[0]["forces"] and rows[0]["snapshot_age"] is not None)

        health = page.until(lea_holds, 8.0).fields["detail"]
        row = next(p for p in health["participants"] if p["participant"] == ticket["participant"])
        assert row["transport"] == "udp" and "right" in row["forces"] and row["snapshot_age"] is not None
        assert any(p["transport"] == "websocket" for p in health["participants"])
    finally:
        surgeon.close()
        page.close()


TLS_SERVER_SCRIPT = """
import sys
from pathlib import Path
from rehearsal.server import serve
from rehearsal.settings import load_settings
settings = load_settings(None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0, drain_seconds=sys.argv[2],
                         tls_cert=sys.argv[3], tls_key=sys.argv[4])
sys.exit(serve(settings))
"""


def test_serve_with_a_certificate_speaks_https_and_wss(tmp_path):
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    proc = ServerProcess(data, script=TLS_SERVER_SCRIPT, script_args=[str(data), "2", str(cert), str(key)])
    try:
        _, port = proc.wait_listening()
        assert proc.wait_for(re.compile(r"watch page and mentor console: (https://localhost:\d+/)"), 10).group(1) == (
            f"https://localhost:{port}/"
        )
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/api/sessions",
            data=json.dumps({"scenario": "basic_skills"}).encode(),
            headers={"Authorization": f"Bearer {proc.credential()}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            session = json.loads(answer.read())
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=context, timeout=10) as answer:
            assert b"Rehearsal room" in answer.read()
        page = WsClient(port, tls=True)
        try:
            assert page.join(session["invites"]["observer"], "Tess")["role"] == "observer"
            assert page.until(is_message("welcome")).fields["name"] == "Tess"
        finally:
            page.close()
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def test_a_mentor_page_gets_a_debrief_key_for_its_session_and_an_observer_none(server):
    from rehearsal.web.debrief_access import DebriefAccess

    session = new_session(server)
    mentor, observer = WsClient(server.http_port), WsClient(server.http_port)
    try:
        key = mentor.join(session["invites"]["mentor"], "Mina").get("debrief_key")
        assert "debrief_key" not in observer.join(session["invites"]["observer"], "Oscar")
    finally:
        mentor.close()
        observer.close()
    access = DebriefAccess.from_data_dir(server.data_dir)  # the server's secret, in its data folder
    assert key and access.check(key, session["session"]) is None
    assert access.check(key, "another-session") is not None
    assert key not in "\n".join(server.lines)  # never logged
