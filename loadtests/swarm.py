"""A headset swarm: simulated participants in separate processes that stop by themselves and report JSON.

One **worker process** (``python -m loadtests.swarm SPEC.json OUT.json``) runs a list of bots, each a
``rehearsal.bots.Headset``: netcode and channels under the reference thin client
(``netcode.thin_client.ThinClient``: input sender, clock sync, snapshot decoder with acks, interpolation,
held-tissue prediction), optionally routed through an impairment relay lane (``RoutedHeadset``). Scripts:

* ``drive``: a surgeon's instrument circling 1.5 cm above the tissue (radius 8 mm, 2 s a turn, jaws half
  open) sent as ``input`` at ``hz`` (90 by default);
* ``mentor``: watches and sends an ``annotate`` command every ``annotate_every`` seconds whose text
  carries a sequence number (``seq <name> <n>``): every client of the room must see those events exactly
  once and in order;
* ``grasp``: ``rehearsal.bots.SurgeonScript``: descend onto the tissue, close the jaws, lift 1 cm, hold;
* ``watch``: an observer (or a participant that only watches).

``start_at``: a monotonic time (the clock is shared by the processes of the host) at which the scripts start
once connected, so that a run's workers act together.
``stop_file``: when that file appears the bots stop early (a run that ramps stops all its workers at once).

Snapshots (``"snapshots"`` in a bot spec) choose the thin client's decoder: ``light`` (the default:
``LightDecoder``), ``full`` (``SnapshotDecoder``, and the thin client interpolates every object) or ``ack``
(``SnapshotAcker``: acknowledged from the header, never decoded; what the capacity and soak runs give everyone
but each room's lead surgeon). Like a headset that sends once per display frame, a bot takes in datagrams as
they arrive but sends only at its frame (``hz``): its script's input, its snapshot acks and whatever else it
queued go out together, in one packet. Every bot pings (``ping``/``pong``, unreliable) at ``ping_hz`` for RTT.
When ``seconds`` have passed since the start the bots stop sending, keep servicing for ``drain_seconds`` (the
last reliable events arrive), then disconnect (unless ``linger``) and the worker writes its JSON report and
exits. Every loop is bounded by count and time; a worker also exits ``seconds + drain_seconds + 15`` after its
start in any case.

Workers run at a lower CPU priority (``nice``, default 10; 0 keeps it) so that on a small machine the
server under test is not starved by its own load generators. ``launch`` starts a worker as a subprocess
(``sys.executable``, cwd and PYTHONPATH the checkout) and ``Worker.result`` reads its report.
``room_checks`` turns the reports of one room into the exactly-once / in-order verdicts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from netcode.messaging.channels import Channel
from netcode.messaging.messages import Message
from netcode.sync.snapshot import ACK_BITS, SnapshotError, ack_fields, read_header
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.transport.address import Address
from rehearsal.bots import ROOT, Headset, SurgeonScript

MAX_SERIES = 20_000  # bound on every recorded series per bot
ANNOTATE_PREFIX = "seq "


class LightDecoder(SnapshotDecoder):
    """The snapshot decoder without the per-snapshot object list (a third of a bot's CPU): snapshots are still
    validated, applied, acknowledged and kept as baselines; ``rigid()`` and ``surface()`` still work (the
    thin client's interpolation buffers, fed from the object lists, stay empty)."""

    def _objects(self, seq: int, server_time: float, patches: dict, rigid: dict, fine: object) -> list:
        return []


@dataclass(frozen=True, slots=True)
class AckedSnapshot:
    """What ``SnapshotAcker`` makes of a snapshot: its header, no objects (``adapters`` yields none)."""

    sequence: int
    server_time: float
    epoch: int = 0
    objects: tuple = ()


class SnapshotAcker:
    """The thin client's snapshot decoder of an ``ack`` bot: snapshots acknowledged as a decoding client would.

    The lighter client of the same protocol for load runs: the server cannot tell it from a decoding one
    (it gets the same ``snap_ack`` messages), but the bot reads only each snapshot's header (sequence, server
    time), so that a swarm worker costs its host a fraction of the CPU. What a run judges from snapshots
    (arrivals, gaps, downlink) needs no more; a run that judges the view itself uses ``light`` or ``full``.
    ``snap_config``, ``snap_topology`` and ``snap_predictor`` are taken and ignored (it keeps no scene)."""

    def __init__(self) -> None:
        self.applied: deque[int] = deque(maxlen=ACK_BITS + 1)  # newest last

    def on_message(self, data: bytes) -> list[AckedSnapshot]:
        """A state-sync message; ``[AckedSnapshot]`` for a new snapshot, [] otherwise (SnapshotError if bad)."""
        try:
            envelope = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise SnapshotError(f"not a message: {exc}") from None
        if not isinstance(envelope, dict) or envelope.get("t") != "snapshot":
            return []
        payload = envelope.get("data")
        if not isinstance(payload, bytes):
            raise SnapshotError("snapshot message without data")
        new = self.on_snapshot(payload)
        return [] if new is None else [AckedSnapshot(*new)]

    def on_snapshot(self, data: bytes) -> tuple[int, float] | None:
        """(sequence, server time) of a new snapshot, None for a duplicate; SnapshotError for a bad header."""
        seq, server_time, _, _, _ = read_header(data)
        if seq in self.applied:
            return None
        self.applied.append(seq)
        return seq, server_time

    def ack_fields(self) -> dict[str, int]:
        """``snap_ack`` fields (newest sequence and 32 bits for the ones before it), as SnapshotDecoder's."""
        return ack_fields(self.applied)


DECODERS = {"full": SnapshotDecoder, "light": LightDecoder, "ack": SnapshotAcker}
SNAPSHOT_MODES = tuple(DECODERS)


class RoutedHeadset(Headset):
    """A swarm bot's Headset: its thin client's snapshot decoder chosen by ``snapshots``, and optionally
    routed through a relay lane (``via``).

    ``snapshots``: ``full`` (``SnapshotDecoder``: the thin client interpolates every object), ``light``
    (``LightDecoder``: decoded, applied and acknowledged without per-object lists) or ``ack``
    (``SnapshotAcker``: acknowledged from the header, not decoded).

    With ``via``, outgoing packets go to the lane; datagrams from it are handed to the netcode core as coming
    from the server address it is connected to, so the core's own "only from my server" check still applies
    to everything else. The token and the server are untouched.
    """

    def __init__(
        self,
        token: bytes,
        name: str = "",
        via: tuple[str, int] | None = None,
        snapshots: str = "light",
        **kwargs: Any,
    ) -> None:
        if snapshots not in DECODERS:
            raise ValueError(f"snapshots must be one of {SNAPSHOT_MODES}, got {snapshots!r}")
        self.snapshot_mode = snapshots
        self.via = (via[0], int(via[1])) if via is not None else None
        super().__init__(token, name=name, decoder=DECODERS[snapshots](), **kwargs)

    def _send(self, data: bytes, address: Address) -> None:
        if self.via is None:
            super()._send(data, address)
            return
        self.bytes_sent += len(data)
        with contextlib.suppress(OSError):
            self.sock.sendto(data, self.via)

    def _source(self, addr: tuple) -> Address:
        if self.via is not None and (addr[0], addr[1]) == self.via and self.core.server_address is not None:
            return self.core.server_address
        return super()._source(addr)


# ---------------------------------------------------------------------------------------------- scripts


def circle_pose(t: float, x: float, z: float, phase: float = 0.0) -> tuple[list[float], float]:
    """The ``drive`` script: (position, jaw) at script time ``t``."""
    angle = 2 * math.pi * (t / 2.0) + phase
    return [x + 0.008 * math.cos(angle), 0.035, z + 0.008 * math.sin(angle)], 0.5


def warm_up() -> None:
    """Encode and decode two tiny snapshots so that the numba kernels of the codec are loaded (~0.3 s) before
    the bots connect, not as a stall of every bot of the worker on the first snapshot."""
    from netcode.sync.patches import make_patches
    from netcode.sync.snapshot import RigidSet
    from netcode.sync.snapshot_codec import SnapshotServer
    from netcode.sync.snapshot_messages import snapshot_message

    x = np.random.default_rng(0).random((12, 3)) * 0.01
    sync = SnapshotServer(make_patches(np.arange(12), x), triangles=np.array([[0, 1, 2]]))
    sync.add_client(0)
    decoder = LightDecoder()
    for message in sync.join_messages():
        decoder.on_message(message)
    rigid = RigidSet(np.zeros(1, np.int64), np.zeros(1, np.int64), x[:1], np.array([[0, 0, 0, 1.0]]), np.zeros(1))
    for i in range(2):
        sync.begin_frame(i * 0.01, x + i * 0.001, rigid)
        decoder.on_message(snapshot_message(sync.encode(0)))
        sync.on_ack(0, sync.sequence)
    decoder.rigid()


def _down_rotation() -> np.ndarray:
    from physics.instruments import look_rotation

    return look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0))


