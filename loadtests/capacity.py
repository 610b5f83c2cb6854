"""``capacity``: ramp rooms, then clients, until the room tick p99 passes the 16.7 ms budget; report the knee.

One instrumented server (``loadtests.server.LoadServer``) on loopback, or with ``processes`` N of them (room k
on process (k-1) % N), or with ``process_per_room`` one per room (DESIGN's scale-out: each room's process has
its own GIL; measured together as a ``ServerGroup``, tick times over all rooms, CPU summed over the
processes). Phase after phase:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import plots
from loadtests.report import downlink_window, rtt_window, slim
from loadtests.run import Run, load_run
from loadtests.sampler import scrape_overlap, window
from loadtests.server import (
    PROFILE_FILE,
    TICK_BUDGET,
    LoadServer,
    create_room,
    gc_summary,
    lineup_summary,
    profile_summary,
    step_summary,
    tick_summary,
)
from loadtests.swarm import room_checks
from loadtests.team import ACKING_CLIENTS, join_team, team_roles, watcher_roles
from rehearsal.settings import Settings

JOIN_SECONDS = 90.0  # a phase waits this long at most for every room to step before it settles and measures
EMPTY_ROOM_SECONDS = 10.0  # a room whose bots stopped ends after this (the client ramp drops a room)
BUDGET_MS = 1000 * TICK_BUDGET
# The run scrapes the servers' /metrics this often (their process and threads every second). A scrape is rendered on
# the reactor thread with the GIL held (tens of ms at 4 rooms on a loaded machine): scraped every second, the slowest
# 1% of a 3-room phase's ticks were in flight during one 10 times as often as ticks at large (the phase's
# ``scrapes``); Prometheus scrapes a deployed server every 15 s (ops/deploy/prometheus.yaml).
METRICS_EVERY = 5.0


@dataclass
class Ramp:
    """The ramp in progress: the run, its rooms (with their server and invites used), the swarm workers'
    stop files, the phases measured and the knees found."""

    run: Run
    scenario: str
    roles: list[tuple[str, str]]
    phase_seconds: float
    settle_seconds: float
    worker_seconds: float  # a worker's own time limit: longer than the whole ramp
    server_options: dict[str, Any]
    process_per_room: bool
    processes: int = 1  # rooms spread over this many server processes, in turn (room k on process (k-1) % N)
    rooms: list[dict[str, Any]] = field(default_factory=list)
    room_servers: list[LoadServer] = field(default_factory=list)
    invites_used: list[Counter] = field(default_factory=list)
    stops: list[tuple[int | None, Path]] = field(default_factory=list)  # (room number or None for all, stop file)
    phases: list[dict[str, Any]] = field(default_factory=list)
    knee_rooms: int | None = None
    held_rooms: int | None = None
    ramp_rooms: int = 1
    knee_clients: int | None = None
    profile_rooms: int = 0  # profile the reactor thread of the first server in the phase with this many rooms (0: not)

    def new_server(self, tag: str) -> LoadServer:
        return self.run.server(tag, **self.server_options)

    def start_worker(self, specs: list[dict[str, Any]], room_number: int | None, tag: str) -> None:
        stop = self.run.folder / f"stop-{tag}"
        self.run.launch({"seconds": self.worker_seconds, "bots": specs, "stop_file": str(stop), "connect_seconds": 20})
        self.stops.append((room_number, stop))

    def stop_workers(self, keep_rooms: int | None = None) -> None:
        """Stop the workers (those of rooms numbered ``keep_rooms`` and up, when given)."""
        for room_number, stop in self.stops:
            if keep_rooms is None or (room_number is not None and room_number >= keep_rooms):
                stop.touch()

    def add_room(self, k: int) -> None:
        """Room ``k`` (from 1) with its team, on a server of its own with ``process_per_room``."""
        first = self.run.servers.servers[0]
        server = self.new_server(f"server{k}") if self.process_per_room and k > 1 else first
        if self.processes > 1:
            index = (k - 1) % self.processes
            while len(self.run.servers.servers) <= index:
                self.new_server(f"server{len(self.run.servers.servers) + 1}")
            server = self.run.servers.servers[index]
        room = create_room(server, self.scenario)
        self.rooms.append(room)
        self.room_servers.append(server)
        self.start_worker(join_team(server, room, k - 1, self.roles, snapshots=ACKING_CLIENTS), k - 1, f"room{k - 1}")
        self.invites_used.append(Counter(role for role, _ in self.roles))

    def add_watchers(self, step: int, per_room: int) -> None:
        """``per_room`` more watchers in each room of the client ramp, one worker for all of them."""
        specs = []
        for n in range(self.ramp_rooms):
            watchers = watcher_roles(self.invites_used[n], per_room)
            specs += join_team(
                self.room_servers[n], self.rooms[n], n, watchers, prefix=f"x{step}", snapshots=ACKING_CLIENTS
            )
        self.start_worker(specs, None, f"extra{step}")

    def rooms_ticking(self, seconds: float = 2.0) -> int:
        """Rooms whose ticks ran a step in the last ``seconds`` (a new room steps once its team is in)."""
        ticks = self.run.servers.ticks()
        if not ticks.size:
            return 0
        recent = ticks[ticks[:, 0] >= time.monotonic() - seconds]
        return int(np.unique(recent[:, 2]).size)

    def measure(self, label: str, rooms: int, clients: int) -> dict[str, Any]:
        """Wait (at most ``JOIN_SECONDS``) until every room steps (its team joined: on a loaded machine a new room's
        swarm worker takes a while), let the phase settle, measure the rest of it; the phase (also printed)."""
        joining = time.monotonic()
        _wait(JOIN_SECONDS, lambda: self.run.servers.alive() and self.rooms_ticking() < rooms)
        joined = round(time.monotonic() - joining, 1)
        if not _wait(self.settle_seconds, self.run.servers.alive):
            raise RuntimeError("a server exited")
        profiled = self.profile_rooms == rooms and "reactor_profile" not in self.run.report
        first = self.run.servers.servers[0]
        if profiled:
            first.profile(True)
        t0 = time.monotonic()
        _wait(self.phase_seconds - self.settle_seconds, lambda: True)
        t1 = time.monotonic()
        if profiled:
            self.run.report["reactor_profile"] = _profile(first, t0, t1) | {"rooms": rooms, "clients_per_room": clients}
        summary = tick_summary(self.run.servers.ticks(), t0, t1)
        phase = {
            **summary,
            "label": label,
            "rooms": rooms,  # the phase's rooms (the summary's "rooms" counts those that ticked in the window)
            "rooms_ticking": summary.get("rooms", 0),
            "clients_per_room": clients,
            "join_wait_seconds": joined,
            "t0": t0,
            "t1": t1,
            "server": window(self.run.sampler.rows, t0, t1),
            "step_parts": step_summary(self.run.servers.steps(), t0, t1),
            "lineup": lineup_summary(self.run.servers.ticks(), t0, t1),
            "gc": gc_summary(self.run.servers.collections(), t0, t1),
            "scrapes": scrape_overlap(self.run.sampler.rows, self.run.servers.ticks(), t0, t1),
        }
        phase["machine_saturated"] = saturated(phase["server"])
        self.phases.append(phase)
        self.run.say(_line(phase))
        return phase


SATURATED_SHARE = 0.9  # the machine's cores busier than this in a phase: its tick times say more of the machine


def saturated(server: dict[str, Any]) -> bool | None:
    """Whether the machine had no core to spare in the phase (all its CPU, the server's, the swarm's and any foreign
    load's, above SATURATED_SHARE of its cores): then room threads wait for a core (``thread_times``'
    run-queue wait) and the phase measures the machine's load as much as the server. None if not sampled."""
    busy, cores = server.get("machine_cpu_percent"), server.get("cores")
    if busy is None or not cores:
        return None
    return bool(busy >= 100 * cores * SATURATED_SHARE)


