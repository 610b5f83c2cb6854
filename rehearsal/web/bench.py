"""What browser observers cost: ``python -m rehearsal.web.bench`` prints JSON (the fields are explained in its
``measured`` entry).

Runs the real server in a subprocess (loopback only) and a room of 4 scripted participants (the lead surgeon
grasping and lifting): once alone, once with ``--observers`` WebSocket observers that read every frame and
ack every second snapshot as a page does, in a process of their own (niced: in production they are other
machines); ``--repeat`` pairs of runs, medians reported. Each run reports the room's tick p99 (admin API, its
last ~10 s), what the participants see (the lead's snapshot intervals), the server's CPU by thread and the
observers' mean downlink (goal: at most 1 Mbit/s for a 10k-vertex scene). Then, in this process
(``rehearsal.web.observer_cost``), the reactor CPU the observers add per tick, which other processes' load
does not distort (goal for what 32 observers add: at most 1 ms). ``--cells NX,NY,NZ`` replaces the
scenario's block mesh (``70,1,70``: a sheet of about 10k surface vertices). With ``--page`` one Chromium page
(``rehearsal.web.headless``) also watches and reports its frame time. With ``--pin`` the server runs on the
first CPU and the headsets and observers on the others, as if they were other machines: on 2 cores, unpinned,
the clients' own load lands in the room's tick and the difference measures the clients, not the server.
JavaScript's snapshot decode time is ``rehearsal.web.decode_bench``'s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
import tomllib
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from netcode.messaging.messages import Message
from netcode.sync.snapshot import parse_header
from netcode.sync.snapshot_messages import parse_topology
from rehearsal.bots import Headset, ServerProcess, SurgeonScript, get, post, pump
from rehearsal.scenario import MAX_PARTICIPANTS, packaged_scenarios
from rehearsal.web.observer_cost import ACK_EVERY, observer_cost
from rehearsal.wire import REHEARSAL_REGISTRY

BENCH_SCRIPT = """
import os
import sys
from pathlib import Path
if sys.argv[5]:
    os.sched_setaffinity(0, {int(c) for c in sys.argv[5].split(",")})
from rehearsal.server import serve
from rehearsal.settings import load_settings
settings = load_settings(None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0, drain_seconds=sys.argv[2],
                         scenario_dir=Path(sys.argv[3]), share_observer_stream=sys.argv[4] == "shared")