@dataclass
class Bot:
    """One simulated participant and what it saw."""

    spec: dict[str, Any]
    headset: RoutedHeadset
    start: float
    pings: dict[int, float] = field(default_factory=dict)
    ping_n: int = 0
    rtt: list[tuple[float, float]] = field(default_factory=list)
    down_bins: Counter = field(default_factory=Counter)  # whole seconds since the start -> bytes received
    last_bytes: int = 0
    welcomed_at: float | None = None
    annotations_sent: int = 0
    next_annotate: float = 0.0
    snapshot_arrivals: list[tuple[float, float]] = field(default_factory=list)  # (local, server time)
    commanded: list[list[float]] = field(default_factory=list)  # (t, x, y, z) of own instrument, ~10 Hz
    rigid_seen: list[list[float]] = field(default_factory=list)  # (server t, id, x, y, z), ~10 Hz
    last_record: float = 0.0
    seen_messages: int = 0  # the headset's messages_kept when its messages were last taken
    seen_snapshots: int = 0
    last_arrival: float = 0.0
    gaps: list[list[float]] = field(default_factory=list)  # (from, to) local times of >0.1 s without snapshots
    surgeon: SurgeonScript | None = None
    events: list[tuple[str, float, Any]] = field(default_factory=list)  # (kind, server_time, seq or by)


