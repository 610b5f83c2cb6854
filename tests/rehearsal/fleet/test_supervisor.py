"""``rehearsal serve --processes N``: what it runs, bounded restarts, and (slow) the whole fleet on loopback: a
session placed through the join service, its process SIGKILLed, the room adopted by the other process and its
code routed there, then a clean shutdown (exit 0, no child left)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rehearsal.cli import build_parser
from rehearsal.fleet import supervisor as sup
from rehearsal.fleet.directory import Directory
from rehearsal.fleet.supervisor import Child, FleetPlan, Supervisor

ROOT = Path(__file__).resolve().parents[3]


def test_the_plan_runs_a_join_service_and_n_game_servers_the_cli_understands(tmp_path):
    plan = FleetPlan(
        tmp_path, processes=3, capacity=2, http_port=9000, udp_port=41000, redis_url="redis://127.0.0.1:1/0"
    )
    children = Supervisor(plan).build()
    assert [c.name for c in children] == ["join-service", "proc-1", "proc-2", "proc-3"]
    parser = build_parser()
    join = parser.parse_args(children[0].argv[3:])
    assert join.command == "join-service" and join.http_port == 9000 and join.redis == plan.redis_url
    games = [parser.parse_args(c.argv[3:]) for c in children[1:]]
    assert [g.udp_port for g in games] == [41001, 41002, 41003]
    assert {g.process_id for g in games} == {"proc-1", "proc-2", "proc-3"}
    assert len({str(g.data_dir) for g in games}) == 3 and all(g.capacity == 2 for g in games)
    with pytest.raises(ValueError):
        Supervisor(FleetPlan(tmp_path, processes=0, capacity=1))


def test_a_child_that_keeps_dying_is_restarted_a_bounded_number_of_times(tmp_path, monkeypatch):
    monkeypatch.setattr(sup, "RESTART_PAUSE_SECONDS", 0.0)
    supervisor = Supervisor(FleetPlan(tmp_path, processes=1, capacity=1))
    child = Child("dies", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor.children = [child]
    supervisor._start(child)
    deadline = time.monotonic() + 60
    while not child.given_up and time.monotonic() < deadline:
        child.proc.wait(10)
        supervisor._watch()
    assert child.given_up and len(child.restarts) == sup.MAX_RESTARTS


def _get(port, path, credential):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {credential}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _post(port, path, body, credential=None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {credential}"} if credential else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_the_fleet_places_fails_over_and_stops_cleanly(tmp_path, redis_server):
    data = tmp_path / "fleet"
    log = (tmp_path / "fleet.log").open("w")
    args = [sys.executable, "-m", "rehearsal", "serve", "--processes", "2", "--capacity", "1", "--data-dir", str(data)]
    args += ["--http-port", "0", "--redis", redis_server.url, "--drain-seconds", "1", "--fleet-namespace", "t-sup:"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT
    )
    directory = Directory.from_url(redis_server.url, namespace="t-sup:")
    try:
        deadline = time.monotonic() + 300
        port = None
        while time.monotonic() < deadline:
            match = re.search(r"join service listening http=127\.0\.0\.1:(\d+)", (tmp_path / "fleet.log").read_text())
            if match and sum(p["alive"] for p in directory.status()) == 2:
                port = int(match.group(1))
                break
            assert proc.poll() is None, (tmp_path / "fleet.log").read_text()
            time.sleep(0.5)
        assert port, (tmp_path / "fleet.log").read_text()
        credential = (data / "admin_credential").read_text().strip()
        status, room = _post(port, "/api/sessions", {"scenario": "basic_skills"}, credential)
        assert status == 201, room
        status, ticket = _post(port, "/api/join", {"invite": room["invites"]["lead_surgeon"], "name": "Lead"})
        assert status == 200 and ticket["session"] == room["session"]
        host = room["process"]
        other = "proc-2" if host == "proc-1" else "proc-1"
        # the room's first checkpoint (its first tick takes one)
        ckpt = data / "processes" / host / "checkpoints" / f"{room['session']}.ckpt"
        deadline = time.monotonic() + 30
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ckpt.exists()
        os.kill(int(directory.process(host)["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, again = _post(port, "/api/rejoin", {"rejoin_code": ticket["rejoin_code"]})
            if status == 200:
                break
            assert status == 503, again  # moving, until it is back
            time.sleep(0.1)
        assert status == 200 and again["participant"] == ticket["participant"] and again["session"] == room["session"]
        assert directory.route(room["session"]).process == other
        fleet = _get(port, "/api/fleet", credential)["processes"]
        assert {p["process"] for p in fleet} >= {other}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        log.close()
    assert code == 0, (tmp_path / "fleet.log").read_text()[-3000:]
    leftover = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.split()
    assert leftover == []
