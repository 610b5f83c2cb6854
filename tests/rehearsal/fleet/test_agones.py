"""The Agones SDK calls against a local HTTP server that implements the documented REST contract of the SDK
sidecar (agones.dev "REST Game Server Client API": POST /ready, /health, /allocate, /shutdown with a JSON body,
PUT /metadata/label with {"key", "value"}, replies JSON {}); anything else is refused as the sidecar would."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rehearsal.fleet.agones import AgonesError, AgonesLifecycle, AgonesSdk

POSTS = {"/ready", "/health", "/allocate", "/shutdown"}


class _Sidecar(BaseHTTPRequestHandler):
    calls: list  # set per server

    def _reply(self, status, body=b"{}"):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return json.loads(raw) if raw else None

    def do_POST(self):
        body = self._body()
        if (
            self.path not in POSTS
            or not isinstance(body, dict)
            or self.headers.get("Content-Type") != "application/json"
        ):
            return self._reply(400, b'{"error": "bad request"}')
        self.server.calls.append(self.path)
        self._reply(200)

    def do_PUT(self):
        body = self._body()
        if self.path != "/metadata/label" or not isinstance(body, dict) or set(body) != {"key", "value"}:
            return self._reply(400, b'{"error": "bad request"}')
        self.server.calls.append(("label", body["key"], body["value"]))
        self._reply(200)

    def do_GET(self):
        if self.path != "/gameserver":
            return self._reply(404)
        self._reply(200, json.dumps({"object_meta": {"name": "gs-1"}, "status": {"state": "Ready"}}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def sidecar():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sidecar)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_each_call_follows_the_rest_contract(sidecar, monkeypatch):
    monkeypatch.setenv("AGONES_SDK_HTTP_PORT", str(sidecar.server_address[1]))
    sdk = AgonesSdk()  # the port from the environment, as Agones sets it
    sdk.ready()
    sdk.health()
    sdk.allocate()
    sdk.set_label("session", "s-abc")
    sdk.shutdown()
    assert sidecar.calls == ["/ready", "/health", "/allocate", ("label", "session", "s-abc"), "/shutdown"]
    assert sdk.game_server()["object_meta"]["name"] == "gs-1"


def test_bad_labels_and_an_absent_sidecar_are_clear_errors(sidecar):
    sdk = AgonesSdk(sidecar.server_address[1])
    with pytest.raises(ValueError, match="label"):
        sdk.set_label("session", "has spaces and is far too long " * 3)
    sidecar.shutdown()
    sidecar.server_close()
    with pytest.raises(AgonesError):
        AgonesSdk(sidecar.server_address[1], timeout=0.5).ready()
    with pytest.raises(ValueError):
        AgonesSdk(0)


def test_the_lifecycle_goes_ready_health_allocated_shutdown(sidecar):
    life = AgonesLifecycle(AgonesSdk(sidecar.server_address[1]), health_seconds=0.05).start()
    life.tick_healthy(True)
    life.warmed()
    deadline = time.monotonic() + 5
    while sidecar.calls.count("/health") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    life.tick_healthy(False)  # a stuck tick: no more Health, so Agones marks it Unhealthy
    time.sleep(0.2)
    healths = sidecar.calls.count("/health")
    time.sleep(0.3)
    assert sidecar.calls.count("/health") == healths >= 3
    life.took_session("s-Ab_1", "basic skills!")
    life.took_session("s-2", "basic_skills")
    life.drained()
    life.join()
    assert sidecar.calls[0] == "/ready"
    rest = [c for c in sidecar.calls if c != "/health"]
    assert rest == [
        "/ready",
        "/allocate",  # once, for the first session
        ("label", "session", "s-Ab_1"),
        ("label", "scenario", "basic-skills"),
        ("label", "session", "s-2"),
        ("label", "scenario", "basic_skills"),
        "/shutdown",
    ]
    assert life.state == "shutdown" and life.stats["allocate"] == 1


def test_a_sidecar_that_is_down_costs_counted_failures_not_a_hang(sidecar):
    port = sidecar.server_address[1]
    sidecar.shutdown()
    sidecar.server_close()
    life = AgonesLifecycle(AgonesSdk(port, timeout=0.2), health_seconds=0.05).start()
    life.warmed()
    life.drained()
    life.join(5)
    assert life.stats["ready_failed"] == 1 and life.stats["shutdown_failed"] == 1