def _make_bot(spec: dict[str, Any], now: float) -> Bot:
    import base64

    via = spec.get("via")
    headset = RoutedHeadset(
        base64.b64decode(spec["token"]),
        name=str(spec.get("name", "")),
        via=via,
        snapshots=spec.get("snapshots", "light"),
    )
    return Bot(spec, headset, now)


def _collect(bot: Bot, now: float) -> None:
    """Move what arrived into the bot's records (events, pongs, snapshot arrivals)."""
    h = bot.headset
    if bot.welcomed_at is None and h.welcome is not None:
        bot.welcomed_at = now
    if h.messages_kept != bot.seen_messages:  # runs after every drain and flush: most find no new message
        bot.seen_messages = h.messages_kept
        _take_messages(bot, now)
    if h.snapshots_applied > bot.seen_snapshots:
        bot.seen_snapshots = h.snapshots_applied
        if bot.last_arrival and now - bot.last_arrival > 0.1 and len(bot.gaps) < 1000:
            bot.gaps.append([bot.last_arrival, now])
        bot.last_arrival = now
        if len(bot.snapshot_arrivals) < MAX_SERIES * 4 and h.snapshot_times:
            bot.snapshot_arrivals.append((now, h.snapshot_times[-1]))
    total = h.bytes_received
    bot.down_bins[int(now - bot.start)] += total - bot.last_bytes
    bot.last_bytes = total


def _take_messages(bot: Bot, now: float) -> None:
    """Pongs and events into the bot's records; the kinds of message the swarm does not keep are dropped."""
    h = bot.headset
    for fields in h.messages.pop("pong", []):
        sent = bot.pings.pop(
            round(fields.get("time", -1) * 1000) if isinstance(fields.get("time"), float) else -1, None
        )
        if sent is not None and len(bot.rtt) < MAX_SERIES:
            bot.rtt.append((now - bot.start, now - sent))
    for fields in h.messages.pop("event", []):
        kind = str(fields.get("kind"))
        tag: Any = fields.get("by")
        if kind == "annotate":
            text = str((fields.get("detail") or {}).get("text", ""))
            if text.startswith(ANNOTATE_PREFIX):
                tag = text[len(ANNOTATE_PREFIX) :]
        elif kind in ("left", "grasp", "release"):
            tag = [fields.get("by"), str((fields.get("detail") or {}).get("reason", ""))[:64]]
        if len(bot.events) < MAX_SERIES:
            bot.events.append((kind, float(fields.get("server_time", 0.0)), tag))
    for key in ("input_ack", "snap_config", "snap_topology", "snap_predictor"):
        h.messages.pop(key, None)  # the Headset keeps these; its thin client has used them, the swarm needs none


