"""Thin twisted shells around ``ServerCore`` and ``ClientCore``: a UDP socket and a 100 Hz update loop.

All protocol logic lives in the sans-IO cores; these classes only translate twisted's ``(host, port)``
tuples to ``Address`` objects (cached, since parsing an IP costs microseconds per packet), feed the
cores the time and write their output straight on the transport's socket.

Clock: the cores' ``now`` comes from ``now_fn``, by default ``time.monotonic`` (immune to wall-clock
steps, which would otherwise time out every client at once; on Linux it is the same clock as
``time.perf_counter``). Code that calls ``protocol.core.send_payload(i, data, now)`` directly must pass
``protocol.now()`` (or the same clock); the shells' own ``send_payload`` methods do. The reactor only
schedules the update loop.

``datagramReceived`` never raises into the reactor: an unexpected exception (a bug, or an application
callback failing) is counted as the drop reason ``internal_error`` and logged with its type only, so no
packet bytes or keys reach the log.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall

from netcode.transport.address import Address
from netcode.transport.client import ClientCore
from netcode.transport.connect_token import ConnectToken, ConnectTokenError
from netcode.transport.server import ServerConfig, ServerCore

log = logging.getLogger(__name__)

UPDATE_HZ = 100.0
_ADDRESS_CACHE_LIMIT = 65536


class _AddressCache:
    """Two-way cache between twisted's ``(host, port)`` tuples and ``Address`` (cleared when it grows large)."""

    __slots__ = ("_from_tuple", "_to_tuple")

    def __init__(self) -> None:
        self._from_tuple: dict[tuple[str, int], Address] = {}
        self._to_tuple: dict[Address, tuple[str, int]] = {}

    def address(self, addr: tuple[str, int]) -> Address:
        address = self._from_tuple.get(addr)
        if address is None:
            if len(self._from_tuple) >= _ADDRESS_CACHE_LIMIT:
                self._from_tuple.clear()
            address = Address.from_host_port(addr[0], addr[1])
            self._from_tuple[(addr[0], addr[1])] = address
        return address

    def host_port(self, address: Address) -> tuple[str, int]:
        pair = self._to_tuple.get(address)
        if pair is None:
            if len(self._to_tuple) >= _ADDRESS_CACHE_LIMIT:
                self._to_tuple.clear()
            pair = (str(address.ip), address.port)
            self._to_tuple[address] = pair
        return pair


