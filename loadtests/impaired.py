"""``impaired``: a team where some clients go through a bad network; what must still hold.

The team of one room: the **lead surgeon** (drives an instrument) and one **observer** reach the server
through ``loadtests.relay`` lanes with 5% random loss, 150 +/- 30 ms RTT (75 ms one way, +/- 15 ms jitter)
and 2% reordering; halfway through, both lanes drop everything for 250 ms (a burst). The assistant surgeon,
the mentor (who annotates twice a second: the reliable-event probe) and a reference observer connect
directly. Checks:

* **events**: every client sees the mentor's annotations exactly once and in order;
* **inputs act**: the lead's instrument, as the reference observer sees it, follows the poses the lead
  sent (each observed pose is within ``track_mm`` of a pose sent in the 0.6 s before), also after the burst;
* **recovery**: after the burst each impaired client applies a snapshot sent after the burst ended
  within 1 s;
* **others unaffected**: the direct clients see no snapshot gap over ``gap_limit`` s and no event trouble.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import plots
from loadtests.relay import Impairment, Relay
from loadtests.report import slim
from loadtests.run import load_run
from loadtests.sampler import window
from loadtests.server import create_room, tick_summary
from loadtests.swarm import room_checks
from loadtests.team import join_team

BAD_NETWORK = Impairment(latency=0.075, jitter=0.015, loss=0.05, reorder=0.02)
TEAM = [  # (role, script, impaired)
    ("lead_surgeon", "drive", True),
    ("observer", "watch", True),
    ("assistant_surgeon", "drive", False),
    ("mentor", "mentor", False),
    ("observer", "watch", False),  # the reference observer (records what it sees of every instrument)
]


def tracking(commanded: list[list[float]], seen: list[list[float]], oid: int, window: float = 0.6) -> dict:
    """How far each observed pose of object ``oid`` is from the nearest pose sent in the ``window`` before."""
    if not commanded or not seen:
        return {"samples": 0}
    c = np.asarray(commanded, float)
    errors, times = [], []
    for t, obj, x, y, z in seen:
        if int(obj) != oid or t <= 0:
            continue
        near = c[(c[:, 0] <= t + 0.02) & (c[:, 0] >= t - window)]
        if near.size == 0:
            continue
        errors.append(float(np.min(np.linalg.norm(near[:, 1:4] - [x, y, z], axis=1))))
        times.append(t)
    if not errors:
        return {"samples": 0}
    e = np.asarray(errors) * 1000
    return {
        "samples": len(e),
        "median_mm": round(float(np.median(e)), 3),
        "p90_mm": round(float(np.quantile(e, 0.9)), 3),
        "max_mm": round(float(e.max()), 3),
        "times": times,
        "errors_mm": e.tolist(),
    }


def recovery(arrivals: list[list[float]], burst_end: float) -> float | None:
    """Seconds from the burst's end to the first snapshot applied that the server sent after it ended."""
    for local, server_time in arrivals:
        if local >= burst_end and server_time >= burst_end:
            return local - burst_end
    return None