def _act(bot: Bot, now: float, t: float, rotation: np.ndarray, active: bool) -> None:
    """One 90 Hz frame of a bot's script."""
    h, spec = bot.headset, bot.spec
    if not h.connected or h.welcome is None:
        return
    script = spec.get("script", "watch")
    if active and script == "grasp":  # descend, close the jaws, lift 1 cm and hold (rehearsal.bots.SurgeonScript)
        if bot.surgeon is None:
            bot.surgeon = SurgeonScript(float(spec.get("x", -0.015)), float(spec.get("z", 0.0)), lift=0.01)
        position, jaw = bot.surgeon.pose(t)
        h.send_pose(position, bot.surgeon.rotation, jaw, at=now)
    if active and script == "drive":
        position, jaw = circle_pose(
            t, float(spec.get("x", 0.0)), float(spec.get("z", 0.0)), float(spec.get("phase", 0))
        )
        h.send_pose(position, rotation, jaw, at=now)
        if spec.get("record") and now - bot.last_record >= 0.1 and len(bot.commanded) < MAX_SERIES:
            bot.commanded.append([now, *position])
    if active and script == "mentor" and t >= bot.next_annotate:
        bot.next_annotate = t + float(spec.get("annotate_every", 0.5))
        bot.annotations_sent += 1
        h.command("annotate", position=[0.0, 0.03, 0.0], text=f"{ANNOTATE_PREFIX}{h.name} {bot.annotations_sent}")
    if spec.get("record") and now - bot.last_record >= 0.1 and h.snapshot_mode != "ack":
        bot.last_record = now
        if len(bot.rigid_seen) < MAX_SERIES:
            for oid, obj in h.decoder.rigid().items():
                times = h.snapshot_times
                bot.rigid_seen.append([times[-1] if times else 0.0, oid, *map(float, obj.positions)])


