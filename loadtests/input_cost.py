"""The reactor's CPU per input packet: the batch decode path (``Connections.on_input`` today) against the
per-pose path it replaced (``InputReceiver.receive``: a ``RigidPose`` per pose, ``to_physics_quat``).

    python -m loadtests.input_cost [--seconds 10] [--participants 4] [--repeats 3]

A generated stream, replayed through a real ``RehearsalServer`` (test clock, no sockets): one room of the
scenario with a team (``loadtests.team``: drivers and a mentor), each headset sending a packet every display
frame at 60 Hz from the thin client's ``InputSender`` (head and right hand for a driver: the scenario's
drivers hold one grasper each; the head for the mentor), tracked poses moving smoothly inside the room at a
hand's speed, the acks arriving ``--ack-delay`` frames late (each packet repeats a few samples, as on a real
link). Both paths get the same packets in the same order on fresh servers; ``us_per_packet`` is the thread
CPU time (``time.thread_time``) of ``on_input`` per packet, its median over ``--repeats`` replays;
``decode_us_per_packet`` is the decode alone (``decode_packet`` against ``decode_batch``, the new samples
built). Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from twisted.internet.task import Clock

from loadtests.bench_link import BenchLink
from loadtests.server import SCENARIO_DIR
from loadtests.team import team_roles
from netcode.protocol.inputs import InputAck, InputPacketError, decode_batch, decode_packet
from netcode.protocol.poses import RigidPose, rotvec_to_quat
from netcode.thin_client.input_sender import InputSender
from rehearsal.connections import Connections, shown_head
from rehearsal.identity import Identity
from rehearsal.live_room import Client, LiveRoom, gaze_point
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.wire import DEVICE_HEAD, HAND_OF_DEVICE, to_physics_quat

HZ = 60


def per_pose_on_input(connections: Connections, client: Client, live: LiveRoom, packet: bytes) -> None:
    """``Connections.on_input`` for a driver as it was before the batch decode (the reference to beat): the
    budgets, then ``receive`` (a ``RigidPose`` per new pose), ``to_physics_quat`` per pose."""
    now = connections.clock()
    budget = connections.budgets.get(client.key)
    if budget is None or not budget.input_bytes.take(len(packet), now):
        return
    room = live.room
    participant = room.participants.get(client.identity.participant)
    if participant is None or not participant.hands:
        connections.on_input(client, live, packet)  # the gaze path: the same in both
        return
    fresh = client.inputs.new_samples(packet)
    if fresh and not budget.input_samples.take(fresh, now):
        return
    bucket = connections.room_budgets.get(client.session)
    if fresh and bucket is not None and not bucket.take(fresh, now):
        return
    try:
        samples = client.inputs.receive(packet, connections.server_time())
    except InputPacketError:
        return
    devices = client.inputs.devices or ()
    received_at = connections.server_time()
    for sample in samples:
        for device, pose in zip(devices, sample.poses, strict=True):
            hand = HAND_OF_DEVICE.get(device)
            if pose is not None and device == DEVICE_HEAD:
                client.gaze = gaze_point(pose, room.workspace)
                client.head = shown_head(pose)
            if pose is None or hand is None:
                continue
            connections.counters["input_poses"] += 1
            refusal = room.instrument_input(
                client.identity.participant,
                hand,
                pose.position,
                to_physics_quat(pose.rotation),
                pose.jaw,
                pose.energy,
                sample.client_time,
                received_at=received_at,
            )
            if refusal is not None:
                connections.counters["input_refused"] += 1


def stream(workspace: tuple[np.ndarray, np.ndarray], roles: list[str], seconds: float, ack_delay: int):
    """[(frame, client index, packet)]: every headset's packet of every frame, in arrival order."""
    lo, hi = workspace
    centre, reach = (lo + hi) / 2, float(np.min(hi - lo)) / 4
    senders = [InputSender((0, 2) if role != "mentor" else (0,)) for role in roles]  # head + the right hand
    out = []
    for frame in range(int(seconds * HZ)):
        t = frame / HZ
        for n, sender in enumerate(senders):
            w = 0.5 + 0.1 * n  # rad/s: a slow sweep, ~reach * w m/s
            head = RigidPose(centre + np.array([0.0, 0.3, -0.4]), rotvec_to_quat([0.1 * math.sin(t), 0.2 * n, 0.0]))
            poses = {0: head}
            if len(sender.devices) == 2:
                for device, side in ((2, 1.0),):
                    offset = reach * np.array([side * 0.5 + 0.3 * math.sin(w * t), 0.2 * math.cos(w * t), 0.0])
                    rotation = rotvec_to_quat([0.3 * math.sin(w * t), 0.1 * side, 0.2])
                    poses[device] = RigidPose(centre + offset, rotation, 0.2 + 0.1 * math.sin(t), frame % 120 < 30)
            sender.add_sample(t, poses)
            out.append((frame, n, sender.packet(t)))
            if sender.next_seq > ack_delay:
                sender.on_ack(InputAck(sender.next_seq - 1 - ack_delay, t, 0.0))
    return out


