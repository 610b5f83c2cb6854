"""Channels over the endpoints: reliable-ordered and unreliable messages for each connected peer.

The endpoints (netcode.transport.server, netcode.transport.client) move encrypted payload packets; a Connection
(netcode.messaging.connection) turns payloads into messages. These classes keep one Connection per connected peer,
feed it what arrives, send what it generates each tick, and disconnect a peer that stopped acking,
floods, or let its reliable backlog overflow, with the Connection's reason.

Wire them as the endpoint's callbacks, attach the endpoint, then call ``update(now)`` every tick:

    channels = ServerChannels(on_message=...)
    core = ServerCore(config, send, **channels.callbacks())
    channels.attach(core)

or, with the twisted shell (netcode.transport.udp), which then ticks them itself:

    protocol, port = listen_server(reactor, config, 40000, "::1", **channels.callbacks())
    channels.attach(protocol.core)
    protocol.tick_hooks.append(channels.update)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from netcode.messaging.channels import BacklogFull, Channel
from netcode.messaging.connection import Connection, ConnectionConfig, ConnectionStats, Delivery
from netcode.messaging.messages import Message, MessageRegistry
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.server import ServerCore

Outgoing = bytes | bytearray | memoryview | Message


class ServerChannels:
    """One Connection per connected client of a ServerCore.

    on_message(client_index, delivery) gets every delivered message; on_dropped(client_index, reason) is
    told when a peer is disconnected for misbehaving (the core's on_disconnect also fires).
    """

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        *,
        registry: MessageRegistry | None = None,
        on_message: Callable[[int, Delivery], None] | None = None,
        on_dropped: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ConnectionConfig()
        self.registry = registry
        self.on_message = on_message
        self.on_dropped = on_dropped
        self.clock = clock
        self.core: ServerCore | None = None
        self._peers: dict[int, Connection] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The ServerCore callbacks this object needs (pass them to ServerCore or listen_server)."""
        return {"on_connect": self.on_connect, "on_disconnect": self.on_disconnect, "on_payload": self.on_payload}

    def attach(self, core: ServerCore) -> None:
        self.core = core

    def on_connect(self, index: int, client_id: int, user_data: bytes, address: object) -> None:
        self._peers[index] = Connection(self.config, registry=self.registry, now=self.clock())

    def on_disconnect(self, index: int, reason: str) -> None:
        self._peers.pop(index, None)

    def on_payload(self, index: int, payload: bytes) -> None:
        peer = self._peers.get(index)
        if peer is None:
            return
        for delivery in peer.receive_packet(payload, self.clock()):
            if self.on_message is not None:
                self.on_message(index, delivery)

    def send(self, index: int, channel: Channel, message: Outgoing) -> bool:
        """Queue a message for one client; False if it is not connected or its reliable backlog is full.

        An oversized message raises MessageTooLarge, a Message failing its schema MessageError: those are
        the caller's bugs, not the peer's.
        """
        peer = self._peers.get(index)
        if peer is None:
            return False
        try:
            peer.send(channel, message, self.clock())
        except BacklogFull:
            return False  # the peer is not acking; update() disconnects it if that persists
        return True

    def broadcast(self, channel: Channel, message: Outgoing) -> int:
        """Queue a message for every connected client; returns how many accepted it."""
        return sum(self.send(index, channel, message) for index in list(self._peers))

    def update(self, now: float) -> None:
        """Drop misbehaving peers, then send every peer's due packets through the core."""
        self.flush(list(self._peers), now)

    def flush(self, indices: Iterable[int], now: float) -> None:
        """``update`` for some clients only (e.g. a room's, right after its snapshots were queued)."""
        core = self.core
        if core is None:
            raise RuntimeError("ServerChannels.update before attach(core)")
        peers = self._peers
        for index in indices:
            peer = peers.get(index)
            if peer is None:
                continue
            if peer.should_disconnect(now):
                reason = peer.disconnect_reason or "connection_failed"
                core.disconnect(index, now)
                peers.pop(index, None)
                if self.on_dropped is not None:
                    self.on_dropped(index, reason)
                continue
            for packet in peer.generate_packets(now):
                core.send_payload(index, packet, now)

    def stats(self, index: int) -> ConnectionStats | None:
        peer = self._peers.get(index)
        return None if peer is None else peer.stats(self.clock())

    def drops(self, index: int) -> dict[str, int] | None:
        """A client's message-layer drop counts by reason (None if unknown): ``stats`` without its loss
        estimate, which walks the recent packets (a scrape asks for every connection's drops)."""
        peer = self._peers.get(index)
        return None if peer is None else dict(peer.drops)

    @property
    def peers(self) -> list[int]:
        return list(self._peers)


class ClientChannels:
    """The client's Connection to its server, alive while the ClientCore is connected."""

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        *,
        registry: MessageRegistry | None = None,
        on_message: Callable[[Delivery], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ConnectionConfig()
        self.registry = registry
        self.on_message = on_message
        self.clock = clock
        self.core: ClientCore | None = None
        self.connection: Connection | None = None
        self.disconnect_reason: str | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The ClientCore callbacks this object needs."""
        return {"on_payload": self.on_payload, "on_state_change": self.on_state_change}

    def attach(self, core: ClientCore) -> None:
        self.core = core

    def on_state_change(self, old: int, new: int) -> None:
        if new == ClientState.CONNECTED:
            self.connection = Connection(self.config, registry=self.registry, now=self.clock())
        elif old == ClientState.CONNECTED:
            self.connection = None

    def on_payload(self, payload: bytes) -> None:
        if self.connection is None:
            return
        for delivery in self.connection.receive_packet(payload, self.clock()):
            if self.on_message is not None:
                self.on_message(delivery)

    def send(self, channel: Channel, message: Outgoing) -> bool:
        """Queue a message for the server; False when not connected or the reliable backlog is full."""
        if self.connection is None:
            return False
        try:
            self.connection.send(channel, message, self.clock())
        except BacklogFull:
            return False
        return True

    def update(self, now: float) -> None:
        """Send due packets; disconnect (with the Connection's reason) from a server that stopped acking."""
        core, connection = self.core, self.connection
        if core is None or connection is None:
            return
        if connection.should_disconnect(now):
            self.disconnect_reason = connection.disconnect_reason or "connection_failed"
            core.disconnect(now)
            self.connection = None
            return
        for packet in connection.generate_packets(now):
            core.send_payload(packet, now)