def _ping(bot: Bot, now: float) -> None:
    h = bot.headset
    if not h.connected:
        return
    key = round(now * 1000)
    bot.pings[key] = now
    if len(bot.pings) > 64:
        for old in sorted(bot.pings)[:-64]:
            del bot.pings[old]
    h.channels.send(Channel.UNRELIABLE, Message("ping", {"time": key / 1000.0}))


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the bots of ``spec`` (see the module doc) and return the report."""
    seconds = float(spec.get("seconds", 10.0))
    connect_seconds = float(spec.get("connect_seconds", 15.0))
    drain_seconds = float(spec.get("drain_seconds", 1.0))
    hz = float(spec.get("hz", 90.0))
    ping_every = 1.0 / max(float(spec.get("ping_hz", 2.0)), 0.1)
    warm_up()
    start = time.monotonic()
    bots = [_make_bot(b, start) for b in spec.get("bots", [])]
    rotation = _down_rotation()
    socks = [b.headset.sock for b in bots]
    by_sock = {b.headset.sock: b for b in bots}
    next_frame = next_ping = start
    # connect: until everybody is welcomed (or connect_seconds)
    for _ in range(1_000_000):
        now = time.monotonic()
        if all(b.headset.welcome is not None for b in bots) or now - start > connect_seconds:
            break
        select.select(socks, [], [], 0.005)
        for b in bots:
            b.headset.service()
            _collect(b, now)
    start_at = spec.get("start_at")
    if isinstance(start_at, int | float) and time.monotonic() < start_at < time.monotonic() + 60:
        for _ in range(1_000_000):  # connected: wait (servicing) for the common start
            now = time.monotonic()
            if now >= start_at:
                break
            select.select(socks, [], [], max(0.0, min(0.005, start_at - now)))
            for b in bots:
                b.headset.service()
                _collect(b, now)
    began = time.monotonic()
    stop_at = began + seconds
    hard_deadline = began + seconds + drain_seconds + 15.0
    end_at = stop_at + drain_seconds
    frames = 0
    stop_file = Path(spec["stop_file"]) if spec.get("stop_file") else None
    next_stop_check = began + 0.5
    for _ in range(100_000_000):
        now = time.monotonic()
        if now >= end_at or now >= hard_deadline:
            break
        if stop_file is not None and now >= next_stop_check and now < stop_at:
            next_stop_check = now + 0.5
            if stop_file.exists():
                stop_at, end_at = now, now + drain_seconds
        readable, _, _ = select.select(socks, [], [], max(0.0, min(0.004, next_frame - now)))
        now = time.monotonic()
        for sock in readable:  # take in what arrived; replies (acks) wait for the frame's flush
            b = by_sock[sock]
            b.headset.drain(now)
            _collect(b, now)
        active = now < stop_at
        if now >= next_frame:  # every bot: its script, then one flush (one packet for all it queued)
            next_frame = max(next_frame + 1.0 / hz, now - 0.05)
            frames += 1
            ping = active and now >= next_ping
            if ping:
                next_ping = now + ping_every
            for b in bots:
                _act(b, now, now - began, rotation, active)
                if ping:
                    _ping(b, now)
                b.headset.flush(now)
                _collect(b, now)
    report = {
        "began": began,
        "stopped": stop_at,
        "frames": frames,
        "seconds": time.monotonic() - began,
        "cpu_seconds": time.process_time(),
        "bots": [_bot_report(b, began) for b in bots],
    }
    if not spec.get("linger"):
        for b in bots:
            with contextlib.suppress(OSError):
                b.headset.close()
    return report


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    q = np.quantile(np.asarray(values), [0.5, 0.9, 0.99])
    return {"count": len(values), "p50_ms": 1000 * q[0], "p90_ms": 1000 * q[1], "p99_ms": 1000 * q[2]}


def _thin_client_report(h: RoutedHeadset) -> dict[str, Any]:
    """What the bot's thin client measured: its clock sync's round trip (from input acks, so drivers only),
    input samples abandoned unacknowledged, what it dropped, and the objects it interpolates."""
    client = h.client
    rtt = client.clock.rtt
    return {
        "clock_rtt_ms": None if rtt is None else round(1000 * rtt, 3),
        "inputs_sent": client.inputs.next_seq,
        "inputs_abandoned": client.inputs.abandoned,
        "dropped": {k: v for k, v in client.dropped.items() if v},
        "objects": len(client.buffers),
    }


def _bot_report(bot: Bot, began: float) -> dict[str, Any]:
    h = bot.headset
    arrivals = bot.snapshot_arrivals
    gaps = [g for g in bot.gaps if g[1] > began]
    duration = max(time.monotonic() - began, 1e-6)
    offset = int(began - bot.start)
    bins = [[s - offset, n] for s, n in sorted(bot.down_bins.items()) if s >= offset]
    active_bytes = sum(n for s, n in bins if s >= 0)
    return {
        "name": h.name,
        "role": bot.spec.get("role"),
        "room": bot.spec.get("room"),
        "script": bot.spec.get("script", "watch"),
        "lane": bot.spec.get("lane"),
        "connected": h.connected,
        "state": int(h.core.state),
        "welcomed": h.welcome is not None,
        "connect_seconds": None if bot.welcomed_at is None else bot.welcomed_at - bot.start,
        "welcomed_at": bot.welcomed_at,
        "hands": (h.welcome or {}).get("hands", {}),
        "participant": (h.welcome or {}).get("participant"),
        "snapshots": h.snapshots_applied,
        "snapshot_errors": h.snapshot_errors,
        "undecoded": h.undecoded,
        "bytes_received": h.bytes_received,
        "bytes_sent": h.bytes_sent,
        "downlink_kbit_s": 8 * active_bytes / 1000 / duration,
        "down_bytes_per_second": bins[:MAX_SERIES],
        "rtt": _quantiles([r for _, r in bot.rtt]),
        "rtt_series": [[round(t, 3), round(r, 5)] for t, r in bot.rtt],
        "events": bot.events,
        "annotations_sent": bot.annotations_sent,
        "refused": [r.get("request") for r in h.messages.get("refused", [])][:100],
        "refused_reasons": [f"{r.get('request')}: {r.get('reason')}" for r in h.messages.get("refused", [])][:10],
        "thin_client": _thin_client_report(h),
        "snapshot_gaps": gaps,
        "snapshot_arrivals": [[round(a, 4), round(s, 4)] for a, s in arrivals[:: max(1, len(arrivals) // 2000)]],
        "commanded": bot.commanded,
        "rigid_seen": bot.rigid_seen,
    }


# ---------------------------------------------------------------------------------------------- checks


def _annotations(events: list) -> dict[str, list[tuple[int, float]]]:
    """{mentor name: [(n, server_time), ...]} of the ``annotate`` events in a bot's event list."""
    seen: dict[str, list[tuple[int, float]]] = {}
    for kind, t, tag in events:
        if kind != "annotate" or not isinstance(tag, str):
            continue
        parts = tag.rsplit(" ", 1)
        if len(parts) == 2 and parts[1].isdigit():
            seen.setdefault(parts[0], []).append((int(parts[1]), float(t)))
    return seen


