"""Run a twisted netcode echo server (test helper, started in a subprocess by test_udp.py).

Usage: ``python twisted_echo_server.py INTERFACE PROTOCOL_ID_HEX PRIVATE_KEY_HEX SECONDS``.
Prints ``PORT <n>`` once listening; echoes every payload back prefixed with ``echo:``. Also connects one
twisted ``ClientProtocol`` to itself and prints ``SELF <state>`` when that client has its echo back.
Prints ``STATS <json>`` and exits after SECONDS (or once the test closes stdin).
"""

import json
import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol

from netcode.transport.address import Address
from netcode.transport.connect_token import generate_connect_token
from netcode.transport.server import ServerConfig
from netcode.transport.udp import connect_client, free_udp_port, listen_server


class _StdinWatcher(Protocol):
    def __init__(self, on_close: "object") -> None:
        self.on_close = on_close

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802 (twisted API name)
        self.on_close()  # type: ignore[operator]


def main() -> None:
    interface, protocol_hex, key_hex, seconds = sys.argv[1:5]
    protocol_id, private_key = int(protocol_hex, 16), bytes.fromhex(key_hex)
    holder: dict[str, object] = {}

    def on_payload(index: int, payload: bytes) -> None:
        holder["server"].send_payload(index, b"echo:" + payload)  # type: ignore[attr-defined]

    number = free_udp_port(interface)
    public = Address.from_host_port(interface, number)
    server, _ = listen_server(
        reactor, ServerConfig(protocol_id, private_key, [public]), number, interface, on_payload=on_payload
    )
    holder["server"] = server
    print(f"PORT {number}", flush=True)

    token = generate_connect_token(
        private_key=private_key,
        protocol_id=protocol_id,
        client_id=999,
        server_addresses=[public],
        expire_seconds=60,
        timeout_seconds=5,
    ).encode()
    got: list[bytes] = []

    def on_state(old: int, new: int) -> None:
        if new == 3:
            client.send_payload(b"self")

    def on_client_payload(payload: bytes) -> None:
        got.append(payload)
        print(f"SELF {client.core.state.name} {payload.decode()}", flush=True)

    client, _ = connect_client(reactor, token, on_payload=on_client_payload, on_state_change=on_state)

    def finish_when_self_echoed() -> None:
        """stdin closed: stop once our own client has its echo (the SECONDS deadline still bounds it)."""
        if got:
            finish()
        else:
            reactor.callLater(0.05, finish_when_self_echoed)

    def finish() -> None:
        if not reactor.running or holder.get("done"):
            return
        holder["done"] = True
        core = server.core
        print("STATS " + json.dumps({"drops": dict(core.drops), "stats": dict(core.stats)}), flush=True)
        reactor.stop()

    stdio.StandardIO(_StdinWatcher(finish_when_self_echoed))
    reactor.callLater(float(seconds), finish)
    reactor.run()


if __name__ == "__main__":
    main()
