"""Periodic samples of the server under test: its process (/proc) and a few /metrics numbers.

``Sampler(server, every=1.0).start()`` samples in a thread until ``stop()`` (or ``max_samples``); ``server``
may be a ``ServerGroup`` (its processes are summed, counters added, substeps the min and max over them).
``rows`` is a list of plain dicts (monotonic ``t``, ``rss_bytes``, ``fds``, ``cpu_seconds``, ``threads``, and the
counters ``ticks``, ``overruns``, ``bytes_out``, ``bytes_in``, ``packets_in``, ``substeps_min``,
``substeps_max``, and ``scrape``: when its ``/metrics`` scrape began and ended). ``window(rows, t0, t1)`` gives the
deltas and rates between two times, ``scrape_overlap`` whether the scrapes show in the ticks, ``flatness`` checks
that a series does not grow.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.server import LoadServer, ServerGroup, metric, sample_process, scrape

METRICS = {
    "ticks": ("rehearsal_ticks_total", ""),
    "overruns": ("rehearsal_tick_overruns_total", ""),
    "bytes_out": ("rehearsal_bytes_total", 'direction="out"'),
    "bytes_in": ("rehearsal_bytes_total", 'direction="in"'),
    "packets_in": ("rehearsal_packets_total", 'direction="in"'),
    "substeps_min": ("rehearsal_substeps", 'stat="min"'),
    "substeps_max": ("rehearsal_substeps", 'stat="max"'),
}


class Sampler:
    """Samples the server process and its metrics every ``every`` seconds in a daemon thread."""

    def __init__(
        self,
        server: LoadServer | ServerGroup,
        every: float = 1.0,
        max_samples: int = 100_000,
        swarm: Callable[[], list[int]] | None = None,
        metrics_every: float | None = None,
    ) -> None:
        self.server = server
        # /metrics is scraped this often at most (default: every sample); the rows between carry the last values
        # (``scraped`` False). A scrape is rendered on the server's reactor thread with the GIL held.
        self.metrics_every = every if metrics_every is None else max(float(metrics_every), every)
        self._metrics: dict[str, float] = {}
        self._scraped_at = -float("inf")
        self.swarm = swarm  # the pids of the run's own load generators (their CPU is reported apart)
        self._swarm_cpu: dict[int, float] = {}
        self.every = every
        self.max_samples = max_samples
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _servers(self) -> list[LoadServer]:
        return list(self.server.servers) if isinstance(self.server, ServerGroup) else [self.server]

    def sample(self) -> dict[str, Any] | None:
        servers = self._servers()
        procs = [sample_process(s.pid) for s in servers]
        if not procs or any(p is None for p in procs):
            return None
        row: dict[str, Any] = {
            "t": procs[-1].t,
            "rss_bytes": sum(p.rss_bytes for p in procs),
            "fds": sum(p.fds for p in procs),
            "cpu_seconds": sum(p.cpu_seconds for p in procs),
            "threads": sum(p.threads for p in procs),
            "processes": len(procs),
        }
        row.update(machine())
        row["thread_cpu_seconds"], row["thread_wait_seconds"] = {}, {}
        for server in servers:
            for role, (cpu, wait) in thread_times(server.pid).items():
                row["thread_cpu_seconds"][role] = row["thread_cpu_seconds"].get(role, 0.0) + cpu
                row["thread_wait_seconds"][role] = row["thread_wait_seconds"].get(role, 0.0) + wait
        if self.swarm is not None:
            for pid in list(self.swarm())[:1000]:
                sample = sample_process(pid)
                if sample is not None:
                    self._swarm_cpu[pid] = sample.cpu_seconds  # a finished worker keeps its last value
            row["swarm_cpu_seconds"] = sum(self._swarm_cpu.values())
        scrape_started = time.monotonic()
        row["scraped"] = scrape_started - self._scraped_at >= self.metrics_every - 0.05 * self.every
        if row["scraped"]:
            self._scraped_at = scrape_started
            scraped = [scrape(s.http_port) for s in servers]
            row["scrape"] = (scrape_started, time.monotonic())  # the server renders /metrics on its reactor thread
            for key, (name, labels) in METRICS.items():
                values = [metric(m, name, labels) for m in scraped]
                if key == "substeps_min":
                    self._metrics[key] = min(values)
                elif key == "substeps_max":
                    self._metrics[key] = max(values)
                else:
                    self._metrics[key] = sum(values)
        row.update(self._metrics)
        return row

    def _run(self) -> None:
        for _ in range(self.max_samples):
            if self._stop.is_set():
                return
            row = self.sample()
            if row is not None:
                self.rows.append(row)
            self._stop.wait(self.every)


THREAD_ROLES = ("reactor", "rooms", "other")


def thread_times(pid: int, max_threads: int = 1000) -> dict[str, tuple[float, float]]:
    """Per kind of thread of process ``pid`` (the main thread is the reactor, threads named ``room-*`` are rooms'
    physics threads, the rest other): (CPU seconds, seconds runnable but waiting for a core) summed, from each
    thread's ``/proc/<pid>/task/<tid>/schedstat``. Wall time that is neither (on a room thread that has work)
    was spent blocked: waiting for the GIL. {} if the process is gone."""
    out = {role: (0.0, 0.0) for role in THREAD_ROLES}
    try:
        tids = os.listdir(f"/proc/{pid}/task")[:max_threads]
    except OSError:
        return {}
    for tid in tids:
        try:
            cpu_ns, wait_ns = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:2]
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        role = "reactor" if tid == str(pid) else "rooms" if name.startswith("room-") else "other"
        cpu, wait = out[role]
        out[role] = (cpu + int(cpu_ns) / 1e9, wait + int(wait_ns) / 1e9)
    return out


def thread_window(a: dict[str, Any], b: dict[str, Any], dt: float) -> dict[str, Any]:
    """Per kind of server thread: CPU and run-queue wait (waiting for a core) in percent of one core."""
    if "thread_cpu_seconds" not in a or "thread_cpu_seconds" not in b:
        return {}
    out = {}
    for role in THREAD_ROLES:
        cpu = b["thread_cpu_seconds"].get(role, 0.0) - a["thread_cpu_seconds"].get(role, 0.0)
        wait = b["thread_wait_seconds"].get(role, 0.0) - a["thread_wait_seconds"].get(role, 0.0)
        out[role] = {"cpu_percent": round(100 * cpu / dt, 1), "runqueue_wait_percent": round(100 * wait / dt, 1)}
    return {"thread_times": out}


def machine() -> dict[str, float]:
    """The whole machine: busy and total CPU seconds (all cores, /proc/stat) and the 1-minute load average.

    The runs share the machine with whatever else runs on it; ``window`` reports the CPU used by everything
    but the server as ``other_cpu_percent`` (the swarm workers, and any foreign load) so results can be read."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]
    return {
        "machine_busy_seconds": (sum(values) - idle) / ticks,
        "machine_seconds": sum(values) / ticks,
        "loadavg": load,
    }