def annotation_check(events: list, broadcast: dict[str, list[tuple[int, float]]], joined_at: float = 0.0) -> dict:
    """Did this client see every mentor's ``annotate`` events exactly once and in order?

    ``broadcast``: mentor name -> [(n, server_time)] the server broadcast (what the mentor itself received).
    Every one broadcast after ``joined_at`` (when the client was welcomed) must arrive; a client that joined
    later than an annotation does not get it (the server broadcasts to who is in the room), so the numbers
    seen must be consecutive (n, n+1, ...), without duplicates, ending with the last one broadcast."""
    seen = _annotations(events)
    missing = duplicated = out_of_order = 0
    for mentor, sent in broadcast.items():
        numbers = [n for n, _ in seen.get(mentor, [])]
        duplicated += len(numbers) - len(set(numbers))
        out_of_order += sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
        expected = {n for n, t in sent if t > joined_at}
        if numbers:
            expected |= set(range(min(numbers), max(n for n, _ in sent) + 1)) if sent else set()
        missing += len(expected - set(numbers))
    times = [t for _, t, _ in events]
    return {
        "received": sum(len(v) for v in seen.values()),
        "missing": missing,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "server_time_backwards": sum(1 for a, b in itertools.pairwise(times) if b < a),
        "exactly_once_in_order": missing == 0 and duplicated == 0 and out_of_order == 0,
    }


def room_checks(bots: list[dict[str, Any]]) -> dict[str, Any]:
    """Exactly-once / in-order verdicts for every bot of one room's reports (the mentors' own events are the
    record of what was broadcast; a mentor that saw none of its own falls back to 1..sent)."""
    broadcast: dict[str, list[tuple[int, float]]] = {}
    for b in bots:
        if b.get("script") != "mentor":
            continue
        own = _annotations(b.get("events", [])).get(b["name"], [])
        broadcast[b["name"]] = own or [(n, 0.0) for n in range(1, int(b.get("annotations_sent", 0)) + 1)]
    per_bot = {b["name"]: annotation_check(b.get("events", []), broadcast, b.get("welcomed_at") or 0.0) for b in bots}
    return {
        "annotations_sent": {b["name"]: b["annotations_sent"] for b in bots if b.get("script") == "mentor"},
        "annotations_broadcast": {k: len(v) for k, v in broadcast.items()},
        "bots": per_bot,
        "all_exactly_once_in_order": all(v["exactly_once_in_order"] for v in per_bot.values()) and bool(per_bot),
    }


# ---------------------------------------------------------------------------------------------- launching


class Worker:
    """A worker subprocess and its report file."""

    def __init__(self, spec: dict[str, Any], folder: Path | None = None) -> None:
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="swarm-"))
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="worker-", suffix=".json", dir=folder)
        os.close(fd)
        self.spec_path = Path(name)
        self.out_path = self.spec_path.with_suffix(".out.json")
        self.spec_path.write_text(json.dumps(spec))
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        if "NUMBA_CACHE_DIR" in os.environ:
            env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
        self.limit = float(spec.get("connect_seconds", 15)) + float(spec.get("seconds", 10)) + 30.0
        if isinstance(spec.get("start_at"), int | float):
            self.limit += max(0.0, min(60.0, spec["start_at"] - time.monotonic()))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtests.swarm", str(self.spec_path), str(self.out_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait (bounded) for the worker and read its report; a failed worker reports its error."""
        try:
            _, err = self.proc.communicate(timeout=self.limit if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        try:
            return json.loads(self.out_path.read_text())
        except (OSError, ValueError):
            return {"error": f"worker exit {self.proc.returncode}", "stderr": (err or "")[-2000:], "bots": []}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


def launch(spec: dict[str, Any], folder: Path | None = None) -> Worker:
    return Worker(spec, folder)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m loadtests.swarm SPEC.json OUT.json", file=sys.stderr)
        return 2
    try:
        spec = json.loads(Path(argv[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read the spec: {exc}", file=sys.stderr)
        return 2
    nice = spec.get("nice", 10)
    if isinstance(nice, int) and 0 < nice <= 19:
        with contextlib.suppress(OSError):
            os.nice(nice)  # the server under test keeps priority over the clients that share its cores
    report = run_worker(spec)
    tmp = Path(argv[1]).with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    tmp.replace(argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
