"""The UDP transport: the netcode 1.02 server and its ``ServerChannels``, one ``UdpLink`` per client slot.

A netcode connection's identity comes from its connect token's user data (only our join service mints
tokens); it must name the token's client id as its participant. Then the connection goes to
``Connections.open`` like any transport's link; its messages to ``Connections.receive``, its disconnect to
``Connections.closed``. Drop counts and packet statistics of the packet and message layers are kept here for ops.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from netcode.messaging.connection import ConnectionConfig, Delivery
from netcode.messaging.peers import ServerChannels
from netcode.transport.server import ServerConfig
from netcode.transport.udp import ServerProtocol, listen_server
from rehearsal.connections import Connections
from rehearsal.identity import Identity, IdentityError
from rehearsal.links import UdpLink
from rehearsal.wire import REHEARSAL_REGISTRY

# Acks wait this long for a packet with entries (every client gets a snapshot each tick) before going out alone:
# without it the 100 Hz channel update sends most clients an extra ack-only packet between two snapshots.
ACK_DELAY = 0.025


class UdpTransport:
    """Netcode clients as ``UdpLink``s of ``connections`` (see the module doc)."""

    def __init__(
        self, connections: Connections, counters: Counter[str], server_time: Callable[[], float] = time.monotonic
    ) -> None:
        self.connections = connections
        self.counters = counters
        self.server_time = server_time
        self.channels = ServerChannels(
            ConnectionConfig(ack_delay=ACK_DELAY),
            registry=REHEARSAL_REGISTRY,
            on_message=self.on_message,
            on_dropped=self.on_dropped,
            clock=server_time,
        )
        self.protocol: ServerProtocol | None = None
        self.port: Any = None
        self.departed_message_drops: Counter[str] = Counter()  # message-layer drops of closed connections

    def listen(self, reactor: Any, config: ServerConfig, port: int, host: str) -> int:
        """Listen on ``host:port``; returns the port (a free one for 0)."""
        self.protocol, self.port = listen_server(
            reactor,
            config,
            port,
            host,
            now_fn=self.server_time,
            on_connect=self.on_connect,
            on_disconnect=self.on_disconnect,
            on_payload=self.channels.on_payload,
        )
        self.channels.attach(self.protocol.core)
        self.protocol.tick_hooks.append(self.channels.update)
        return self.port.getHost().port

    # --- netcode callbacks -------------------------------------------------------------------------------

    def on_connect(self, index: int, client_id: int, user_data: bytes, address: object) -> None:
        self.channels.on_connect(index, client_id, user_data, address)
        link = UdpLink(self.channels, index, self.disconnect)
        try:
            identity = Identity.from_user_data(user_data)
        except IdentityError as exc:
            self.connections.refuse_link(link, str(exc))
            return
        if identity.participant != client_id:
            self.connections.refuse_link(link, "unknown or ended session")
            return
        self.connections.open(link, identity)

    def on_message(self, index: int, delivery: Delivery) -> None:
        self.connections.receive(index, delivery.message)

    def on_disconnect(self, index: int, reason: str) -> None:
        drops = self.channels.drops(index)
        if drops is not None:  # keep its message-layer drop counts (the connection goes now)
            self.departed_message_drops.update(drops)
        self.channels.on_disconnect(index, reason)
        self.connections.closed(index, reason)

    def on_dropped(self, index: int, reason: str) -> None:
        self.counters[f"dropped_{reason}"] += 1

    # --- for the server ----------------------------------------------------------------------------------

    def disconnect(self, index: int) -> None:
        """Disconnect a client slot now (``UdpLink.close``)."""
        if self.protocol is not None:
            self.protocol.core.disconnect(index, self.protocol.now())

    def flush(self, indices: Iterable[int], now: float) -> None:
        """Send the queued packets of these client slots now (publishing, after a room's snapshots)."""
        if self.channels.core is not None:
            self.channels.flush(indices, now)

    def packet_stats(self) -> dict[str, int]:
        """The packet layer's counters (packets and bytes in and out)."""
        return self.protocol.core.stats if self.protocol is not None else {}

    def drop_counts(self) -> Counter[str]:
        """Dropped traffic by reason: the packet layer's (netcode core) plus the message layer's (each
        connection's channels: e.g. ``message_invalid`` for a payload that decrypted but is no valid message)."""
        drops: Counter[str] = Counter(self.protocol.core.drops if self.protocol is not None else {})
        drops.update(self.departed_message_drops)
        for index in self.channels.peers:
            drops.update(self.channels.drops(index) or {})
        return drops

    def disconnect_all(self) -> None:
        """Disconnect every client (redundant disconnect packets), e.g. before shutting down."""
        if self.protocol is not None:
            self.protocol.disconnect_all()

    def stop_listening(self) -> Any:
        """Close the socket; returns the port's Deferred (or None when not listening)."""
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
