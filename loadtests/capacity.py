"""``capacity``: ramp rooms, then clients, until the room tick p99 passes the 16.7 ms budget; report the knee.

One instrumented server (``loadtests.server.LoadServer``) on loopback, or with ``process_per_room`` one per
room (DESIGN's scale-out: each room's process has its own GIL; measured together as a ``ServerGroup``,
tick times over all rooms, CPU summed over the processes). Phase after phase:

1. **rooms**: add a room of the scenario (default ``block_5k``, 5,040 tets) with M participants and N
   observers (default 4 + 4; one swarm worker process per room), let it settle, measure. The first phase
   whose tick p99 is over budget is the knee; the ramp goes on (so the degradation and the required
   ``required_rooms`` load are measured) until ``max_rooms`` or, past both, a p99 over ``stop_p99_ms``.
2. **clients**: with the last room count that held (at least one; the other rooms' bots stop and those
   rooms end), add ``observer_step`` observers to every room per phase until tick p99 is over budget.

Tick time is the instrumented server's whole tick (queueing + physics step + publishing), exact
quantiles over each phase's measuring window. Each phase also reports skipped ticks (overruns), the
substeps the governor chose (a room over its physics share runs fewer, softer substeps: *degraded*), server
CPU, egress, RTT p99 and downlink per role. The JSON is printed and written with PNG plots in the run folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.report import bots_of, downlink_window, rtt_window, run_folder, slim, write_json
from loadtests.sampler import Sampler, window
from loadtests.server import TICK_BUDGET, LoadServer, ServerGroup, create_room, tick_summary
from loadtests.swarm import Worker, launch, room_checks
from loadtests.team import ACKING_CLIENTS, join_team, team_roles, watcher_roles
from rehearsal.settings import Settings

EMPTY_ROOM_SECONDS = 10.0  # a room whose bots stopped ends after this (the client ramp drops a room)


def _measure(server: ServerGroup, sampler: Sampler, label: str, rooms: int, clients: int, t0: float, t1: float) -> dict:
    ticks = tick_summary(server.ticks(), t0, t1)
    return {
        "label": label,
        "rooms": rooms,
        "clients_per_room": clients,
        "t0": t0,
        "t1": t1,
        **ticks,
        "server": window(sampler.rows, t0, t1),
    }


def _wait(seconds: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive():
            return False
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return True


def run_capacity(
    out: Path | None = None,
    *,
    scenario: str = "block_5k",
    participants: int = 4,
    observers: int = 4,
    max_rooms: int = 8,
    phase_seconds: float = 30.0,
    settle_seconds: float = 8.0,
    observer_step: int = 4,
    max_observer_steps: int = 4,
    required_rooms: int = 4,
    stop_p99_ms: float = 50.0,
    physics_threads: int = 0,
    process_per_room: bool = False,
    observer_snapshot_hz: float | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ramp (see the module doc); returns the report (also written to ``out``/capacity.json)."""
    folder = run_folder(out, "capacity")
    max_rooms = max(1, min(int(max_rooms), 32))
    phase_seconds = max(float(phase_seconds), settle_seconds + 2.0)
    bound = (max_rooms + max_observer_steps + 2) * (phase_seconds + 20) + 120
    group = ServerGroup()

    def new_server(tag: str) -> LoadServer:
        server = LoadServer(
            folder / tag,
            empty_room_seconds=EMPTY_ROOM_SECONDS,
            max_clients=256,
            physics_threads=physics_threads,
            observer_snapshot_hz=observer_snapshot_hz,
        )
        group.add(server)
        server.wait_listening()
        return server

    workers: list[tuple[int | None, Worker, Path]] = []  # (room number or None for all rooms, worker, stop file)
    phases: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "run": "capacity",
        "folder": folder,
        "scenario": scenario,
        "budget_ms": 1000 * TICK_BUDGET,
        "physics_threads": physics_threads or "server default (settings.physics_threads, 1 per room)",
        "process_per_room": process_per_room,
        "observer_snapshot_hz": Settings().observer_snapshot_hz
        if observer_snapshot_hz is None
        else observer_snapshot_hz,
    }
    sampler = None
    try:
        first = new_server("server")
        sampler = Sampler(group, every=1.0, swarm=lambda: [w.pid for _, w, _ in workers]).start()
        origin = time.monotonic()
        rooms: list[dict[str, Any]] = []
        room_servers: list[LoadServer] = []
        roles = team_roles(participants, observers)
        knee_rooms = None

        def start_worker(specs: list[dict], room_number: int | None, tag: str) -> None:
            stop = folder / f"stop-{tag}"
            spec = {"seconds": bound, "bots": specs, "stop_file": str(stop), "connect_seconds": 20}
            workers.append((room_number, launch(spec, folder / "workers"), stop))

        held_rooms, ramp_rooms, knee_clients = 0, 1, None
        invites_used: list[Counter] = []
        try:
            # 1. rooms
            for k in range(1, max_rooms + 1):
                server = new_server(f"server{k}") if process_per_room and k > 1 else first
                room = create_room(server, scenario)
                rooms.append(room)
                room_servers.append(server)
                start_worker(join_team(server, room, k - 1, roles, snapshots=ACKING_CLIENTS), k - 1, f"room{k - 1}")
                invites_used.append(Counter(role for role, _ in roles))
                if not _wait(settle_seconds, group.alive):
                    raise RuntimeError("a server exited")
                t0 = time.monotonic()
                _wait(phase_seconds - settle_seconds, lambda: True)
                phase = _measure(group, sampler, f"{k} rooms x {len(roles)}", k, len(roles), t0, time.monotonic())
                phases.append(phase)
                say(_line(phase))
                if knee_rooms is None and phase.get("p99_ms", 0) > 1000 * TICK_BUDGET:
                    knee_rooms = k
                if knee_rooms is not None and k >= required_rooms and phase.get("p99_ms", 0) > stop_p99_ms:
                    break  # past the knee, the required load measured, and far over budget: enough
            held_rooms = (knee_rooms - 1) if knee_rooms else len(rooms)
            ramp_rooms = max(held_rooms, 1)
            report["held_rooms"] = held_rooms

            # 2. clients, at the last room count that held
            if max_observer_steps > 0:
                for room_number, _, stop in workers:
                    if room_number is not None and room_number >= ramp_rooms:
                        stop.touch()
                if len(rooms) > ramp_rooms:
                    _wait(EMPTY_ROOM_SECONDS + 4.0, lambda: True)
                clients = len(roles)
                for step in range(1, max_observer_steps + 1):
                    specs = []
                    for n in range(ramp_rooms):
                        watchers = watcher_roles(invites_used[n], observer_step)
                        specs += join_team(
                            room_servers[n], rooms[n], n, watchers, prefix=f"x{step}", snapshots=ACKING_CLIENTS
                        )
                    start_worker(specs, None, f"extra{step}")
                    clients += observer_step
                    _wait(settle_seconds, lambda: True)
                    t0 = time.monotonic()
                    _wait(phase_seconds - settle_seconds, lambda: True)
                    phase = _measure(
                        group, sampler, f"{ramp_rooms} rooms x {clients}", ramp_rooms, clients, t0, time.monotonic()
                    )
                    phases.append(phase)
                    say(_line(phase))
                    if knee_clients is None and phase.get("p99_ms", 0) > 1000 * TICK_BUDGET:
                        knee_clients = clients
                        report["knee_clients"] = clients
                    if knee_clients is not None and (held_rooms > 0 or phase.get("p99_ms", 0) > stop_p99_ms):
                        break
        except RuntimeError as exc:  # e.g. a join refused: keep what was measured
            report["error"] = str(exc)
            say(f"capacity ramp stopped: {exc}")
            held_rooms = report.get("held_rooms", (knee_rooms - 1) if knee_rooms else len(rooms))
            knee_clients = report.get("knee_clients")
        for _, _, stop in workers:
            stop.touch()
        results = [w.result() for _, w, _ in workers]
        bots = bots_of(results, origin)
        for phase in phases:
            phase["rtt"] = rtt_window(bots, phase["t0"], phase["t1"])
            phase["downlink_kbit_s_by_role"] = downlink_window(bots, phase["t0"], phase["t1"])
            phase["holds"] = phase.get("p99_ms", 1e9) <= 1000 * TICK_BUDGET
        required = next(
            (p for p in phases if p["rooms"] == required_rooms and p["clients_per_room"] == len(roles)), None
        )
        by_room: dict[int, list] = {}
        for bot in bots:
            by_room.setdefault(int(bot.get("room") or 0), []).append(bot)
        report.update(
            phases=[
                {k: v for k, v in p.items() if k not in ("t0", "t1")} | {"t_start": p["t0"] - origin} for p in phases
            ],
            knee={
                "rooms": knee_rooms,
                "clients_per_room_at_knee": len(roles) if knee_rooms else None,
                "held_rooms": held_rooms,
                "client_ramp_rooms": ramp_rooms,
                "clients_per_room_knee": knee_clients,
                "text": _knee_text(knee_rooms, held_rooms, ramp_rooms, knee_clients, len(roles), max_rooms),
            },
            required={
                "rooms": required_rooms,
                "participants": participants,
                "observers": observers,
                "measured": required is not None,
                "p99_ms": required.get("p99_ms") if required else None,
                "substeps_min": (required or {}).get("server", {}).get("substeps_min"),
                "holds": bool(required and required["holds"]),
            },
            events=[{"room": n, **room_checks(b)} for n, b in sorted(by_room.items())],
            workers=[
                {
                    "error": r.get("error"),
                    "cpu_seconds": r.get("cpu_seconds"),
                    "seconds": r.get("seconds"),
                    "bots": len(r.get("bots", [])),
                }
                for r in results
            ],
            bots=[slim(b) for b in bots],
        )
        for entry in report["events"]:
            entry.pop("bots", None)
        report["events_exactly_once_in_order"] = all(e["all_exactly_once_in_order"] for e in report["events"])
        ticks = group.ticks()
        report["plots"] = [
            plots.tick_distribution(ticks, phases, folder / "tick_distribution.png", "capacity: room tick time"),
            plots.tick_timeline(
                ticks,
                folder / "tick_timeline.png",
                "capacity: every room tick",
                origin,
                [(p["t0"], p["t1"], p["label"]) for p in phases],
            ),
            plots.bandwidth(bots, folder / "bandwidth.png", "capacity: downlink per client"),
            plots.rtt(bots, folder / "rtt.png", "capacity: RTT"),
            plots.process(sampler.rows, folder / "server_process.png", "capacity: server process", origin),
        ]
        report["plots_note"] = plots.available()
    finally:
        for _, _, stop in workers:
            stop.touch()
        if sampler is not None:
            sampler.stop()
        exits = [s.stop() for s in group.servers]
        report["server_exit"] = exits[0] if len(exits) == 1 else exits
        for _, w, _ in workers:
            w.kill()
    write_json(folder / "capacity.json", report)
    return report


