"""In-memory network and fake clock for driving ServerCore and ClientCore without sockets (test helper)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from netcode.transport.address import Address
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.connect_token import generate_connect_token
from netcode.transport.server import ServerConfig, ServerCore

PROTOCOL_ID = 0x5EED_0102
PRIVATE_KEY = bytes(range(1, 33))
SERVER = Address.parse("127.0.0.1:40000")
CLIENT_A = Address.parse("127.0.0.2:50000")
CLIENT_B = Address.parse("127.0.0.3:50001")
USER_DATA = b"surgeon:alice;role=lead"


def make_token(
    client_id: int = 1,
    servers: list[Address] | None = None,
    *,
    private_key: bytes = PRIVATE_KEY,
    expire_seconds: int = 30,
    timeout_seconds: int = 5,
    create_timestamp: int | None = None,
    user_data: bytes = USER_DATA,
) -> bytes:
    return generate_connect_token(
        private_key=private_key,
        protocol_id=PROTOCOL_ID,
        client_id=client_id,
        server_addresses=servers or [SERVER],
        expire_seconds=expire_seconds,
        timeout_seconds=timeout_seconds,
        create_timestamp=create_timestamp,
        user_data=user_data,
    ).encode()


@dataclass
class Net:
    """Delivers datagrams between endpoints instantly (FIFO) with a shared fake clock.

    Every datagram is logged as (source, destination, bytes); ``muted`` sources are dropped on send,
    ``tap`` (if set) sees each datagram before delivery.
    """

    now: float = 0.0
    endpoints: dict[Address, ServerCore | ClientCore] = field(default_factory=dict)
    queue: deque[tuple[Address, Address, bytes]] = field(default_factory=deque)
    log: list[tuple[Address, Address, bytes]] = field(default_factory=list)
    muted: set[Address] = field(default_factory=set)
    tap: Callable[[Address, Address, bytes], None] | None = None

    def sender(self, source: Address) -> Callable[[bytes, Address], None]:
        def send(data: bytes, destination: Address) -> None:
            self.log.append((source, destination, data))
            if source not in self.muted:
                self.queue.append((source, destination, data))

        return send

    def flush(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            source, destination, data = self.queue.popleft()
            if self.tap is not None:
                self.tap(source, destination, data)
            endpoint = self.endpoints.get(destination)
            if endpoint is not None:
                endpoint.receive(data, source, self.now)
        raise AssertionError("network did not settle")

    def run(self, seconds: float, dt: float = 0.01) -> None:
        """Advance the clock in ``dt`` steps, updating every endpoint and delivering between steps."""
        for _ in range(round(seconds / dt)):
            self.now += dt
            for endpoint in list(self.endpoints.values()):
                endpoint.update(self.now)
            self.flush()


@dataclass
class Events:
    """Records server callbacks."""

    connects: list[tuple[int, int, bytes, Address]] = field(default_factory=list)
    disconnects: list[tuple[int, str]] = field(default_factory=list)
    payloads: list[tuple[int, bytes]] = field(default_factory=list)

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_connect": lambda *a: self.connects.append(a),
            "on_disconnect": lambda *a: self.disconnects.append(a),
            "on_payload": lambda *a: self.payloads.append(a),
        }


def make_server(net: Net, address: Address = SERVER, events: Events | None = None, **config: object) -> ServerCore:
    cfg = ServerConfig(protocol_id=PROTOCOL_ID, private_key=PRIVATE_KEY, public_addresses=[address], **config)
    server = ServerCore(cfg, net.sender(address), now=net.now, **(events.callbacks() if events else {}))
    net.endpoints[address] = server
    return server


def make_client(net: Net, token: bytes, address: Address = CLIENT_A) -> tuple[ClientCore, list[bytes]]:
    received: list[bytes] = []
    client = ClientCore(token, net.sender(address), on_payload=received.append, now=net.now)
    net.endpoints[address] = client
    return client, received


def connect(net: Net, client: ClientCore, seconds: float = 1.0) -> None:
    client.connect(net.now)
    net.flush()
    for _ in range(round(seconds / 0.01)):
        if client.state == ClientState.CONNECTED:
            return
        net.run(0.01)
