"""`rehearsal demo`: the server plus a simulated team of headset bots, with a live status line.

``run_demo`` starts ``rehearsal.server.serve`` in a subprocess (data kept in ``rehearsal-demo/<time>``, ports picked
by the server and read from its log), creates a ``basic_skills`` session with the admin credential, joins
four bots through the HTTP join API and drives them over real UDP on 127.0.0.1:

* lead surgeon: grasper (the first scenario instrument), descends onto the left of the block's top,
  closes the jaws and lifts by 1.5 cm (retracting);
* scrub nurse: hands the assistant scissors (``hand_instrument``) once, then watches;
* assistant surgeon: once the scissors arrive, snips across the middle of the block four times, 1 cm
  apart, dividing its upper half (cutting);
* mentor: watches, pauses once for ~1 s, resumes, and injects the ``bleeder`` complication once.

It prints the URL where the team can be watched live in a browser (``rehearsal.web``; links holding an
observer's and a mentor's invite code). The bots are ``rehearsal.bots.Headset``s, each on the reference thin
client; the lead's draws its render state every frame. Every second it prints a status line (elapsed time;
server tick interval measured from the snapshots' server times; connected bots; downlink kbit/s per bot;
what the lead draws, objects by source (t tracked, p predicted, i interpolated, e extrapolated, h held) and
its interpolation delay; room state; the current procedure step; events seen), then a summary: per bot, the
steps, the complication, and the skill metrics the server stored. Everything is bounded: the bots stop after
``seconds``, the subprocess is terminated (killed if it lingers).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from netcode.thin_client import RenderState, Source
from rehearsal.bots import CutScript, Headset, ServerProcess, SurgeonScript, post, pump
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.web.debrief_access import DebriefAccess

ROLES = (
    ("lead_surgeon", "Lead bot"),
    ("assistant_surgeon", "Assistant bot"),
    ("scrub_nurse", "Nurse bot"),
    ("mentor", "Mentor bot"),
)
SUMMARY_EVENTS = (
    "started",
    "grasp",
    "release",
    "cut",
    "pause",
    "resume",
    "inject_complication",
    "complication_started",
    "hand_instrument",
    "step_completed",
    "step_violated",
)
FRAME_HZ = 90.0


def _tick_ms(h: Headset) -> float | None:
    times = h.snapshot_times[-60:]
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return 1000.0 * (times[-1] - times[0]) / (len(times) - 1)


class LeadView:
    """What the lead's headset draws each frame (its thin client's render state), tallied by source: its
    own instrument tracked, the tissue it holds predicted, everything else interpolated."""

    def __init__(self) -> None:
        self.frames = 0
        self.predicted_frames = 0  # frames that drew held tissue from the response model
        self.tracked_frames = 0  # frames that drew the own instrument from local tracking
        self.last: RenderState | None = None

    def draw(self, h: Headset) -> None:
        self.last = state = h.client.render_state(time.monotonic())
        self.frames += 1
        sources = {o.source for o in state.objects.values()}
        self.predicted_frames += Source.PREDICTED in sources
        self.tracked_frames += Source.TRACKED in sources

    def line(self) -> str:
        if self.last is None:
            return "view=?"
        counts = Counter(o.source.value for o in self.last.objects.values())
        drawn = ",".join(f"{n}{k[0]}" for k, n in sorted(counts.items()))
        return f"view={drawn} delay={1000 * self.last.delay:.0f}ms"

    def summary(self) -> dict:
        return {"frames": self.frames, "predicted_frames": self.predicted_frames, "tracked_frames": self.tracked_frames}


def procedure_steps(h: Headset) -> list[dict]:
    """The scenario's steps as this bot knows them: from its welcome, updated by step events."""
    steps = {s["id"]: dict(s) for s in ((h.welcome or {}).get("progress") or {}).get("steps", [])}
    for e in h.messages["event"]:
        if e["kind"] in ("step_completed", "step_violated"):
            detail = e.get("detail") or {}
            if detail.get("id") in steps:
                steps[detail["id"]].update(detail)
    return list(steps.values())


