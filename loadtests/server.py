"""The server under test: a subprocess with load-test instrumentation, and what a run reads from it.

* ``LoadServer``: ``rehearsal.server.serve`` in a subprocess (ports 0, loopback, data in a given folder) with
  ``loadtests.instrument``'s tick recorder attached and ``loadtests/scenarios`` as its scenario folder. It is a
  ``rehearsal.bots.ServerProcess`` (same log reading, ``wait_listening``, ``credential``, ``stop``).
* ``ServerGroup``: several of them measured as one (DESIGN's scale-out: one process per room).
* ``create_room`` / ``join``: the admin and join HTTP API (``rehearsal.bots.post``).
* ``scrape`` / ``parse_metrics``: ``/metrics`` as ``{(name, labels): value}``.
* ``ProcessSample`` / ``sample_process``: RSS, open file descriptors and CPU seconds from ``/proc``.
* ``tick_summary``: quantiles of the tick records the instrumented server writes; ``lineup_summary``: how often
  rooms' ticks were in flight together; ``gc_summary``: the server's garbage collections.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.instrument import GC_COLUMNS, STEP_COLUMNS, read_collections, read_steps, read_ticks
from rehearsal.bots import ServerProcess, post

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
TICK_BUDGET = 1.0 / 60.0  # 16.7 ms
DRAIN_SECONDS = 5.0
PROFILE_FILE = "reactor.pstats"
"""With ``profile``: cProfile of the server's main (reactor) thread between SIGUSR1 and SIGUSR2 (the handlers run
on the main thread, so that is the thread profiled), written in its data folder at SIGUSR2."""
LAUNCH = """
import cProfile
import signal
import sys
from pathlib import Path
from loadtests.instrument import TickRecorder
from rehearsal.server import serve
from rehearsal.settings import load_settings
threads = int(sys.argv[5]) or None  # 0: the server's default
if sys.argv[8] == "1":
    profile = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    def dump(*_):
        profile.disable()
        profile.dump_stats(str(Path(sys.argv[1]) / "reactor.pstats"))
    signal.signal(signal.SIGUSR2, dump)
sys.exit(serve(load_settings(None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0,
                             scenario_dir=Path(sys.argv[2]),
                             max_clients=int(sys.argv[3]), empty_room_seconds=float(sys.argv[4]),
                             physics_threads=threads, drain_seconds=float(sys.argv[6]),
                             observer_snapshot_hz=float(sys.argv[7]) if float(sys.argv[7]) >= 0 else None),
               setup=TickRecorder(Path(sys.argv[1])).attach))
"""


class LoadServer(ServerProcess):
    """The instrumented server subprocess (see the module doc)."""

    def __init__(
        self,
        data_dir: Path,
        echo: Callable[[str], None] | None = None,
        *,
        max_clients: int = 256,
        empty_room_seconds: float = 300.0,
        physics_threads: int = 0,
        observer_snapshot_hz: float | None = None,
        profile: bool = False,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        observer_hz = -1.0 if observer_snapshot_hz is None else float(observer_snapshot_hz)  # -1: the default
        args = (
            data_dir,
            SCENARIO_DIR,
            max_clients,
            empty_room_seconds,
            int(physics_threads),
            DRAIN_SECONDS,
            observer_hz,
            int(bool(profile)),
        )
        super().__init__(data_dir, echo, DRAIN_SECONDS, script=LAUNCH, script_args=[str(a) for a in args])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def profile(self, on: bool) -> None:
        """Start (``on``) or stop and write (``PROFILE_FILE``) the reactor thread's profile (``profile=True`` only)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def ticks(self) -> np.ndarray:
        return read_ticks(self.data_dir)

    def steps(self) -> np.ndarray:
        return read_steps(self.data_dir)

    def collections(self) -> np.ndarray:
        return read_collections(self.data_dir)


class ServerGroup:
    """Instrumented servers measured as one: their tick records together (room numbers made distinct per
    process) and, in ``Sampler``, their processes and metrics summed."""

    ROOMS_PER_PROCESS = 1000  # offset of each process's room numbers in ``ticks``

    def __init__(self) -> None:
        self.servers: list[LoadServer] = []

    def add(self, server: LoadServer) -> LoadServer:
        self.servers.append(server)
        return server

    def alive(self) -> bool:
        return all(s.proc.poll() is None for s in self.servers)

    def ticks(self) -> np.ndarray:
        parts = []
        for i, server in enumerate(self.servers):
            t = server.ticks().copy()
            t[:, 2] += i * self.ROOMS_PER_PROCESS
            parts.append(t)
        return np.concatenate(parts) if parts else np.zeros((0, 4))

    def steps(self) -> np.ndarray:
        parts = []
        for i, server in enumerate(self.servers):
            t = server.steps().copy()
            t[:, 1] += i * self.ROOMS_PER_PROCESS
            parts.append(t)
        return np.concatenate(parts) if parts else np.zeros((0, len(STEP_COLUMNS)))

    def collections(self) -> np.ndarray:
        parts = [server.collections() for server in self.servers]
        return np.concatenate(parts) if parts else np.zeros((0, len(GC_COLUMNS)))


