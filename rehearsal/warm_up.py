"""Compile (or load from numba's cache) every physics and snapshot kernel before the server listens.

Around it, what a person starting the server sees: ``probe_ports`` finds a port in use in a moment, before the
warm-up (one line, not a traceback after it); ``warm_up`` reports its progress stage by stage; and
``WarmingResponder`` holds the HTTP port meanwhile, so ``/healthz`` answers ``warming`` (200: the process is
alive) and ``/readyz`` and everything else 503, instead of refusing connections for the 8-45 s of a cold
numba cache.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from netcode.sync.snapshot import RigidSet
from netcode.sync.snapshot_codec import SnapshotServer
from physics.instruments import Kind, look_rotation
from rehearsal.identity import Identity
from rehearsal.live_room import surface_layout
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario


def warm_up(scenario: str | Path, progress: Callable[[str], None] | None = None) -> None:
    """Each of the scenario's instruments works the tissue once (contact, grasp and its response probe, cut,
    burn) and one snapshot is encoded, so numba compiles (or loads its cache) every kernel now, not in the
    middle of a session. ``scenario``: a packaged scenario's name or a scenario file. ``progress(line)`` is
    told each stage as it ends (e.g. ``warm-up 2/5: grasper on 1 thread (3.1 s)``)."""
    say = progress if progress is not None else (lambda line: None)
    began = time.monotonic()
    spec = load_scenario(scenario)
    room = Room("warm-up", spec)  # settles the world: the scenario's rooms then open at rest for free
    surgeon = room.join(Identity("warm-up", 1, Role.LEAD_SURGEON, "warm-up"))
    room.start()
    rest = room.model.rest_positions
    lo, hi = rest.min(axis=0), rest.max(axis=0)
    hinge = np.array([(lo[0] + hi[0]) / 2, hi[1] + 0.01, (lo[2] + hi[2]) / 2])  # jaws reach into the top
    down = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))
    dt, t = 1.0 / spec.tick_hz, 0.0
    default_threads = numba.get_num_threads()
    thread_counts = sorted({1, default_threads})
    stages = len(thread_counts) * len(spec.instruments) + 2
    frames = room.settled.frames
    settled = f"settled in {frames} frames" if room.settled.at_rest else f"not at rest after {frames} frames"
    say(f"warm-up 1/{stages}: the {spec.name} world built, {settled} ({time.monotonic() - began:.1f} s)")
    stage = 1
    try:
        for threads in thread_counts:  # a room's thread steps with the serial kernels
            numba.set_num_threads(threads)
            for kind in spec.instruments:
                surgeon.hands["right"] = Kind(kind)
                for jaw in (1.0, 1.0, 0.6, 0.3, 0.0, 0.0, 1.0):
                    t += dt
                    room.instrument_input(1, "right", hinge, down, jaw, kind == Kind.CAUTERY_HOOK, t)
                    room.advance(dt)
                stage += 1
                plural = "thread" if threads == 1 else "threads"
                say(f"warm-up {stage}/{stages}: {kind} on {threads} {plural} ({time.monotonic() - began:.1f} s)")
    finally:
        numba.set_num_threads(default_threads)
    layout = surface_layout(room)
    sync = SnapshotServer(layout, triangles=room.model.surface)
    sync.add_client(0)
    rigid = RigidSet(np.zeros(1, np.int64), np.zeros(1, np.int64), hi[None, :], np.array([[0, 0, 0, 1.0]]), np.zeros(1))
    for _ in range(2):
        sync.begin_frame(0.0, room.physics.x[layout.vertex_ids], rigid)
        sync.encode(0)
        sync.on_ack(0, sync.sequence)
    say(f"warm-up {stages}/{stages}: snapshot encoder ({time.monotonic() - began:.1f} s)")


class PortInUseError(OSError):
    """A port the server needs is taken: one line that says which and how to choose another."""


def probe_ports(udp: tuple[str, int], http: tuple[str, int]) -> None:
    """Bind each port once and let go, so a port in use is reported now, before the warm-up (port 0: any
    free port, nothing to probe). Raises PortInUseError."""
    for kind, (host, port), flag in ((socket.SOCK_DGRAM, udp, "udp"), (socket.SOCK_STREAM, http, "http")):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as twisted's listenTCP does: a port in TIME_WAIT is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise PortInUseError(
                    f"{flag} port {port} on {host} is in use ({exc.strerror}): stop what holds it, or choose "
                    f"another with --{flag}-port (setting {flag}_port, env REHEARSAL_{flag.upper()}_PORT)"
                ) from None


class _WarmingHandler(http.server.BaseHTTPRequestHandler):
    """``/healthz``: 200 ``warming``; anything else: 503 ``{"error": "warming up"}``."""

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") == "/healthz":
            self._answer(200, b"warming\n", "text/plain; charset=utf-8")
        else:
            self._answer(503, json.dumps({"error": "warming up"}).encode(), "application/json")

    do_POST = do_HEAD = do_GET  # noqa: N815

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Retry-After", "5")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a load balancer polls this every few seconds."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class WarmingResponder:
    """The HTTP port's stand-in while the kernels compile (see the module doc); with ``tls`` (cert, key)
    it speaks HTTPS like the server will. ``with WarmingResponder(host, port): warm_up(...)``."""

    def __init__(self, host: str, port: int, tls: tuple[str, str] | None = None) -> None:
        try:
            self.server = (_Server6 if ":" in host else _Server)((host, port), _WarmingHandler)
        except OSError as exc:
            raise PortInUseError(
                f"http port {port} on {host} is in use ({exc.strerror}): stop what holds it, or choose another "
                "with --http-port (setting http_port, env REHEARSAL_HTTP_PORT)"
            ) from None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="warming", daemon=True)

    def __enter__(self) -> WarmingResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Let go of the port (the server listens on it next)."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5.0)
