"""``attack``: issue 19's attacks, one at a time, against a server with a witness team in another room.

A **witness** (a lead surgeon driving its instrument at 90 Hz, in a process of its own: ``python -m
loadtests.attack witness ...``) sits in room A and records the arrival time of every snapshot. Room B is the
attackers'. After a quiet baseline each attack runs for ``attack_seconds`` from this process (loopback only,
every loop bounded in count and time), then ``rest_seconds`` of quiet:

* ``observer_input_flood``: six observers send input packets full of samples (14 per packet, both hands
  and the head tracked) as fast as they can: refused before decoding (``gaze_rate``, ``input_bytes``);
* ``room_capacity``: one invite used 40 times into room B (capacity 16): ``room_full``, at the join (no token
  minted, so no handshake spent); a newcomer to room A still gets in;
* ``oversized_annotation``: a mentor's 200 KB ``annotate`` text: ``command_arguments``;
* ``forged_requests``: well-formed connection requests with forged tokens from 60 loopback addresses,
  20,000 a second (the issue's rate): the pre-authentication budgets (``unauthenticated_rate_limited_*``);
* ``spoofed_garbage``: datagrams forged from the witness's own address (a raw socket; skipped unless
  the process may open one): ``decrypt_failed``, and never ``rate_limited`` for the witness;
* ``reconnect_storm``: one participant reconnects (fresh rejoin tokens) again and again:
  ``presence_events`` coalesced;
* ``speed_claim``: a surgeon's 0.6 m jumps claiming a million seconds between samples: ``too_fast``;
* ``nested_json``, ``huge_body``, ``admin_lockout``: the HTTP side (400, 413, 429 for the attacker and
  the real admin's credential still accepted).

Pass, per attack (measured from when the attack proper starts; the witness while the attack's own clients
joined is reported beside it, ``while_its_clients_joined``): the witness keeps at least
``min_snapshot_rate`` snapshots/s with a worst gap of at most ``max_gap_seconds``, the server is up, and
each refusal the attack provokes is counted in ``/metrics`` with its reason; overall, the server's RSS at
the end is within ``rss_growth_mb`` of the baseline. One JSON line per attack is printed as it ends; the
report has them all.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.flood import forged_request
from loadtests.run import Run, load_run
from loadtests.server import create_room, join, scrape
from loadtests.swarm import SnapshotAcker, circle_pose
from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.protocol.inputs import InputSample, encode_packet
from netcode.protocol.poses import RigidPose
from rehearsal.bots import ROOT, Headset, post
from rehearsal.wire import DEVICE_HEAD, DEVICE_LEFT, DEVICE_RIGHT

ATTACKS = (
    "observer_input_flood",
    "room_capacity",
    "oversized_annotation",
    "forged_requests",
    "spoofed_garbage",
    "reconnect_storm",
    "speed_claim",
    "nested_json",
    "huge_body",
    "admin_lockout",
)
FORGED_PER_SECOND = 20_000
WITNESS_COMMAND = (sys.executable, "-m", "loadtests.attack", "witness")
WITNESS_MAX_ARRIVALS = 200_000  # an hour at 60 Hz: the witness's record is bounded
REFUSALS = "rehearsal_refusals_total"
DROPS = "rehearsal_dropped_packets_total"
REJECTED = "rehearsal_rejected_inputs_total"


# ---------------------------------------------------------------------------------------------- witness


def witness_main(host: str, port: int, token_b64: str, seconds: float, out: Path) -> int:
    """The witness process: drive an instrument at 90 Hz, note every snapshot's arrival (monotonic) in
    ``out/arrivals.npy`` (rewritten twice a second) and the socket's port in ``out/port``."""
    if host not in ("127.0.0.1", "::1"):
        raise ValueError("loopback only")
    seconds = min(max(float(seconds), 1.0), 3600.0)
    out.mkdir(parents=True, exist_ok=True)
    headset = Headset(base64.b64decode(token_b64), "witness", decoder=SnapshotAcker())  # cheap: judge arrivals
    (out / "port").write_text(str(headset.sock.getsockname()[1]))
    arrivals = np.zeros(WITNESS_MAX_ARRIVALS)
    count, seen, start = 0, 0, time.monotonic()
    next_frame, next_write = start, start + 0.5
    end = start + seconds
    import select

    for _ in range(int(seconds * 1000) + 1000):
        now = time.monotonic()
        if now >= end:
            break
        select.select([headset.sock], [], [], 0.002)
        now = time.monotonic()
        headset.drain(now)
        if headset.snapshots_applied > seen:
            for _ in range(min(headset.snapshots_applied - seen, WITNESS_MAX_ARRIVALS - count)):
                arrivals[count] = now
                count += 1
            seen = headset.snapshots_applied
        if now >= next_frame and headset.welcome is not None:
            next_frame = max(next_frame + 1 / 90, now - 0.05)
            position, jaw = circle_pose(now - start, 0.0, 0.0)
            headset.send_pose(position, jaw=jaw)
        headset.flush(now)
        if now >= next_write:
            next_write = now + 0.5
            np.save(out / "arrivals.tmp.npy", arrivals[:count])
            os.replace(out / "arrivals.tmp.npy", out / "arrivals.npy")
            (out / "state").write_text(json.dumps({"connected": headset.connected, "welcomed": bool(headset.welcome)}))
    np.save(out / "arrivals.tmp.npy", arrivals[:count])
    os.replace(out / "arrivals.tmp.npy", out / "arrivals.npy")
    headset.close()
    return 0


