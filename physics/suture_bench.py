"""Suturing benchmark: what a needle and a 200-segment thread add to a frame of the 20k-tet block scene.

    python -m physics.suture_bench                        # 20k tets, 20 substeps, 1 and 2 threads, 5 repeats
    python -m physics.suture_bench --quick                # a tiny run (seconds), for tests and smoke checks
    python -m physics.suture_bench --sizes 20k --threads 2 --repeats 9 --segments 200

The scene is physics.bench's (`physics.bench.prepare_grasp`: `physics.scenes.block_grasp_scene`, a grasper has
grasped the top of a block and pulls it up and sideways). With suturing, a needle lies above the block and its
thread (segments x 3 mm) runs from the needle's tail down into the top face, under it through an 8 mm bite, out
and up to the grasper, which holds it beside its shaft (so the pull tensions it), and on as a free tail. The seam
(physics.suturing.Suturing) runs around every `Solver.step` as a room runs it: its suture holds are the
solver's grasp constraints, then the needle, the thread and, every KNOT_EVERY frames, the knot check. A stitch tied
and cut earlier lies 12 mm beside it (physics/thread_cut.py's frozen piece: its two holds and its cheap update are
in the figure, as in an interrupted closure).

Each repeat runs the pull twice in lockstep, without and with suturing (frame f of one, then of the other, the
order alternating), so the machine's load hits both alike; the figure is the median over frames of the
difference (`extra_ms`), goal at most 1 ms on 2 threads.
The seam's parts are timed too (`parts_ms`: before_step, the solver's step, after_step, and inside after_step as
the frames run them the needle's and the thread's step, the tied piece's frame and the knot check, the last the
median of the frames that ran one), and `extra_ms_by_parts` adds them up (before + after + the median of what the
holds add to the solver's step). `parts_alone_ms` times the same four again on their own once the run is over: with
warm caches they cost a fraction of what they do in the frame, where each runs after the solver's step has swept
the caches (the first numpy calls after it take tens of microseconds each), so only the in-frame figures say what
a frame pays.
Prints one JSON document on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence

import numba
import numpy as np

from physics.bench import FRAME_DT, copy_state, log, machine_info, prepare_grasp
from physics.cli_types import positive_int
from physics.control import Control
from physics.needle import NeedleSpec, TissuePoint
from physics.scenes import GRASPER_ID, Scene
from physics.solver import Solver
from physics.suture_thread import Slide, ThreadSpec
from physics.suturing import KNOT_EVERY, Suturing
from physics.thread_cut import FrozenThread

GOAL_EXTRA_MS = 1.0  # on 2 threads, 20k tets, 20 substeps
SEGMENT = 0.003  # m
BITE = 0.008  # m between the entry and the exit
LEAD = 0.25  # m of thread from the needle down to the entry (at most 30 % of the thread)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m physics.suture_bench",
        description="Time what a needle and a suture thread add to a frame of the block scene. JSON on stdout.",
    )
    p.add_argument("--sizes", type=_sizes, default=None, help="target tet counts like 5k,20k (default 20k)")
    p.add_argument("--substeps", type=positive_int, default=20, help="solver substeps per frame (default 20)")
    p.add_argument("--threads", type=_threads, default=None, help="numba thread counts (default 1,2)")
    p.add_argument("--frames", type=positive_int, default=30, help="timed pull frames per repeat (default 30)")
    p.add_argument("--repeats", type=positive_int, default=5, help="repeats per configuration (default 5)")
    p.add_argument("--segments", type=positive_int, default=200, help="thread segments of 3 mm (default 200)")
    p.add_argument("--quick", action="store_true", help="a tiny run: ~1k tets, 40 segments, few frames")
    return p


def _sizes(text: str) -> list[int]:
    out = []
    for v in (t.strip().lower() for t in text.split(",") if t.strip()):
        try:
            n = round(float(v[:-1]) * 1000) if v.endswith("k") else int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {v!r}: use a tet count like 5000 or 20k") from None
        if not 6 <= n <= 5_000_000:
            raise argparse.ArgumentTypeError(f"bad size {v!r}: must be between 6 and 5M tets")
        out.append(n)
    if not out:
        raise argparse.ArgumentTypeError("empty size list")
    return out


def _threads(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}: use integers like 1,2") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}: each must be >= 1")
    return values


# --- the scene ----------------------------------------------------------------------------------------------


def _top_vertex(rest: np.ndarray, x: np.ndarray, target: np.ndarray) -> int:
    """The vertex of the top face (at rest) now nearest target across the face."""
    on_top = np.flatnonzero(rest[:, 1] >= rest[:, 1].max() - 1e-9)
    return int(on_top[np.argmin(np.linalg.norm(x[on_top][:, [0, 2]] - target[[0, 2]], axis=1))])


def _resample(path: np.ndarray, seg: float, n: int) -> np.ndarray:
    """n points at arc-length spacing seg along a polyline (continuing straight past its end if short)."""
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    s = np.arange(n) * seg
    out = np.stack([np.interp(s, d, path[:, k]) for k in range(3)], axis=1)
    past = s > d[-1]
    if past.any():
        tangent = (path[-1] - path[-2]) / np.linalg.norm(path[-1] - path[-2])
        out[past] = path[-1] + (s[past] - d[-1])[:, None] * tangent
    return out


def add_suturing(scene: Scene, state, segments: int) -> tuple[Suturing, int]:
    """A needle above the block and its thread through an 8 mm bite beside the grasp, held by the grasper's
    jaws; returns the seam and the particle the jaws hold."""
    model = scene.model
    x = state.x
    grasper = state.instruments[GRASPER_ID]
    hinge = np.asarray(grasper.position, dtype=np.float64)
    entry_v = _top_vertex(model.rest_positions, x, hinge + np.array([BITE + 0.006, 0.0, 0.0]))
    exit_v = _top_vertex(model.rest_positions, x, hinge + np.array([0.006, 0.0, 0.0]))
    entry, exit_ = x[entry_v].copy(), x[exit_v].copy()
    # Held beside the shaft (clear of its capsule), 1.5 mm above the surface; the tail goes off sideways.
    jaws = hinge + np.array([0.0045, 0.0045, 0.0])
    tail_dir = np.array([0.0, 1.0, 1.0]) / math.sqrt(2.0)
    lead = min(LEAD, 0.3 * segments * SEGMENT)
    needle_tail = entry + lead * np.array([1.0, 0.3, 0.0]) / math.sqrt(1.09)
    mid = 0.5 * (entry + exit_) - np.array([0.0, 0.002, 0.0])  # 2 mm under the surface
    path = np.array([needle_tail, entry, mid, exit_, jaws, jaws + tail_dir])
    pts = _resample(path, SEGMENT, segments + 1)
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    u_entry, u_exit = float(d[1] / SEGMENT), float(d[3] / SEGMENT)
    held = int(np.argmin(np.abs(along - d[4])))
    spec = NeedleSpec()
    su = Suturing(
        model,
        spec,
        ThreadSpec(segments=segments, segment_length=SEGMENT),
        needle_tail - np.array([spec.radius, 0.0, 0.0]),  # identity pose: its tail on the thread's end
        np.array([1.0, 0.0, 0.0, 0.0]),
    )
    su.thread.x = pts
    weights = np.array([1.0, 0.0, 0.0])
    su.thread.pass_through(TissuePoint(np.full(3, entry_v, np.int32), weights), u_entry, 0, "entry")
    su.thread.pass_through(TissuePoint(np.full(3, exit_v, np.int32), weights.copy()), u_exit, 0, "exit")
    su.thread.grab(GRASPER_ID, held, state)
    su.frozen.append(tied_piece(model, state, hinge + np.array([0.006, 0.0, -0.012])))
    return su, held


def tied_piece(model, state, at: np.ndarray) -> FrozenThread:
    """A stitch tied and cut earlier (physics/thread_cut.py), 12 mm from the live one: an 8 mm bite in the top face
    and its knot's piece above it, frozen: it follows the tissue and holds its two points (what each frame pays for
    a tied stitch left in the tissue of an interrupted closure)."""
    x = state.x
    entry_v = _top_vertex(model.rest_positions, x, at + np.array([BITE, 0.0, 0.0]))
    exit_v = _top_vertex(model.rest_positions, x, at)
    entry, exit_ = x[entry_v].copy(), x[exit_v].copy()
    up = np.array([0.0, 0.004, 0.0])
    path = np.array([entry + 3 * up, entry, 0.5 * (entry + exit_) - 0.5 * up, exit_, exit_ + 3 * up])
    pts = _resample(path, SEGMENT, 16)
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    weights = np.array([1.0, 0.0, 0.0])
    slides = [
        Slide(TissuePoint(np.full(3, exit_v, np.int32), weights.copy()), float(d[3] / SEGMENT), 0, "exit", np.zeros(3)),
        Slide(TissuePoint(np.full(3, entry_v, np.int32), weights.copy()), float(d[1] / SEGMENT), 0, "entry",
              np.zeros(3)),
    ]  # fmt: skip
    return FrozenThread(1, pts, slides, state, ThreadSpec().radius)


# --- timing -------------------------------------------------------------------------------------------------

IN_FRAME = ("needle", "thread", "knot_check", "frozen")  # the seam's parts, timed as they run in its after_step


class _Timer:
    """Times an object's method as the seam calls it (an instance attribute over the class's method, removed by
    stop()), adding each call's time to the last entry of a list (knot_check: one entry per call)."""

    def __init__(self, owner: object, method: str, times: list[float], per_call: bool = False) -> None:
        self.owner, self.method, self.times, self.per_call = owner, method, times, per_call
        self.inner = getattr(owner, method)
        setattr(owner, method, self)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            took = time.perf_counter() - t0
            if self.per_call:
                self.times.append(took)
            else:
                self.times[-1] += took

    def stop(self) -> None:
        delattr(self.owner, self.method)


