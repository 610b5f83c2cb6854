"""``faults``: a client killed with SIGKILL, a garbage flood from one address, and the server's memory.

One room (default ``block_5k``). The **victim**, a lead surgeon in a worker process of its own, grasps the
tissue and lifts it (``grasp`` script); the others (assistant driving, mentor annotating, two observers)
run in another worker. Timeline, after everybody joined:

1. ``baseline_seconds`` of normal load: tick p99 and the server's RSS;
2. the victim's process gets SIGKILL while it holds tissue. It must be **timed out** (a ``left`` event with
   reason ``timeout`` about 10 s later, the connect token's timeout) and its **instrument released** (a
   ``release`` event with reason ``withdrawn``); the room goes on;
3. a **garbage flood** from one address (``loadtests.flood``, ``flood_rate`` datagrams/s for
   ``flood_seconds``): the tick p99 the others get must not rise (at most 25% or 2 ms over the baseline,
   whichever is more, and within the budget if the baseline was), their snapshots keep coming;
4. ``after_seconds`` more; the server's **RSS** at the end must be within ``rss_growth_mb`` of the baseline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests import plots
from loadtests.report import rtt_window, slim
from loadtests.run import Run, load_run
from loadtests.sampler import window
from loadtests.server import TICK_BUDGET, LoadServer, create_room, metric, scrape, tick_summary
from loadtests.swarm import room_checks
from loadtests.team import join_team
from rehearsal.bots import ROOT

OTHERS = [("assistant_surgeon", "drive"), ("mentor", "mentor"), ("observer", "watch"), ("observer", "watch")]


def _drops(port: int) -> dict[str, float]:
    return {
        labels.split('"')[1]: v
        for (name, labels), v in scrape(port).items()
        if name == "rehearsal_dropped_packets_total" and '"' in labels
    }


def run_faults(
    out: Path | None = None,
    *,
    scenario: str = "block_5k",
    baseline_seconds: float = 12.0,
    timeout_wait: float = 14.0,
    flood_seconds: float = 20.0,
    flood_rate: float = 5000.0,
    after_seconds: float = 8.0,
    rss_growth_mb: float = 16.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the fault scenario (see the module doc); returns the report with ``passed``."""
    with load_run("faults", out, say, scenario=scenario) as run:
        server = run.server()
        sampler = run.sample()
        room = create_room(server, scenario)
        victim_spec = join_team(server, room, 0, [("lead_surgeon", "grasp")], prefix="victim-")
        victim_spec[0]["x"] = -0.012
        others = join_team(server, room, 0, OTHERS)
        total = baseline_seconds + timeout_wait + flood_seconds + after_seconds + 10
        origin = run.start_clock()
        victim = run.launch({"seconds": total, "bots": victim_spec, "linger": True})
        run.launch({"seconds": total, "bots": others, "drain_seconds": 2.0})
        time.sleep(4.0)  # connect and grasp (the script holds from ~3.4 s of its time on)
        t_base = time.monotonic()
        time.sleep(baseline_seconds)
        base = tick_summary(server.ticks(), t_base, time.monotonic())
        base_server = window(sampler.rows, t_base, time.monotonic())
        say(f"baseline: tick p99={base.get('p99_ms')} ms rss={base_server.get('rss_mb')} MB")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        say("victim SIGKILLed; waiting for the timeout")
        time.sleep(timeout_wait)
        flood = _flood(run, server, flood_seconds, flood_rate)
        time.sleep(after_seconds)
        after = tick_summary(server.ticks(), flood["t1"], time.monotonic())
        results, bots = run.results()
        metrics = scrape(server.http_port)
        sampler.stop()
        rows = sampler.rows
        run.report.update(_verdicts(bots, victim_spec[0], killed_at, base, flood["ticks"], rss_growth_mb))
        rss_base = base_server.get("rss_mb")
        rss_end = round(rows[-1]["rss_bytes"] / 2**20, 1) if rows else None
        run.report["checks"]["memory_flat"] = (
            rss_base is not None and rss_end is not None and (rss_end - rss_base <= rss_growth_mb)
        )
        run.report["passed"] = all(run.report["checks"].values())
        others_bots = [b for b in bots if not b["name"].startswith("victim-")]
        t_flood, t_flood_end = flood["t0"], flood["t1"]
        run.report.update(
            phases={
                "baseline": base | {"server": base_server},
                "flood": flood["ticks"] | {"server": window(rows, t_flood, t_flood_end)},
                "after": after,
            },
            flood={
                "sent": flood["sent"],
                "server_dropped_by_reason": flood["dropped"],
                "others_rtt_baseline": rtt_window(others_bots, t_base, killed_at),
                "others_rtt_during_flood": rtt_window(others_bots, t_flood, t_flood_end),
                "others_max_snapshot_gap_during_flood_s": max(
                    [
                        g[1] - g[0]
                        for b in others_bots
                        for g in b.get("snapshot_gaps", [])
                        if g[1] > t_flood and g[0] < t_flood_end
                    ]
                    or [0.0]
                ),
            },
            memory={
                "rss_baseline_mb": rss_base,
                "rss_end_mb": rss_end,
                "fds_baseline": base_server.get("fds"),
                "fds_end": rows[-1]["fds"] if rows else None,
            },
            handshakes_refused=metric(metrics, "rehearsal_handshakes_total", 'outcome="refused"'),
            worker_errors=[r.get("error") for r in results if r.get("error") and r is not results[0]],
            bots=[slim(b) for b in bots],
        )
        marks = [(killed_at, killed_at + 0.2, "SIGKILL"), (t_flood, t_flood_end, "flood")]
        flood_span = [(t_flood - origin, t_flood_end - origin)]
        run.plots(
            plots.tick_timeline(
                server.ticks(), run.folder / "tick_timeline.png", "faults: every room tick", origin, marks
            ),
            plots.process(rows, run.folder / "server_process.png", "faults: server RSS, fds, CPU", origin),
            plots.rtt(others_bots, run.folder / "rtt.png", "faults: RTT of the others (flood in red)", flood_span),
        )
    return run.report