def create_room(server: ServerProcess, scenario: str) -> dict[str, Any]:
    """A new session (admin API); returns ``{"session", "scenario", "invites": {role: code}}``."""
    status, body = post(server.http_port, "/api/sessions", {"scenario": scenario}, server.credential())
    if status != 201:
        raise RuntimeError(f"creating a {scenario} session failed: {status} {body}")
    return body


def join(server: ServerProcess, room: dict[str, Any], role: str, name: str) -> dict[str, Any]:
    """A ticket for ``role`` (join API): ``token`` is base64 of the connect token."""
    status, ticket = post(server.http_port, "/api/join", {"invite": room["invites"][role], "name": name})
    if status != 200:
        raise RuntimeError(f"joining {room['session']} as {role} failed: {status} {ticket}")
    return ticket


# ---------------------------------------------------------------------------------------------- metrics


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text exposition -> ``{(name, labels_text): value}``; malformed lines are skipped."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines()[:100_000]:
        if not line or line.startswith("#"):
            continue
        try:
            if "{" in line:
                name, rest = line.split("{", 1)
                labels, value = rest.rsplit("}", 1)
            else:
                name, value = line.split(None, 1)
                labels = ""
            out[(name.strip(), labels)] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def scrape(port: int, timeout: float = 5.0) -> dict[tuple[str, str], float]:
    """``GET /metrics`` parsed; ``{}`` if the server does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            return parse_metrics(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError):
        return {}


def metric(metrics: dict[tuple[str, str], float], name: str, labels: str = "") -> float:
    return metrics.get((name, labels), 0.0)


# ---------------------------------------------------------------------------------------------- process


@dataclass
class ProcessSample:
    t: float
    rss_bytes: int
    fds: int
    cpu_seconds: float
    threads: int


def sample_process(pid: int) -> ProcessSample | None:
    """RSS, open fds, CPU seconds (user + system) and threads of ``pid`` from /proc; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = threads = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return ProcessSample(time.monotonic(), rss, fds, cpu, threads)


# ---------------------------------------------------------------------------------------------- ticks


def profile_summary(path: Path, ticks: int, top: int = 30) -> dict[str, Any]:
    """The reactor thread's cProfile (``profile``): the ``top`` functions by own time, in microseconds per room
    tick (``ticks``: the room ticks in the profiled time), with their cumulative time; {} when absent."""
    import pstats  # only for a profiled run

    try:
        stats = pstats.Stats(str(path))
    except (OSError, TypeError, ValueError, EOFError):
        return {}
    per = 1e6 / max(ticks, 1)

    def rows(column: int) -> list[dict[str, Any]]:  # stats values: (cc, nc, tottime, cumtime, callers)
        best = sorted(stats.stats.items(), key=lambda kv: -kv[1][column])[:top]  # type: ignore[attr-defined]
        return [
            {
                "function": f"{Path(file).name}:{line}:{name}",
                "calls_per_tick": round(nc / max(ticks, 1), 2),
                "own_us_per_tick": round(tt * per, 1),
                "cum_us_per_tick": round(ct * per, 1),
            }
            for (file, line, name), (_, nc, tt, ct, _) in best
        ]

    return {
        "room_ticks": ticks,
        "total_us_per_tick": round(stats.total_tt * per, 1),  # type: ignore[attr-defined]
        "top_own_time": rows(2),
        "top_cumulative": rows(3),
    }


def tick_summary(ticks: np.ndarray, t0: float = -np.inf, t1: float = np.inf, budget: float = TICK_BUDGET) -> dict:
    """Quantiles (ms) of the room ticks recorded in [t0, t1), and the share over ``budget``."""
    if ticks.size == 0:
        return {"ticks": 0}
    sel = ticks[(ticks[:, 0] >= t0) & (ticks[:, 0] < t1)]
    if sel.size == 0:
        return {"ticks": 0}
    seconds = sel[:, 1]
    q = np.quantile(seconds, [0.5, 0.9, 0.99, 0.999])
    return {
        "ticks": int(seconds.size),
        "p50_ms": round(1000 * float(q[0]), 3),
        "p90_ms": round(1000 * float(q[1]), 3),
        "p99_ms": round(1000 * float(q[2]), 3),
        "p999_ms": round(1000 * float(q[3]), 3),
        "max_ms": round(1000 * float(seconds.max()), 3),
        "over_budget_share": round(float(np.mean(seconds > budget)), 5),
        "rooms": int(np.unique(sel[:, 2]).size),
        **_parts(sel),
    }


