"""Where a room thread's step time goes when several rooms share one process: CPU, waiting for a core, the GIL.

    python -m loadtests.room_threads [--rooms 4] [--seconds 10] [--switch-interval 0.005] [--nice 5]

In one process, without sockets: a real ``RehearsalServer`` (test clock) with ``rooms`` rooms of the scenario, each
with a team of links that keep nothing and ack every snapshot (4 participants + 4 observers, heads moving), and a
"reactor" thread that ticks every room at its rate as ``RoomTicker`` does: ``before_step``, the step and
``after_step`` (the snapshot encode) on the room's own ``RoomThread``, the result back through
``callFromThread``, then ``Publisher.publish`` on the reactor thread. Per step on the room's thread: wall time, the
thread's CPU time and its run-queue wait (``/proc/thread-self/schedstat``: runnable, no core); what is left is time
the thread was blocked, which on a room thread is waiting for the GIL (``blocked``). Also the tick (hand-over until
published) as the load test sees it. Prints JSON on stdout; figures are noisy on a shared machine (say so).
"""

from __future__ import annotations

import argparse
import json
import queue
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
from netcode.protocol.poses import RigidPose
from rehearsal.identity import Identity
from rehearsal.roles import Role
from rehearsal.server import RehearsalServer
from rehearsal.settings import load_settings
from rehearsal.ticking import RoomThread


def schedstat() -> tuple[float, float]:
    """This thread's (CPU seconds, run-queue wait seconds) from the kernel (Linux); (0, 0) elsewhere."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            cpu, wait = f.read().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(cpu) / 1e9, int(wait) / 1e9


class _Reactor:
    """What a ``RoomThread`` needs of a reactor: ``callFromThread`` into the bench's reactor thread."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, fn, *args) -> None:  # noqa: N802 (twisted's name)
        self.calls.put((fn, args))


def run(
    scenario: str, rooms: int, seconds: float, participants: int, observers: int, nice: int, spread: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="room-threads-") as data:
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=SCENARIO_DIR)
        server = RehearsalServer(settings, Clock())
        try:
            return _run(server, scenario, rooms, seconds, participants, observers, nice, spread)
        finally:
            server.stop()


def _run(
    server: RehearsalServer,
    scenario: str,
    rooms: int,
    seconds: float,
    participants: int,
    observers: int,
    nice: int,
    spread: bool,
) -> dict[str, Any]:
    reactor = _Reactor()
    lives = []
    for r in range(rooms):
        live = server.rooms[server.create_session(scenario)]
        live.ticker.stop()
        live.pool.stop()
        live.pool = RoomThread(reactor, f"room-bench-{r}", nice=nice)  # answers into this bench's reactor
        for n, (role, _) in enumerate(team_roles(participants, observers)):
            key = 1000 * r + 100 + n
            server.connections.open(BenchLink(key), Identity(live.room.session, key, Role(role), f"{role}-{n}"))
        server.publisher.publish(live, None)  # attaches the publisher's hooks to the ticker
        lives.append(live)
    samples: list[list[tuple[float, ...]]] = [[] for _ in lives]
    ticks: list[list[float]] = [[] for _ in lives]

    def job(r: int, live, control, context):
        w0, (c0, q0) = time.perf_counter(), schedstat()
        result = live.ticker._advance(live.ticker.dt, live.ticker.governor.substeps, control, context)
        w1, (c1, q1) = time.perf_counter(), schedstat()
        samples[r].append((w1 - w0, c1 - c0, q1 - q0))
        return result

    dt = lives[0].ticker.dt
    busy = [False] * len(lives)
    start = time.perf_counter()
    # Rooms' ticks spread evenly over the tick (``spread``) or all at the same moment.
    due = [start + dt * (1 + (r / len(lives) if spread else 0.0)) for r in range(len(lives))]
    end = time.perf_counter() + seconds
    step = 0

    def done(r: int, started: float, result) -> None:
        live = lives[r]
        report, _, live.ticker.prepared = result
        server.publisher.publish(live, report)
        for key in list(live.clients):
            live.sync.on_ack(key, live.sync.sequence)
        busy[r] = False
        ticks[r].append(time.perf_counter() - started)

    while time.perf_counter() < end:
        now = time.perf_counter()
        for r, live in enumerate(lives):
            if now < due[r]:
                continue
            due[r] += dt
            if busy[r]:
                continue  # an overrun: skipped, as RoomTicker does
            step += 1
            for client in list(live.clients.values()):
                client.head = RigidPose(np.array([0.01 * (client.key % 100), 0.4 + 0.001 * np.sin(step / 9), -0.3]))
            context = live.ticker.before_step() if live.ticker.before_step else None
            busy[r] = True
            started = time.perf_counter()
            d = live.pool.run(job, r, live, live.room.control(), context)
            d.addCallback(lambda result, r=r, started=started: done(r, started, result))
        wait = max(0.0, min(due) - time.perf_counter())
        try:
            fn, args = reactor.calls.get(timeout=wait)
            fn(*args)
        except queue.Empty:
            pass
    for live in lives:
        live.pool.stop()
    return _summary(samples, ticks)


def _summary(samples: list[list[tuple[float, ...]]], ticks: list[list[float]]) -> dict[str, Any]:
    rows = np.array([s for room in samples for s in room[30:]])  # after the kernels' first calls
    tick = np.array([t for room in ticks for t in room[30:]])
    if rows.size == 0:
        return {"steps": 0}
    wall, cpu, runq = rows[:, 0], rows[:, 1], rows[:, 2]
    parts = {"wall": wall, "cpu": cpu, "runqueue": runq, "blocked": np.maximum(wall - cpu - runq, 0.0)}
    out: dict[str, Any] = {"steps": int(rows.shape[0])}
    for name, v in parts.items():
        out[f"{name}_ms"] = {
            "p50": round(1e3 * float(np.median(v)), 3),
            "p99": round(1e3 * float(np.quantile(v, 0.99)), 3),
            "mean": round(1e3 * float(v.mean()), 3),
        }
    q50, q99 = np.quantile(tick, [0.5, 0.99])
    out["tick_ms"] = {"p50": round(1e3 * float(q50), 3), "p99": round(1e3 * float(q99), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.room_threads", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="block_5k")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--observers", type=int, default=4)
    parser.add_argument("--nice", type=int, default=5, help="room threads' nice value above the process's")
    parser.add_argument("--together", action="store_true", help="every room ticks at the same moment")
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s)")
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(max(1e-5, min(args.switch_interval, 0.1)))
    rooms, seconds = max(1, min(args.rooms, 16)), max(2.0, min(args.seconds, 600.0))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    result = {
        "scenario": args.scenario,
        "rooms": rooms,
        "switch_interval": sys.getswitchinterval(),
        "nice": args.nice,
        "loadavg_before": float(load),
        "rooms_tick_together": args.together,
        **run(args.scenario, rooms, seconds, args.participants, args.observers, args.nice, not args.together),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
