"""Scripted headset bots for the rehearsal server, and the plumbing to run one on loopback.

What is here (shared by ``rehearsal.demo`` and usable from tests):

* ``ServerProcess``: ``rehearsal.server.serve`` in a subprocess (ports 0; the log line tells which), with
  its log read by a thread so no wait blocks on a pipe; ``wait_listening`` returns the UDP/HTTP ports.
* ``post`` / ``get``: a JSON POST to the HTTP API, a GET of an ops or admin endpoint (admin credential
  as a bearer token).
* ``Headset``: a bot built on the reference thin client (``netcode.thin_client.ThinClient``: input sender,
  clock sync, snapshot decoder with acks, interpolation, held-tissue prediction) over netcode ``ClientCore``
  + ``ClientChannels`` on a non-blocking UDP socket on 127.0.0.1, plus reliable ``command`` messages; it
  counts received bytes, snapshots and events.
* ``pump``: service a team of headsets until a condition holds (bounded by time and iterations).

Everything is bounded and loopback only.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from netcode.messaging.channels import Channel
from netcode.messaging.connection import Delivery
from netcode.messaging.messages import Message
from netcode.messaging.peers import ClientChannels
from netcode.protocol.poses import IDENTITY, RigidPose
from netcode.sync.snapshot import SnapshotError
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.thread_polyline import ThreadError, read_thread_header
from netcode.thin_client.client import (
    SNAPSHOT_MESSAGES,
    THREAD_MESSAGES,
    SnapshotDecoding,
    ThinClient,
    ThinClientConfig,
)
from netcode.transport.address import Address
from netcode.transport.client import ClientCore, ClientState
from rehearsal.wire import DEVICE_OF_HAND, DEVICE_RIGHT, REHEARSAL_REGISTRY, to_wire_quat

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 120.0  # a cold numba cache compiles the kernels before the server listens (~20 s)
SERVER_SCRIPT = """
import sys
from pathlib import Path
from rehearsal.server import serve
from rehearsal.settings import load_settings
settings = load_settings(None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0, drain_seconds=sys.argv[2])
sys.exit(serve(settings))
"""
KEEP_ACKS = 64  # input acks kept in ``Headset.messages`` (one per server tick; the thin client consumes them)
LISTENING = re.compile(r"listening udp=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)")


class ServerProcess:
    """The server subprocess; its log lines are read by a thread so no wait can block on a pipe."""

    def __init__(
        self,
        data_dir: Path,
        echo: Callable[[str], None] | None = None,
        drain_seconds: float = 5.0,
        *,
        script: str = SERVER_SCRIPT,
        script_args: Sequence[str] | None = None,
    ) -> None:
        """``script`` (run with ``python -c``) starts the server; its arguments default to the data directory
        and the drain seconds, which is what SERVER_SCRIPT reads (a variant must drain in ``drain_seconds``)."""
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        if "NUMBA_CACHE_DIR" in os.environ:
            env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
        self.data_dir = data_dir
        self.echo = echo
        self.drain_seconds = drain_seconds
        self.udp_port = 0
        self.http_port = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *(script_args or (str(data_dir), str(drain_seconds)))],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)

    def _take(self, line: str) -> None:
        self.lines.append(line)
        if self.echo is not None:
            self.echo(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern, seconds: float) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self._take(line)
            match = pattern.search(line)
            if match:
                return match
        raise RuntimeError(f"server never logged {pattern.pattern!r}; log:\n{''.join(self.lines)}")

    def wait_listening(self, seconds: float = STARTUP_SECONDS) -> tuple[int, int]:
        match = self.wait_for(LISTENING, seconds)
        self.udp_port, self.http_port = int(match.group(1)), int(match.group(2))
        return self.udp_port, self.http_port

    def credential(self) -> str:
        return (self.data_dir / "admin_credential").read_text().strip()

    def log(self) -> str:
        while not self._queue.empty():
            self._take(self._queue.get_nowait())
        return "".join(self.lines)

    def stop(self) -> int:
        """SIGTERM (the server drains), then SIGKILL after drain_seconds + 15 s; the exit code (-9 if killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=self.drain_seconds + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return -9


def post(port: int, path: str, body: dict, credential: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(port: int, path: str, credential: str | None = None) -> tuple[int, bytes]:
    """A GET on the HTTP side (ops endpoints, the admin API); returns the status and the raw body."""
    headers = {} if credential is None else {"Authorization": f"Bearer {credential}"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Headset:
    """A socket-driven bot built on the reference thin client (``netcode.thin_client.ThinClient``).

    The netcode core and channels carry the datagrams; what the thin client handles goes to it: state-sync
    messages (``ThinClient.on_snapshot_message``) into its snapshot decoder (``decoder``, a ``SnapshotDecoder``
    unless another is given) and from there into its interpolation buffers; input acks, grasps and releases
    (``ThinClient.dispatch``) into its input sender and clock sync and its held-tissue prediction. ``send_pose``
    tracks a frame through it (the redundant input packet); ``flush`` sends its ``snap_ack``. A room's suture
    (``snap_suture``, ``snap_thread``, SNAPSHOT.md section 6) goes to the thin client's thread decoder, and
    ``flush`` sends its ``thread_ack`` too, so the server sends the bot deltas of the thread, as to a headset.
    The bot's own instruments (the welcome's ``hands``) are its own objects, so ``client.render_state`` draws
    them tracked. Beside that it keeps a log of what arrived (messages by type, event kinds, bytes, snapshot
    times, thread frames full and delta).
    """

    def __init__(
        self,
        token: bytes,
        name: str = "",
        devices: Sequence[int] = (DEVICE_RIGHT,),
        *,
        decoder: SnapshotDecoding | None = None,
    ) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.client = ThinClient(
            ThinClientConfig(devices=tuple(devices)), decoder if decoder is not None else SnapshotDecoder()
        )
        self.channels = ClientChannels(registry=REHEARSAL_REGISTRY, on_message=self._deliver)
        self.core = ClientCore(token, self._send, now=time.monotonic(), **self.channels.callbacks())
        self.channels.attach(self.core)
        self.messages: dict[str, list[dict]] = defaultdict(list)
        self.messages_kept = 0  # how many went into ``messages`` so far (a reader can tell when there is news)
        self.events: Counter[str] = Counter()
        self.snapshots_applied = 0
        self.snapshot_errors = 0
        self.undecoded = 0  # deliveries the registry could not decode (the server must never send one)
        self.snapshot_times: list[float] = []  # server_time of each applied snapshot (last 256)
        self.thread_frames: Counter[str] = Counter()  # snap_thread payloads: "full", "delta", "invalid"
        self.thread_bytes: Counter[str] = Counter()  # their payloads' bytes, by the same kinds
        self.bytes_received = 0
        self.bytes_sent = 0
        # hooks for a client model riding on this bot (e.g. a second ThinClient in a test)
        self.on_delivery: Callable[[Delivery], None] | None = None
        self.on_snapshots: Callable[[list], None] | None = None
        self._last_source: tuple | None = None
        self._last_address: Address | None = None
        self._destination: tuple[Address | None, tuple[str, int] | None] = (None, None)  # (address, host-port)
        self.core.connect(time.monotonic())

    @property
    def decoder(self) -> SnapshotDecoding:
        """The thin client's snapshot decoder (the scene as the server's snapshots built it)."""
        return self.client.decoder

    @decoder.setter
    def decoder(self, decoder: SnapshotDecoding) -> None:
        """Another decoder (e.g. one that records what it applies), set before anything is received."""
        self.client.decoder = decoder

    @property
    def connected(self) -> bool:
        return self.core.state == ClientState.CONNECTED

    @property
    def welcome(self) -> dict | None:
        return self.messages["welcome"][0] if self.messages["welcome"] else None

    def _send(self, data: bytes, address: Address) -> None:
        self.bytes_sent += len(data)
        self.sock.sendto(data, self._host_port(address))

    def _host_port(self, address: Address) -> tuple[str, int]:
        """``sendto``'s pair for the netcode core's destination; cached, as formatting an IP is microseconds."""
        cached, pair = self._destination
        if address is not cached or pair is None:
            pair = address.host_port()
            self._destination = (address, pair)
        return pair

    def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self.undecoded += 1
            return
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        if message.type in SNAPSHOT_MESSAGES:
            self._snapshot_message(delivery.data)
            if message.type == "snapshot":
                return  # counted (snapshots_applied, snapshot_times), not kept: 60 a second
        elif message.type in THREAD_MESSAGES:
            self.client.dispatch(delivery, time.monotonic())  # a bad one is counted in client.dropped
            if message.type == "snap_thread":
                self._count_thread(message.fields["data"])
                return  # counted (thread_frames, thread_bytes), not kept: 60 a second
        kept = self.messages[message.type]
        kept.append(message.fields)
        self.messages_kept += 1
        if message.type == "welcome":
            self._own_hands(message.fields.get("hands") or {})
        elif message.type == "event":
            self.events[message.fields["kind"]] += 1
        elif message.type in ("input_ack", "grasp", "release"):
            if message.type == "input_ack" and len(kept) > 2 * KEEP_ACKS:
                del kept[:-KEEP_ACKS]
            self.client.dispatch(delivery, time.monotonic())

    def _snapshot_message(self, data: bytes) -> None:
        try:
            applied = self.client.on_snapshot_message(data, time.monotonic())
        except SnapshotError:
            self.snapshot_errors += 1
            return
        if applied:
            if self.on_snapshots is not None:
                self.on_snapshots(applied)
            self.snapshots_applied += len(applied)
            self.snapshot_times.extend(s.server_time for s in applied)
            if len(self.snapshot_times) > 512:
                del self.snapshot_times[:-256]

    def _count_thread(self, data: bytes) -> None:
        """A snap_thread payload: full (age 0) or a delta against a version the bot acknowledged."""
        try:
            kind = "delta" if read_thread_header(data).age else "full"
        except ThreadError:
            kind = "invalid"
        self.thread_frames[kind] += 1
        self.thread_bytes[kind] += len(data)

    def _own_hands(self, hands: dict) -> None:
        """The welcome's instruments (hand -> snapshot object id) whose device we track are our own objects."""
        for hand, object_id in hands.items():
            device = DEVICE_OF_HAND.get(hand)
            if device in self.client.config.devices and isinstance(object_id, int):
                self.client.own(object_id, device)

    def service(self) -> None:
        """Take in whatever arrived, then send what is due (acks, queued messages, keep-alives)."""
        now = time.monotonic()
        self.drain(now)
        self.flush(now)

    def drain(self, now: float) -> int:
        """Receive every waiting datagram (at most 1000) into the netcode core; returns how many. Sends nothing:
        what the deliveries queue goes out with the next ``flush``, so a busy client sends one packet a frame."""
        for count in range(1000):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, OSError):
                return count
            self.bytes_received += len(data)
            self.core.receive(data, self._source(addr), now)
        return 1000

    def flush(self, now: float) -> None:
        """The ``snap_ack`` and ``thread_ack`` (or a thread resync) of what arrived since the last flush,
        keep-alives and timeouts, then every due packet of the channels."""
        if self.connected:
            self.client.send_snapshot_ack(self.channels)
            self.client.send_thread_ack(self.channels)
        self.core.update(now)
        self.channels.update(now)

    def _source(self, addr: tuple) -> Address:
        """Who sent a datagram, as the netcode core should see it (a relaying subclass maps its relay).
        The last sender is cached: parsing an IP address per datagram costs more than the rest of a receive."""
        if addr != self._last_source:
            address = Address.from_host_port(addr[0], addr[1])
            server = self.core.server_address
            # The server's own Address object when it is the server: the core then checks identity, not IPs.
            self._last_source, self._last_address = addr, server if address == server else address
        return self._last_address

    def send_pose(
        self,
        position,
        rotation_wxyz=None,
        jaw: float = 0.0,
        device: int = DEVICE_RIGHT,
        energy: bool = False,
        at: float | None = None,
    ) -> None:
        """One tracking frame of an instrument (physics (w, x, y, z) rotation): the thin client tracks it and
        sends its input packet (every sample the server has not acknowledged) as an ``input`` message.

        ``at``: the local time the pose belongs to (default: now). A script that computed the pose for a
        time must stamp it with that time, or a stall between the two makes the motion look too fast."""
        rotation = IDENTITY if rotation_wxyz is None else to_wire_quat(rotation_wxyz)
        pose = RigidPose(position, rotation, float(jaw), energy)  # RigidPose makes its own arrays of these
        self.client.send_frame(self.channels, time.monotonic() if at is None else at, {device: pose})

    def command(self, action: str, **args) -> None:
        fields = {"action": action, "args": args} if args else {"action": action}
        self.channels.send(Channel.RELIABLE, Message("command", fields))

    def close(self) -> None:
        try:
            if self.connected:
                self.core.disconnect(time.monotonic())
        finally:
            self.sock.close()


def pump(headsets: list[Headset], until: Callable[[], bool], seconds: float, each_frame=None, hz: float = 90) -> bool:
    """Service every headset until ``until()`` holds; ``each_frame()`` at ``hz``. Bounded by time and iterations."""
    deadline = time.monotonic() + seconds
    next_frame = time.monotonic()
    for _ in range(1_000_000):
        if until():
            return True
        if time.monotonic() > deadline:
            return False
        select.select([h.sock for h in headsets], [], [], 0.003)
        for h in headsets:
            h.service()
        if each_frame is not None and time.monotonic() >= next_frame:
            next_frame = max(next_frame + 1 / hz, time.monotonic() - 0.05)
            each_frame()
    return until()


# ---------------------------------------------------------------------------------------------- scripts


def _ramp(t: float, t0: float, t1: float, a: float, b: float) -> float:
    """a before t0, b after t1, linear in between."""
    if t <= t0:
        return a
    if t >= t1:
        return b
    return a + (b - a) * (t - t0) / (t1 - t0)


class SurgeonScript:
    """A surgeon's right hand: descend over a point of the block (jaws open, pointing down), close the
    jaws, then lift by ``lift`` metres. A grasper doing this retracts; scissors doing it cut.

    Times are seconds since the script started; ``start`` delays everything (e.g. until scissors arrive)."""

    HINGE_ABOVE = 0.06  # approach height of the jaw hinge (m)
    HINGE_WORK = 0.03  # hinge height at work: 16-18 mm jaws reach ~1.2-1.4 cm below the block top (0.02)

    def __init__(self, x: float, z: float = 0.0, start: float = 0.0, lift: float = 0.0) -> None:
        from physics.instruments import look_rotation

        self.x, self.z, self.start, self.lift = x, z, start, lift
        self.rotation = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))

    def pose(self, t: float) -> tuple[list[float], float]:
        t -= self.start
        y = _ramp(t, 0.0, 1.2, self.HINGE_ABOVE, self.HINGE_WORK)  # 2.5 cm/s down
        jaw = _ramp(t, 1.3, 1.7, 1.0, 0.0)
        y += _ramp(t, 1.9, 3.4, 0.0, self.lift)  # ~0.7 cm/s up
        return [self.x, y, self.z], jaw


