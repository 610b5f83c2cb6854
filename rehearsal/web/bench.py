"""What browser observers cost: ``python -m rehearsal.web.bench`` prints JSON.

Runs the real server in a subprocess (loopback only) and, twice, a room of 4 scripted participants (the lead
surgeon grasping and lifting): once alone, once with ``--observers`` WebSocket observers that read every
frame and ack every snapshot as a page does. Reports each run's room tick p99 (from the admin API: the room's
last ~10 s), what the observers add to it (goal: at most 1 ms for 32), and the observers' mean downlink in
Mbit/s (WebSocket payload; goal: at most 1 Mbit/s for a 10k-vertex scene). ``--cells NX,NY,NZ`` replaces the
scenario's block mesh (e.g. ``70,1,70`` for a sheet with about 10k surface vertices). With ``--page`` one
Chromium page (``rehearsal.web.headless``) also watches the second run and reports its frame time.
The snapshot decode time in JavaScript is ``rehearsal.web.decode_bench``'s.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import statistics
import struct
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from netcode.messaging.messages import Message
from netcode.sync.snapshot import parse_header
from netcode.sync.snapshot_messages import parse_topology
from rehearsal.bots import Headset, ServerProcess, SurgeonScript, get, post, pump
from rehearsal.scenario import MAX_PARTICIPANTS, packaged_scenarios
from rehearsal.wire import REHEARSAL_REGISTRY

BENCH_SCRIPT = """
import sys
from pathlib import Path
from rehearsal.server import serve
from rehearsal.settings import load_settings
settings = load_settings(None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0, drain_seconds=sys.argv[2],
                         scenario_dir=Path(sys.argv[3]), share_observer_stream=sys.argv[4] == "shared")
sys.exit(serve(settings))
"""
TEAM = (("lead_surgeon", "Lead"), ("assistant_surgeon", "Assistant"), ("scrub_nurse", "Nurse"), ("mentor", "Mentor"))
BENCH_SCENARIO = "web_bench"


class ObserverSocket:
    """A page's link without the page: join, read every frame, ack every snapshot (newest + 32 bits)."""

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


def _run(server: ServerProcess, observers: int, seconds: float, page_frames: Any = None) -> dict[str, Any]:
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
    watchers = [
        ObserverSocket(server.http_port, session["invites"]["observer"], f"Observer {i}") for i in range(observers)
    ]
    frames = None
    try:
        if not pump(team, lambda: all(h.welcome for h in team), 15.0):
            raise RuntimeError("the team was not welcomed within 15 s")
        lead, script = team[0], SurgeonScript(x=-0.01, lift=0.012)
        t0 = time.monotonic()

        def frame() -> None:
            t = (time.monotonic() - t0) % 6.0  # grasp, lift, let go, again
            position, jaw = script.pose(t if t < 4.5 else 0.0)
            lead.send_pose(position, script.rotation, jaw)
            for w in watchers:
                w.service()

        if page_frames is not None:
            page_frames.open(session["invites"]["observer"])
        settle = min(3.0, seconds / 3)
        pump(team, lambda: time.monotonic() - t0 > settle, settle + 5, each_frame=frame)
        start_bytes = [w.payload_bytes for w in watchers]
        start = time.monotonic()
        pump(team, lambda: time.monotonic() - start > seconds, seconds + 5, each_frame=frame)
        elapsed = time.monotonic() - start
        if page_frames is not None:
            frames = page_frames.frame_times()
        status, body = get(server.http_port, f"/admin/rooms/{session['session']}", server.credential())
        room = json.loads(body) if status == 200 else {}
        rates = [8 * (w.payload_bytes - b) / elapsed / 1e6 for w, b in zip(watchers, start_bytes, strict=True)]
        tick = room.get("tick", {})
        return {
            "observers": observers,
            "surface_vertices": max((w.vertices for w in watchers), default=None),
            "tick_p99_ms": None if tick.get("p99_seconds") is None else 1000 * tick["p99_seconds"],
            "tick_p50_ms": None if tick.get("p50_seconds") is None else 1000 * tick["p50_seconds"],
            "tick_overruns": tick.get("overruns"),
            "substeps": room.get("substeps", {}).get("current"),
            "observer_mbit_s": statistics.fmean(rates) if rates else None,
            "observer_snapshots_per_s": statistics.fmean(w.snapshots for w in watchers) / (elapsed + settle)
            if watchers
            else None,
            "page_frame_ms": frames,
        }
    finally:
        for w in watchers:
            w.close()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.web.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run (after 3 s settling)")
    parser.add_argument("--scenario", default="basic_skills")
    parser.add_argument("--cells", help="NX,NY,NZ: the block mesh's cells instead of the scenario's")
    parser.add_argument("--page", action="store_true", help="also time one Chromium page's frames")
    parser.add_argument(
        "--separate-streams", action="store_true", help="one snapshot stream per observer (share_observer_stream off)"
    )
    args = parser.parse_args(argv)
    most = MAX_PARTICIPANTS - len(TEAM) - 1  # one room admits at most MAX_PARTICIPANTS people (and a page)
    if not 0 <= args.observers <= most or not 1.0 <= args.seconds <= 600:
        parser.error(f"--observers in [0, {most}], --seconds in [1, 600]")
    cells = tuple(int(c) for c in args.cells.split(",")) if args.cells else None
    if cells is not None and (len(cells) != 3 or min(cells) < 1 or max(cells) > 200):
        parser.error("--cells is three integers in [1, 200]")
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
            ],
        )
        page = None
        try:
            server.wait_listening()
            alone = _run(server, 0, args.seconds)
            page = _PageFrames(server.http_port) if args.page else None
            watched = _run(server, args.observers, args.seconds, page)
        finally:
            if page is not None:
                page.close()
            server.stop()
    added = None
    if alone["tick_p99_ms"] is not None and watched["tick_p99_ms"] is not None:
        added = watched["tick_p99_ms"] - alone["tick_p99_ms"]
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "cells": cells,
                "participants": len(TEAM),
                "observer_streams": "separate" if args.separate_streams else "shared",
                "runs": [alone, watched],
                "observers_add_tick_p99_ms": added,
                "goals": {"observers_add_tick_p99_ms": 1.0, "observer_mbit_s_10k_vertices": 1.0},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