def current_step(h: Headset) -> str:
    pending = [s["id"] for s in procedure_steps(h) if s.get("status") == "pending"]
    return pending[0] if pending else "all done"


def run_demo(
    seconds: float = 20.0,
    *,
    scenario: str = "basic_skills",
    complication: str = "bleeder",
    out: Callable[[str], None] | None = print,
    startup_seconds: float = 120.0,
    show_server_log: bool = False,
    keep_dir: Path | None = None,
) -> dict:
    """Run the server and the bot team for ``seconds`` (after they have joined); returns the summary. The
    server's data (results, recording) is kept in ``keep_dir`` (default: a new ``rehearsal-demo/<time>``)."""
    say = out if out is not None else (lambda line: None)
    seconds = max(float(seconds), 5.0)  # room for the mentor's pause, resume and complication
    with _kept_folder(keep_dir) as tmp:
        server = ServerProcess(
            Path(tmp) / "data", echo=(lambda line: say(f"[server] {line}")) if show_server_log else None
        )
        team: list[Headset] = []
        summary: dict = {"ok": False}
        try:
            udp_port, http_port = server.wait_listening(startup_seconds)
            say(f"server up: udp=127.0.0.1:{udp_port} http=127.0.0.1:{http_port}")
            credential = server.credential()
            status, session = post(http_port, "/api/sessions", {"scenario": scenario}, credential)
            if status != 201:
                raise RuntimeError(f"creating the session failed: {status} {session}")
            tickets = {}
            for role, name in ROLES:
                status, ticket = post(http_port, "/api/join", {"invite": session["invites"][role], "name": name})
                if status != 200:
                    raise RuntimeError(f"joining as {role} failed: {status} {ticket}")
                tickets[role] = ticket
            bots = {role: Headset(base64.b64decode(tickets[role]["token"]), name=role) for role, _ in ROLES}
            team = list(bots.values())
            joined = pump(team, lambda: all(h.welcome for h in team), 10.0)
            if not joined:
                raise RuntimeError("the bots were not all welcomed within 10 s")
            say(f"session {session['session']} ({scenario}): {len(team)} bots joined")
            for line in watch_lines(http_port, session["invites"]):
                say(line)
            say(debrief_line(http_port, Path(tmp) / "data", session["session"]))

            summary = _drive(bots, tickets, seconds, complication, say)
            summary.update(session=session["session"], scenario=scenario, ok=True)
        finally:
            for h in team:
                with contextlib.suppress(OSError):
                    h.close()
            code = server.stop()
            summary["server_exit"] = code
            log = server.log()
            summary["server_log_tail"] = log.splitlines()[-5:]
        if summary.get("ok"):
            summary["result"] = _stored_result(Path(tmp) / "data", summary["session"])
    _print_summary(summary, say)
    for line in kept_lines(Path(tmp) / "data", summary.get("session")):
        say(line)
    return summary


DEMO_ROOT = Path("rehearsal-demo")  # each run's data in its own folder here (git-ignored)


@contextlib.contextmanager
def _kept_folder(folder: Path | None) -> Iterator[str]:
    """A folder for one demo run that outlives it (unlike a temporary directory), so its session can be
    replayed and its results looked up afterwards."""
    if folder is None:
        folder = DEMO_ROOT / time.strftime("%Y%m%d-%H%M%S")
        suffix = 1
        while folder.exists():  # two demos in the same second
            folder, suffix = folder.with_name(f"{folder.name.split('.')[0]}.{suffix}"), suffix + 1
    folder.mkdir(parents=True, exist_ok=True)
    yield str(folder)


def kept_lines(data_dir: Path, session: str | None) -> list[str]:
    """How to look at a finished demo again: its data folder, the replay and the results commands."""
    lines = [f"the demo's data is kept in {data_dir}"]
    command = _rehearsal_command()
    recording = data_dir / "recordings" / f"{session}.rec"
    if session and recording.is_file():
        lines.append(f"  replay it:        {command} replay {recording}")
    if session and (data_dir / RESULTS_FILE).is_file():
        lines.append(f"  see its results:  {command} results --data-dir {data_dir} --session {session}")
    return lines