def _smooth_ramp(t: float, t0: float, t1: float, a: float, b: float) -> float:
    """Like _ramp, but along the quintic smootherstep: no jumps in speed or acceleration (a hand's motion)."""
    u = _ramp(t, t0, t1, 0.0, 1.0)
    return a + (b - a) * u * u * u * (u * (6.0 * u - 15.0) + 10.0)


class CutScript:
    """An assistant's scissors cutting across the block: a snip (descend with the blades open, close them,
    lift, open) at each of ``zs`` in turn along the line x = ``x``, ``SNIP_SECONDS`` apart.

    Times are seconds since the script started; ``start`` delays everything (e.g. until scissors arrive)."""

    SNIP_SECONDS = 1.4
    HINGE_ABOVE = SurgeonScript.HINGE_ABOVE
    HINGE_WORK = SurgeonScript.HINGE_WORK

    def __init__(self, x: float, zs: Sequence[float], start: float = 0.0) -> None:
        from physics.instruments import look_rotation

        self.x, self.zs, self.start = x, list(zs), start
        self.rotation = look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))

    def pose(self, t: float) -> tuple[list[float], float]:
        t = max(t - self.start, 0.0)
        k = min(int(t / self.SNIP_SECONDS), len(self.zs) - 1)
        u = t - k * self.SNIP_SECONDS if t < len(self.zs) * self.SNIP_SECONDS else self.SNIP_SECONDS
        z = _smooth_ramp(u, 0.0, 0.2, self.zs[max(k - 1, 0)], self.zs[k])  # move over, above the tissue
        y = _smooth_ramp(u, 0.2, 0.6, self.HINGE_ABOVE, self.HINGE_WORK) + _smooth_ramp(u, 0.9, 1.2, 0.0, 0.03)
        jaw = _smooth_ramp(u, 0.6, 0.9, 1.0, 0.0) + _smooth_ramp(u, 1.2, 1.35, 0.0, 1.0)
        return [self.x, y, z], jaw
