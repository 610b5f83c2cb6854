"""``make load-fleet``: the fleet on one box: placement rate, join latency through the directory, failover.

A redis-server of the run's own and ``rehearsal serve --processes N`` (the supervisor: N game servers and the
join service), all on loopback. Measured, as JSON:

* ``sessions_placed_per_second``: ``POST /api/sessions`` through the join service from several threads at
  once (placement in the directory, the room made on its process, confirmed), and
  ``directory_placements_per_second``: the directory's own place+confirm transactions, from two threads
  against stand-in processes in a scratch namespace (what placement costs without making rooms).
* ``join_seconds``: p50/p99/max of ``POST /api/join`` through the join service (the code's route looked up,
  the request forwarded to the room's process, its ticket back).
* ``failover``: a team (lead surgeon, mentor) in a room; the mentor's annotation is in a checkpoint, a last one
  acknowledged (journal only); the room's game server is SIGKILLed. Timed from the SIGKILL until the room is
  back on another process and both clients have rejoined with their codes (``/api/rejoin``; 503 "moving"
  meanwhile) and receive snapshots again: ``failover_seconds`` (goal at most 5 s), with ``detect_seconds``
  (the directory gave the room to another process) on the way. Checked: nothing lost (the same session and
  participants, both annotations), every room of the dead process placed again, none hosted twice after the
  supervisor restarted the killed process, and a clean shutdown of the whole fleet (SIGTERM, exit 0).

Loopback only; every wait bounded.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.run import load_run
from rehearsal.bots import Headset, post, pump
from rehearsal.checkpoints import checkpoint_path
from rehearsal.fleet.directory import Beat, Directory, ProcessInfo
from rehearsal.fleet.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parents[1]
FAILOVER_GOAL_SECONDS = 5.0
STARTUP_SECONDS = 240.0  # the supervisor, its join service and every game server warmed and registered
NOTE, LAST_NOTE = "divide here", "acked, then killed"
NAMESPACE = "rehearsal:fleet:"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def _threads(count: int, work: Callable[[int], None]) -> float:
    """``work(i)`` on ``count`` threads at once; returns the wall time."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return time.perf_counter() - started


def _directory_rate(url: str, seconds: float = 2.0) -> float:
    """place + confirm per second from two threads, on stand-ins in a scratch namespace (then removed)."""
    scratch = Directory.from_url(url, namespace="loadtest:scratch:", ttl_seconds=30)
    for i in range(8):
        scratch.beat(Beat(ProcessInfo(f"stand-in-{i}", "127.0.0.1:1", "http://127.0.0.1:1", "/x", 100_000, ("s",))))
    done = [0, 0]
    stop = time.monotonic() + seconds

    def place(i: int) -> None:
        own = Directory.from_url(url, namespace="loadtest:scratch:")
        while time.monotonic() < stop:
            placement = own.place("s")
            own.confirm(placement, f"s-{i}-{done[i]}", "s")
            done[i] += 1

    wall = _threads(2, place)
    scratch.client.flushdb()  # the scratch namespace only lives in this run's own Redis
    return round(sum(done) / wall, 1)