def _time_in_frame(su: Suturing, parts: dict[str, list[float]]) -> list[_Timer]:
    """Time the needle's and the thread's step, the knot check and the tied pieces' frame inside the frames."""
    return [
        _Timer(su.needle, "step", parts["needle"]),
        _Timer(su.thread, "step", parts["thread"]),
        _Timer(su, "check_knot", parts["knot_check"], per_call=True),
        *(_Timer(f, "frame", parts["frozen"]) for f in su.frozen),
    ]


def timed_run(scene: Scene, start, substeps: int, segments: int) -> dict:
    """The pull phase from two copies of start, one without suturing and one with, stepped in lockstep (frame f
    of one, then of the other, the order alternating): per-frame times of both, and the seam's parts."""
    model = scene.model
    first, end = scene.phases["pull"]
    base_state, state = copy_state(start, scene), copy_state(start, scene)
    base_solver, solver = Solver(model), Solver(model)
    su = add_suturing(scene, state, segments)[0]
    base_times, times = [], []
    parts: dict[str, list[float]] = {k: [] for k in ("before_step", "solver", "after_step", *IN_FRAME)}
    alone: dict[str, list[float]] = {k: [] for k in IN_FRAME}
    kinds: list[str] = []
    timers = _time_in_frame(su, parts)

    def base_frame(control: Control) -> None:
        t0 = time.perf_counter()
        base_solver.step(base_state, control, FRAME_DT, substeps)
        base_times.append(time.perf_counter() - t0)

    def suturing_frame(control: Control) -> None:
        for name in ("needle", "thread", "frozen"):
            parts[name].append(0.0)
        t0 = time.perf_counter()
        control = Control(control.instruments + su.inputs())
        su.before_step(state)
        t1 = time.perf_counter()
        report = solver.step(state, control, FRAME_DT, substeps)
        t2 = time.perf_counter()
        kinds.extend(e.kind for e in su.after_step(model, state, report, FRAME_DT))
        t3 = time.perf_counter()
        times.append(t3 - t0)
        parts["before_step"].append(t1 - t0)
        parts["solver"].append(t2 - t1)
        parts["after_step"].append(t3 - t2)

    for f in range(first, end):
        control = scene.control(f)
        for frame in (base_frame, suturing_frame) if f % 2 == 0 else (suturing_frame, base_frame):
            frame(control)
    for fn in timers:
        fn.stop()
    # The same parts once more each on their own, from the final state, with warm caches: the frame pays several
    # times that for them, as they run after the solver's step has swept the caches (see the module docstring).
    for name, fn in (
        ("needle", lambda: su.needle.step(model, state, FRAME_DT)),
        ("thread", lambda: su.thread.step(model, state, su.needle, FRAME_DT)),
        ("knot_check", lambda: su.check_knot()),
        ("frozen", lambda: [f.frame(state.x) for f in su.frozen]),
    ):
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            alone[name].append(time.perf_counter() - t0)
    return {
        "base_times": base_times,
        "times": times,
        "parts": parts,
        "alone": alone,
        "events": kinds,
        "tension": su.thread.tension(),
        "hold_forces_n": [float(np.linalg.norm(s.force)) for s in su.thread.slides],
        "slides": len(su.thread.slides),
        "frozen_hold_forces_n": [float(np.linalg.norm(s.force)) for f in su.frozen for s in f.slides],
        "finite": bool(np.isfinite(su.thread.x).all() and np.isfinite(state.x).all()),
    }