sys.exit(serve(settings))
"""
TEAM = (("lead_surgeon", "Lead"), ("assistant_surgeon", "Assistant"), ("scrub_nurse", "Nurse"), ("mentor", "Mentor"))
BENCH_SCENARIO = "web_bench"


class ObserverSocket:
    """A page's link without the page: join, read every frame, ack every ACK_EVERY-th snapshot (newest + 32 bits)
    as app.js does."""

    def __init__(self, port: int, invite: str, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("handshake: closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head[:80]!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.sock.setblocking(False)
        self.payload_bytes = 0
        self.snapshots = 0
        self.acked: set[int] = set()
        self.newest = -1
        self.vertices = 0
        self._send(0x1, json.dumps({"join": {"invite": invite, "name": name}}).encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.setblocking(True)
        self.sock.sendall(header + mask + body)
        self.sock.setblocking(False)

    def service(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.buffer += chunk
        except BlockingIOError:
            pass
        while True:
            frame = self._frame()
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x2:
                self.payload_bytes += len(payload)
                self._message(payload)

    def _frame(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        n, pos = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,), pos = struct.unpack(">H", buf[2:4]), 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,), pos = struct.unpack(">Q", buf[2:10]), 10
        if len(buf) < pos + n:
            return None
        self.buffer = buf[pos + n :]
        return buf[0] & 0x0F, buf[pos : pos + n]

    def _message(self, payload: bytes) -> None:
        message = REHEARSAL_REGISTRY.decode(payload)
        if message.type == "snap_topology":
            self.vertices = parse_topology(message.fields).layout.vertex_count
        if message.type != "snapshot":
            return
        sequence = parse_header(message.fields["data"])[0]
        self.snapshots += 1
        self.acked.add(sequence)
        self.newest = max(self.newest, sequence)
        self.acked = {s for s in self.acked if self.newest - s <= 32}
        if self.snapshots % ACK_EVERY != 1 % ACK_EVERY:
            return  # acked with the next one, as app.js does
        bits = sum(1 << (self.newest - s - 1) for s in self.acked if 0 < self.newest - s <= 32)
        self._send(0x2, REHEARSAL_REGISTRY.encode(Message("snap_ack", {"newest": self.newest, "bits": bits})))

    def close(self) -> None:
        self.sock.close()


def _scenario_dir(directory: Path, scenario: str, cells: tuple[int, int, int] | None, people: int) -> Path:
    """A copy of a packaged scenario as ``web_bench`` (with another block mesh when ``cells`` is given), whose
    room admits ``people`` at once (the team and every observer; a scenario's default admits 16)."""
    text = packaged_scenarios()[scenario].read_text(encoding="utf-8")
    if "room" in tomllib.loads(text):
        raise SystemExit(f"scenario {scenario} sets its own [room]: the bench cannot size it")
    text += f"\n[room]\nmax_participants = {people}\n"
    if cells is not None:
        if "cells = " not in text:
            raise SystemExit(f"--cells: scenario {scenario} has no block mesh to resize")
        text = re.sub(r"(?m)^cells = .*$", f"cells = [{cells[0]}, {cells[1]}, {cells[2]}]", text, count=1)
        tomllib.loads(text)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{BENCH_SCENARIO}.toml").write_text(text, encoding="utf-8")
    return directory


def _drive_observers(port: int, invite: str, count: int, nice: int, conn: Connection) -> None:
    """The observers' process: join ``count`` sockets, read and ack until told to stop. Commands on ``conn``:
    "mark" (answer the totals so far) and "stop" (answer them and end)."""
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    watchers = [ObserverSocket(port, invite, f"Observer {i}") for i in range(count)]
    conn.send("ready")
    socks = {w.sock: w for w in watchers}
    try:
        while True:
            readable, _, _ = select.select(list(socks), [], [], 0.005)
            for sock in readable:
                socks[sock].service()
            if conn.poll():
                command = conn.recv()
                totals = {
                    "payload_bytes": [w.payload_bytes for w in watchers],
                    "snapshots": [w.snapshots for w in watchers],
                    "vertices": max((w.vertices for w in watchers), default=0),
                    "at": time.monotonic(),
                }
                conn.send(totals)
                if command == "stop":
                    return
    finally:
        for w in watchers:
            w.close()


class _ObserverProcess:
    """``count`` observer sockets in a process of their own (spawned), so their Python does not share the
    bench's GIL with the participants' headsets; niced by ``nice`` (in production they run on other machines)."""

    def __init__(self, port: int, invite: str, count: int, nice: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_drive_observers, args=(port, invite, count, nice, child), daemon=True)
        self.process.start()
        self.joined = False

    def ready(self) -> bool:
        """Its sockets have all joined (polled, so the caller keeps servicing its headsets meanwhile)."""
        if not self.joined and self.conn.poll():
            self.joined = self.conn.recv() == "ready"
        return self.joined

    def ask(self, command: str) -> dict[str, Any]:
        self.conn.send(command)
        if not self.conn.poll(30):
            raise RuntimeError("the observers' process does not answer")
        return self.conn.recv()

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.ask("stop")
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a process's threads: "reactor" (the main thread) and "threads" (the
    others summed: the rooms' physics, the checkpoint writer); empty where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[str, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        key = "reactor" if tid == str(pid) else "threads"
        out[key] = out.get(key, 0.0) + seconds
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _run(
    server: ServerProcess, observers: int, seconds: float, observer_nice: int, page_frames: Any = None
) -> dict[str, Any]:
    status, session = post(
        server.http_port, "/api/sessions", {"scenario": BENCH_SCENARIO, "invite_uses": 64}, server.credential()
    )
    if status != 201:
        raise RuntimeError(f"creating the session failed: {status} {session}")
    team = []
    for role, name in TEAM:
        status, ticket = post(server.http_port, "/api/join", {"invite": session["invites"][role], "name": name})
        if status != 200:
            raise RuntimeError(f"joining as {role} failed: {status} {ticket}")
        team.append(Headset(base64.b64decode(ticket["token"]), name=name))
    watchers = None
    frames = None
    arrivals: list[float] = []  # when the lead surgeon's headset applied each snapshot (monotonic s)
    try:
        if not pump(team, lambda: all(h.welcome for h in team), 30.0):
            raise RuntimeError("the team was not welcomed within 30 s")
        if observers:  # after the team is in, which is serviced while the observers join
            watchers = _ObserverProcess(server.http_port, session["invites"]["observer"], observers, observer_nice)
            if not pump(team, watchers.ready, 60.0):
                raise RuntimeError("the observers' process did not join within 60 s")
        lead, script = team[0], SurgeonScript(x=-0.01, lift=0.012)
        t0 = time.monotonic()

        def frame() -> None:
            t = (time.monotonic() - t0) % 6.0  # grasp, lift, let go, again
            position, jaw = script.pose(t if t < 4.5 else 0.0)
            lead.send_pose(position, script.rotation, jaw)

        if page_frames is not None:
            page_frames.open(session["invites"]["observer"])
        settle = min(3.0, seconds / 3)
        pump(team, lambda: time.monotonic() - t0 > settle, settle + 5, each_frame=frame)
        first = watchers.ask("mark") if watchers else None
        cpu_start = _thread_cpu(server.proc.pid)
        lead.on_snapshots = lambda applied: arrivals.extend([time.monotonic()] * len(applied))
        start = time.monotonic()
        pump(team, lambda: time.monotonic() - start > seconds, seconds + 5, each_frame=frame)
        lead.on_snapshots = None
        elapsed = time.monotonic() - start
        cpu_end = _thread_cpu(server.proc.pid)
        last = watchers.ask("mark") if watchers else None
        if page_frames is not None:
            frames = page_frames.frame_times()
        status, body = get(server.http_port, f"/admin/rooms/{session['session']}", server.credential())
        room = json.loads(body) if status == 200 else {}
        tick, step = room.get("tick", {}), room.get("physics_step", {})
        cpu = {k: 100 * (cpu_end[k] - cpu_start.get(k, 0.0)) / elapsed for k in cpu_end}
        gaps = [1000 * (b - a) for a, b in itertools.pairwise(arrivals) if b > a]
        rates, per_s = [], []
        if first is not None and last is not None:
            span = last["at"] - first["at"]
            rates = [
                8 * (b - a) / span / 1e6 for a, b in zip(first["payload_bytes"], last["payload_bytes"], strict=True)
            ]
            per_s = [(b - a) / span for a, b in zip(first["snapshots"], last["snapshots"], strict=True)]

        def ms(value: float | None) -> float | None:
            return None if value is None else 1000 * value

        return {
            "observers": observers,
            "surface_vertices": last["vertices"] if last else None,
            "tick_p99_ms": ms(tick.get("p99_seconds")),
            "tick_p50_ms": ms(tick.get("p50_seconds")),
            "tick_overruns": tick.get("overruns"),
            "physics_step_p99_ms": ms(step.get("p99_seconds")),
            "substeps": room.get("substeps", {}).get("current"),
            "participant_snapshots_per_s": len(arrivals) / elapsed,
            "participant_snapshot_gap_p50_ms": _percentile(gaps, 0.5),
            "participant_snapshot_gap_p99_ms": _percentile(gaps, 0.99),
            "server_cpu_percent": {k: round(v, 1) for k, v in sorted(cpu.items())},
            "observer_mbit_s": statistics.fmean(rates) if rates else None,
            "observer_snapshots_per_s": statistics.fmean(per_s) if per_s else None,
            "page_frame_ms": frames,
        }
    finally:
        if watchers is not None:
            watchers.close()
        for h in team:
            h.close()


class _PageFrames:
    """One Chromium page watching as an observer: its requestAnimationFrame interval (ms, p50 and p99)."""

    def __init__(self, port: int) -> None:
        from rehearsal.web.headless import chromium  # Playwright and Debian's chromium

        self.port = port
        self._context = chromium()
        self.browser = self._context.__enter__()
        self.page = self.browser.new_page(viewport={"width": 960, "height": 640})

    def open(self, invite: str) -> None:
        self.page.goto(f"http://127.0.0.1:{self.port}/?code={invite}&name=Bench%20page")
        self.page.wait_for_function("() => window.rehearsal && window.rehearsal.state.snapshots > 3", timeout=30000)

    def frame_times(self) -> dict[str, float]:
        return self.page.evaluate(
            """() => new Promise((done) => { const t = []; let last = performance.now();
               function tick(now) { t.push(now - last); last = now;
                 if (t.length < 120) requestAnimationFrame(tick);
                 else { t.sort((a, b) => a - b); done({p50: t[60], p99: t[118], frames: t.length}); } }
               requestAnimationFrame(tick); })"""
        )

    def close(self) -> None:
        self._context.__exit__(None, None, None)


MEASURED = {
    "tick_p99_ms": "the room's tick (step handed to the room's thread until publishing returned), p99 of its last"
    " ~10 s, from the admin API",
    "participant_snapshot_gap_p99_ms": "what the participants see: the interval between snapshots applied by the"
    " lead surgeon's headset (a bench UDP client), p99 over the measured time",
    "server_cpu_percent": "the server's CPU (user + system, from /proc) during the measured time in % of one core,"
    " by thread: reactor (network, publishing, every observer's frames and acks) and threads (physics, checkpoints)",
    "observer_mbit_s": "WebSocket payload per observer, mean over the observers",
    "observers": "WebSocket clients in a separate (spawned) process, niced by observer_nice, that read every frame"
    " and ack every second snapshot as a page does; on the same machine as the server",
    "server_cpus": "with --pin, the CPUs the server process may run on (read back from the kernel); the reactor and"
    " the room's physics thread share them, so the tick p99 counts the observers' network work against physics",
    "in_process": "rehearsal.web.observer_cost: the reactor thread's CPU time per tick (median) for publishing and"
    " for the observers' acks, one process, real autobahn sockets over in-memory transports, no kernel socket work;"
    " robust to other processes' load, unlike the tick p99",
}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field, the median over repeated runs (numbers; dicts of numbers field by field; else the first)."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(first, bool) or first is None or not all(type(v) is type(first) for v in values):
            out[key] = first
        elif isinstance(first, (int, float)):
            out[key] = statistics.median(values)
        elif isinstance(first, dict):
            out[key] = {k: statistics.median(v.get(k, 0.0) for v in values) for k in first}
        else:
            out[key] = first
    return out


def _pinning(pin: bool) -> tuple[set[int], set[int]]:
    """With ``pin``: the CPUs for the server (the first this process may use) and for the clients (the rest)."""
    if not pin:
        return set(), set()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    return {cpus[0]}, set(cpus[1:])


def _added(alone: dict[str, Any], watched: dict[str, Any], key: str) -> float | None:
    a, b = alone.get(key), watched.get(key)
    return None if a is None or b is None else b - a


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.web.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run (after 3 s settling)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (alone, watched); medians reported")
    parser.add_argument("--observer-nice", type=int, default=10, help="nice value added for the observers' process")
    parser.add_argument(
        "--in-process-ticks", type=int, default=300, help="ticks of the in-process reactor cost (0: skip it)"
    )
    parser.add_argument("--scenario", default="basic_skills")
    parser.add_argument("--cells", help="NX,NY,NZ: the block mesh's cells instead of the scenario's")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server on the first CPU, the headsets and observers on the others (they are other machines in"
        " production; unpinned, on 2 cores their load lands in the room's tick)",
    )
    parser.add_argument("--page", action="store_true", help="also time one Chromium page's frames")
    parser.add_argument(
        "--separate-streams", action="store_true", help="one snapshot stream per observer (share_observer_stream off)"
    )
    args = parser.parse_args(argv)
    most = MAX_PARTICIPANTS - len(TEAM) - 1  # one room admits at most MAX_PARTICIPANTS people (and a page)
    if not 0 <= args.observers <= most or not 1.0 <= args.seconds <= 600:
        parser.error(f"--observers in [0, {most}], --seconds in [1, 600]")
    if not 1 <= args.repeat <= 20 or not 0 <= args.observer_nice <= 19 or not 0 <= args.in_process_ticks <= 10_000:
        parser.error("--repeat in [1, 20], --observer-nice in [0, 19], --in-process-ticks in [0, 10000]")
    cells = tuple(int(c) for c in args.cells.split(",")) if args.cells else None
    if cells is not None and (len(cells) != 3 or min(cells) < 1 or max(cells) > 200):
        parser.error("--cells is three integers in [1, 200]")
    server_cpus, client_cpus = _pinning(args.pin)
    own_cpus = os.sched_getaffinity(0)
    try:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # the team's headsets, the observers' process and a page inherit it
        report = _bench(args, cells, server_cpus)
    finally:
        os.sched_setaffinity(0, own_cpus)
    print(json.dumps(report, indent=2))
    return 0


def _bench(args: argparse.Namespace, cells: tuple[int, ...] | None, server_cpus: set[int]) -> dict[str, Any]:
    """The runs (alone, watched) ``args.repeat`` times and the in-process cost: the report."""
    alones, watcheds = [], []
    with tempfile.TemporaryDirectory(prefix="rehearsal-web-bench-") as tmp:
        people = len(TEAM) + args.observers + int(args.page)
        scenarios = _scenario_dir(Path(tmp) / "scenarios", args.scenario, cells, people)
        server = ServerProcess(
            Path(tmp) / "data",
            script=BENCH_SCRIPT,
            script_args=[
                str(Path(tmp) / "data"),
                "5",
                str(scenarios),
                "separate" if args.separate_streams else "shared",
                ",".join(str(c) for c in sorted(server_cpus)),
            ],
        )
        page = None
        try:
            server.wait_listening()
            pinned = sorted(os.sched_getaffinity(server.proc.pid)) if server_cpus else None
            for i in range(args.repeat):
                print(f"run {i + 1}/{args.repeat}: alone, then {args.observers} observers", file=sys.stderr)
                alones.append(_run(server, 0, args.seconds, args.observer_nice))
                if args.page and page is None:
                    page = _PageFrames(server.http_port)
                watcheds.append(_run(server, args.observers, args.seconds, args.observer_nice, page))
        finally:
            if page is not None:
                page.close()
            server.stop()
        in_process = None
        if args.in_process_ticks:
            print(f"in process: {args.in_process_ticks} ticks, 0 and {args.observers} observers", file=sys.stderr)
            in_process = observer_cost(args.observers, scenarios, BENCH_SCENARIO, args.in_process_ticks, args.repeat)
    alone, watched = _median_run(alones), _median_run(watcheds)
    return {
        "scenario": args.scenario,
        "cells": cells,
        "participants": len(TEAM),
        "observer_streams": "separate" if args.separate_streams else "shared",
        "observer_nice": args.observer_nice,
        "server_cpus": pinned,
        "client_cpus": sorted(os.sched_getaffinity(0)) if server_cpus else None,
        "repeat": args.repeat,
        "runs": [alone, watched],
        "observers_add_tick_p99_ms": _added(alone, watched, "tick_p99_ms"),
        "observers_add_participant_gap_p99_ms": _added(alone, watched, "participant_snapshot_gap_p99_ms"),
        "observers_add_reactor_cpu_percent": _added(
            alone["server_cpu_percent"], watched["server_cpu_percent"], "reactor"
        ),
        "in_process": in_process,
        "measured": MEASURED,
        "goals": {"observers_add_tick_p99_ms": 1.0, "observer_mbit_s_10k_vertices": 1.0},
    }


if __name__ == "__main__":
    sys.exit(main())
