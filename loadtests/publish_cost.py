"""The reactor's CPU per room tick for publishing, with a room's snapshots encoded on the reactor or on its thread.

    python -m loadtests.publish_cost [--scenario block_5k] [--ticks 300] [--participants 4] [--observers 4]

In one process, A/B in the same seconds: a real ``RehearsalServer`` (test clock, no sockets) with one room of the
scenario and a team of links that record nothing and ack every snapshot at once (UDP links: their flush is the
server's, a no-op here), every client with a tracked head (rigid objects in every snapshot). Each tick steps the
room as its thread does (``RoomTicker._advance`` with the publisher's hooks), then publishes it; ``reactor`` is the
reactor thread's CPU time for the tick (``before_step`` + ``publish``: events, snapshots, acks, forces), ``room``
the room thread's after the physics (``after_step``: the frame and the snapshots when they are encoded there).
Thread CPU time (``time.thread_time``), so other processes on a loaded machine disturb it less than wall time;
sends cost nothing here, so the figures are the publishing logic's own. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
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


def measure(scenario: str, ticks: int, participants: int, observers: int, on_room_thread: bool) -> dict[str, Any]:
    """One room for ``ticks`` ticks (after 20 of warm-up) with snapshots encoded on the reactor or its thread."""
    with tempfile.TemporaryDirectory(prefix="publish-cost-") as data:
        settings = load_settings(None, env={}, data_dir=Path(data), scenario_dir=SCENARIO_DIR)
        server = RehearsalServer(settings, Clock())
        server.publisher.encode_on_room_thread = on_room_thread
        try:
            return _ticks(server, scenario, ticks, participants, observers)
        finally:
            server.stop()


def _ticks(server: RehearsalServer, scenario: str, ticks: int, participants: int, observers: int) -> dict[str, Any]:
    live = server.rooms[server.create_session(scenario)]
    ticker = live.ticker
    ticker.stop()
    links = []
    for n, (role, _) in enumerate(team_roles(participants, observers)):
        link = BenchLink(100 + n)
        server.connections.open(link, Identity(live.room.session, 100 + n, Role(role), f"{role}-{n}"))
        links.append(link)
    server.publisher.publish(live, None)  # attaches the hooks
    reactor, room = [], []
    for t in range(ticks + 20):
        for client in list(live.clients.values()):  # heads move a little every tick
            client.head = RigidPose(np.array([0.01 * client.key, 0.4 + 0.001 * np.sin(t / 9), -0.3]))
        r0 = time.thread_time()
        before = getattr(ticker, "before_step", None)  # (None on a tree from before the hooks: A/B against it)
        context = before() if before is not None else None
        r1 = time.thread_time()
        control = live.room.control()
        report = ticker._advance(ticker.dt, ticker.governor.substeps, control)[0]  # the physics
        a0 = time.thread_time()
        after = getattr(ticker, "after_step", None)
        ticker.prepared = after(report, context) if after is not None and context is not None else None
        a1 = time.thread_time()
        server.publisher.publish(live, report)
        r2 = time.thread_time()
        for key in list(live.clients):
            live.sync.on_ack(key, live.sync.sequence)
        if t >= 20:
            reactor.append((r1 - r0) + (r2 - a1))
            room.append(a1 - a0)
    r, a = np.array(reactor) * 1e6, np.array(room) * 1e6
    return {
        "reactor_us_per_tick": {"mean": round(float(r.mean()), 1), "p50": round(float(np.median(r)), 1)},
        "room_thread_us_per_tick": {"mean": round(float(a.mean()), 1), "p50": round(float(np.median(a)), 1)},
        "prepared_ticks": server.counters["prepared_snapshot_ticks"],
        "snapshots": sum(link.snapshots for link in links),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.publish_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="block_5k")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--observers", type=int, default=4)
    args = parser.parse_args(argv)
    ticks = max(10, min(args.ticks, 100_000))
    result: dict[str, Any] = {"scenario": args.scenario, "ticks": ticks, "clients": args.participants + args.observers}
    runs = (("reactor_encodes", False), ("room_thread_encodes", True), ("reactor_encodes_again", False))
    for name, on_thread in runs:
        print(f"publish_cost: {name}", file=sys.stderr, flush=True)
        result[name] = measure(args.scenario, ticks, args.participants, args.observers, on_thread)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
