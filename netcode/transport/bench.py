"""Transport benchmark: one server process, one load-generator process, loopback only; prints JSON.

    python -m netcode.transport.bench [--clients 200] [--seconds 10] [--in-rate 90] [--out-rate 60] [--payload 1200]

The server (a twisted ServerProtocol in a child process) sends every connected client `--out-rate`
payloads of `--payload` bytes per second; each simulated client (a ClientCore on its own UDP socket, in
this process, driven by a plain epoll loop) sends `--in-rate` small payloads per second. Every server
payload echoes the newest client timestamp and how long the server held it, so the round trip excludes
the wait for the server's next send. The private key reaches the server on its stdin, never argv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import select
import socket
import struct
import subprocess
import sys
import time

from netcode.transport.address import Address
from netcode.transport.client import ClientCore, ClientState
from netcode.transport.connect_token import generate_connect_token
from netcode.transport.crypto import generate_key

PROTOCOL_ID = 0x5355524745525931  # "SURGERY1"
CLIENT_STAMP = struct.Struct("<d")  # client send time, unix seconds (compared with kernel arrival stamps)
SERVER_ECHO = struct.Struct("<dd")  # echoed client time, seconds the server held it
SOCKET_BUFFER = 1 << 20
# Linux SO_TIMESTAMPNS (not exported by Python's socket module): the kernel stamps each datagram's arrival,
# so the load generator's own queueing does not count against the server's round trip.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")
HANDSHAKE_TIMEOUT = 15.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netcode.transport.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200, help="simulated clients (default 200)")
    p.add_argument("--seconds", type=int, default=10, help="measured seconds (default 10)")
    p.add_argument("--in-rate", type=int, default=90, help="packets/s each client sends (90)")
    p.add_argument("--out-rate", type=int, default=60, help="packets/s the server sends each client (60)")
    p.add_argument("--payload", type=int, default=1200, help=f"server payload bytes ({SERVER_ECHO.size}..1200)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    return p


# --- the server process -----------------------------------------------------------------------------


def serve(out_rate: int, payload_size: int) -> int:
    """Child process: read the key from stdin, listen on 127.0.0.1, stream to clients, report on STOP."""
    from twisted.internet import reactor, stdio
    from twisted.internet.task import LoopingCall
    from twisted.protocols.basic import LineReceiver

    from netcode.transport.server import ServerConfig
    from netcode.transport.udp import free_udp_port, listen_server

    key = bytes.fromhex(sys.stdin.readline().strip())
    held: dict[int, tuple[float, float]] = {}  # client index -> (client stamp, when received)
    received = {"payloads": 0}
    sent = {"payloads": 0}

    def on_payload(index: int, payload: bytes) -> None:
        received["payloads"] += 1
        if len(payload) >= CLIENT_STAMP.size:
            held[index] = (CLIENT_STAMP.unpack_from(payload)[0], time.monotonic())

    def on_disconnect(index: int, reason: str) -> None:
        held.pop(index, None)

    bound = free_udp_port("127.0.0.1")
    config = ServerConfig(PROTOCOL_ID, key, [Address.from_host_port("127.0.0.1", bound)], max_clients=1024)
    protocol, port = listen_server(
        reactor, config, bound, "127.0.0.1", now_fn=time.monotonic, on_payload=on_payload, on_disconnect=on_disconnect
    )
    padding = bytes(payload_size - SERVER_ECHO.size)

    def stream() -> None:
        now = time.monotonic()
        core = protocol.core
        for index in core.connected_clients():
            stamp, at = held.get(index, (0.0, now))
            if core.send_payload(index, SERVER_ECHO.pack(stamp, now - at) + padding, now):
                sent["payloads"] += 1

    mark: dict[str, object] = {}

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:  # noqa: N802 (twisted's name)
            if line == b"MARK":
                mark.update(cpu=_cpu(), wall=time.monotonic(), rx=received["payloads"], tx=sent["payloads"])
            elif line == b"STOP":
                cpu, wall = _cpu(), time.monotonic()
                report = {
                    "cpu_seconds": cpu - mark.get("cpu", 0.0),
                    "wall_seconds": wall - mark.get("wall", wall),
                    "payloads_received": received["payloads"] - mark.get("rx", 0),
                    "payloads_sent": sent["payloads"] - mark.get("tx", 0),
                    "clients": protocol.core.client_count,
                    "drops": dict(protocol.core.drops),
                }
                self.sendLine(json.dumps(report).encode())
                reactor.callLater(0.05, reactor.stop)

    _widen_buffers(port.socket)
    stdio.StandardIO(Control())
    LoopingCall(stream).start(1.0 / out_rate, now=False)
    sys.stdout.write(f"READY {bound}\n")
    sys.stdout.flush()
    reactor.run()
    return 0


# --- the load generator (this process) --------------------------------------------------------------


class SimClient:
    """One simulated headset: a ClientCore on its own loopback UDP socket."""

    def __init__(self, token: bytes, now: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        _widen_buffers(self.sock)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.received = 0
        self.rtts: list[float] = []
        self._arrival = 0.0
        self.core = ClientCore(token, self._send, on_payload=self._on_payload, now=now)

    def _send(self, data: bytes, address: Address) -> None:
        # A full socket buffer is loss, which the report counts.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.sock.sendto(data, (str(address.ip), address.port))

    def _on_payload(self, payload: bytes) -> None:
        self.received += 1
        if len(payload) >= SERVER_ECHO.size:
            stamp, hold = SERVER_ECHO.unpack_from(payload)
            if stamp > 0.0:
                self.rtts.append(self._arrival - stamp - hold)

    def drain(self, now: float) -> None:
        while True:
            try:
                data, ancillary, _, (host, port) = self.sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            self._arrival = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= TIMESPEC.size:
                    seconds, nanoseconds = TIMESPEC.unpack_from(value)
                    self._arrival = seconds + nanoseconds * 1e-9
            self.core.receive(data, Address.from_host_port(host, port), now)


def run(args: argparse.Namespace) -> dict:
    key = generate_key()
    server = subprocess.Popen(
        [sys.executable, "-m", "netcode.transport.bench", "--serve", "--out-rate", str(args.out_rate), "--payload",
         str(args.payload)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        server.stdin.write(key.hex() + "\n")
        server.stdin.flush()
        ready = server.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "READY":
            raise SystemExit(f"server did not start: {ready!r}")
        address = Address.from_host_port("127.0.0.1", int(ready[1]))
        return _load(args, key, address, server)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=5)


def _load(args: argparse.Namespace, key: bytes, address: Address, server: subprocess.Popen) -> dict:
    now = time.perf_counter()
    clients = []
    for client_id in range(args.clients):
        token = generate_connect_token(
            private_key=key, protocol_id=PROTOCOL_ID, client_id=client_id + 1, server_addresses=[address],
            expire_seconds=60, timeout_seconds=5,
        ).encode()  # fmt: skip
        clients.append(SimClient(token, now))
    by_fd = {c.sock.fileno(): c for c in clients}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    for c in clients:
        c.core.connect(now)

    def pump(until: float, sending: bool, t0: float = 0.0) -> int:
        """Run the loop until `until`; when sending, keep every client at its input rate. Returns sends."""
        sends = 0
        next_update = 0.0
        total_rate = args.in_rate * len(clients)
        while True:
            now = time.perf_counter()
            if now >= until:
                return sends
            if sending:
                due = int((now - t0) * total_rate) - sends
                for _ in range(max(0, due)):
                    c = clients[sends % len(clients)]
                    c.core.send_payload(CLIENT_STAMP.pack(time.time()), now)
                    sends += 1
            if now >= next_update:
                for c in clients:
                    c.core.update(now)
                next_update = now + 0.01
            for fd, _ in poller.poll(0.0005):
                by_fd[fd].drain(time.perf_counter())

    deadline = time.perf_counter() + HANDSHAKE_TIMEOUT
    while time.perf_counter() < deadline and any(c.core.state != ClientState.CONNECTED for c in clients):
        pump(time.perf_counter() + 0.05, sending=False)
    connected = sum(c.core.state == ClientState.CONNECTED for c in clients)
    for c in clients:
        c.received, c.rtts = 0, []
    server.stdin.write("MARK\n")
    server.stdin.flush()
    cpu0, t0 = _cpu(), time.perf_counter()
    sends = pump(t0 + args.seconds, sending=True, t0=t0)
    cpu1, t1 = _cpu(), time.perf_counter()
    server.stdin.write("STOP\n")
    server.stdin.flush()
    # In flight at STOP: let the last packets land before counting.
    pump(time.perf_counter() + 0.1, sending=False)
    report = json.loads(server.stdout.readline() or "{}")
    elapsed = t1 - t0
    rtts = sorted(r for c in clients for r in c.rtts)
    received = sum(c.received for c in clients)
    loss_in = 1.0 - report.get("payloads_received", 0) / sends if sends else 0.0
    loss_out = 1.0 - received / report["payloads_sent"] if report.get("payloads_sent") else 0.0
    p50, p99 = (_percentile(rtts, q) * 1e3 for q in (0.5, 0.99)) if rtts else (None, None)
    cpu = report.get("cpu_seconds", 0.0) / max(report.get("wall_seconds", elapsed), 1e-9)
    result = {
        "benchmark": "netcode.transport.bench",
        "config": {"clients": args.clients, "seconds": args.seconds, "in_rate": args.in_rate,
                   "out_rate": args.out_rate, "payload_bytes": args.payload},
        "clients_connected": connected,
        "packets_in_per_second": round(report.get("payloads_received", 0) / elapsed, 1),
        "packets_out_per_second": round(report.get("payloads_sent", 0) / elapsed, 1),
        "loss_in": round(max(loss_in, 0.0), 5),
        "loss_out": round(max(loss_out, 0.0), 5),
        "rtt_ms": {"p50": _round(p50), "p99": _round(p99), "samples": len(rtts)},
        "server_cpu_cores": round(cpu, 3),
        "load_generator_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "server_drops": report.get("drops", {}),
    }  # fmt: skip
    result["goal"] = {
        "target": "200 clients, no loss, p99 round trip < 5 ms, server <= 1 core",
        "passed": bool(
            connected >= 200 and result["loss_in"] == 0 and result["loss_out"] == 0
            and p99 is not None and p99 < 5.0 and cpu <= 1.0
        ),
    }  # fmt: skip
    return result


def _widen_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # Above the kernel's cap the cap applies; the report shows any resulting loss.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("clients", "seconds", "in_rate", "out_rate"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not SERVER_ECHO.size <= args.payload <= 1200:
        parser.error(f"--payload must be in [{SERVER_ECHO.size}, 1200]")
    if args.serve:
        return serve(args.out_rate, args.payload)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
