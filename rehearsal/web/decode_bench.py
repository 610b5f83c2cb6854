"""How long the browser takes to decode a snapshot of a 10k-vertex scene (prints one JSON document).

    python -m rehearsal.web.decode_bench [--grid 100] [--frames 150] [--runs 7] [--rate 1500000]

Records one client's session of ``rehearsal.web.sync_trace`` (the real SnapshotServer on a grid x grid
vertex surface: a grasp with its motion predictor, a pull, a cut and a burn) at the rehearsal server's
per-client rate, then replays the same message bytes ``--runs`` times through the JavaScript decoder in
headless Chromium (Debian's, via Playwright; after one warm-up run for the JIT) and through Python's
``SnapshotDecoder``. Per snapshot message: decode time (``onBytes``/``on_message``: msgpack envelope and
snapshot), then the surface a page draws (``surface()``: float32 positions of every vertex). For each
snapshot the median over runs is taken; the figures are the median, p99 and maximum over snapshots, and the
first (join) snapshot, which carries full records. Goal (issue 14): at most 2 ms per snapshot for 10k
vertices. The page is cross-origin isolated, so ``performance.now()`` resolves microseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np

from netcode.sync.snapshot_codec import budget_for_rate
from netcode.sync.snapshot_decode import SnapshotDecoder
from netcode.sync.snapshot_messages import SNAPSHOT_REGISTRY
from rehearsal.web import headless
from rehearsal.web.sync_trace import ClientSpec, Plan, b64, record_trace

GOAL_MS = 2.0
HZ = 60.0

JS_BENCH = """async (arg) => {
  const { SnapshotDecoder } = await import('/static/js/snapshot_decoder.js');
  const { decodeMessage } = await import('/static/js/messages.js');
  const unb64 = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  const messages = arg.messages.map(unb64);
  const kinds = messages.map((m) => decodeMessage(m).type);
  const runs = [];
  for (let r = 0; r <= arg.runs; r++) {  // run 0 warms the JIT up
    const dec = new SnapshotDecoder();
    const decode = [];
    const surface = [];
    const topology = [];
    let rejected = 0;
    for (let i = 0; i < messages.length; i++) {
      const t0 = performance.now();
      try { dec.onBytes(messages[i]); } catch (exc) { rejected += 1; }
      const t1 = performance.now();
      if (kinds[i] === 'snapshot') {
        dec.surface();
        surface.push(performance.now() - t1);
        decode.push(t1 - t0);
      } else if (kinds[i] === 'snap_topology') {
        topology.push(t1 - t0);
      }
    }
    if (r > 0) runs.push({ decode, surface, topology, rejected, vertices: dec.surface().ids.length });
  }
  let tick = Infinity;  // the timer's resolution: the smallest non-zero step seen
  for (let i = 0, last = performance.now(); i < 20000; i++) {
    const now = performance.now();
    if (now > last) { tick = Math.min(tick, now - last); last = now; }
  }
  return { runs, isolated: self.crossOriginIsolated, userAgent: navigator.userAgent, tick };
}"""


def _stats(per_run: list[list[float]]) -> dict:
    """Median over runs per item, then median / p99 / max over items and the first item (ms)."""
    a = np.median(np.array(per_run, float), axis=0)
    return {
        "median_ms": round(float(np.median(a)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "max_ms": round(float(a.max()), 4),
        "first_ms": round(float(a[0]), 4),
        "mean_ms": round(float(a.mean()), 4),
    }


def python_times(messages: list[bytes], kinds: list[str], runs: int) -> dict:
    """The same replay through Python's decoder (one warm-up run for numba)."""
    decode_runs, surface_runs = [], []
    for r in range(runs + 1):
        decoder = SnapshotDecoder()
        decode, surface = [], []
        for message, kind in zip(messages, kinds, strict=True):
            t0 = time.perf_counter()
            decoder.on_message(message)
            t1 = time.perf_counter()
            if kind == "snapshot":
                decoder.surface()
                surface.append((time.perf_counter() - t1) * 1e3)
                decode.append((t1 - t0) * 1e3)
        if r:
            decode_runs.append(decode)
            surface_runs.append(surface)
    return {"decode": _stats(decode_runs), "surface": _stats(surface_runs)}


def run(grid: int = 100, frames: int = 150, runs: int = 7, rate: float = 1_500_000, browser=None) -> dict:
    """Record the session and time both decoders on it; ``browser``: a Playwright Browser to use (default: launch
    Debian's Chromium, BrowserUnavailableError without it)."""
    f = frames
    plan = Plan(
        frames=f,
        grasp=f // 12,
        pull=(f // 10, f // 2),
        release=(3 * f // 4, 14 * f // 15),
        cut=f // 2 + 5,
        burn=4 * f // 5,
        late_join=-1,
        reconnect=-1,
        second_grasp=f // 3,
        reset=-1,
        checkpoint_every=f,
    )
    budget = budget_for_rate(rate, HZ)
    trace = record_trace(
        n=grid,
        plan=plan,
        loss=0.0,
        reorder=0.0,
        patch_size=100,
        clients=[ClientSpec("bench", budget=budget, reliable_delay=0)],
        checkpoints=False,
        size=0.1,
    )
    messages = trace.clients[0].messages
    kinds = [SNAPSHOT_REGISTRY.decode(m).type for m in messages]
    sizes = [len(m) for m, k in zip(messages, kinds, strict=True) if k == "snapshot"]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(headless.static_server())
        if browser is None:
            browser = stack.enter_context(headless.chromium())
        page = browser.new_page()
        try:
            page.goto(url + "/")
            js = page.evaluate(JS_BENCH, {"messages": [b64(m) for m in messages], "runs": runs})
        finally:
            page.close()
    js_decode = _stats([r["decode"] for r in js["runs"]])
    return {
        "vertices": js["runs"][0]["vertices"],
        "frames": f,
        "snapshots": len(sizes),
        "budget_bytes_per_frame": budget,
        "snapshot_message_bytes_mean": round(float(np.mean(sizes)), 1),
        "snapshot_message_bytes_first": sizes[0],
        "runs": runs,
        "rejected": js["runs"][0]["rejected"],
        "javascript": {
            "decode": js_decode,
            "surface": _stats([r["surface"] for r in js["runs"]]),
            "topology_ms": [round(float(v), 3) for v in np.median([r["topology"] for r in js["runs"]], axis=0)],
            "timer_resolution_ms": js["tick"],
            "cross_origin_isolated": js["isolated"],
            "browser": js["userAgent"],
        },
        "python": python_times(messages, kinds, runs),
        "goal": f"JavaScript decode at most {GOAL_MS} ms per snapshot for 10k vertices (median and p99)",
        "goal_met": js_decode["median_ms"] <= GOAL_MS and js_decode["p99_ms"] <= GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.web.decode_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, default=100, help="vertices per side of the surface (default 100: 10k)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the session (default 150)")
    parser.add_argument("--runs", type=int, default=7, help="timed replays (default 7)")
    parser.add_argument("--rate", type=float, default=1_500_000, help="per-client bit/s (default 1.5 M, the server's)")
    args = parser.parse_args(argv)
    if not 8 <= args.grid <= 300:
        parser.error("--grid must be in 8..300")
    if not 40 <= args.frames <= 2000:
        parser.error("--frames must be in 40..2000")
    if not 1 <= args.runs <= 100:
        parser.error("--runs must be in 1..100")
    if not 1e4 <= args.rate <= 1e9:
        parser.error("--rate must be in 1e4..1e9")
    try:
        report = run(args.grid, args.frames, args.runs, args.rate)
    except headless.BrowserUnavailableError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
