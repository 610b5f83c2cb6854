"""``soak``: moderate load for a long time (an hour by default); the server's memory and fds must stay flat.

``rooms`` rooms (default 2) of the scenario, each with 4 participants and 4 observers (one swarm worker per
room), for ``seconds``. The server process is sampled every ``sample_every`` seconds (RSS, open fds, CPU,
metrics). Checks, after a warm-up (the first fifth of the samples):

* **RSS flat**: the median of the last fifth is at most ``rss_growth_mb`` MB (default 16) above the median of
  the second fifth; the least-squares slope per hour is reported too;
* **fds flat**: the last fifth's maximum is at most ``fd_growth`` (default 2) above the second fifth's;
* the clients stayed connected and saw the mentor's events exactly once and in order.
Tick quantiles per minute go into the report and the plots.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.report import slim
from loadtests.run import Run, load_run
from loadtests.sampler import flatness, window
from loadtests.server import create_room, tick_summary
from loadtests.swarm import room_checks
from loadtests.team import ACKING_CLIENTS, join_team, team_roles


def run_soak(
    out: Path | None = None,
    *,
    seconds: float = 3600.0,
    rooms: int = 2,
    scenario: str = "block_5k",
    participants: int = 4,
    observers: int = 4,
    sample_every: float = 5.0,
    rss_growth_mb: float = 16.0,
    fd_growth: int = 2,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the soak (see the module doc); returns the report with ``passed``."""
    seconds = max(float(seconds), 30.0)
    rooms = max(1, min(int(rooms), 16))
    sample_every = max(0.5, min(float(sample_every), seconds / 20))
    fields = {"scenario": scenario, "rooms": rooms, "clients_per_room": participants + observers, "seconds": seconds}
    with load_run("soak", out, say, **fields) as run:
        server = run.server()
        sampler = run.sample(sample_every)
        origin = run.start_clock()
        for n in range(rooms):
            room = create_room(server, scenario)
            specs = join_team(server, room, n, team_roles(participants, observers), snapshots=ACKING_CLIENTS)
            run.launch({"seconds": seconds, "bots": specs, "connect_seconds": 20})
        minutes = _minutes(run, seconds)
        results, bots = run.results()
        sampler.stop()
        rows = sampler.rows
        checks, flat = _checks(rows, bots, origin, rss_growth_mb, fd_growth)
        run.report.update(
            ticks=tick_summary(server.ticks(), origin),
            minutes=minutes,
            **flat,
            server=window(rows, origin, origin + seconds + 60),
            checks=checks,
            passed=all(checks.values()),
            worker_errors=[r.get("error") for r in results if r.get("error")],
            bots=[slim(b) for b in bots],
        )
        run.plots(
            plots.process(rows, run.folder / "server_process.png", "soak: server RSS, fds, CPU", origin),
            plots.tick_timeline(server.ticks(), run.folder / "tick_timeline.png", "soak: every room tick", origin),
            plots.bandwidth(bots, run.folder / "bandwidth.png", "soak: downlink per client"),
            plots.rtt(bots, run.folder / "rtt.png", "soak: RTT"),
        )
    return run.report


def _minutes(run: Run, seconds: float) -> list[dict[str, Any]]:
    """Wait for the workers (at most ``seconds`` + 10 s), logging ticks and the server process every minute."""
    server, rows = run.servers.servers[0], run.sampler.rows
    minutes: list[dict[str, Any]] = []
    deadline = run.origin + seconds + 10
    next_line = run.origin + 60
    for _ in range(int(seconds) + 600):
        if time.monotonic() >= deadline or all(w.proc.poll() is not None for w in run.workers):
            break
        time.sleep(1.0)
        if time.monotonic() >= next_line:
            t1 = time.monotonic()
            entry = {
                "minute": len(minutes) + 1,
                **tick_summary(server.ticks(), t1 - 60, t1),
                **window(rows, t1 - 60, t1),
            }
            minutes.append(entry)
            run.say(
                f"minute {entry['minute']}: tick p99={entry.get('p99_ms')} ms rss={entry.get('rss_mb')} MB "
                f"fds={entry.get('fds')} cpu={entry.get('server_cpu_percent')}%"
            )
            next_line += 60
    return minutes


def _checks(
    rows: list[dict[str, Any]], bots: list[dict[str, Any]], origin: float, rss_growth_mb: float, fd_growth: int
) -> tuple[dict[str, bool], dict[str, Any]]:
    """The soak's checks, and the RSS and fd series' flatness (``rss_mb``, ``fds``) for the report."""
    t = [r["t"] - origin for r in rows]
    rss = flatness(t, [r["rss_bytes"] / 2**20 for r in rows])
    fds = flatness(t, [r["fds"] for r in rows])
    n = len(rows)
    fd_early = max((r["fds"] for r in rows[n // 5 : 2 * n // 5]), default=0)
    fd_late = max((r["fds"] for r in rows[-max(1, n // 5) :]), default=0)
    by_room: dict[int, list] = {}
    for bot in bots:
        by_room.setdefault(int(bot.get("room") or 0), []).append(bot)
    events = [room_checks(b) for _, b in sorted(by_room.items())]
    checks = {
        "rss_flat": rss.get("growth") is not None and rss["growth"] <= rss_growth_mb,
        "fds_flat": n >= 10 and fd_late <= fd_early + fd_growth,
        "clients_stayed_connected": bool(bots) and all(b["welcomed"] and b["connected"] for b in bots),
        "events_exactly_once_in_order": bool(events) and all(e["all_exactly_once_in_order"] for e in events),
    }
    return checks, {"rss_mb": rss, "fds": fds | {"early_max": fd_early, "late_max": fd_late}}
