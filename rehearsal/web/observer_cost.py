"""What browser observers cost the reactor per tick, measured in one process on the thread's CPU clock.

The end-to-end bench (``rehearsal.web.bench``) reports tick p99, which on a loaded 2-core machine is mostly
other processes' noise. This measures the cause directly: a real ``RehearsalServer`` room (no sockets, a
twisted ``Clock``), a mentor's page (its own snapshot stream, in both runs) and ``n`` observers: real autobahn
``WatchProtocol`` sockets over in-memory transports, joined through ``Connections.open`` as ``/ws`` joins
them. Each tick the surface moves (so snapshots carry deltas), the room publishes, and each observer's
``snap_ack`` comes back as a masked client frame through autobahn's parser (``dataReceived``), as from a page.
``time.thread_time`` (CPU, not wall clock: other processes' load does not count) is summed over publishing
and the acks. Not included: the kernel's socket writes and reads (about one ``send`` and one ``recv`` per
observer per tick).
"""

from __future__ import annotations

import os
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from netcode.messaging.messages import Message
from netcode.sync.snapshot import parse_header
from rehearsal.identity import Identity
from rehearsal.links import next_link_key
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.web.websocket import WatchEndpoint, WebSocketLink
from rehearsal.wire import REHEARSAL_REGISTRY

ACK_EVERY = 6  # app.js's: a page acks every sixth snapshot (for the room's health; not a baseline)
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked client-to-server WebSocket frame (as a browser sends it)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    body = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
    return head + mask + body


class _Observer:
    """One observer socket: a real WatchProtocol on an in-memory transport, joined to the room."""

    def __init__(
        self,
        endpoint: WatchEndpoint,
        server: RehearsalServer,
        session: str,
        participant: int,
        role: Role = Role.OBSERVER,
    ) -> None:
        self.protocol = endpoint.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(HANDSHAKE)
        if b" 101 " not in self.transport.value().split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {self.transport.value()[:80]!r}")
        self.transport.clear()
        identity = Identity(session, participant, role, f"Page {participant}")
        self.link = WebSocketLink(next_link_key(), self.protocol, identity)
        self.protocol.link = self.link
        endpoint.links[self.link.key] = self.link
        server.connections.open(self.link, identity)
        self.newest = -1
        self.snapshots = participant % ACK_EVERY  # pages joined at different times ack on different ticks
        self.due = False

    def take_frames(self) -> list[bytes]:
        """The binary messages written to this socket since the last call (server frames are unmasked)."""
        data, out, pos = self.transport.value(), [], 0
        self.transport.clear()
        while pos + 2 <= len(data):
            n, head = data[pos + 1] & 0x7F, 2
            if n == 126:
                n, head = struct.unpack(">H", data[pos + 2 : pos + 4])[0], 4
            elif n == 127:
                n, head = struct.unpack(">Q", data[pos + 2 : pos + 10])[0], 10
            if data[pos] & 0x0F == 0x2:
                out.append(data[pos + head : pos + head + n])
            pos += head + n
        return out

    def ack_frame(self, messages: list[bytes]) -> bytes | None:
        """The page's ack of the newest snapshot among ``messages``, every ``ACK_EVERY``-th snapshot as the
        page's app.js acks (None when none is due)."""
        for payload in messages:
            message = REHEARSAL_REGISTRY.decode(payload)
            if message.type == "snapshot":
                self.newest = max(self.newest, parse_header(message.fields["data"])[0])
                self.snapshots += 1
                self.due = self.due or self.snapshots % ACK_EVERY == 1 % ACK_EVERY
        if self.newest < 0 or not self.due:
            return None
        self.due = False
        bits = (1 << 32) - 1 if self.newest > 32 else 0
        ack = Message("snap_ack", {"newest": self.newest, "bits": bits})
        return client_frame(REHEARSAL_REGISTRY.encode(ack))


def measure(observers: int, ticks: int, scenario_dir: Path, scenario: str) -> dict[str, Any]:
    """Reactor CPU per tick (ms) for publishing and for the acks, with ``observers`` observers."""
    with tempfile.TemporaryDirectory(prefix="rehearsal-observer-cost-") as tmp:
        settings = load_settings(None, env={}, data_dir=Path(tmp) / "data", scenario_dir=scenario_dir)
        server = RehearsalServer(settings, Clock())
        try:
            session = server.create_session(scenario)
            live = server.rooms[session]
            live.ticker.stop()
            endpoint = WatchEndpoint(Clock(), None, server.connections, next_key=next_link_key)  # type: ignore[arg-type]
            mentor = _Observer(endpoint, server, session, 99, Role.MENTOR)  # in both runs: its own stream
            pages = [_Observer(endpoint, server, session, 100 + i) for i in range(observers)]
            x = live.room.physics.x
            rest = x.copy()
            publish, acks = [], []
            for tick in range(ticks):
                x[:] = rest + 0.002 * np.sin(0.2 * tick + rest[:, :1] * 40.0)  # the surface moves: deltas
                began = time.thread_time()
                server.publisher.publish(live, None)
                publish.append(time.thread_time() - began)
                frames = [page.ack_frame(page.take_frames()) for page in [mentor, *pages]]  # the pages (not timed)
                began = time.thread_time()
                for page, frame in zip([mentor, *pages], frames, strict=True):
                    if frame is not None:
                        page.protocol.dataReceived(frame)
                acks.append(time.thread_time() - began)
            warm = ticks // 5  # the first ticks send full snapshots and the join messages
            return {
                "observers": observers,
                "publish_ms_per_tick": 1000 * statistics.median(publish[warm:]),  # medians: robust to a
                "acks_ms_per_tick": 1000 * statistics.median(acks[warm:]),  # preempted or slowed tick
                "in_group": len(live.observers),
            }
        finally:
            server.stop()


def observer_cost(
    observers: int, scenario_dir: Path, scenario: str, ticks: int = 300, repeat: int = 3
) -> dict[str, Any]:
    """The reactor CPU 0, 1 and ``observers`` observers take per tick (median per tick; runs interleaved
    ``repeat`` times, the median run reported), what the observers add, and what each one beyond the first
    adds (the first brings the one shared encode; the others only a write of the same frame and their acks)."""
    runs: dict[int, list[dict[str, Any]]] = {0: [], 1: [], observers: []}
    for _ in range(repeat):
        for n in runs:
            runs[n].append(measure(n, ticks, scenario_dir, scenario))

    def median(measured: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: statistics.median(r[k] for r in measured) for k in measured[0]}

    alone, one, watched = median(runs[0]), median(runs[1]), median(runs[observers])
    publish = watched["publish_ms_per_tick"] - alone["publish_ms_per_tick"]
    acks = watched["acks_ms_per_tick"] - alone["acks_ms_per_tick"]
    beyond = max(observers - 1, 1)
    return {
        "ticks": ticks,
        "repeat": repeat,
        "alone": alone,
        "one_observer": one,
        "watched": watched,
        "observers_add_publish_ms_per_tick": publish,
        "observers_add_acks_ms_per_tick": acks,
        "observers_add_reactor_ms_per_tick": publish + acks,
        "shared_encode_ms_per_tick": one["publish_ms_per_tick"] - alone["publish_ms_per_tick"],
        "each_further_observer_us_per_tick": {
            "publish": 1000 * (watched["publish_ms_per_tick"] - one["publish_ms_per_tick"]) / beyond,
            "acks": 1000 * (watched["acks_ms_per_tick"] - one["acks_ms_per_tick"]) / beyond,
        },
    }
