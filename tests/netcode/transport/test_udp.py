"""Real UDP round trips on loopback (IPv4 127.0.0.1 and IPv6 ::1).

The cores are driven by plain sockets in a bounded loop (count and wall time), which keeps the tests free
of a global twisted reactor; one test runs the twisted ``ServerProtocol`` (and a twisted ``ClientProtocol``)
in a subprocess and talks to it from a socket-driven ``ClientCore``.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netcode.transport.address import Address
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.server import ServerConfig, ServerCore

from .endpoint_helpers import PRIVATE_KEY, PROTOCOL_ID, make_token

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tests" / "netcode" / "transport" / "twisted_echo_server.py"


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _ipv6_available(), reason="no IPv6"))]


def _socket(host: str) -> tuple[socket.socket, Address]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock, Address.from_host_port(host, sock.getsockname()[1])


def _sender(sock: socket.socket):
    def send(data: bytes, address: Address) -> None:
        sock.sendto(data, (str(address.ip), address.port))

    return send


def _pump(endpoints: dict[socket.socket, ServerCore | ClientCore], until, seconds: float = 3.0) -> bool:
    """Receive, dispatch and update until ``until()`` holds; bounded by wall time and iterations."""
    deadline = time.monotonic() + seconds
    for _ in range(100_000):
        if until():
            return True
        now = time.monotonic()
        if now > deadline:
            return False
        readable, _, _ = select.select(list(endpoints), [], [], 0.005)
        for sock in readable:
            data, addr = sock.recvfrom(2048)
            endpoints[sock].receive(data, Address.from_host_port(addr[0], addr[1]), time.monotonic())
        for core in endpoints.values():
            core.update(time.monotonic())
    return until()


@pytest.mark.parametrize("host", HOSTS)
def test_loopback_handshake_payloads_and_disconnect(host: str) -> None:
    server_sock, server_address = _socket(host)
    client_sock, client_address = _socket(host)
    with server_sock, client_sock:
        payloads: list[tuple[int, bytes]] = []
        disconnects: list[tuple[int, str]] = []
        config = ServerConfig(PROTOCOL_ID, PRIVATE_KEY, [server_address], max_clients=8)
        server = ServerCore(
            config,
            _sender(server_sock),
            on_payload=lambda i, p: payloads.append((i, p)),
            on_disconnect=lambda i, r: disconnects.append((i, r)),
            now=time.monotonic(),
        )
        received: list[bytes] = []
        client = ClientCore(
            make_token(servers=[server_address]), _sender(client_sock), on_payload=received.append, now=time.monotonic()
        )
        endpoints = {server_sock: server, client_sock: client}
        client.connect(time.monotonic())
        assert _pump(endpoints, lambda: client.state == ClientState.CONNECTED)
        assert server.client_address(client.client_index) == client_address
        for i in range(20):
            client.send_payload(b"up%d" % i, time.monotonic())
            server.send_payload(client.client_index, b"down%d" % i + bytes(1000), time.monotonic())
        assert _pump(endpoints, lambda: len(payloads) == 20 and len(received) == 20)
        assert [p for _, p in payloads] == [b"up%d" % i for i in range(20)]
        client.disconnect(time.monotonic())
        assert _pump(endpoints, lambda: server.client_count == 0)
        assert disconnects == [(0, "client_disconnect")]


def test_twisted_server_in_a_subprocess() -> None:
    """The twisted shell serves a socket-driven ClientCore (echo) and its own twisted ClientProtocol."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "127.0.0.1", f"{PROTOCOL_ID:x}", PRIVATE_KEY.hex(), "30"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline().split()
        assert first[0] == "PORT", first
        server_address = Address.parse(f"127.0.0.1:{first[1]}")
        sock, _ = _socket("127.0.0.1")
        with sock:
            received: list[bytes] = []
            client = ClientCore(
                make_token(client_id=5, servers=[server_address]),
                _sender(sock),
                on_payload=received.append,
                now=time.monotonic(),
            )
            client.connect(time.monotonic())
            assert _pump({sock: client}, lambda: client.state == ClientState.CONNECTED, seconds=5.0)
            client.send_payload(b"hello", time.monotonic())
            assert _pump({sock: client}, lambda: bool(received), seconds=3.0)
            assert received == [b"echo:hello"]
            sock.sendto(b"garbage", (str(server_address.ip), server_address.port))
            client.disconnect(time.monotonic())
        out, err = proc.communicate(timeout=40)  # closes stdin: the server prints its stats and exits
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert lines["SELF"] == "CONNECTED echo:self", err
    stats = json.loads(lines["STATS"])
    assert stats["stats"]["connects"] == 2
    assert stats["drops"].get("too_small") == 1  # the 7-byte garbage datagram


