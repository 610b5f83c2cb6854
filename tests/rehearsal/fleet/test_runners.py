"""Under Agones the game server takes its netcode port and public address from the SDK's GameServer."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rehearsal.fleet.agones import AgonesSdk
from rehearsal.fleet.runners import public_address_from_agones
from rehearsal.settings import load_settings


def _sidecar(game_server):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            raw = json.dumps(game_server).encode()
            self.send_response(200 if self.path == "/gameserver" else 404)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_port_and_address_come_from_the_gameserver():
    server = _sidecar({"status": {"address": "10.0.0.7", "ports": [{"name": "netcode", "port": 7311}]}})
    try:
        settings = public_address_from_agones(AgonesSdk(server.server_address[1]), load_settings(None, env={}))
    finally:
        server.shutdown()
        server.server_close()
    assert settings.udp_port == 7311 and settings.public_address == "10.0.0.7:7311"


def test_a_gameserver_without_them_keeps_the_settings():
    server = _sidecar({"status": {"state": "Scheduled"}})
    try:
        before = load_settings(None, env={})
        assert public_address_from_agones(AgonesSdk(server.server_address[1]), before) == before
    finally:
        server.shutdown()
        server.server_close()