def _flood(run: Run, server: LoadServer, seconds: float, rate: float) -> dict[str, Any]:
    """The garbage flood (``loadtests.flood`` in a subprocess) and what it did: ``t0``/``t1`` (monotonic),
    the tick summary during it, what the flooder sent and what the server dropped, by reason."""
    drops_before = _drops(server.http_port)
    t0 = time.monotonic()
    flooder = subprocess.Popen(
        [sys.executable, "-m", "loadtests.flood", "127.0.0.1", str(server.udp_port), str(seconds), str(rate), "7"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run.pids.append(flooder.pid)
    run.on_close.append(lambda: flooder.kill() if flooder.poll() is None else None)
    sent, _ = flooder.communicate(timeout=seconds + 30)
    t1 = time.monotonic()
    ticks = tick_summary(server.ticks(), t0 + 1.0, t1)
    after = _drops(server.http_port)
    drops = {k: v - drops_before.get(k, 0.0) for k, v in after.items() if v - drops_before.get(k, 0.0)}
    run.say(f"flood: tick p99={ticks.get('p99_ms')} ms; server dropped {sum(drops.values()):.0f} datagrams")
    try:
        flood_sent = json.loads(sent.strip().splitlines()[-1]) if sent.strip() else {}
    except ValueError:
        flood_sent = {}
    return {"t0": t0, "t1": t1, "ticks": ticks, "sent": flood_sent, "dropped": drops}


def _verdicts(bots: list[dict], victim: dict, killed_at: float, base: dict, flood: dict, rss_growth_mb: float) -> dict:
    others = [b for b in bots if b["name"] != victim["name"]]
    pid = victim.get("participant")
    left, released, grasped = [], [], []
    for kind, t, tag in others[0]["events"] if others else []:
        if not isinstance(tag, list) or tag[0] != pid:
            continue
        if kind == "left" and t >= killed_at:
            left.append({"after_kill_s": round(t - killed_at, 3), "reason": tag[1]})
        elif kind == "release" and t >= killed_at:
            released.append({"after_kill_s": round(t - killed_at, 3), "reason": tag[1]})
        elif kind == "grasp" and t < killed_at:
            grasped.append(round(t - killed_at, 3))
    events = room_checks(others)
    base_p99, flood_p99 = base.get("p99_ms"), flood.get("p99_ms")
    flood_ok = base_p99 is not None and flood_p99 is not None and flood_p99 <= max(base_p99 * 1.25, base_p99 + 2.0)
    if flood_ok and base_p99 <= 1000 * TICK_BUDGET:
        flood_ok = flood_p99 <= 1000 * TICK_BUDGET
    return {
        "killed": {"participant": pid, "grasped_before_kill": grasped, "left": left, "released": released},
        "events": {k: v for k, v in events.items() if k != "bots"},
        "checks": {
            "victim_held_tissue_before_kill": bool(grasped),
            "victim_timed_out": any(e["reason"] == "timeout" for e in left),
            "victim_instrument_released": any(e["reason"] == "withdrawn" for e in released),
            "flood_does_not_raise_tick_p99": flood_ok,
            "others_events_exactly_once_in_order": events["all_exactly_once_in_order"],
            "others_stayed_connected": bool(others) and all(b["connected"] for b in others),
        },
    }