def _line(phase: dict[str, Any]) -> str:
    s = phase.get("server", {})
    return (
        f"{phase['label']:>18}: ticks={phase.get('ticks', 0)} p50={phase.get('p50_ms')} p99={phase.get('p99_ms')} ms "
        f"(step p99={phase.get('step_p99_ms')} publish p99={phase.get('publish_p99_ms')}) "
        f"overruns={s.get('overrun_share')} substeps={s.get('substeps_min')}-{s.get('substeps_max')} "
        f"cpu={s.get('server_cpu_percent')}% swarm-cpu={s.get('swarm_cpu_percent')}% "
        f"foreign-cpu={s.get('foreign_cpu_percent')}% load={s.get('loadavg')} "
        f"egress={s.get('egress_kbit_s')} kbit/s"
    )


def _knee_text(
    knee_rooms: int | None, held: int, ramp: int, knee_clients: int | None, clients: int, max_rooms: int
) -> str:
    if knee_rooms is None:
        rooms = f"no knee up to {max_rooms} rooms x {clients} clients"
    elif knee_rooms == 1:
        rooms = f"over budget already at 1 room x {clients} clients"
    else:
        rooms = f"{held} rooms x {clients} clients hold; {knee_rooms} rooms pass the budget"
    if knee_clients is not None:
        rooms += f"; at {ramp} room(s), {knee_clients} clients per room pass it"
    return rooms