def step_summary(steps: np.ndarray, t0: float = -np.inf, t1: float = np.inf) -> dict[str, Any]:
    """Where the steps' hand-back time went in [t0, t1) (``loadtests.instrument.STEP_COLUMNS``): p50, p99 and mean
    (ms) of each part, and of the room thread's wall time beyond its CPU time in the step (``advance_stall``) and
    in ``after_step`` (``after_stall``): time it was runnable without a core or blocked on the GIL."""
    if steps.size == 0:
        return {}
    sel = steps[(steps[:, 0] >= t0) & (steps[:, 0] < t1)]
    if sel.size == 0:
        return {}
    col = {name: sel[:, i] for i, name in enumerate(STEP_COLUMNS)}
    parts = {name: col[name] for name in STEP_COLUMNS[2:]}
    parts["advance_stall"] = col["advance"] - col["advance_cpu"]
    parts["after_stall"] = col["after"] - col["after_cpu"]
    out: dict[str, Any] = {"steps": int(sel.shape[0])}
    for name, values in parts.items():
        q50, q99 = np.quantile(values, [0.5, 0.99])
        out[name] = {
            "p50_ms": round(1000 * float(q50), 3),
            "p99_ms": round(1000 * float(q99), 3),
            "mean_ms": round(1000 * float(values.mean()), 3),
        }
    return out


def lineup_summary(ticks: np.ndarray, t0: float = -np.inf, t1: float = np.inf) -> dict[str, Any]:
    """How often rooms' ticks lined up in [t0, t1): for each tick, how many other rooms of the same process had a
    tick in flight (handed over, not yet published) when it was handed over. Ticks that line up wait for each
    other's cores; spread phases (``rehearsal.ticking.TickPhases``) keep this near 0. A tick record's hand-over is
    its end less its duration; rooms of different processes (``ServerGroup``'s room numbers) count apart."""
    if ticks.size == 0:
        return {}
    ends, starts, rooms = ticks[:, 0], ticks[:, 0] - ticks[:, 1], ticks[:, 2]
    inside = (starts >= t0) & (starts < t1)
    if not inside.any():
        return {}
    busy = np.zeros(int(inside.sum()))
    points, own = starts[inside], rooms[inside]
    process = own // ServerGroup.ROOMS_PER_PROCESS
    for room in np.unique(rooms):
        mine = rooms == room
        order = np.argsort(starts[mine])
        s, e = starts[mine][order], ends[mine][order]
        i = np.searchsorted(s, points, side="right") - 1
        covered = (i >= 0) & (e[np.maximum(i, 0)] > points)
        same = (own != room) & (process == room // ServerGroup.ROOMS_PER_PROCESS)
        busy += covered & same
    return {
        "ticks": int(busy.size),
        "others_in_flight_mean": round(float(busy.mean()), 3),
        "lined_up_share": round(float(np.mean(busy >= 1)), 4),  # handed over while another room's tick was out
        "others_in_flight_max": int(busy.max()),
    }


def gc_summary(collections: np.ndarray, t0: float = -np.inf, t1: float = np.inf) -> dict[str, Any]:
    """The server's garbage collections in [t0, t1) by generation: count, longest and total pause (ms)."""
    if collections.size == 0:
        return {}
    sel = collections[(collections[:, 0] >= t0) & (collections[:, 0] < t1)]
    out: dict[str, Any] = {}
    for generation in (0, 1, 2):
        pauses = sel[sel[:, 1] == generation, 2]
        out[f"gen{generation}"] = {
            "count": int(pauses.size),
            "max_ms": round(1000 * float(pauses.max()), 3) if pauses.size else 0.0,
            "total_ms": round(1000 * float(pauses.sum()), 3),
        }
    return out


def _parts(sel: np.ndarray) -> dict[str, float]:
    """p50/p99 of the tick's two parts: the step (dispatch to the worker thread until the report is back on
    the reactor: queueing + physics + hand-back) and publishing (events, snapshot encoding, sends)."""
    if sel.shape[1] < 4:
        return {}
    publish = sel[:, 3]
    step = sel[:, 1] - publish
    qs, qp = np.quantile(step, [0.5, 0.99]), np.quantile(publish, [0.5, 0.99])
    return {
        "step_p50_ms": round(1000 * float(qs[0]), 3),
        "step_p99_ms": round(1000 * float(qs[1]), 3),
        "publish_p50_ms": round(1000 * float(qp[0]), 3),
        "publish_p99_ms": round(1000 * float(qp[1]), 3),
    }