class _CoreProtocol(DatagramProtocol):
    """Shared plumbing: address cache, guarded receive, periodic update."""

    core: Any

    def __init__(
        self, clock: IReactorTime, update_hz: float = UPDATE_HZ, now_fn: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.now = now_fn
        self.update_hz = update_hz
        self._addresses = _AddressCache()
        self._loop: LoopingCall | None = None
        # Called with the time after each core update, e.g. ServerChannels.update (netcode.messaging.peers).
        self.tick_hooks: list[Callable[[float], None]] = []

    def _write(self, data: bytes, address: Address) -> None:
        """Send straight on the socket: twisted's transport.write re-checks the address on every call
        (~3.5 us a packet, a third of the send cost at 30,000 packets/s)."""
        if self.transport is None:
            return
        try:
            self.transport.socket.sendto(data, self._addresses.host_port(address))
        except (BlockingIOError, InterruptedError):
            self.core.stats["send_dropped"] += 1  # socket buffer full: the datagram is lost, as on the wire
        except OSError:
            self.core.stats["send_failed"] += 1  # e.g. ICMP port unreachable reported on this socket

    def startProtocol(self) -> None:  # noqa: N802 (twisted API name)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(1.0 / self.update_hz, now=False)

    def stopProtocol(self) -> None:  # noqa: N802 (twisted API name)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        try:
            now = self.now()
            self.core.update(now)
            for hook in self.tick_hooks:
                hook(now)
        except Exception as exc:  # never let a bug stop the update loop
            self.core.drops["internal_error"] += 1
            log.error("netcode update failed: %s", type(exc).__name__)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        try:
            self.core.receive(datagram, self._addresses.address(addr), self.now())
        except Exception as exc:  # never raise into the reactor
            self.core.drops["internal_error"] += 1
            log.error("netcode receive failed: %s", type(exc).__name__)


class ServerProtocol(_CoreProtocol):
    """A netcode server on one UDP socket; ``self.core`` is its ``ServerCore``."""

    def __init__(
        self,
        config: ServerConfig,
        clock: IReactorTime,
        *,
        on_connect: Callable[..., None] | None = None,
        on_disconnect: Callable[..., None] | None = None,
        on_payload: Callable[..., None] | None = None,
        update_hz: float = UPDATE_HZ,
        now_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock, update_hz, now_fn)
        self.core = ServerCore(
            config,
            self._write,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_payload=on_payload,
            now=self.now(),
        )

    def send_payload(self, client_index: int, payload: bytes) -> bool:
        """Send a payload to a connected client now."""
        return self.core.send_payload(client_index, payload, self.now())

    def disconnect_all(self) -> None:
        """Disconnect every client (redundant disconnect packets), e.g. before shutting down."""
        self.core.disconnect_all(self.now())


def listen_server(
    reactor: Any,
    config: ServerConfig,
    port: int,
    interface: str = "127.0.0.1",
    *,
    update_hz: float = UPDATE_HZ,
    now_fn: Callable[[], float] = time.monotonic,
    **callbacks: Callable[..., None],
) -> tuple[ServerProtocol, IListeningPort]:
    """Listen for netcode clients on ``interface:port`` (IPv4 or IPv6 literal; port 0 = any free port).

    ``callbacks`` are ``on_connect``, ``on_disconnect``, ``on_payload`` as for ``ServerCore``.
    """
    protocol = ServerProtocol(config, reactor, update_hz=update_hz, now_fn=now_fn, **callbacks)
    listening = IReactorUDP(reactor).listenUDP(port, protocol, interface=interface, maxPacketSize=2048)
    return protocol, listening


class ClientProtocol(_CoreProtocol):
    """A netcode client on its own UDP socket; ``self.core`` is its ``ClientCore``."""

    def __init__(
        self,
        token_bytes: bytes,
        clock: IReactorTime,
        *,
        on_payload: Callable[[bytes], None] | None = None,
        on_state_change: Callable[..., None] | None = None,
        update_hz: float = UPDATE_HZ,
        now_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock, update_hz, now_fn)
        self.core = ClientCore(
            token_bytes, self._write, on_payload=on_payload, on_state_change=on_state_change, now=self.now()
        )

    def startProtocol(self) -> None:  # noqa: N802 (twisted API name)
        super().startProtocol()
        self.core.connect(self.now())

    def send_payload(self, payload: bytes) -> bool:
        """Send a payload to the server now (only when connected)."""
        return self.core.send_payload(payload, self.now())

    def disconnect(self) -> None:
        """Send redundant disconnect packets and stop."""
        self.core.disconnect(self.now())


def connect_client(
    reactor: Any,
    token_bytes: bytes,
    *,
    interface: str | None = None,
    update_hz: float = UPDATE_HZ,
    now_fn: Callable[[], float] = time.monotonic,
    **callbacks: Callable[..., None],
) -> tuple[ClientProtocol, IListeningPort]:
    """Open a client socket on a free port and start connecting with ``token_bytes``.

    The socket's family follows the token's first server address (``interface`` defaults to the
    wildcard of that family); tokens mixing IPv4 and IPv6 servers need one client per family.
    ``callbacks`` are ``on_payload`` and ``on_state_change`` as for ``ClientCore``.
    """
    if interface is None:
        try:
            first = ConnectToken.decode(token_bytes).server_addresses[0]
        except ConnectTokenError:  # the core reports INVALID_CONNECT_TOKEN on connect
            first = None
        interface = "::" if first is not None and isinstance(first.ip, IPv6Address) else "0.0.0.0"
    protocol = ClientProtocol(token_bytes, reactor, update_hz=update_hz, now_fn=now_fn, **callbacks)
    listening = IReactorUDP(reactor).listenUDP(0, protocol, interface=interface, maxPacketSize=2048)
    return protocol, listening


def free_udp_port(host: str) -> int:
    """A UDP port on `host` that nobody holds right now: a server whose tokens must name its port before
    it listens (port 0 in the settings) picks one this way."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