def _median_ms(values: Sequence[float]) -> float | None:
    """The median in ms (4 significant digits); None for no values (no knot check in a short run)."""
    if len(values) == 0:
        return None
    return float(f"{float(np.median(np.asarray(values))) * 1e3:.4g}")


def time_config(target: int, substeps: int, threads: list[int], frames: int, repeats: int, segments: int) -> list:
    scene, start, grasp = prepare_grasp(target, frames, substeps)
    log(f"size {target}: {scene.model.n_live_tets} tets, grasp {'taken' if grasp['taken'] else 'NOT taken'}")
    entries = []
    for n in threads:
        numba.set_num_threads(n)
        timed_run(scene, start, substeps, segments)  # warm-up: compiles, and warms the caches
        runs = [timed_run(scene, start, substeps, segments) for _ in range(repeats)]
        base_ms = _median_ms([t for r in runs for t in r["base_times"]])
        sut_ms = _median_ms([t for r in runs for t in r["times"]])
        # Frame by frame: the two runs' frame f ran back to back, so the machine's load hits both alike.
        diffs = [s - b for r in runs for s, b in zip(r["times"], r["base_times"], strict=True)]
        extra = _median_ms(diffs)
        per_repeat = [
            _median_ms([s - b for s, b in zip(r["times"], r["base_times"], strict=True)]) for r in runs
        ]  # fmt: skip
        parts = {k: _median_ms([t for r in runs for t in r["parts"][k]]) for k in runs[0]["parts"]}
        alone = {k: _median_ms([t for r in runs for t in r["alone"][k]]) for k in IN_FRAME}
        solver_diffs = [s - b for r in runs for s, b in zip(r["parts"]["solver"], r["base_times"], strict=True)]
        solver_extra = _median_ms(solver_diffs)
        # The seam's own work plus what its holds add to the solver.
        seam = parts["before_step"] + parts["after_step"] + solver_extra
        last = runs[-1]
        entry = {
            "tets": int(scene.model.n_live_tets),
            "substeps": substeps,
            "threads": n,
            "segments": segments,
            "frames": len(runs[0]["times"]),
            "repeats": repeats,
            "base_median_ms": base_ms,
            "suturing_median_ms": sut_ms,
            "extra_ms": extra,
            "extra_ms_per_repeat": [float(f"{v:.4g}") for v in per_repeat],
            "extra_ms_by_parts": float(f"{seam:.4g}"),
            "solver_extra_ms": solver_extra,
            "parts_ms": parts,
            "parts_alone_ms": alone,
            "knot_check_every_frames": KNOT_EVERY,
            "knot_check_ms_per_frame": None
            if parts["knot_check"] is None
            else float(f"{parts['knot_check'] / KNOT_EVERY:.4g}"),
            "thread_tension_end": float(f"{last['tension']:.4g}"),
            "hold_forces_n_end": [float(f"{v:.4g}") for v in last["hold_forces_n"]],
            "slides_end": last["slides"],
            "frozen_hold_forces_n_end": [float(f"{v:.4g}") for v in last["frozen_hold_forces_n"]],
            "events": sorted(set(last["events"])),
            "finite": all(r["finite"] for r in runs),
            "goal_met": None if n < 2 else extra <= GOAL_EXTRA_MS,  # the goal is for 2 threads only
        }
        entries.append(entry)
        log(
            f"  threads {n}: base {base_ms:.2f} ms, with suturing {sut_ms:.2f} ms, extra {entry['extra_ms']:.3f} ms "
            f"(in the frame: needle {parts['needle']:.3f}, thread {parts['thread']:.3f}, "
            f"tied piece {parts['frozen']:.3f}, knot check {parts['knot_check'] or 0.0:.3f} every {KNOT_EVERY} frames)"
        )
    return entries


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    machine = machine_info()
    if args.quick:
        sizes, threads, frames, repeats, segments = [1000], [1], 6, 2, min(args.segments, 40)
    else:
        sizes = args.sizes or [20_000]
        threads = args.threads or [1, 2]
        frames, repeats, segments = args.frames, args.repeats, args.segments
    if max(threads) > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads {max(threads)} exceeds numba's maximum of {numba.config.NUMBA_NUM_THREADS}")
    timing = []
    for target in sizes:
        timing += time_config(target, args.substeps, threads, frames, repeats, segments)
    machine["threading_layer"] = numba.threading_layer()
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
    return {
        "benchmark": "physics.suture_bench",
        "version": 1,
        "machine": machine,
        "config": {
            "sizes": sizes,
            "substeps": args.substeps,
            "threads": threads,
            "frames": frames,
            "repeats": repeats,
            "segments": segments,
            "segment_length_m": SEGMENT,
            "frame_dt_s": FRAME_DT,
            "scene": "physics.bench's block grasp-and-pull; a needle above the block, its thread through an 8 mm "
            "bite in the top face beside the grasp and held by the grasper's jaws (the pull tensions it); a tied, cut "
            "stitch (a frozen piece holding two points) 12 mm beside it",
        },
        "goal": {"max_extra_ms": GOAL_EXTRA_MS, "threads": 2},
        "timing": timing,
        "wall_seconds": float(f"{time.perf_counter() - t_start:.4g}"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