class Witness:
    """The witness process of a run and what it recorded."""

    def __init__(self, run: Run, udp_port: int, token_b64: str, seconds: float) -> None:
        self.folder = run.folder / "witness"
        self.process = subprocess.Popen(
            [*WITNESS_COMMAND, "127.0.0.1", str(udp_port), token_b64, str(seconds), str(self.folder)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        run.pids.append(self.process.pid)
        run.on_close.append(self.stop)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def ready(self, seconds: float = 20.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.folder / "state"
            if state.exists() and json.loads(state.read_text() or "{}").get("welcomed"):
                return True
            time.sleep(0.2)
        return False

    @property
    def port(self) -> int:
        return int((self.folder / "port").read_text())

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """Snapshots/s and the worst gap (s) the witness saw between t0 and t1 (monotonic)."""
        try:
            arrivals = np.load(self.folder / "arrivals.npy")
        except (OSError, ValueError):
            arrivals = np.zeros(0)
        inside = arrivals[(arrivals >= t0) & (arrivals <= t1)]
        edges = np.concatenate([[t0], inside, [t1]])
        return {
            "snapshots_per_second": round(len(inside) / max(t1 - t0, 1e-6), 1),
            "worst_gap_ms": round(1000 * float(np.max(np.diff(edges))), 1),
        }


# ---------------------------------------------------------------------------------------------- helpers


class Attack:
    """What one attack works with: the server, the attackers' room, the witness, a deadline."""

    def __init__(self, run: Run, server: Any, room: dict[str, Any], witness: Witness, seconds: float) -> None:
        self.run, self.server, self.room, self.witness = run, server, room, witness
        self.seconds = seconds
        self.started: float | None = None
        self.udp_port = server.udp_port
        self.http_port = server.http_port

    def headset(self, role: str, name: str, devices=(DEVICE_RIGHT,), room: dict | None = None) -> Headset:
        ticket = join(self.server, room or self.room, role, name)
        headset = Headset(base64.b64decode(ticket["token"]), name, devices)
        headset.ticket = ticket  # type: ignore[attr-defined]
        return headset

    def connect(self, headsets: list[Headset], seconds: float = 10.0) -> list[Headset]:
        """Service them until each is welcomed or refused (bounded); returns the welcomed ones."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for h in headsets:
                h.service()
            if all(h.welcome is not None or h.messages.get("refused") for h in headsets):
                break
            time.sleep(0.005)
        return [h for h in headsets if h.welcome is not None]

    def until_done(self, each: Callable[[float], None], hz: float | None = None) -> int:
        """Call ``each(now)`` until the attack's time is up (at ``hz``, or as fast as it goes); bounded. The
        attack proper starts here (``started``): its clients' joins before it are reported on their own."""
        self.started = time.monotonic()
        end = self.started + self.seconds
        calls = 0
        for _ in range(int(self.seconds * (hz or 200_000)) + 1):
            now = time.monotonic()
            if now >= end:
                break
            each(now)
            calls += 1
            if hz:
                time.sleep(max(0.0, 1 / hz - (time.monotonic() - now)))
        return calls


def _http(port: int, path: str, body: bytes, headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> int:
    """POST raw bytes; the status (0 when the connection broke before an answer)."""
    conn_headers = {"content-type": "application/json", **(headers or {})}
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(host, 0))
    except OSError:
        return 0
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in conn_headers.items()
        )
        if "content-length" not in {k.lower() for k in conn_headers}:
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"\r\n" + body)
        reply = sock.recv(256)
        return int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        sock.close()


def _close(headsets: list[Headset]) -> None:
    for h in headsets:
        with contextlib.suppress(OSError):
            h.close()


# ---------------------------------------------------------------------------------------------- attacks


def observer_input_flood(a: Attack) -> dict[str, Any]:
    """Six observers, input packets of 14 new samples of three tracked devices, as fast as they go."""
    devices = (DEVICE_HEAD, DEVICE_LEFT, DEVICE_RIGHT)
    observers = a.connect([a.headset("observer", f"flood-{i}", devices) for i in range(6)])
    pose = RigidPose(np.array([0.0, 0.05, 0.0]))
    seq = [0] * len(observers)
    sent = [0]

    def each(now: float) -> None:
        for i, h in enumerate(observers):
            samples = [InputSample(seq[i] + k, now, (pose, pose, pose)) for k in range(14)]
            seq[i] += 14
            h.channels.send(Channel.UNRELIABLE, Message("input", {"p": encode_packet(devices, samples)}))
            h.service()
            sent[0] += 1

    a.until_done(each)
    _close(observers)
    return {"observers": len(observers), "packets_sent": sent[0]}


def room_capacity(a: Attack) -> dict[str, Any]:
    """One invite used 40 times into a room of 16 (once it is full the join itself is refused: no connect token,
    no handshake, the invite's use kept); meanwhile a newcomer joins the witness's room."""
    crowd, refusals = [], {}
    for i in range(40):
        status, ticket = post(a.http_port, "/api/join", {"invite": a.room["invites"]["observer"], "name": f"crowd-{i}"})
        if status == 200:
            crowd.append(Headset(base64.b64decode(ticket["token"]), f"crowd-{i}"))
        else:
            reason = f"{status} {ticket.get('error', '') if isinstance(ticket, dict) else ''}".strip()
            refusals[reason] = refusals.get(reason, 0) + 1
    admitted = a.connect(crowd, seconds=min(a.seconds, 10.0))
    newcomer = a.headset("observer", "newcomer", room=a.run.report["witness_room"])
    newcomer_in = bool(a.connect([newcomer], seconds=5.0))
    a.until_done(lambda now: [h.service() for h in admitted], hz=50)
    _close([*crowd, newcomer])
    return {
        "tried": 40,
        "tokens": len(crowd),
        "admitted": len(admitted),
        "refused_at_join": refusals,
        "newcomer_to_the_other_room_admitted": newcomer_in,
    }


def oversized_annotation(a: Attack) -> dict[str, Any]:
    """A mentor's 200 KB annotation text, five times a second."""
    mentor = a.connect([a.headset("mentor", "big-mentor")])
    if not mentor:
        return {"error": "mentor not admitted"}
    h = mentor[0]
    text = "x" * 200_000
    sent = [0]

    def each(now: float) -> None:
        h.command("annotate", kind="marker", position=[0.0, 0.05, 0.0], text=text)
        sent[0] += 1
        for _ in range(20):
            h.service()
            time.sleep(0.01)

    a.until_done(each, hz=5)
    refused = [r.get("request") for r in h.messages.get("refused", [])]
    _close(mentor)
    return {"sent": sent[0], "refused_answers": refused.count("command:annotate")}


def forged_requests(a: Attack) -> dict[str, Any]:
    """Well-formed connection requests with forged tokens from 60 loopback addresses, ``FORGED_PER_SECOND``
    (issue 19's 20,000 a second)."""
    rng = random.Random(19)
    socks = []
    for i in range(60):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{1 + i // 200}.{2 + i % 200}", 0))
        s.setblocking(False)
        socks.append(s)
    requests = [forged_request(rng) for _ in range(64)]
    sent = [0]

    def each(now: float) -> None:
        for k, s in enumerate(socks):
            try:
                s.sendto(requests[(sent[0] + k) % 64], ("127.0.0.1", a.udp_port))
                sent[0] += 1
            except OSError:
                pass

    a.until_done(each, hz=FORGED_PER_SECOND / len(socks))
    for s in socks:
        s.close()
    return {"sent": sent[0], "rate": round(sent[0] / a.seconds), "sources": len(socks)}


def udp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoofed_garbage(a: Attack) -> dict[str, Any]:
    """Payload-type datagrams forged from the witness's own address (a raw socket), 5,000 a second."""
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except OSError as exc:
        return {"skipped": f"no raw socket: {exc}"}
    src, dst = socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")
    rng = random.Random(6)
    packets = []
    for _ in range(64):
        # payload type 5 with 8 sequence bytes (a random sequence, far ahead: past the replay window, so
        # every one costs the server an AEAD check), then junk
        payload = bytes([0x85]) + rng.randbytes(8) + rng.randbytes(60)
        length = 8 + len(payload)
        header = struct.pack("!HHHH", a.witness.port, a.udp_port, length, 0)
        checksum = udp_checksum(src + dst + struct.pack("!BBH", 0, 17, length) + header + payload) or 0xFFFF
        packets.append(struct.pack("!HHHH", a.witness.port, a.udp_port, length, checksum) + payload)
    sent = [0]

    def each(now: float) -> None:
        for k in range(10):
            raw.sendto(packets[(sent[0] + k) % 64], ("127.0.0.1", 0))
        sent[0] += 10

    a.until_done(each, hz=500)
    raw.close()
    return {"sent": sent[0], "spoofed_source_port": a.witness.port}


def reconnect_storm(a: Attack) -> dict[str, Any]:
    """One participant reconnects with a fresh rejoin token as fast as the handshake allows."""
    first = a.connect([a.headset("observer", "storm")])
    if not first:
        return {"error": "not admitted"}
    code = first[0].ticket["rejoin_code"]  # type: ignore[attr-defined]
    _close(first)
    cycles, refused = [0], [0]

    def each(now: float) -> None:
        status, ticket = post(a.http_port, "/api/rejoin", {"rejoin_code": code})
        if status != 200:
            refused[0] += 1
            time.sleep(0.05)
            return
        h = Headset(base64.b64decode(ticket["token"]), "storm")
        a.connect([h], seconds=2.0)
        _close([h])
        cycles[0] += 1

    a.until_done(each, hz=20)
    return {"reconnects": cycles[0], "rejoin_refused": refused[0]}


def speed_claim(a: Attack) -> dict[str, Any]:
    """A surgeon jumps 0.6 m back and forth, each sample claiming a million seconds since the last."""
    surgeon = a.connect([a.headset("lead_surgeon", "teleport")])
    if not surgeon:
        return {"error": "not admitted"}
    h = surgeon[0]
    seq, sent = [0], [0]

    def each(now: float) -> None:
        x = -0.3 if seq[0] % 2 else 0.3
        sample = InputSample(seq[0], 1e6 * (seq[0] + 1), (RigidPose(np.array([x, 0.05, 0.0])),))
        seq[0] += 1
        h.channels.send(Channel.UNRELIABLE, Message("input", {"p": encode_packet((DEVICE_RIGHT,), [sample])}))
        h.service()
        sent[0] += 1

    a.until_done(each, hz=90)
    _close(surgeon)
    return {"samples_sent": sent[0]}


def nested_json(a: Attack) -> dict[str, Any]:
    """Join requests nested 2,000 deep, 50 a second."""
    statuses: dict[int, int] = {}
    body = b"[" * 2000 + b"]" * 2000

    def each(now: float) -> None:
        status = _http(a.http_port, "/api/join", body)
        statuses[status] = statuses.get(status, 0) + 1

    a.until_done(each, hz=50)
    return {"statuses": statuses}


def huge_body(a: Attack) -> dict[str, Any]:
    """Requests announcing 100 MB bodies (1 MB of it sent), 10 a second."""
    statuses: dict[int, int] = {}
    chunk = b"x" * (1 << 20)

    def each(now: float) -> None:
        status = _http(a.http_port, "/api/join", chunk, {"content-length": str(100 << 20)})
        statuses[status] = statuses.get(status, 0) + 1

    a.until_done(each, hz=10)
    return {"statuses": statuses}


def admin_lockout(a: Attack) -> dict[str, Any]:
    """Wrong admin credentials from 150 loopback addresses (and the admin's own), while the admin creates
    sessions with the right one: the attacker is throttled, the admin never is."""
    statuses: dict[int, int] = {}
    admin: dict[int, int] = {}
    credential = a.server.credential()
    k = [0]

    def each(now: float) -> None:
        host = f"127.0.2.{2 + k[0] % 150}" if k[0] % 4 else "127.0.0.1"
        status = _http(
            a.http_port, "/api/sessions", b'{"scenario": "basic_skills"}', {"authorization": "Bearer x"}, host
        )
        statuses[status] = statuses.get(status, 0) + 1
        if k[0] % 25 == 0:
            ok = _http(
                a.http_port, "/admin/rooms", b"", {"authorization": f"Bearer {credential}"}, "127.0.0.1"
            )  # the admin API answers GET; a POST to a listing is 405, which still means "let in"
            admin[ok] = admin.get(ok, 0) + 1
        k[0] += 1

    a.until_done(each, hz=100)
    return {"attacker_statuses": statuses, "admin_statuses": admin}


ATTACK_FUNCTIONS: dict[str, Callable[[Attack], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        observer_input_flood,
        room_capacity,
        oversized_annotation,
        forged_requests,
        spoofed_garbage,
        reconnect_storm,
        speed_claim,
        nested_json,
        huge_body,
        admin_lockout,
    )
}

# What each attack must leave in /metrics: (metric, label text it must contain); any one of a tuple counts.
EXPECTED: dict[str, list[tuple[tuple[str, str], ...]]] = {
    "observer_input_flood": [((REFUSALS, 'reason="gaze_rate"'), (REFUSALS, 'reason="input_bytes"'))],
    "room_capacity": [((REFUSALS, 'reason="room_full"'),)],
    "oversized_annotation": [((REFUSALS, 'reason="command_arguments"'), (DROPS, 'reason="message_invalid"'))],
    "forged_requests": [
        (
            (DROPS, 'reason="unauthenticated_rate_limited_address"'),
            (DROPS, 'reason="unauthenticated_rate_limited_server"'),
        )
    ],
    "spoofed_garbage": [((DROPS, 'reason="decrypt_failed"'), (DROPS, 'reason="replayed"'))],
    "reconnect_storm": [((REFUSALS, 'reason="presence_events"'),)],
    "speed_claim": [((REJECTED, 'reason="too_fast"'),)],
    "nested_json": [((REFUSALS, 'reason="http_400"'),)],
    "huge_body": [((REFUSALS, 'reason="http_413"'),)],
    "admin_lockout": [((REFUSALS, 'reason="http_429"'),)],
}


def _room_tick_rate(server: Any, room: int, t0: float, t1: float) -> float:
    """Ticks a second the server published for one room (its number: creation order) between t0 and t1:
    the server's side of what the witness sees (the difference is the machine and the witness's process)."""
    ticks = server.ticks()
    if ticks.size == 0:
        return 0.0
    sel = (ticks[:, 0] >= t0) & (ticks[:, 0] < t1) & (ticks[:, 2] == room)
    return round(float(np.count_nonzero(sel)) / max(t1 - t0, 1e-6), 1)


def _delta(before: dict, after: dict, name: str, label: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and label in k[1])


def judge(name: str, detail: dict[str, Any], before: dict, after: dict) -> tuple[dict[str, float], bool]:
    counted: dict[str, float] = {}
    ok = True
    for alternatives in EXPECTED[name]:
        found = {f"{m}{{{lab}}}": _delta(before, after, m, lab) for m, lab in alternatives}
        counted.update(found)
        ok = ok and any(v > 0 for v in found.values())
    if name == "spoofed_garbage":
        counted["rate_limited"] = _delta(before, after, DROPS, 'reason="rate_limited"')
        ok = ok and counted["rate_limited"] == 0
    if name == "room_capacity":
        ok = ok and detail.get("newcomer_to_the_other_room_admitted", False) and detail["admitted"] <= 16
        ok = ok and detail["tokens"] <= 16  # refused at the join, before a token (and a handshake)
    if name == "admin_lockout":
        ok = ok and set(detail["admin_statuses"]) <= {200, 405} and 429 in detail["attacker_statuses"]
    return counted, ok


# ---------------------------------------------------------------------------------------------- the run


def run_attack(
    out: Path | None = None,
    *,
    scenario: str = "basic_skills",
    attack_seconds: float = 8.0,
    rest_seconds: float = 3.0,
    only: str | None = None,
    min_snapshot_rate: float = 55.0,
    max_gap_seconds: float = 0.1,
    rss_growth_mb: float = 32.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the attacks (see the module doc); returns the report with ``passed``."""
    names = [n.strip() for n in only.split(",")] if only else list(ATTACKS)
    unknown = set(names) - set(ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)} (known: {', '.join(ATTACKS)})")
    attack_seconds = min(max(attack_seconds, 1.0), 120.0)
    with load_run("attack", out, say, scenario=scenario) as run:
        server = run.server()
        sampler = run.sample()
        witness_room = create_room(server, scenario)
        status, attack_room = post(
            server.http_port, "/api/sessions", {"scenario": scenario, "invite_uses": 200}, server.credential()
        )
        if status != 201:
            raise RuntimeError(f"creating the attackers' room failed: {status} {attack_room}")
        run.report["witness_room"] = witness_room
        total = 30 + len(names) * (attack_seconds + rest_seconds + 15)
        ticket = join(server, witness_room, "lead_surgeon", "witness")
        witness = Witness(run, server.udp_port, ticket["token"], total)
        if not witness.ready():
            raise RuntimeError("the witness did not get into its room")
        time.sleep(rest_seconds)
        t0 = time.monotonic()
        time.sleep(max(rest_seconds, 3.0))
        baseline = witness.window(t0, time.monotonic())
        baseline["server_room_ticks_per_second"] = _room_tick_rate(server, 0, t0, time.monotonic())
        rss_base = sampler.rows[-1]["rss_bytes"] / 2**20 if sampler.rows else None
        say(json.dumps({"attack": "baseline", "witness": baseline, "rss_mb": rss_base}))
        results = []
        for name in names:
            before = scrape(server.http_port)
            attack = Attack(run, server, attack_room, witness, attack_seconds)
            t0 = time.monotonic()
            try:
                detail = ATTACK_FUNCTIONS[name](attack)
            except (OSError, RuntimeError, ValueError) as exc:
                detail = {"error": f"{type(exc).__name__}: {exc}"}
            t1 = time.monotonic()
            time.sleep(1.2)  # the witness writes its record twice a second
            started = attack.started or t0
            seen = witness.window(started, t1)
            seen["server_room_ticks_per_second"] = _room_tick_rate(server, 0, started, t1)
            if started - t0 > 0.5:  # its clients joining (each join sends the room's whole topology)
                seen["while_its_clients_joined"] = witness.window(t0, started) | {"seconds": round(started - t0, 2)}
            after = scrape(server.http_port)
            counted, refusals_ok = judge(name, detail, before, after) if "error" not in detail else ({}, False)
            skipped = "skipped" in detail
            checks = {
                "witness_rate": seen["snapshots_per_second"] >= min_snapshot_rate,
                "witness_gap": seen["worst_gap_ms"] <= 1000 * max_gap_seconds,
                "server_up": run.servers.alive(),
                "refusals_counted": refusals_ok or skipped,
            }
            result = {
                "attack": name,
                "seconds": round(t1 - started, 2),
                "witness": seen,
                "refusals": counted,
                "detail": detail,
                "rss_mb": round(sampler.rows[-1]["rss_bytes"] / 2**20, 1) if sampler.rows else None,
                "checks": checks,
                "passed": all(checks.values()),
            }
            say(json.dumps(result))
            results.append(result)
            time.sleep(rest_seconds)
        rss_end = sampler.rows[-1]["rss_bytes"] / 2**20 if sampler.rows else None
        memory_flat = rss_base is not None and rss_end is not None and rss_end - rss_base <= rss_growth_mb
        run.report.update(
            baseline=baseline,
            attacks=results,
            memory={"rss_baseline_mb": rss_base and round(rss_base, 1), "rss_end_mb": rss_end and round(rss_end, 1)},
            checks={"every_attack": all(r["passed"] for r in results), "memory_flat": memory_flat},
        )
        run.report["passed"] = all(run.report["checks"].values())
    return run.report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["witness"] and len(argv) == 6:
        return witness_main(argv[1], int(argv[2]), argv[3], float(argv[4]), Path(argv[5]))
    print("usage: python -m loadtests.attack witness HOST PORT TOKEN_B64 SECONDS OUT (python -m loadtests attack)")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