def window(rows: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Deltas and rates of the samples between t0 and t1 (the first and last sample inside)."""
    inside = [r for r in rows if t0 <= r["t"] <= t1]
    if len(inside) < 2:
        return {}
    a, b = inside[0], inside[-1]
    dt = max(b["t"] - a["t"], 1e-6)
    scraped = [r for r in inside if r.get("scraped", True)]  # the /metrics figures: between the scrapes inside
    if len(scraped) < 2:
        scraped = [a, b]
    ma, mb = scraped[0], scraped[-1]
    mdt = max(mb["t"] - ma["t"], 1e-6)
    ticks = mb["ticks"] - ma["ticks"]
    return {
        "seconds": round(dt, 2),
        "server_cpu_percent": round(100 * (b["cpu_seconds"] - a["cpu_seconds"]) / dt, 1),
        "ticks": ticks,
        "overruns": mb["overruns"] - ma["overruns"],
        "overrun_share": round((mb["overruns"] - ma["overruns"]) / ticks, 5) if ticks else None,
        "egress_kbit_s": round(8 * (mb["bytes_out"] - ma["bytes_out"]) / mdt / 1000, 1),
        "ingress_kbit_s": round(8 * (mb["bytes_in"] - ma["bytes_in"]) / mdt / 1000, 1),
        "packets_in_per_s": round((mb["packets_in"] - ma["packets_in"]) / mdt, 1),
        "substeps_min": min(r["substeps_min"] for r in scraped),
        "substeps_max": max(r["substeps_max"] for r in scraped),
        "rss_mb": round(b["rss_bytes"] / 2**20, 1),
        **_machine_window(a, b, dt),
        **thread_window(a, b, dt),
        "fds": b["fds"],
    }


def scrape_overlap(rows: list[dict[str, Any]], ticks: np.ndarray, t0: float, t1: float) -> dict[str, Any]:
    """Whether the sampler's own ``/metrics`` scrapes (rendered on the server's reactor thread, with the GIL) show in
    the ticks of [t0, t1): how long a scrape took (ms, from the sampler's side), the share of all ticks that were in
    flight during one and the share of the slowest 1% that were; the second far above the first says the scrapes
    make the p99. ``ticks``: the tick records (end, seconds, room, publish)."""
    spans = np.array([r["scrape"] for r in rows if "scrape" in r and t0 <= r["scrape"][0] < t1], np.float64)
    if ticks.size == 0 or spans.size == 0:
        return {}
    sel = ticks[(ticks[:, 0] - ticks[:, 1] >= t0) & (ticks[:, 0] - ticks[:, 1] < t1)]
    if sel.size == 0:
        return {}
    starts, ends = sel[:, 0] - sel[:, 1], sel[:, 0]
    i = np.searchsorted(spans[:, 0], ends, side="left") - 1  # the last scrape begun before the tick ended
    during = (i >= 0) & (spans[np.maximum(i, 0), 1] > starts)
    slow = sel[:, 1] >= np.quantile(sel[:, 1], 0.99)
    took = 1000 * (spans[:, 1] - spans[:, 0])
    return {
        "scrapes": int(spans.shape[0]),
        "scrape_ms_p50": round(float(np.median(took)), 2),
        "scrape_ms_max": round(float(took.max()), 2),
        "ticks_during_share": round(float(during.mean()), 4),
        "slowest_1pct_during_share": round(float(during[slow].mean()), 4),
    }


def _machine_window(a: dict[str, Any], b: dict[str, Any], dt: float) -> dict[str, Any]:
    if "machine_busy_seconds" not in a or "machine_busy_seconds" not in b:
        return {}
    busy = 100 * (b["machine_busy_seconds"] - a["machine_busy_seconds"]) / dt
    server = 100 * (b["cpu_seconds"] - a["cpu_seconds"]) / dt
    out = {
        "machine_cpu_percent": round(busy, 1),
        "other_cpu_percent": round(busy - server, 1),
        "cores": os.cpu_count(),
        "loadavg": b.get("loadavg"),
    }
    if "swarm_cpu_seconds" in a and "swarm_cpu_seconds" in b:
        swarm = 100 * (b["swarm_cpu_seconds"] - a["swarm_cpu_seconds"]) / dt
        out["swarm_cpu_percent"] = round(swarm, 1)
        out["foreign_cpu_percent"] = round(busy - server - swarm, 1)  # neither the server nor this run's swarm
    return out


def flatness(t: list[float], values: list[float], skip_share: float = 0.2) -> dict[str, Any]:
    """Is a series flat after a warm-up (the first ``skip_share`` of it)? A least-squares slope per hour
    and the growth between the second fifth and the last fifth of the samples."""
    n = len(values)
    if n < 10:
        return {"samples": n, "flat": None}
    start = int(n * skip_share)
    tt, vv = np.asarray(t[start:], float), np.asarray(values[start:], float)
    slope = float(np.polyfit(tt - tt[0], vv, 1)[0]) if np.ptp(tt) > 0 else 0.0
    fifth = max(1, len(vv) // 5)
    early, late = float(np.median(vv[:fifth])), float(np.median(vv[-fifth:]))
    return {
        "samples": n,
        "early_median": early,
        "late_median": late,
        "growth": late - early,
        "growth_share": (late - early) / early if early else None,
        "slope_per_hour": slope * 3600,
    }