def _loopback_server(host: str, max_clients: int = 8) -> tuple[socket.socket, Address, ServerCore]:
    sock, address = _socket(host)
    config = ServerConfig(PROTOCOL_ID, PRIVATE_KEY, [address], max_clients=max_clients)
    return sock, address, ServerCore(config, _sender(sock), now=time.monotonic())


def _loopback_client(host: str, token: bytes, route_to: Address | None = None) -> tuple[socket.socket, ClientCore]:
    """A socket-driven client; with route_to, every datagram goes there whatever the token names."""
    sock, _ = _socket(host)
    send = _sender(sock)
    if route_to is not None:
        forward = send

        def send(data: bytes, address: Address) -> None:
            forward(data, route_to)

    return sock, ClientCore(token, send, now=time.monotonic())


REFUSALS = {
    # name: (token arguments given the server's address, server drop reason)
    "wrong_key": (lambda a: {"servers": [a], "private_key": bytes(32)}, "token_invalid"),
    "expired": (lambda a: {"servers": [a], "create_timestamp": int(time.time()) - 100, "expire_seconds": 30},
                "token_expired"),
    "wrong_server_address": (lambda a: {"servers": [Address.from_host_port(str(a.ip), a.port + 1)]},
                             "server_address_not_in_token"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_loopback_refusals(case: str) -> None:
    """Real requests that the server must ignore: the client times out, nothing is sent back."""
    token_args, drop = REFUSALS[case]
    server_sock, server_address, server = _loopback_server("127.0.0.1")
    token = make_token(timeout_seconds=1, **token_args(server_address))
    client_sock, client = _loopback_client("127.0.0.1", token, route_to=server_address)
    with server_sock, client_sock:
        client.connect(time.monotonic())
        assert _pump({server_sock: server, client_sock: client}, lambda: client.state < 0, seconds=4.0)
        assert client.state == ClientState.CONNECTION_REQUEST_TIMED_OUT
        assert server.drops[drop] >= 1
        assert server.client_count == 0 and server.stats["packets_out"] == 0


def test_loopback_server_full_denies() -> None:
    server_sock, server_address, server = _loopback_server("127.0.0.1", max_clients=1)
    first_sock, first = _loopback_client("127.0.0.1", make_token(client_id=1, servers=[server_address]))
    second_sock, second = _loopback_client("127.0.0.1", make_token(client_id=2, servers=[server_address]))
    with server_sock, first_sock, second_sock:
        endpoints = {server_sock: server, first_sock: first, second_sock: second}
        first.connect(time.monotonic())
        assert _pump(endpoints, lambda: first.state == ClientState.CONNECTED)
        second.connect(time.monotonic())
        assert _pump(endpoints, lambda: second.state == ClientState.CONNECTION_DENIED)
        assert server.stats["denied_sent"] >= 1 and first.state == ClientState.CONNECTED


def test_loopback_replayed_packet_and_token_from_another_address_are_dropped() -> None:
    server_sock, server_address, server = _loopback_server("127.0.0.1")
    client_sock, client = _loopback_client("127.0.0.1", make_token(client_id=3, servers=[server_address]))
    spy_sock, _ = _socket("127.0.0.1")
    captured: list[bytes] = []
    send = client._send  # the test taps what the client puts on the wire

    def tapped(data: bytes, address: Address) -> None:
        captured.append(data)
        send(data, address)

    client._send = tapped
    with server_sock, client_sock, spy_sock:
        endpoints = {server_sock: server, client_sock: client}
        client.connect(time.monotonic())
        assert _pump(endpoints, lambda: client.state == ClientState.CONNECTED)
        payloads: list[bytes] = []
        server.on_payload = lambda i, p: payloads.append(p)
        client.send_payload(b"incision", time.monotonic())
        assert _pump(endpoints, lambda: payloads == [b"incision"])
        client_sock.sendto(captured[-1], (str(server_address.ip), server_address.port))  # replay it
        spy_sock.sendto(captured[0], (str(server_address.ip), server_address.port))  # the request, elsewhere
        # The request replayed from another address names a client that is connected: ignored, no reply.
        ok = _pump(
            endpoints, lambda: server.drops["replayed"] >= 1 and server.drops["client_id_already_connected"] >= 1
        )
        assert ok, dict(server.drops)
        with pytest.raises(BlockingIOError):
            spy_sock.recvfrom(2048)  # the spoofing address got nothing back
        assert payloads == [b"incision"] and server.client_count == 1


def test_tick_hooks_run_after_each_core_update() -> None:
    from twisted.internet.task import Clock

    from netcode.transport.udp import ServerProtocol

    clock = Clock()
    config = ServerConfig(PROTOCOL_ID, PRIVATE_KEY, [Address.parse("127.0.0.1:40000")])
    protocol = ServerProtocol(config, clock, update_hz=100, now_fn=clock.seconds)
    seen: list[float] = []
    protocol.tick_hooks.append(seen.append)
    protocol.startProtocol()
    for _ in range(5):
        clock.advance(0.01)
    protocol.stopProtocol()
    assert seen == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