def _profile(server: LoadServer, t0: float, t1: float) -> dict[str, Any]:
    """Stop the server's reactor profile (started at ``t0``) and summarise it per room tick of [t0, t1)."""
    path = server.data_dir / PROFILE_FILE
    path.unlink(missing_ok=True)
    server.profile(False)
    _wait(10.0, lambda: not path.exists())  # the server writes it on its reactor thread
    time.sleep(0.5)
    ticks = server.ticks()
    count = int(((ticks[:, 0] >= t0) & (ticks[:, 0] < t1)).sum()) if ticks.size else 0
    return profile_summary(path, count) | {"file": str(path)}


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
    processes: int = 1,
    observer_snapshot_hz: float | None = None,
    profile: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ramp (see the module doc); returns the report (also written to ``out``/capacity.json)."""
    max_rooms = max(1, min(int(max_rooms), 32))
    phase_seconds = max(float(phase_seconds), settle_seconds + 2.0)
    fields = {
        "scenario": scenario,
        "budget_ms": BUDGET_MS,
        "physics_threads": physics_threads or "server default (settings.physics_threads, 1 per room)",
        "process_per_room": process_per_room,
        "processes": processes,
        "observer_snapshot_hz": Settings().observer_snapshot_hz
        if observer_snapshot_hz is None
        else observer_snapshot_hz,
    }
    with load_run("capacity", out, say, **fields) as run:
        ramp = Ramp(
            run,
            scenario,
            team_roles(participants, observers),
            phase_seconds,
            settle_seconds,
            worker_seconds=(max_rooms + max_observer_steps + 2) * (phase_seconds + 20) + 120,
            server_options={
                "empty_room_seconds": EMPTY_ROOM_SECONDS,
                "max_clients": 256,
                "physics_threads": physics_threads,
                "observer_snapshot_hz": observer_snapshot_hz,
                "profile": profile,
            },
            process_per_room=process_per_room,
            processes=max(1, min(int(processes), 16)),
            profile_rooms=required_rooms if profile else 0,
        )
        run.on_close.append(ramp.stop_workers)
        ramp.new_server("server")
        run.sample(metrics_every=METRICS_EVERY)
        run.start_clock()
        try:
            _room_ramp(ramp, max_rooms, required_rooms, stop_p99_ms)
            if max_observer_steps > 0:
                _client_ramp(ramp, observer_step, max_observer_steps, stop_p99_ms)
        except RuntimeError as exc:  # e.g. a join refused: keep what was measured
            run.report["error"] = str(exc)
            say(f"capacity ramp stopped: {exc}")
        if ramp.held_rooms is None:
            ramp.held_rooms = _held(ramp)
        ramp.stop_workers()
        _report(ramp, required_rooms, participants, observers, max_rooms)
    return run.report


def _held(ramp: Ramp) -> int:
    """Rooms that held: up to the one before the knee, or all of them."""
    return (ramp.knee_rooms - 1) if ramp.knee_rooms else len(ramp.rooms)


def _room_ramp(ramp: Ramp, max_rooms: int, required_rooms: int, stop_p99_ms: float) -> None:
    """Phase 1: a room more per phase, until ``max_rooms`` or, past the knee and the required load, far over."""
    clients = len(ramp.roles)
    for k in range(1, max_rooms + 1):
        ramp.add_room(k)
        p99 = ramp.measure(f"{k} rooms x {clients}", k, clients).get("p99_ms", 0)
        if ramp.knee_rooms is None and p99 > BUDGET_MS:
            ramp.knee_rooms = k
        if ramp.knee_rooms is not None and k >= required_rooms and p99 > stop_p99_ms:
            break  # past the knee, the required load measured, and far over budget: enough
    ramp.held_rooms = _held(ramp)
    ramp.ramp_rooms = max(ramp.held_rooms, 1)
    ramp.run.report["held_rooms"] = ramp.held_rooms


def _client_ramp(ramp: Ramp, observer_step: int, max_steps: int, stop_p99_ms: float) -> None:
    """Phase 2: at the last room count that held (the other rooms' bots stop), more watchers per phase."""
    ramp.stop_workers(keep_rooms=ramp.ramp_rooms)
    if len(ramp.rooms) > ramp.ramp_rooms:
        _wait(EMPTY_ROOM_SECONDS + 4.0, lambda: True)
    clients = len(ramp.roles)
    for step in range(1, max_steps + 1):
        ramp.add_watchers(step, observer_step)
        clients += observer_step
        p99 = ramp.measure(f"{ramp.ramp_rooms} rooms x {clients}", ramp.ramp_rooms, clients).get("p99_ms", 0)
        if ramp.knee_clients is None and p99 > BUDGET_MS:
            ramp.knee_clients = clients
            ramp.run.report["knee_clients"] = clients
        if ramp.knee_clients is not None and (ramp.held_rooms > 0 or p99 > stop_p99_ms):
            break


def _report(ramp: Ramp, required_rooms: int, participants: int, observers: int, max_rooms: int) -> None:
    """The workers' bots into the phases (RTT, downlink per role), the knee, the required load, the events,
    the workers, the plots: the rest of the report."""
    run, phases, clients = ramp.run, ramp.phases, len(ramp.roles)
    results, bots = run.results()
    for phase in phases:
        phase["rtt"] = rtt_window(bots, phase["t0"], phase["t1"])
        phase["downlink_kbit_s_by_role"] = downlink_window(bots, phase["t0"], phase["t1"])
        phase["holds"] = phase.get("p99_ms", 1e9) <= BUDGET_MS
    required = next((p for p in phases if p["rooms"] == required_rooms and p["clients_per_room"] == clients), None)
    knee_text = _knee_text(ramp.knee_rooms, ramp.held_rooms, ramp.ramp_rooms, ramp.knee_clients, clients, max_rooms)
    run.report.update(
        phases=[
            {k: v for k, v in p.items() if k not in ("t0", "t1")} | {"t_start": p["t0"] - run.origin} for p in phases
        ],
        knee={
            "rooms": ramp.knee_rooms,
            "clients_per_room_at_knee": clients if ramp.knee_rooms else None,
            "held_rooms": ramp.held_rooms,
            "client_ramp_rooms": ramp.ramp_rooms,
            "clients_per_room_knee": ramp.knee_clients,
            "text": knee_text,
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
        events=_events(bots),
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
    run.report["events_exactly_once_in_order"] = all(e["all_exactly_once_in_order"] for e in run.report["events"])
    _plots(run, phases, bots)


def _events(bots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per room: the exactly-once / in-order verdicts of its bots (without the per-bot detail)."""
    by_room: dict[int, list] = {}
    for bot in bots:
        by_room.setdefault(int(bot.get("room") or 0), []).append(bot)
    return [{"room": n, **{k: v for k, v in room_checks(b).items() if k != "bots"}} for n, b in sorted(by_room.items())]


def _plots(run: Run, phases: list[dict[str, Any]], bots: list[dict[str, Any]]) -> None:
    ticks, folder, origin = run.servers.ticks(), run.folder, run.origin
    run.plots(
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
        plots.process(run.sampler.rows, folder / "server_process.png", "capacity: server process", origin),
    )


def _line(phase: dict[str, Any]) -> str:
    s = phase.get("server", {})
    parts = phase.get("step_parts", {})
    p99 = {k: v.get("p99_ms") for k, v in parts.items() if isinstance(v, dict)}
    threads = {k: v.get("cpu_percent") for k, v in s.get("thread_times", {}).items()}
    waits = {k: v.get("runqueue_wait_percent") for k, v in s.get("thread_times", {}).items()}
    return (
        f"{phase['label']:>18}: ticks={phase.get('ticks', 0)} rooms ticking={phase.get('rooms_ticking')} "
        f"p50={phase.get('p50_ms')} p99={phase.get('p99_ms')} ms "
        f"(step p99={phase.get('step_p99_ms')} publish p99={phase.get('publish_p99_ms')}) "
        f"overruns={s.get('overrun_share')} substeps={s.get('substeps_min')}-{s.get('substeps_max')} "
        f"cpu={s.get('server_cpu_percent')}% swarm-cpu={s.get('swarm_cpu_percent')}% "
        f"foreign-cpu={s.get('foreign_cpu_percent')}% load={s.get('loadavg')} "
        f"saturated={phase.get('machine_saturated')} "
        f"egress={s.get('egress_kbit_s')} kbit/s\n    step parts p99 ms {p99}\n"
        f"    thread cpu % {threads} runqueue wait % {waits}\n"
        f"    lined up {phase.get('lineup')} gc {phase.get('gc')}\n"
        f"    sampler's scrapes {phase.get('scrapes')}"
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