def _rehearsal_command() -> str:
    """How to run `rehearsal` with this interpreter, relative to the working folder when inside it (.venv)."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    return f"{exe} -m rehearsal"


def watch_lines(http_port: int, invites: dict[str, str]) -> list[str]:
    """Where a person watches the team live in a browser: links holding an observer's and a mentor's code."""
    base = f"http://localhost:{http_port}/"
    return [
        f"watch live in a browser: {base}?code={invites['observer']}",
        f"  mentor console (pause, inject, annotate...): {base}?code={invites['mentor']}",
    ]


def debrief_line(http_port: int, data_dir: Path, session: str) -> str:
    """Where the session's debrief opens once it ended (the demo's end ends it, as the server stops): a link
    (``rehearsal.web.debrief_access``; its key signed with the data folder's secret, so it opens on any server
    run on that folder: this one while it runs, or ``rehearsal serve --data-dir`` on the kept folder)."""
    key = DebriefAccess.from_data_dir(data_dir).issue(session)
    return (
        f"  debrief, once the session ended: http://localhost:{http_port}/debrief?session={session}#key={key}"
        f" (later: rehearsal serve --data-dir {data_dir}, the same path on its port)"
    )


def _drive(bots: dict[str, Headset], tickets: dict, seconds: float, complication: str, say) -> dict:
    lead, assistant, nurse, mentor = (bots[r] for r, _ in ROLES)
    team = list(bots.values())
    assistant_pid = tickets["assistant_surgeon"]["participant"]
    lead_script = SurgeonScript(x=-0.015, z=0.0, lift=0.015)
    cut_script = CutScript(x=0.0025, zs=(-0.015, -0.005, 0.005, 0.015), start=0.3)  # after the nurse's handover
    pause_at = max(3.5, 0.5 * seconds)
    plan = [  # (time, bot, action, args) — each done once
        (0.1, nurse, "hand_instrument", {"to": assistant_pid, "hand": "right", "kind": "scissors"}),
        (pause_at, mentor, "pause", {}),
        (pause_at + 1.0, mentor, "resume", {}),
        (pause_at + 1.3, mentor, "inject_complication", {"complication": complication}),
    ]
    state = {"room": "running"}
    start = time.monotonic()
    bytes_at = {h.name: h.bytes_received for h in team}
    start_bytes = dict(bytes_at)
    next_status = start + 1.0
    view = LeadView()

    def frame() -> None:
        t = time.monotonic() - start
        while plan and t >= plan[0][0]:
            _, bot, action, args = plan.pop(0)
            bot.command(action, **args)
        position, jaw = lead_script.pose(t)
        lead.send_pose(position, lead_script.rotation, jaw)
        view.draw(lead)
        has_scissors = any(e["kind"] == "hand_instrument" for e in assistant.messages["event"])
        if has_scissors:
            position, jaw = cut_script.pose(t)
            assistant.send_pose(position, cut_script.rotation, jaw)
        for e in mentor.messages["event"][-4:]:
            room = (e.get("detail") or {}).get("state")
            if room:
                state["room"] = room

    def status_due() -> bool:
        nonlocal next_status
        now = time.monotonic()
        if now >= next_status:
            elapsed = now - start
            rates = []
            for h in team:
                rates.append(f"{h.name.split('_')[0]}={8 * (h.bytes_received - bytes_at[h.name]) / 1000:.0f}")
                bytes_at[h.name] = h.bytes_received
            tick = _tick_ms(lead)
            seen = sorted({k for h in team for k in h.events if k not in ("joined",)})
            say(
                f"t={elapsed:5.1f}s tick={f'{tick:.1f}' if tick else '?'}ms "
                f"clients={sum(h.connected for h in team)}/{len(team)} room={state['room']} "
                f"kbit/s {' '.join(rates)} lead {view.line()} step={current_step(mentor)} events={','.join(seen)}"
            )
            next_status += 1.0
        return now - start >= seconds

    pump(team, status_due, seconds + 5.0, frame, hz=FRAME_HZ)
    pump(team, lambda: False, 0.3)  # let the last reliable events arrive
    duration = time.monotonic() - start
    per_bot = {}
    for h in team:
        per_bot[h.name] = {
            "connected": h.connected,
            "welcomed": h.welcome is not None,
            "snapshots": h.snapshots_applied,
            "snapshot_errors": h.snapshot_errors,
            "events": {k: h.events.get(k, 0) for k in SUMMARY_EVENTS},
            "refused": [f"{r['request']}: {r['reason']}" for r in h.messages["refused"]],
            "downlink_kbit_s": 8 * (h.bytes_received - start_bytes[h.name]) / 1000 / duration,
            "uplink_kbit_s": 8 * h.bytes_sent / 1000 / duration,
            "clock_rtt_ms": None if h.client.clock.rtt is None else 1000 * h.client.clock.rtt,
        }
    return {
        "seconds": duration,
        "tick_ms": _tick_ms(lead),
        "bots": per_bot,
        "steps": procedure_steps(mentor),
        "lead_view": view.summary(),
        "unsent_commands": len(plan),
    }


def _stored_result(data_dir: Path, session: str) -> dict | None:
    """What the server kept of the session when it stopped (steps, people, skill metrics)."""
    path = data_dir / RESULTS_FILE
    if not path.is_file():
        return None
    store = ResultsStore(path)
    try:
        return store.session(session)
    finally:
        store.close()


def _print_summary(summary: dict, say) -> None:
    say("--- summary ---")
    if not summary.get("ok"):
        say(f"demo failed; server exit {summary.get('server_exit')}; log tail: {summary.get('server_log_tail')}")
        return
    tick = summary.get("tick_ms")
    say(
        f"session {summary['session']} ran {summary['seconds']:.1f}s, server tick "
        f"{f'{tick:.1f} ms' if tick else 'unknown'}, server exit {summary['server_exit']}"
    )
    for name, b in summary["bots"].items():
        events = " ".join(f"{k}={v}" for k, v in b["events"].items() if v)
        say(
            f"{name:18s} snapshots={b['snapshots']:4d} down={b['downlink_kbit_s']:6.1f} kbit/s "
            f"up={b['uplink_kbit_s']:5.1f} kbit/s {events}" + (f" refused={b['refused']}" if b["refused"] else "")
        )
    view = summary["lead_view"]
    say(
        f"lead's view: {view['frames']} frames drawn, own instrument tracked in {view['tracked_frames']}, "
        f"held tissue predicted in {view['predicted_frames']}"
    )
    for step in summary["steps"]:
        say(f"step {step['id']:20s} {step['status']:9s} {step['title']}")
    result = summary.get("result")
    if result is None:
        say("(the server kept no result for this session)")
        return
    for bleeding in result["complications"]["bleeding"]:
        state = "stopped" if bleeding["stopped"] else "still bleeding"
        say(f"complication {bleeding['complication']}: {bleeding['lost_ml']:.1f} ml lost, {state}")
    for p in result["participants"]:
        for hand, h in (p["skills"].get("hands") or {}).items():
            m = h["metrics"]
            failed = [k for k, ok in h["checks"].items() if not ok]
            say(
                f"skills {p['name']:14s} {hand:5s} path={m['path_length_m']:.2f} m idle={m['idle_time_s']:.1f} s "
                f"peak force={m['peak_force_n']:.2f} N -> {'pass' if h['passed'] else 'fail: ' + ', '.join(failed)}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rehearsal demo", description="server + a simulated team of bots")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the bots operate (default 20)")
    parser.add_argument("--show-server-log", action="store_true", help="echo the server's log lines")
    parser.add_argument("--keep-dir", type=Path, help="where the run's data is kept (default: rehearsal-demo/<time>)")
    args = parser.parse_args(argv)
    try:
        summary = run_demo(args.seconds, show_server_log=args.show_server_log, keep_dir=args.keep_dir)
    except RuntimeError as exc:
        print(f"demo failed: {exc}")
        return 1
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
