"""The browser participant under impairment: ``python -m rehearsal.web.participant_bench`` prints JSON.

Runs the real server in a subprocess (with its WebTransport port) and headless Chromium (``rehearsal.web.headless``)
as an assistant, once per transport. Over ``websocket`` (``?transport=websocket``) the page reaches the server
through a loopback TCP relay (``rehearsal.web.tcp_relay``: ``--rtt`` added round trip, ``--loss`` per TCP segment,
shown as TCP shows it: the chunk holding a lost segment, and everything behind it, arrives a retransmission later).
Over ``webtransport`` its WebSocket goes through such a relay too and its datagrams through a UDP relay
(``rehearsal.web.udp_relay``: the same round trip, ``--loss`` per datagram each way, ``?wt_port=``). A scripted hand
(``window.rehearsal.state.script``: the page's input hook) descends, closes the grasper on the tissue and pulls it
up and down for ``--seconds``. The page records, each frame, the grasp's most responsive vertices (the 16 with the
largest response-model rows) as drawn (predicted and reconciled, participant.js), as plain interpolation would draw
them (no prediction) and at the newest authoritative state; and every authoritative state of them that arrives. The
truth for a frame is the authoritative state at the server time that frame's input is applied, ``server_now + rtt /
2`` (its authoritative states arrive later; frames whose truth is not covered are left out). Reported: the RMS error
of each (mm) and prediction's ratio to interpolation (goal at most 0.3); the own instrument's display latency in
frames (drawn from the input of the frame that sampled it: one frame; the server's echo of it, for comparison); the
snapshot gaps at the page (p50, p99, max); the page's frame rate; per transport.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.bots import ServerProcess, post
from rehearsal.web import headless
from rehearsal.web.tcp_relay import TcpRelay
from rehearsal.web.udp_relay import UdpRelay

LOSS_MODEL = {
    "websocket": "TCP: a chunk with a lost segment, and all behind it, arrives a retransmission (RTT + 200 ms) late",
    "webtransport": "UDP: each datagram lost with the probability, either way (its WebSocket as for websocket)",
}
TRANSPORTS = ("websocket", "webtransport")
# The server as rehearsal.bots.SERVER_SCRIPT starts it, with its WebTransport port (a free one) on.
SERVER_SCRIPT = """
import sys
from pathlib import Path
from rehearsal.server import serve
from rehearsal.settings import load_settings
settings = load_settings(
    None, env={}, data_dir=Path(sys.argv[1]), udp_port=0, http_port=0, drain_seconds=sys.argv[2], webtransport_port=0
)
sys.exit(serve(settings))
"""
WEBTRANSPORT_LISTENING = re.compile(r"webtransport udp=127\.0\.0\.1:(\d+)")
SELECTED = 16  # vertices of the grasp's model measured (its most responsive rows)
WAIT_MS = 60_000

HARNESS_JS = """(cfg) => {
  const r = window.rehearsal;
  const P = r.participant;
  const t0 = performance.now() / 1000;
  const ramp = (t, a, b, x, y) => (t <= a ? x : t >= b ? y : x + ((y - x) * (t - a)) / (b - a));
  const DOWN = [0.5, 0.5, -0.5, 0.5];
  const oid = Number(r.state.hands.right);
  P.jawFrom = cfg.jawFrom;
  const rec = { frames: [], frameInputY: [], echo: [], auth: {}, descent: [], frameTimes: [], sel: null,
    gaps0: r.state.snapshotGaps.length,
    own0: [r.state.ownFrames, r.state.ownDrawnThisFrame], done: false, grasped: null };
  window.__bench = rec;
  const pose = (t) => {
    const u = t - cfg.pullAt;
    const pull = u > 0 ? (cfg.amp * (1 - Math.cos((2 * Math.PI * u) / cfg.period))) / 2 : 0;
    const sway = u > 0 ? 0.004 * Math.sin((2 * Math.PI * u) / cfg.period) : 0;
    const y = ramp(t, 0.5, 1.7, 0.06, 0.03) + pull;
    return { position: [cfg.x + sway, y, 0], rotation: DOWN, jaw: ramp(t, 1.8, 2.2, 1, 0) };
  };
  r.state.script = (now) => ({ 2: { ...pose(now - t0), energy: false } });
  const offsets = () => P.offsets;
  const recordAuth = (decoder) => {
    if (!rec.sel) return;
    const times = decoder.patchTimes();
    let f = null;
    for (const [p, rows] of Object.entries(rec.sel.byPatch)) {
      const list = rec.auth[p];
      const t = times[Number(p)];
      if (!(t > (list.length ? list[list.length - 1][0] : -Infinity))) continue;
      f = f || decoder.surfaceFloat64();
      const base = 3 * offsets()[Number(p)];
      const row = [t];
      for (const idx of rows) row.push(f[base + 3 * idx], f[base + 3 * idx + 1], f[base + 3 * idx + 2]);
      list.push(row);
    }
  };
  const onGrasp = P.onGrasp.bind(P);
  P.onGrasp = (fields, now) => {
    const ok = onGrasp(fields, now);
    if (ok && !rec.sel) {
      const held = [...P.grasps.values()].pop();
      const m = held.model;
      const c = m.columns;
      const norms = [...m.objects].map((_, k) => {
        let s = 0;
        for (let i = 0; i < 3 * c; i++) s += m.matrices[k * 3 * c + i] ** 2;
        return [s, k];
      }).sort((a, b) => b[0] - a[0]).slice(0, cfg.selected);
      const chosen = norms.map(([, k]) => [m.objects[k], m.vertices[k]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      const byPatch = {};
      for (const [p, idx] of chosen) (byPatch[p] = byPatch[p] || []).push(idx);
      rec.sel = { chosen, byPatch };
      for (const p of Object.keys(byPatch)) rec.auth[p] = [];
      recordAuth(r.decoder);
      rec.grasped = now - t0;
      const p0 = Number(Object.keys(byPatch)[0]);
      const newest = P.patches[p0].buffer.newest();
      const sh = P.serverPoses.get(m.instrument);
      rec.graspInfo = { baseline: m.baseline, jawNow: P.tracking.get(2), newestTime: newest && newest[0],
        jawAuth: newest && P._jawAt(m, newest[0]), serverSpan: sh ? sh.span() : null,
        localSpan: P.localPoses.get(2) ? P.localPoses.get(2).span() : null, serverNow: P.serverNow(now),
        serverLast: sh ? sh.poses[sh.poses.length - 1] : null };
    }
    return ok;
  };
  const onSnapshot = P.onSnapshot.bind(P);
  P.onSnapshot = (decoder, now) => {
    const n = onSnapshot(decoder, now);
    recordAuth(decoder);
    const sh = P.serverPoses.get(oid); // the server's snapshots of our instrument: when it applied our input
    const last = rec.echo.length ? rec.echo[rec.echo.length - 1][0] : -Infinity;
    if (sh && sh.length && sh.times[sh.length - 1] > last) {
      rec.echo.push([sh.times[sh.length - 1], sh.poses[sh.length - 1].position[1]]);
    }
    return n;
  };
  const sample = (arr, base, idx, out) => {
    out.push(arr[base + 3 * idx], arr[base + 3 * idx + 1], arr[base + 3 * idx + 2]);
  };
  const perFrame = () => {
    const now = performance.now() / 1000;
    const t = now - t0;
    rec.frameTimes.push(now);
    const echo = r.decoder.rigid().get(oid);
    if (t > 0.5 && t < 1.7 && echo) rec.descent.push([now, pose(t).position[1], echo.position[1]]);
    const lr = r.state.lastRender;
    if (rec.sel && P.grasps.size && lr && t > cfg.pullAt) {
      const row = [now, lr.serverNow];
      const parts = [[], [], []];
      for (const [p, rows] of Object.entries(rec.sel.byPatch)) {
        const drawn = P.lastDrawn.get(Number(p));
        const buffer = P.patches[Number(p)].buffer;
        const interp = buffer.sample(lr.renderTime);
        const newest = buffer.newest();
        if (!drawn || !interp || !newest) return requestAnimationFrame(perFrame);
        for (const idx of rows) {
          sample(drawn, 0, idx, parts[0]);
          sample(interp[0], 0, idx, parts[1]);
          sample(newest[1], 0, idx, parts[2]);
        }
      }
      rec.frames.push(row.concat(...parts));
      rec.frameInputY.push(pose(t).position[1]);
    }
    if (t > cfg.pullAt + cfg.seconds) {
      rec.done = true;
      rec.gaps = r.state.snapshotGaps.slice(rec.gaps0);
      rec.own = [r.state.ownFrames - rec.own0[0], r.state.ownDrawnThisFrame - rec.own0[1]];
      const d = r.link.datagrams;
      rec.transport = { name: r.link.transportName, datagramsIn: d ? d.datagramsIn : 0,
        datagramsOut: d ? d.datagramsOut : 0, reassemblyDropped: d ? d.reassembler.dropped : 0 };
      return;
    }
    requestAnimationFrame(perFrame);
  };
  requestAnimationFrame(perFrame);
  return true;
}"""


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def applied_delay(rec: dict[str, Any], owd: float) -> float:
    """When the server applies a frame's input, after that frame's ``server_now``: the offset (s, 1 ms steps in
    [0, 0.4]) that best aligns the frames' input heights with the server's own snapshots of the instrument (its
    echo), so that the truth includes the server's input handling (arrival, its jitter hold, the wait for a
    tick). ``owd`` when the recording has no echo over its frames."""
    echo = np.asarray(rec.get("echo") or [], dtype=np.float64)
    inputs = np.asarray(rec.get("frameInputY") or [], dtype=np.float64)
    frames = rec.get("frames") or []
    if len(echo) < 8 or len(inputs) != len(frames) or not len(frames):
        return owd
    server_now = np.asarray([f[1] for f in frames])
    best, best_cost = owd, math.inf
    for d in np.arange(0.0, 0.4, 0.001):
        when = server_now + d
        inside = (when >= echo[0, 0]) & (when <= echo[-1, 0])
        if inside.sum() < 0.5 * len(when):
            continue
        cost = float(np.mean((np.interp(when[inside], echo[:, 0], echo[:, 1]) - inputs[inside]) ** 2))
        if cost < best_cost:
            best, best_cost = float(d), cost
    return best


def held_errors(rec: dict[str, Any], when: np.ndarray) -> dict[str, Any]:
    """RMS errors (mm) of the drawn, interpolated and newest-authoritative held vertices against the truth at
    ``when`` (server time per frame), and prediction's ratio to interpolation."""
    chosen = rec["sel"]["chosen"]
    s = len(chosen)
    frames = np.asarray(rec["frames"], dtype=np.float64)
    truth_cols = []
    for patch, idx in chosen:  # each chosen vertex's authoritative history, in the frames' vertex order
        hist = np.asarray(rec["auth"][str(patch)], dtype=np.float64)
        rows = rec["sel"]["byPatch"][str(patch)]
        j = rows.index(idx)
        truth_cols.append((hist[:, 0], hist[:, 1 + 3 * j : 4 + 3 * j]))
    keep = np.ones(len(frames), dtype=bool)
    truth = np.zeros((len(frames), s, 3))
    for v, (times, xyz) in enumerate(truth_cols):
        keep &= (when >= times[0]) & (when <= times[-1])
        for k in range(3):
            truth[:, v, k] = np.interp(when, times, xyz[:, k])
    shown = frames[:, 2:].reshape(len(frames), 3, s, 3)
    errors = {}
    for name, i in (("predicted", 0), ("interpolated", 1), ("newest_authoritative", 2)):
        e = np.linalg.norm(shown[keep, i] - truth[keep], axis=2)  # (frames, vertices) m
        errors[name] = float(np.sqrt(np.mean(e**2)) * 1000) if e.size else None
    ratio = (
        errors["predicted"] / errors["interpolated"]
        if errors["predicted"] is not None and errors["interpolated"]
        else None
    )
    return {
        "frames_compared": int(keep.sum()),
        "held_rms_error_mm": errors,
        "prediction_error_ratio": ratio,
        "_truth": truth[keep],
        "_keep": keep,
    }


def analyse(rec: dict[str, Any], owd: float) -> dict[str, Any]:
    """The figures of one recording (see the module doc); errors in mm."""
    chosen = rec["sel"]["chosen"] if rec.get("sel") else []
    s = len(chosen)
    frames = np.asarray(rec["frames"], dtype=np.float64)
    out: dict[str, Any] = {"vertices_measured": s, "frames_recorded": len(frames)}
    if s and len(frames):
        delay = applied_delay(rec, owd)
        measured = held_errors(rec, frames[:, 1] + delay)
        assumed = held_errors(rec, frames[:, 1] + owd)
        truth, keep = measured.pop("_truth"), measured.pop("_keep")
        motion = np.linalg.norm(np.diff(truth, axis=0), axis=2)
        out.update(measured)
        out["input_applied_after_server_now_ms"] = delay * 1000
        out["at_server_now_plus_half_rtt"] = {k: v for k, v in assumed.items() if not k.startswith("_")}
        out["held_vertex_speed_mm_s"] = (
            float(np.mean(motion) * 1000 / np.median(np.diff(frames[keep, 0]))) if motion.size else None
        )
    times = np.asarray(rec["frameTimes"])
    dt = float(np.median(np.diff(times))) if len(times) > 2 else None
    descent = np.asarray(rec["descent"], dtype=np.float64)
    echo_lag = None
    if len(descent) > 4 and dt:
        t_in, y_in, y_echo = descent[:, 0], descent[:, 1], descent[:, 2]
        inside = (y_echo < y_in.max() - 1e-4) & (y_echo > y_in.min() + 1e-4)
        if inside.any():
            when = np.interp(y_echo[inside], y_in[::-1], t_in[::-1])  # when our input was where the echo is
            echo_lag = float(np.median(t_in[inside] - when))
    own_frames, own_now = rec.get("own", [0, 0])
    gaps = rec.get("gaps", [])
    out.update(
        {
            "own_instrument": {
                "frames": own_frames,
                "drawn_from_the_same_frames_input": own_now / own_frames if own_frames else None,
                "display_latency_frames": 1 if own_frames and own_now == own_frames else None,
                "server_echo_latency_ms": echo_lag * 1000 if echo_lag is not None else None,
                "server_echo_latency_frames": echo_lag / dt if echo_lag is not None and dt else None,
            },
            "snapshot_gap_ms": {
                "count": len(gaps),
                "p50": _percentile(gaps, 50),
                "p99": _percentile(gaps, 99),
                "max": max(gaps) if gaps else None,
            },
            "page_fps": 1 / dt if dt else None,
        }
    )
    return out


def run_page(args: argparse.Namespace, server: ServerProcess, wt_port: int, transport: str) -> dict[str, Any]:
    """One assistant's page over ``transport`` through the relays; its figures."""
    status, session = post(server.http_port, "/api/sessions", {"scenario": "basic_skills"}, server.credential())
    if status != 201:
        raise RuntimeError(f"could not create a session: {status} {session}")
    relay = TcpRelay(server.http_port, rtt=args.rtt, loss=args.loss, seed=args.seed)
    udp = UdpRelay(wt_port, rtt=args.rtt, loss=args.loss, seed=args.seed) if transport == "webtransport" else None
    try:
        print(
            f"{transport}: relay on port {relay.port}: +{args.rtt * 1000:.0f} ms RTT, {args.loss:.1%} loss",
            file=sys.stderr,
        )
        with headless.chromium() as browser:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            code = session["invites"]["assistant_surgeon"]
            how = f"wt_port={udp.port}" if udp is not None else "transport=websocket"
            page.goto(f"http://127.0.0.1:{relay.port}/?code={code}&name=Bench&{how}", timeout=WAIT_MS)
            page.wait_for_function(
                "() => window.rehearsal && window.rehearsal.participant && window.rehearsal.state.snapshots > 30",
                timeout=WAIT_MS,
            )
            if udp is not None:  # measured on datagrams only
                page.wait_for_function("() => window.rehearsal.link.transportName === 'webtransport'", timeout=WAIT_MS)
            cfg = {
                "x": 0.0,
                "pullAt": 2.6,
                "amp": 0.012,
                "period": 2.0,
                "seconds": args.seconds,
                "selected": SELECTED,
                "jawFrom": args.jaw_from,
            }
            page.evaluate(HARNESS_JS, cfg)
            print(f"{transport}: grasp and pull for {args.seconds:.0f} s", file=sys.stderr)
            page.wait_for_function("() => window.__bench.done", timeout=int((args.seconds + 30) * 1000))
            rec = page.evaluate("() => window.__bench")
            refusals = page.evaluate("() => window.rehearsal.state.refusals.map((r) => r.reason)")
            page.close()
    finally:
        # the room ends with its run: a room left stepping would load the server during the next one
        post(server.http_port, f"/admin/rooms/{session['session']}/end", {}, server.credential())
        relay_stats = relay.stats()
        relay.close()
        udp_stats = udp.stats() if udp is not None else None
        if udp is not None:
            udp.close()
    if args.dump:
        Path(f"{args.dump}.{transport}.json").write_text(json.dumps(rec))
    figures = {"transport": rec.get("transport"), "loss_model": LOSS_MODEL[transport]}
    figures.update(analyse(rec, args.rtt / 2))
    figures["grasped_at_s"] = rec.get("grasped")
    figures["refusals"] = refusals[:5]
    figures["relay"] = relay_stats
    if udp_stats is not None:
        figures["udp_relay"] = udp_stats
    return figures


def with_repeats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's figures; with more runs, also each run's headline figures and their medians."""
    first = dict(runs[0])
    if len(runs) > 1:
        ratios = [r.get("prediction_error_ratio") for r in runs]
        gaps = [r["snapshot_gap_ms"]["p99"] for r in runs]
        first["repeats"] = {
            "prediction_error_ratio": ratios,
            "snapshot_gap_p99_ms": gaps,
            "median_prediction_error_ratio": _median([x for x in ratios if x is not None]),
            "median_snapshot_gap_p99_ms": _median([x for x in gaps if x is not None]),
            "display_latency_frames": [r["own_instrument"]["display_latency_frames"] for r in runs],
        }
    return first


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each transport of ``args.transport`` in turn, on one server."""
    with tempfile.TemporaryDirectory(prefix="rehearsal-participant-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "data", script=SERVER_SCRIPT)
        try:
            print("starting the server", file=sys.stderr)
            server.wait_listening()
            wt_port = int(server.wait_for(WEBTRANSPORT_LISTENING, 30.0).group(1))
            chosen = TRANSPORTS if args.transport == "both" else (args.transport,)
            runs: dict[str, list[dict[str, Any]]] = {transport: [] for transport in chosen}
            for _ in range(args.repeat):  # alternating, so that a spell of load hits both alike
                for transport in chosen:
                    runs[transport].append(run_page(args, server, wt_port, transport))
            return {transport: with_repeats(figures) for transport, figures in runs.items()}
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.web.participant_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rtt", type=float, default=0.1, help="added round trip (s), half each way")
    parser.add_argument("--loss", type=float, default=0.02, help="probability each TCP segment is lost, both ways")
    parser.add_argument("--seconds", type=float, default=8.0, help="time pulling, measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jaw-from", choices=("server", "local"), default="server", help="the applied jaw pose: from")
    parser.add_argument("--width", type=int, default=480, help="page viewport (software WebGL: smaller draws faster)")
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--transport", choices=("both", *TRANSPORTS), default="both")
    parser.add_argument("--repeat", type=int, default=1, help="runs per transport (medians of the headline figures)")
    parser.add_argument(
        "--dump", help="also write each transport's raw recording (JSON; the last run's) to DUMP.<transport>.json"
    )
    args = parser.parse_args(argv)
    if not (0 <= args.rtt <= 1 and 0 <= args.loss < 0.5 and 2 <= args.seconds <= 120 and 1 <= args.repeat <= 20):
        parser.error("--rtt in [0, 1] s, --loss in [0, 0.5), --seconds in [2, 120], --repeat in [1, 20]")
    started = time.monotonic()
    figures = run(args)
    print(
        json.dumps(
            {
                "impairment": {"rtt_ms": args.rtt * 1000, "loss": args.loss},
                **figures,
                "seconds": round(time.monotonic() - started, 1),
                "goals": {"prediction_error_ratio": 0.3, "own_instrument_display_latency_frames": 1},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