class _Fleet:
    """The supervisor subprocess, its log in a file, and the directory it registers in."""

    def __init__(self, folder: Path, redis_url: str, processes: int, capacity: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log_path = folder / "fleet.log"
        self._log = self.log_path.open("w")
        args = [sys.executable, "-m", "rehearsal", "serve", "--processes", str(processes), "--capacity", str(capacity)]
        args += ["--data-dir", str(folder / "fleet"), "--http-port", "0", "--redis", redis_url]
        args += ["--drain-seconds", "3", "--record", "true"]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.credential = ""
        self.port = 0
        self.folder = folder

    def wait_ready(self, directory: Directory, processes: int) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the fleet exited ({self.proc.returncode}); see {self.log_path}")
            match = re.search(r"join service listening http=127\.0\.0\.1:(\d+)", self.log_path.read_text())
            alive = [p for p in directory.status() if p["alive"]]
            if match and len(alive) == processes:
                self.port = int(match.group(1))
                self.credential = (self.folder / "fleet" / "admin_credential").read_text().strip()
                return
            time.sleep(0.5)
        raise RuntimeError(f"the fleet did not come up in {STARTUP_SECONDS} s; see {self.log_path}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        self._log.close()
        return self.proc.returncode


def _headset(ticket: dict, name: str) -> Headset:
    headset = Headset(base64.b64decode(ticket["token"]), name=name)
    headset.ticket = ticket
    return headset


def run_fleet(
    out: Path | None = None,
    *,
    scenario: str = "basic_skills",
    processes: int = 3,
    capacity: int = 3,
    sessions: int = 6,
    joins_per_session: int = 4,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The fleet run (see the module doc); returns the report with ``passed``."""
    if sessions > processes * capacity:
        raise ValueError("more sessions than the fleet has slots")
    with load_run("fleet", out, say, scenario=scenario, processes=processes, capacity=capacity) as run:
        report = run.report
        # An absolute folder: redis-server changes into --dir before it opens --logfile, so with a relative run
        # folder (the default, ./loadtest-runs) it found no log file there and exited (1) at once.
        redis = RedisProcess(run.folder / "redis").start()
        run.on_close.append(redis.stop)
        directory = Directory.from_url(redis.url, namespace=NAMESPACE)
        report["directory_placements_per_second"] = _directory_rate(redis.url)
        say(f"fleet: starting {processes} game servers and the join service")
        fleet = _Fleet(run.folder, redis.url, processes, capacity)
        run.on_close.append(fleet.stop)
        started = time.monotonic()
        fleet.wait_ready(directory, processes)
        report["startup_seconds"] = round(time.monotonic() - started, 1)
        _measure(run.report, fleet, directory, scenario, processes, sessions, joins_per_session, say)
        say("fleet: SIGTERM: every game server drains, then the join service and the supervisor stop")
        code = fleet.stop()
        report["checks"]["clean_shutdown"] = code == 0
        report["passed"] = all(report["checks"].values())
    return run.report


def _measure(
    report: dict[str, Any],
    fleet: _Fleet,
    directory: Directory,
    scenario: str,
    processes: int,
    sessions: int,
    joins_per_session: int,
    say: Callable[[str], None],
) -> None:
    say(f"fleet: placing {sessions} sessions from 4 threads at once")
    made: list[dict] = []

    def create(i: int) -> None:
        for _ in range(i, sessions, 4):
            status, body = post(fleet.port, "/api/sessions", {"scenario": scenario}, fleet.credential)
            if status == 201:
                made.append(body)

    wall = _threads(4, create)
    report["sessions_placed"] = len(made)
    report["sessions_placed_per_second"] = round(len(made) / wall, 2)
    report["rooms_per_process"] = {p["process"]: p["rooms"] for p in directory.status()}

    say(f"fleet: {joins_per_session} joins per session through the join service")
    latencies: list[float] = []
    refused = [0]

    def join(i: int) -> None:
        for k in range(i, len(made) * joins_per_session, 4):
            room = made[k % len(made)]
            began = time.perf_counter()
            status, _ = post(fleet.port, "/api/join", {"invite": room["invites"]["observer"], "name": f"obs {i}.{k}"})
            latencies.append(time.perf_counter() - began)
            refused[0] += status != 200

    _threads(4, join)
    report["joins"] = len(latencies)
    report["joins_refused"] = refused[0]
    report["join_seconds"] = {
        "p50": _percentile(latencies, 0.5),
        "p99": _percentile(latencies, 0.99),
        "max": _percentile(latencies, 1.0),
    }
    _failover(report, fleet, directory, made, processes, say)


def _failover(
    report: dict[str, Any],
    fleet: _Fleet,
    directory: Directory,
    made: list[dict],
    processes: int,
    say: Callable[[str], None],
) -> None:
    room = made[0]
    session = room["session"]
    host = directory.route(session).process
    data_dir = Path(directory.process(host)["data_dir"])
    moving = sorted(directory.rooms_of(host))
    say(f"fleet: a team in {session} on {host} ({len(moving)} rooms there)")
    team: list[Headset] = []
    for role in ("lead_surgeon", "mentor"):
        status, ticket = post(fleet.port, "/api/join", {"invite": room["invites"][role], "name": role})
        if status != 200:
            raise RuntimeError(f"joining as {role} failed: {status} {ticket}")
        team.append(_headset(ticket, role))
    try:
        if not pump(team, lambda: all(h.connected and h.welcome and h.snapshots_applied for h in team), 20.0):
            raise RuntimeError("the team did not connect")
        lead, mentor = team
        sent = time.time()
        mentor.command("annotate", position=[0.0, 0.05, 0.0], text=NOTE)
        if not pump(team, lambda: lead.events["annotate"] > 0, 5.0):
            raise RuntimeError("the annotation was not acknowledged")
        ckpt = checkpoint_path(data_dir, session)
        pump(team, lambda: ckpt.exists() and ckpt.stat().st_mtime > sent, 12.0)
        acks = mentor.events["annotate"]
        mentor.command("annotate", position=[0.0, 0.06, 0.0], text=LAST_NOTE)
        if not pump(team, lambda: mentor.events["annotate"] > acks, 5.0):
            raise RuntimeError("the last annotation was not acknowledged")
        codes = [(h.name, h.ticket["rejoin_code"], h.ticket["participant"]) for h in team]
        pid = int(directory.process(host)["pid"])
        say(f"fleet: SIGKILL {host} (pid {pid})")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for h in team:
            h.close()
        team.clear()
        detect, back = _rejoin_all(fleet, directory, session, host, codes, team, killed)
        recovered = time.monotonic()
        welcome = team[0].welcome or {} if team else {}
        notes = [a.get("text") for a in welcome.get("annotations", [])]
        placed_again = _wait(lambda: all(_on_live_other(directory, s, host) for s in moving), 15.0)
        restarted = _wait(lambda: any(p["process"] == host and p["alive"] for p in directory.status()), 90.0)
        time.sleep(1.0)  # its first beats
        twice = sorted(directory.rooms_of(host) & set(moving))
        report["failover"] = {
            "session": session,
            "killed_process": host,
            "rooms_on_killed_process": len(moving),
            "detect_seconds": round(detect - killed, 3) if detect else None,
            "failover_seconds": round(recovered - killed, 3) if back else None,
            "adopted_by": directory.route(session).process if directory.route(session) else None,
            "killed_process_restarted": restarted,
        }
        report["checks"] = {
            "failover_within_goal": back and recovered - killed <= FAILOVER_GOAL_SECONDS,
            "same_session": all((h.welcome or {}).get("session") == session for h in team) and len(team) == 2,
            "same_participants": [(h.welcome or {}).get("participant") for h in team] == [p for _, _, p in codes],
            "annotation_kept": NOTE in notes,
            "acked_action_kept": LAST_NOTE in notes,
            "every_room_placed_again": placed_again,
            "no_room_hosted_twice": not twice,
            "all_sessions_routed": all(directory.route(r["session"]) is not None for r in made),
            "sessions_placed": len(made) > 0,
        }
    finally:
        for h in team:
            h.close()


def _on_live_other(directory: Directory, session: str, dead: str) -> bool:
    route = directory.route(session)
    return route is not None and route.process != dead and route.alive


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _rejoin_all(
    fleet: _Fleet,
    directory: Directory,
    session: str,
    dead: str,
    codes: list[tuple[str, str, int]],
    team: list[Headset],
    killed: float,
) -> tuple[float | None, bool]:
    """Each member retries ``/api/rejoin`` (503 while the room moves) and reconnects; True when every one gets
    snapshots again. Also returns when the directory first named another live process (``detect``)."""
    detect = None
    pending = list(codes)
    deadline = killed + 30.0
    while pending and time.monotonic() < deadline:
        if detect is None and _on_live_other(directory, session, dead):
            detect = time.monotonic()
        name, code, _ = pending[0]
        status, ticket = post(fleet.port, "/api/rejoin", {"rejoin_code": code})
        if status == 200:
            team.append(_headset(ticket, name))
            pending.pop(0)
            continue
        time.sleep(0.05)
    if detect is None and _on_live_other(directory, session, dead):
        detect = time.monotonic()
    if pending:
        return detect, False
    remaining = max(deadline - time.monotonic(), 1.0)
    back = pump(team, lambda: all(h.connected and h.welcome and h.snapshots_applied for h in team), remaining)
    return detect, back
