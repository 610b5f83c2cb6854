"""CPU time per room tick, by part: what one room of the capacity run costs its process, measured on a loaded machine.

    python -m loadtests.room_tick_cost [--scenario block_5k] [--ticks 300] [--repeats 5] [--participants 4]
                                       [--observers 4] [--physics-threads 1]

In one process, on one thread: a real ``RehearsalServer`` (test clock, no sockets) with one room of the scenario
and the capacity run's team (``loadtests.team``: drivers, a mentor, observers) on links that send nothing and ack
every snapshot at once (``loadtests.bench_link``). Each driver sends its right hand at 90 Hz as the swarm's
``drive`` script does (``loadtests.swarm.circle_pose``: 1.5 cm above the block, jaws half open, pointing down) in
thin-client input packets (``InputSender``, acked three of them late), through ``Connections.on_input``. Each
tick runs the parts the server runs, in its order, and times each with the thread's CPU clock
(``time.thread_time``; other processes on the machine disturb it far less than wall time):

* ``input``: the reactor decoding this tick's input packets (made beforehand: the clients' work is not timed) and
  handing the poses to ``Room.instrument_input``;
* ``before_step``: the reactor's share of the tick before the step (``Room.control`` and the publisher's
  ``before_step`` hook: the clients' focus);
* ``advance``: ``Room.advance`` on the room's thread (the physics step with its shell, skills, procedure checks,
  complications): ``RoomTicker._advance`` without its hooks;
* ``after_step``: the publisher's hook after the step on the room's thread (the snapshots encoded there);
* ``publish``: the reactor publishing the tick (events, snapshots sent, input acks, forces);
* ``tick``: their sum, the CPU one room's tick costs the process (it runs on two threads in the server).

Per part: the median over ``--repeats`` fresh servers of each repeat's mean, p50 and p99 (microseconds; the p99
shows work done once in a while, such as the room's once-a-second solver health check), after 30 warm-up ticks;
the kernels are compiled (or loaded from numba's cache) before the first repeat. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
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
from loadtests.swarm import circle_pose
from loadtests.team import driver_place, team_roles
from netcode.protocol.inputs import InputAck
from netcode.protocol.poses import RigidPose
from netcode.thin_client.input_sender import InputSender
from physics.instruments import look_rotation
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.wire import DEVICE_RIGHT, to_wire_quat

TICK_HZ = 60
INPUT_HZ = 90  # the swarm's drivers send at 90 Hz
ACK_DELAY = 3  # input packets until a sample is acked
WARM_UP_TICKS = 30
PARTS = ("input", "before_step", "advance", "after_step", "publish", "tick")


class Driver:
    """One driving headset's input: the swarm's ``drive`` pose at 90 Hz as thin-client packets."""

    def __init__(self, x: float, phase: float) -> None:
        self.x, self.phase = x, phase
        self.sender = InputSender((DEVICE_RIGHT,))
        self.rotation = to_wire_quat(look_rotation(forward=(0.0, -1.0, 0.0), up=(1.0, 0.0, 0.0)))
        self.frame = 0

    def packets(self, until: float) -> list[bytes]:
        """The packets of the frames up to time ``until`` (s) not yet sent."""
        out = []
        while self.frame / INPUT_HZ <= until:
            t = self.frame / INPUT_HZ
            position, jaw = circle_pose(t, self.x, 0.0, self.phase)
            self.sender.add_sample(t, {DEVICE_RIGHT: RigidPose(np.array(position), self.rotation, jaw, False)})
            packet = self.sender.packet(t)
            if packet is not None:
                out.append(packet)
            if self.sender.next_seq > ACK_DELAY:
                self.sender.on_ack(InputAck(self.sender.next_seq - 1 - ACK_DELAY, t, 0.0))
            self.frame += 1
        return out


def measure(scenario: str, ticks: int, participants: int, observers: int, physics_threads: int) -> dict[str, Any]:
    """One fresh server and room: ``ticks`` timed ticks after the warm-up; per part, mean and p50 (us)."""
    with tempfile.TemporaryDirectory(prefix="room-tick-cost-") as data:
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=SCENARIO_DIR)
        clock = Clock()
        server = RehearsalServer(settings, clock, clock=clock.seconds, server_time=clock.seconds)
        try:
            return _ticks(server, clock, scenario, ticks, participants, observers, physics_threads)
        finally:
            server.stop()


def _ticks(
    server: RehearsalServer, clock: Clock, scenario: str, ticks: int, participants: int, observers: int, threads: int
) -> dict[str, Any]:
    live = server.rooms[server.create_session(scenario)]
    room, ticker = live.room, live.ticker
    ticker.stop()
    ticker.physics_threads = threads
    roles = team_roles(participants, observers)
    n_drivers = sum(script == "drive" for _, script in roles)
    drivers = []
    for n, (role, script) in enumerate(roles):
        link = BenchLink(100 + n)
        server.connections.open(link, Identity(room.session, 100 + n, Role(role), f"{role}-{n}"))
        if script == "drive":
            drivers.append((live.clients[link.key], Driver(*driver_place(len(drivers), n_drivers))))
    server.publisher.publish(live, None)  # attaches the publisher's hooks to the ticker
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    for t in range(ticks + WARM_UP_TICKS):
        clock.advance(1.0 / TICK_HZ)
        now = t / TICK_HZ
        arrived = [(client, packet) for client, driver in drivers for packet in driver.packets(now)]  # the clients'
        c0 = time.thread_time()
        for client, packet in arrived:
            server.connections.on_input(client, live, packet)
        c1 = time.thread_time()
        control = room.control()
        context = ticker.before_step() if ticker.before_step is not None else None
        c2 = time.thread_time()
        report = ticker._advance(ticker.dt, ticker.governor.substeps, control)[0]
        c3 = time.thread_time()
        after = ticker.after_step
        ticker.prepared = after(report, context) if after is not None and context is not None else None
        c4 = time.thread_time()
        server.publisher.publish(live, report)
        c5 = time.thread_time()
        for key in list(live.clients):
            live.sync.on_ack(key, live.sync.sequence)
        if t >= WARM_UP_TICKS:
            for part, seconds in zip(PARTS, (c1 - c0, c2 - c1, c3 - c2, c4 - c3, c5 - c4, c5 - c0), strict=True):
                times[part].append(seconds)
    out: dict[str, Any] = {}
    for part, values in times.items():
        us = np.array(values) * 1e6
        out[part] = {"mean": float(us.mean()), "p50": float(np.median(us)), "p99": float(np.percentile(us, 99))}
    out["substeps"] = ticker.governor.substeps
    out["inputs"] = server.counters["input_poses"]
    out["instruments"] = len(room.instruments())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.room_tick_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="block_5k")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--observers", type=int, default=4)
    parser.add_argument("--physics-threads", type=int, default=1, help="numba threads of the room's step")
    args = parser.parse_args(argv)
    ticks = max(10, min(args.ticks, 100_000))
    repeats = max(1, min(args.repeats, 50))
    participants, observers = max(1, min(args.participants, 16)), max(0, min(args.observers, 64))
    print("room_tick_cost: warming up", file=sys.stderr, flush=True)
    measure(args.scenario, 10, participants, observers, args.physics_threads)  # kernels compiled or loaded
    runs = []
    for r in range(repeats):
        print(f"room_tick_cost: repeat {r + 1}/{repeats}", file=sys.stderr, flush=True)
        runs.append(measure(args.scenario, ticks, participants, observers, args.physics_threads))
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "ticks": ticks,
        "repeats": repeats,
        "participants": participants,
        "observers": observers,
        "physics_threads": args.physics_threads,
        "clock": "thread CPU time (time.thread_time), one thread",
        "instruments": runs[-1]["instruments"],
        "input_poses_per_run": runs[-1]["inputs"],
        "substeps": runs[-1]["substeps"],
    }
    for part in PARTS:
        result[f"{part}_us"] = {
            "mean": round(statistics.median(run[part]["mean"] for run in runs), 1),
            "p50": round(statistics.median(run[part]["p50"] for run in runs), 1),
            "p99": round(statistics.median(run[part]["p99"] for run in runs), 1),
            "repeat_means": [round(run[part]["mean"], 1) for run in runs],
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
