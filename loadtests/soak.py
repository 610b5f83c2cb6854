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
from loadtests.report import bots_of, run_folder, slim, write_json
from loadtests.sampler import Sampler, flatness, window
from loadtests.server import LoadServer, create_room, tick_summary
from loadtests.swarm import launch, room_checks
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
    folder = run_folder(out, "soak")
    seconds = max(float(seconds), 30.0)
    rooms = max(1, min(int(rooms), 16))
    sample_every = max(0.5, min(float(sample_every), seconds / 20))
    server = LoadServer(folder / "server")
    report: dict[str, Any] = {
        "run": "soak",
        "folder": folder,
        "scenario": scenario,
        "rooms": rooms,
        "clients_per_room": participants + observers,
        "seconds": seconds,
    }
    workers = []
    sampler = None
    try:
        server.wait_listening()
        sampler = Sampler(server, swarm=lambda: [w.pid for w in workers], every=sample_every).start()
        origin = time.monotonic()
        for n in range(rooms):
            room = create_room(server, scenario)
            specs = join_team(server, room, n, team_roles(participants, observers), snapshots=ACKING_CLIENTS)
            workers.append(launch({"seconds": seconds, "bots": specs, "connect_seconds": 20}, folder / "workers"))
        minutes = []
        deadline = origin + seconds + 10
        next_line = origin + 60
        for _ in range(int(seconds) + 600):
            if time.monotonic() >= deadline or all(w.proc.poll() is not None for w in workers):
                break
            time.sleep(1.0)
            if time.monotonic() >= next_line:
                t1 = time.monotonic()
                entry = {
                    "minute": len(minutes) + 1,
                    **tick_summary(server.ticks(), t1 - 60, t1),
                    **window(sampler.rows, t1 - 60, t1),
                }
                minutes.append(entry)
                say(
                    f"minute {entry['minute']}: tick p99={entry.get('p99_ms')} ms rss={entry.get('rss_mb')} MB "
                    f"fds={entry.get('fds')} cpu={entry.get('server_cpu_percent')}%"
                )
                next_line += 60
        results = [w.result() for w in workers]
        sampler.stop()
        rows = sampler.rows
        bots = bots_of(results, origin)
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
        report.update(
            ticks=tick_summary(server.ticks(), origin),
            minutes=minutes,
            rss_mb=rss,
            fds=fds | {"early_max": fd_early, "late_max": fd_late},
            server=window(rows, origin, origin + seconds + 60),
            checks=checks,
            passed=all(checks.values()),
            worker_errors=[r.get("error") for r in results if r.get("error")],
            bots=[slim(b) for b in bots],
        )
        report["plots"] = [
            plots.process(rows, folder / "server_process.png", "soak: server RSS, fds, CPU", origin),
            plots.tick_timeline(server.ticks(), folder / "tick_timeline.png", "soak: every room tick", origin),
            plots.bandwidth(bots, folder / "bandwidth.png", "soak: downlink per client"),
            plots.rtt(bots, folder / "rtt.png", "soak: RTT"),
        ]
        report["plots_note"] = plots.available()
    finally:
        if sampler is not None:
            sampler.stop()
        for w in workers:
            w.kill()
        report["server_exit"] = server.stop()
    write_json(folder / "soak.json", report)
    return report
