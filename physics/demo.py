"""Headless demo: grasp the thin edge of a liver lobe, pull it up and back, and cut across it with scissors.

    python -m physics.demo                          # the whole scripted scene, surfaces every 30 frames in ./out
    python -m physics.demo --frames 60 --save-frames 0,30,60 --format vtu --out /tmp/liver

The lobe (physics.scenes.liver_scene) rests on a table and is tied to the abdominal wall along its
top/back edge. Prints one line per frame (step time, contacts, grasp force, events) and a summary, and
writes the live tissue surface (model.surface over state.x: every vertex, so ids stay stable across
frames and cuts) of the chosen frames. Frame 0 is the rest state before the first step; frame k is the
state after k steps. Exit code 0 when the run completes and every scripted event that falls within the
frames run (grasp, cut) happened; 1 otherwise; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np

from physics.cli_types import positive_int
from physics.mesh_io import write_surface
from physics.scenes import GRASPER_ID, liver_scene
from physics.solver import Event, Solver
from physics.surface import connected_components

FRAME_DT = 1.0 / 60.0


def _frame_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad frame list {text!r}: use integers like 0,60,120") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"bad frame list {text!r}: frames must be >= 0")
    return values


def _resolution(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a length in metres, got {text!r}") from None
    if not (math.isfinite(value) and 0.003 <= value <= 0.02):
        raise argparse.ArgumentTypeError(f"resolution must be in [0.003, 0.02] m, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m physics.demo",
        description="Headless liver-lobe demo: grasp, pull, cut; writes surface meshes of chosen frames.",
    )
    p.add_argument("--frames", type=positive_int, default=None, help="frames to run (default: the whole script)")
    p.add_argument("--substeps", type=positive_int, default=20, help="XPBD substeps per 60 Hz frame (default 20)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output directory (default ./out)")
    save = p.add_mutually_exclusive_group()
    save.add_argument("--save-every", type=positive_int, default=None, help="save frames 0, K, 2K, ... and the last")
    save.add_argument("--save-frames", type=_frame_list, default=None, help="comma-separated frames to save")
    p.add_argument("--format", choices=["obj", "vtu"], default="obj", help="surface file format (default obj)")
    p.add_argument("--threads", type=positive_int, default=None, help="numba threads (default: numba's maximum)")
    p.add_argument("--resolution", type=_resolution, default=0.006, help="liver voxel size in m (default 0.006)")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines, only the summary")
    return p


def _event_text(e: Event) -> str:
    d = e.detail
    if e.kind == "grasp":
        return f"grasp#{e.instrument}({d.get('points')} pts)"
    if e.kind in ("cut", "burn"):
        return f"{e.kind}#{e.instrument}({d.get('tets')} tets, epoch {d.get('epoch')})"
    if e.kind == "tear":
        return f"tear#{e.instrument}({d.get('force', 0.0):.2f} N > {d.get('limit', 0.0):.2f} N)"
    if e.kind == "release":
        return f"release#{e.instrument}({d.get('reason')})"
    return f"{e.kind}#{e.instrument}({d.get('reason', '')})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    max_threads = numba.config.NUMBA_NUM_THREADS
    if args.threads is not None:
        if args.threads > max_threads:
            parser.error(f"--threads {args.threads} exceeds numba's maximum of {max_threads} (set NUMBA_NUM_THREADS)")
        numba.set_num_threads(args.threads)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"cannot create output directory {str(args.out)!r}: {exc}")

    scene = liver_scene(args.resolution)
    n_frames = args.frames if args.frames is not None else scene.n_frames
    if args.save_frames is not None:
        to_save = {f for f in args.save_frames if f <= n_frames}
        skipped = [f for f in args.save_frames if f > n_frames]
        if skipped:
            print(f"note: frames {skipped} are beyond --frames {n_frames} and will not be saved", file=sys.stderr)
    else:
        every = args.save_every or 30
        to_save = set(range(0, n_frames + 1, every)) | {n_frames}
    model, state = scene.model, scene.state
    print(
        f"liver lobe: {model.n_tets} tets, {model.n_vertices} vertices, {model.anchor_vertex.size} ligament anchors; "
        f"{n_frames} frames at 60 Hz, {args.substeps} substeps, {numba.get_num_threads()} threads; "
        f"phases {scene.phases}"
    )

    written: list[Path] = []

    def save(frame: int) -> None:
        path = args.out / f"liver_{frame:04d}.{args.format}"
        write_surface(path, state.x, model.surface)
        written.append(path)

    if 0 in to_save:
        save(0)
    times, grasp_max = [], 0.0
    kinds: Counter = Counter()
    removed = 0
    resets = clamps = 0
    t_start = time.perf_counter()
    solver = Solver(model)
    for f in range(n_frames):
        control = scene.control(f)
        t0 = time.perf_counter()
        report = solver.step(state, control, FRAME_DT, args.substeps)
        ms = (time.perf_counter() - t0) * 1e3
        times.append(ms)
        g = report.grasp_forces.get(GRASPER_ID)
        force = float(np.linalg.norm(g)) if g is not None else 0.0
        grasp_max = max(grasp_max, force)
        kinds.update(e.kind for e in report.events)
        removed += sum(int(t.removed_tets.size) for t in report.topology)
        resets += report.counts["nonfinite_resets"]
        clamps += report.counts["speed_clamped"]
        if not args.quiet:
            events = " ".join(_event_text(e) for e in report.events) or "-"
            grasp = f"{force:6.2f} N" if g is not None else "     - "
            print(
                f"frame {report.frame:4d}  {ms:7.1f} ms  contacts {report.counts['instrument_contacts']:5d} inst "
                f"{report.counts['environment_contacts']:6d} env  grasp {grasp}  events {events}"
            )
        if report.frame in to_save:
            save(report.frame)
    wall = time.perf_counter() - t_start

    expect = {}
    if n_frames >= scene.phases["grasp"][1]:
        expect["grasp"] = kinds["grasp"] > 0
    if n_frames >= scene.phases["cut"][1]:
        expect["cut"] = kinds["cut"] > 0
    ok = all(expect.values()) and bool(np.all(np.isfinite(state.x)))
    median = float(np.median(times)) if times else 0.0
    p90 = float(np.percentile(times, 90)) if times else 0.0
    print("summary:")
    print(f"  frames {n_frames}  wall {wall:.1f} s  median {median:.1f} ms  p90 {p90:.1f} ms per frame")
    print(
        f"  grasps {kinds['grasp']}  grasp max force {grasp_max:.2f} N  tears {kinds['tear']}  "
        f"releases {kinds['release']}"
    )
    print(f"  cuts {kinds['cut']}  removed tets {removed}  live tets {model.n_live_tets}  epoch {model.epoch}")
    pieces = connected_components(model.tets, model.alive)[0]
    print(f"  final surface triangles {model.surface.shape[0]}  pieces {pieces}")
    print(
        f"  nonfinite resets {resets}  speed clamped {clamps}  "
        f"pose clamped/rejected {kinds['pose_clamped']}/{kinds['pose_rejected']}"
    )
    print(f"  wrote {len(written)} surface files to {args.out}")
    for name, happened in expect.items():
        if not happened:
            print(f"  FAILED: the scripted {name} did not happen", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