def run_impaired(
    out: Path | None = None,
    *,
    seconds: float = 20.0,
    scenario: str = "basic_skills",
    seed: int = 1,
    impairment: Impairment = BAD_NETWORK,
    burst_seconds: float = 0.25,
    track_mm: float = 5.0,
    gap_limit: float = 0.25,
    join_seconds: float = 6.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the impaired team (see the module doc); returns the report with ``passed``."""
    seconds = max(float(seconds), 4.0)
    fields = {"scenario": scenario, "seed": seed, "impairment": impairment.to_dict(), "burst_seconds": burst_seconds}
    with load_run("impaired", out, say, **fields) as run:
        server = run.server()
        run.sample()
        relay = Relay(("127.0.0.1", server.udp_port), max_seconds=seconds + 120).start()
        run.on_close.append(relay.stop)
        room = create_room(server, scenario)
        via = []
        for i, (_, _, impaired) in enumerate(TEAM):
            lane = relay.add_lane(impairment, seed=seed * 100 + i) if impaired else None
            via.append(lane.address if lane is not None else None)
        specs = join_team(server, room, 0, [(r, s) for r, s, _ in TEAM], via=via, record={0, 4})
        origin = run.start_clock()
        start_at = origin + join_seconds  # every worker connects, then starts its script at this moment
        for impaired, drain in ((True, 3.0), (False, 1.5)):
            group = [s for s, (_, _, imp) in zip(specs, TEAM, strict=True) if imp is impaired]
            spec = {"seconds": seconds, "start_at": start_at, "bots": group, "drain_seconds": drain}
            run.launch(spec | {"connect_seconds": join_seconds - 0.5})
        burst_start, burst_end = _burst(relay, start_at + seconds / 2, burst_seconds, origin, say)
        results, bots = run.results()
        run.report["relay"] = relay.stats()
        run.report["ticks"] = tick_summary(server.ticks(), origin)
        run.report["server"] = window(run.sampler.rows, origin, time.monotonic())
        run.report.update(_verdicts(bots, burst_start, burst_end, track_mm, gap_limit))
        run.report["worker_errors"] = [r.get("error") for r in results if r.get("error")]
        burst = [(burst_start - origin, burst_end - origin)]
        run.plots(
            plots.rtt(bots, run.folder / "rtt.png", "impaired: RTT (burst in red)", burst),
            plots.bandwidth(bots, run.folder / "bandwidth.png", "impaired: downlink per client"),
            _tracking_plot(run.report, run.folder / "tracking.png", origin, burst_start, burst_end),
        )
        run.report["bots"] = [slim(b) for b in bots]
        for entry in run.report["tracking"].values():
            entry.pop("times", None)
            entry.pop("errors_mm", None)
    return run.report


def _burst(relay: Relay, at: float, seconds: float, origin: float, say: Callable[[str], None]) -> tuple[float, float]:
    """At ``at`` (monotonic), every lane drops everything for ``seconds``; returns (start, end) of the burst."""
    time.sleep(max(0.0, at - time.monotonic()))
    burst_end = 0.0
    for lane in relay.lanes:
        burst_end = relay.burst(lane, seconds)
    say(f"burst of {seconds:.3f} s on {len(relay.lanes)} lanes at t={burst_end - seconds - origin:.1f} s")
    return burst_end - seconds, burst_end


def _verdicts(bots: list[dict], burst_start: float, burst_end: float, track_mm: float, gap_limit: float) -> dict:
    events = room_checks(bots)
    lead = next((b for b in bots if b["role"] == "lead_surgeon"), None)
    reference = next((b for b in bots if b["role"] == "observer" and not b.get("lane") and b.get("rigid_seen")), None)
    out: dict[str, Any] = {"events": {k: v for k, v in events.items() if k != "bots"}, "events_per_bot": events["bots"]}
    track: dict[str, Any] = {}
    if lead is not None and reference is not None and lead.get("hands"):
        oid = int(next(iter(lead["hands"].values())))
        whole = tracking(lead["commanded"], reference["rigid_seen"], oid)
        after = tracking(lead["commanded"], [s for s in reference["rigid_seen"] if s[0] > burst_end + 0.5], oid)
        track = {"whole": whole, "after_burst": after}
    out["tracking"] = track
    recover = {
        b["name"]: recovery(b.get("snapshot_arrivals", []), burst_end) for b in bots if b.get("lane") is not None
    }
    direct = {}
    for b in bots:
        if b.get("lane") is None:
            gaps = [g[1] - g[0] for g in b.get("snapshot_gaps", [])]
            direct[b["name"]] = {
                "max_gap_s": round(max(gaps), 3) if gaps else 0.0,
                "snapshots": b["snapshots"],
                "rtt_p99_ms": b["rtt"].get("p99_ms"),
                "snapshot_errors": b["snapshot_errors"],
            }
    impaired_rtt = {b["name"]: b["rtt"] for b in bots if b.get("lane") is not None}
    out.update(recovery_seconds=recover, direct_clients=direct, impaired_rtt=impaired_rtt)
    checks = {
        "events_exactly_once_in_order": events["all_exactly_once_in_order"],
        "inputs_act": bool(track)
        and track["whole"].get("samples", 0) > 20
        and track["whole"].get("p90_mm", 1e9) <= track_mm
        and track["after_burst"].get("samples", 0) > 5
        and track["after_burst"].get("p90_mm", 1e9) <= track_mm,
        "view_recovers_within_1s": bool(recover) and all(v is not None and v <= 1.0 for v in recover.values()),
        "others_unaffected": bool(direct)
        and all(d["max_gap_s"] <= gap_limit and d["snapshot_errors"] == 0 for d in direct.values()),
        "all_connected": all(b["welcomed"] for b in bots),
    }
    out["checks"] = checks
    out["passed"] = all(checks.values())
    return out


def _tracking_plot(report: dict, path: Path, origin: float, a: float, b: float) -> Path | None:
    whole = report.get("tracking", {}).get("whole", {})
    if plots.available() is not None or not whole.get("times"):
        return None
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(np.asarray(whole["times"]) - origin, whole["errors_mm"], ".", markersize=3)
    ax.axvspan(a - origin, b - origin, color="red", alpha=0.2, label="burst")
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("lead instrument: seen vs sent (mm)")
    ax.set_title("impaired: the impaired surgeon's inputs as the reference observer sees them")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
