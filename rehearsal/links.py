"""The Link seam: every connected client reaches the server through a ``Link``, whatever carries its bytes.

A transport (the netcode UDP server, a WebSocket endpoint) makes one Link per connected client and calls
``Connections.open(link, identity)`` once the client proved who it is, ``Connections.receive(link.key,
message)`` for each message and ``Connections.closed(link.key, reason)`` when it went away. The server only
ever talks back through the Link: ``send`` a message on a channel, read its ``stats``, ``flush`` queued
packets at the end of a tick, ``close`` it.

Keys are unique per process: UDP links use the netcode client index (0..max_clients-1, see ``UdpLink``);
every other transport takes its keys from ``next_link_key()`` (from ``1 << 20`` on, so the two never meet).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Protocol

from netcode.messaging.channels import Channel
from netcode.messaging.connection import ConnectionStats
from netcode.messaging.messages import Message
from netcode.messaging.peers import ServerChannels

FIRST_LINK_KEY = 1 << 20  # above any netcode client index (max_clients is far below this)
UDP = "udp"
WEBSOCKET = "websocket"
WEBTRANSPORT = "webtransport"  # a browser link whose unreliable messages go as WebTransport datagrams (lossy)
# Transports that deliver every frame written, in order, to a client that decodes each snapshot on arrival: a
# snapshot written to such a link is the client's baseline at once, no ack needed (a WebSocket over TCP).
IN_ORDER = frozenset({WEBSOCKET})


class Link(Protocol):
    """One connected client as the server sees it (see the module doc)."""

    key: int  # unique per process
    transport: str  # "udp" | "websocket" | "webtransport"

    def send(self, channel: Channel, message: Message | bytes) -> bool:
        """Queue a message (or its encoded bytes) on a channel; False when it was not accepted (as
        ``ServerChannels.send``: no such client, or its reliable backlog is full)."""
        ...

    def stats(self) -> ConnectionStats | None:
        """RTT, loss and queue sizes of the connection (None when the transport keeps none)."""
        ...

    def flush(self, now: float) -> None:
        """Send what is queued now rather than at the transport's next update (no-op where nothing queues)."""
        ...

    def close(self, reason: str) -> None:
        """Disconnect now; the transport reports it with ``Connections.closed`` as for any disconnect."""
        ...


_keys = itertools.count(FIRST_LINK_KEY)


def next_link_key() -> int:
    """A fresh link key for a transport other than UDP (unique in this process, >= ``FIRST_LINK_KEY``)."""
    return next(_keys)


class UdpLink:
    """A netcode client slot: its ``ServerChannels`` connection, keyed by the client index.

    ``send`` is ``ServerChannels.send`` with the index bound (a C-level partial: publishing calls it for every
    client every tick). The per-tick flush of a room's UDP links is one ``ServerChannels.flush(indices, now)``
    call (``LiveRoom.udp_keys``); ``flush`` here is for one link alone."""

    __slots__ = ("_channels", "_disconnect", "key", "send", "transport")

    def __init__(self, channels: ServerChannels, index: int, disconnect: Callable[[int], None]) -> None:
        self.key = index
        self.transport = UDP
        self._channels = channels
        self._disconnect = disconnect
        self.send: Callable[[Channel, Message | bytes], bool] = partial(channels.send, index)

    def stats(self) -> ConnectionStats | None:
        return self._channels.stats(self.key)

    def flush(self, now: float) -> None:
        self._channels.flush((self.key,), now)

    def close(self, reason: str) -> None:
        self._disconnect(self.key)

    def __repr__(self) -> str:
        return f"UdpLink({self.key})"
