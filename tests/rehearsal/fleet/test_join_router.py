"""The fleet's join service against a real Redis and two stand-in game-server processes (tiny HTTP servers
answering the join API): sessions go to the least-loaded process, codes route to their room's process, a
room whose process stopped beating answers 'moving', an unknown code gets the one refusal."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rehearsal.fleet.directory import Beat, CodeRoute, ProcessInfo
from rehearsal.fleet.join_router import MOVING, JoinRouter
from rehearsal.invites import REFUSED

KEY = b"k" * 32
CREDENTIAL = "c0ffee"


class _Process(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.seen.append((self.path, body, self.headers.get("Authorization")))
        if self.path == "/api/sessions":
            server.made += 1
            status, reply = 201, {"session": f"s-{server.name}-{server.made}", "invites": {"lead_surgeon": "x"}}
        else:
            status, reply = 200, {"token": "t", "session": "s", "served_by": server.name}
        raw = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def processes():
    servers = []
    for name in ("p1", "p2"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Process)
        server.name, server.seen, server.made = name, [], 0
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _register(directory, server, capacity=2, rooms=None):
    info = ProcessInfo(
        server.name,
        "127.0.0.1:40000",
        f"http://127.0.0.1:{server.server_address[1]}",
        "/d",
        capacity,
        ("basic_skills",),
    )
    directory.beat(Beat(info, rooms or {}))


def _digest(code):
    return hmac.new(KEY, code.encode(), hashlib.sha256).digest()


def test_sessions_are_placed_on_the_least_loaded_process_and_confirmed(directory, processes):
    for server in processes:
        _register(directory, server)
    router = JoinRouter(directory, KEY, CREDENTIAL)
    assert router.create_session({"scenario": "basic_skills"}, "Bearer wrong").status == 401
    made = [router.create_session({"scenario": "basic_skills"}, f"Bearer {CREDENTIAL}") for _ in range(4)]
    assert [a.status for a in made] == [201] * 4
    assert sorted(a.payload["process"] for a in made) == ["p1", "p1", "p2", "p2"]
    for answer in made:
        assert directory.route(answer.payload["session"]).process == answer.payload["process"]
    assert processes[0].seen[0][2] == f"Bearer {CREDENTIAL}"  # the process checks the credential too
    full = router.create_session({"scenario": "basic_skills"}, f"Bearer {CREDENTIAL}")
    assert full.status == 503 and "no process" in full.payload["error"]
    assert router.create_session({"scenario": 3}, f"Bearer {CREDENTIAL}").status == 400


def test_codes_route_to_their_rooms_process_and_a_dead_ones_room_is_moving(directory, processes):
    p1, p2 = processes
    _register(directory, p1, rooms={"s-one": "basic_skills"})
    _register(directory, p2, rooms={"s-two": "basic_skills"})
    directory.publish_codes(
        [CodeRoute(_digest("code-one"), "s-one", 2e9), CodeRoute(_digest("code-two"), "s-two", 2e9)]
    )
    router = JoinRouter(directory, KEY, CREDENTIAL)
    assert router.join("/api/join", {"invite": "code-two", "name": "A"}).payload["served_by"] == "p2"
    assert router.join("/api/rejoin", {"rejoin_code": "code-one"}).payload["served_by"] == "p1"
    assert p1.seen[-1][0] == "/api/rejoin"
    refused = router.join("/api/join", {"invite": "not-a-code", "name": "A"})
    assert refused.status == 403 and refused.payload["error"] == REFUSED
    assert router.join("/api/join", {"invite": 7}).status == 403
    directory.client.delete(directory.ns + "alive:p1")  # p1 stops beating
    moving = router.join("/api/rejoin", {"rejoin_code": "code-one"})
    assert moving.status == 503 and moving.payload["error"] == MOVING
    directory.beat(Beat(ProcessInfo("p2", "x", f"http://127.0.0.1:{p2.server_address[1]}", "/d", 2, ("basic_skills",))))
    assert directory.reassign("s-one", "p1") is not None
    early = router.join("/api/rejoin", {"rejoin_code": "code-one"})  # p2 has the order, not yet the room
    assert early.status == 503 and early.payload["error"] == MOVING
    _register(directory, p2, rooms={"s-one": "basic_skills", "s-two": "basic_skills"})  # p2 resumed it
    assert router.join("/api/rejoin", {"rejoin_code": "code-one"}).payload["served_by"] == "p2"  # the same code


def test_a_process_that_dies_mid_call_answers_moving(directory, processes):
    p1, _ = processes
    _register(directory, p1, rooms={"s-one": "basic_skills"})
    directory.publish_codes([CodeRoute(_digest("code-one"), "s-one", 2e9)])
    p1.shutdown()
    p1.server_close()
    answer = JoinRouter(directory, KEY, CREDENTIAL).join("/api/rejoin", {"rejoin_code": "code-one"})
    assert answer.status == 503 and answer.payload["error"] == MOVING
