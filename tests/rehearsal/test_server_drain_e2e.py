"""SIGTERM drains the real server: a connected headset is told (reliably) with a deadline, /readyz says
503, joins are refused, the room ends at the deadline and the process exits 0 in time. On the way the
admin API and /metrics of the running server are checked over HTTP (and `promtool check metrics` when
promtool is on PATH). Every wait is bounded."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import time

import pytest

from rehearsal.bots import Headset, ServerProcess, get, post, pump

DRAIN_SECONDS = 3.0
EXIT_MARGIN = 6.0  # the room's last messages, closing ports, interpreter exit


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path / "data", drain_seconds=DRAIN_SECONDS)
    try:
        proc.wait_listening()
        yield proc
    finally:
        proc.stop()


def test_sigterm_drains_the_room_and_exits_zero(server):
    credential = server.credential()
    status, session = post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, credential)
    assert status == 201, session
    invites = session["invites"]
    status, ticket = post(server.http_port, "/api/join", {"invite": invites["lead_surgeon"], "name": "Dr. Lead"})
    assert status == 200, ticket
    headset = Headset(base64.b64decode(ticket["token"]))
    try:
        assert pump([headset], lambda: headset.welcome is not None and headset.snapshots_applied > 5, 10.0), (
            server.log()
        )

        # the admin API over HTTP: wrong credential 401, then the room with its participant
        assert get(server.http_port, "/admin/rooms", "wrong")[0] == 401
        status, body = get(server.http_port, "/admin/rooms", credential)
        rooms = json.loads(body)["rooms"]
        assert status == 200 and [r["session"] for r in rooms] == [session["session"]]
        assert rooms[0]["participants"] == {"lead_surgeon": 1} and rooms[0]["tick_p99_seconds"] > 0
        status, body = get(server.http_port, f"/admin/rooms/{session['session']}", credential)
        detail = json.loads(body)
        assert status == 200 and detail["participants"][0]["name"] == "Dr. Lead" and detail["frame"] > 0
        assert get(server.http_port, "/admin/rooms/s-nope", credential)[0] == 404

        # the real /metrics, with a running room, is valid exposition (promtool when available)
        status, metrics = get(server.http_port, "/metrics")
        label = rooms[0]["metrics_label"]  # anonymous /metrics name rooms by an opaque label the admin can map
        assert status == 200 and f'session="{label}"'.encode() in metrics and session["session"].encode() not in metrics
        assert b"rehearsal_tick_duration_seconds_count" in metrics
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, timeout=30)
            assert check.returncode == 0, check.stdout + check.stderr
        status, reason = get(server.http_port, "/readyz")
        assert status == 200 or b"overloaded" in reason, reason  # a busy machine may degrade the room

        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert pump([headset], lambda: headset.events["draining"] > 0, 5.0), server.log()
        notice = next(e for e in headset.messages["event"] if e["kind"] == "draining")
        assert notice["detail"]["seconds"] == pytest.approx(DRAIN_SECONDS, abs=0.5)
        assert notice["detail"]["deadline"] == pytest.approx(notice["server_time"] + DRAIN_SECONDS, abs=0.5)
        status, reason = get(server.http_port, "/readyz")
        assert status == 503 and b"draining" in reason
        status, refused = post(server.http_port, "/api/join", {"invite": invites["observer"], "name": "Late"})
        assert status == 503 and "draining" in refused["error"]
        assert headset.events["ended"] == 0  # somebody is in the room: it runs until the deadline

        assert pump([headset], lambda: headset.events["ended"] > 0, DRAIN_SECONDS + 3.0), server.log()
        ended_after = time.monotonic() - signalled
        assert ended_after >= DRAIN_SECONDS - 0.5
        assert pump([headset], lambda: server.proc.poll() is not None, DRAIN_SECONDS + EXIT_MARGIN), server.log()
    finally:
        headset.close()
    assert server.proc.returncode == 0, server.log()
    assert time.monotonic() - signalled < DRAIN_SECONDS + EXIT_MARGIN
    assert headset.events["draining"] == 1  # reliable: exactly once
    log = server.log()
    assert "draining" in log and credential not in log