def replay(scenario: str, roles: list[str], packets, batch: bool, *, state: bool = False) -> dict[str, Any]:
    """CPU per packet of one path over the stream, on a fresh server (``state``: with what the room and the
    clients ended with, bit for bit, for comparing the paths)."""
    with tempfile.TemporaryDirectory(prefix="input-cost-") as data:
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=SCENARIO_DIR)
        clock = Clock()  # the budgets' and the room's clocks too: the stream is replayed at its own 60 Hz
        server = RehearsalServer(settings, clock, clock=clock.seconds, server_time=clock.seconds)
        try:
            live = server.rooms[server.create_session(scenario)]
            live.ticker.stop()
            clients = []
            for n, role in enumerate(roles):
                link = BenchLink(100 + n)
                server.connections.open(link, Identity(live.room.session, 100 + n, Role(role), f"{role}-{n}"))
                clients.append(live.clients[link.key])
            connections = server.connections
            cost = []
            frame_now = 0
            for frame, n, packet in packets:
                if frame != frame_now:
                    clock.advance((frame - frame_now) / HZ)
                    frame_now = frame
                client = clients[n]
                t0 = time.thread_time()
                if batch:
                    connections.on_input(client, live, packet)
                else:
                    per_pose_on_input(connections, client, live, packet)
                cost.append(time.thread_time() - t0)
            counters = server.counters
            out: dict[str, Any] = {
                "us_per_packet": round(statistics.fmean(cost) * 1e6, 2),
                "poses": counters["input_poses"],
                "refused": counters["input_refused"],
                "malformed": counters["input_malformed"],
            }
            if state:
                out["state"] = _state(live, clients)
            return out
        finally:
            server.stop()


def _state(live: LiveRoom, clients: list[Client]) -> list[Any]:
    """The room's accepted hand inputs and the clients' gaze and shown heads, as comparable bytes and floats."""
    hands = [
        (key, p.position.tobytes(), p.orientation.tobytes(), p.jaw, p.energy, p.sample_time, p.received_at)
        for key, p in sorted(live.room.inputs.items())
    ]
    heads = [
        (
            None if c.gaze is None else np.asarray(c.gaze).tobytes(),
            None if c.head is None else (c.head.position.tobytes(), c.head.rotation.tobytes()),
        )
        for c in clients
    ]
    return [hands, heads]


def decode_cost(packets, batch: bool) -> float:
    """Mean CPU µs per packet of the decode alone, each packet decoded after its sender's previous newest."""
    newest: dict[int, int] = {}
    t0 = time.thread_time()
    for _, n, packet in packets:
        after = newest.get(n)
        if batch:
            decoded = decode_batch(packet, after)
            if decoded.times:
                newest[n] = decoded.first_seq + len(decoded.times) - 1
        else:
            _, samples = decode_packet(packet, after)
            if samples:
                newest[n] = samples[-1].seq
    return (time.thread_time() - t0) / len(packets) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.input_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="block_5k")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--ack-delay", type=int, default=3, help="frames until a sample is acked")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    seconds = max(1.0, min(args.seconds, 600.0))
    roles = [role for role, _ in team_roles(max(1, min(args.participants, 16)), 0)]
    with tempfile.TemporaryDirectory(prefix="input-cost-") as data:  # the room's workspace for the stream
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=SCENARIO_DIR)
        server = RehearsalServer(settings, Clock())
        try:
            workspace = server.rooms[server.create_session(args.scenario)].room.workspace
        finally:
            server.stop()
    packets = stream(workspace, roles, seconds, max(0, args.ack_delay))
    print(f"input_cost: {len(packets)} packets; warming up", file=sys.stderr, flush=True)
    replay(args.scenario, roles, packets[: 20 * len(roles)], True)  # numba compiled/loaded, caches warm
    replay(args.scenario, roles, packets[: 20 * len(roles)], False)
    runs: dict[str, list[dict[str, Any]]] = {"per_pose": [], "batch": []}
    decode: dict[str, list[float]] = {"per_pose": [], "batch": []}
    for r in range(max(1, min(args.repeats, 20))):
        for name in ("per_pose", "batch") if r % 2 == 0 else ("batch", "per_pose"):  # alternate: drift hits both
            print(f"input_cost: run {r} {name}", file=sys.stderr, flush=True)
            runs[name].append(replay(args.scenario, roles, packets, name == "batch"))
            decode[name].append(decode_cost(packets, name == "batch"))
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "participants": len(roles),
        "hz": HZ,
        "packets": len(packets),
        "samples_per_packet": round(statistics.fmean(p[2][2] for p in packets), 2),
    }
    for name, results in runs.items():
        result[name] = {
            "us_per_packet": statistics.median(x["us_per_packet"] for x in results),
            "us_per_packet_runs": [x["us_per_packet"] for x in results],
            "decode_us_per_packet": round(statistics.median(decode[name]), 2),
            "poses": results[-1]["poses"],
            "refused": results[-1]["refused"],
            "malformed": results[-1]["malformed"],
        }
    result["speedup"] = round(result["per_pose"]["us_per_packet"] / result["batch"]["us_per_packet"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
