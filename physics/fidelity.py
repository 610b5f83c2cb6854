"""How close the real-time solver comes to the converged solution of its own energy (physics.reference).

Each measurement runs the real-time Solver on a block until it is at rest and solves the same static problem
(same mesh, material, pins, anchors, grasp points and load) with Newton, then compares:

- bending: a cantilever (pinned at its -x face) under a body load scaled so that the converged tip sag is
  0.5% of its length (the linear regime); effective stiffness = converged sag / real-time sag;
- stretching: the +x face pulled 1% along x by stiff anchors (the -x face pinned); effective stiffness =
  real-time end force / converged end force; compression: the same pushed 1% (the linear regime);
- volume: the same column stretched and compressed by 20% at nu 0.45 and 0.49; the volume change (percentage
  points) against the converged one, and the end force's ratio;
- yank: the same grasp, then hard yank-and-release cycles (the grasper leaves at YANK_SPEED, holds, lets go,
  comes back); the most inverted tets in any frame, as a count and a fraction of the tets (no reference);
- press: a closed grasper lying along x pressed PRESS_DEPTH into the top face of the block (pinned at its
  bottom) and held until at rest; the instrument force it reports (contact alone, no grasp) against the
  converged reaction of the same indentation: the reference holds the vertices the real-time run left on the
  instrument's capsules where they are and solves for the rest (so the contact set is the real-time one);
- grasp: `physics.scenes.block_grasp_scene` with the pull scaled to the material (tearing off), held at its end
  pose until at rest; the grasp force's relative error (vector) against the converged pull of the same grasp
  points on the same targets, the vertices on the instrument's shaft (its end presses on the surface) held where
  they are as in press.

Effective stiffness 1.0 is converged; below 1 the real-time body is softer. Every real-time run also reports its
median milliseconds per frame (one measurement under whatever load the machine has).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from physics.control import Control, InstrumentInput
from physics.grasping import GRASP_COMPLIANCE
from physics.instruments import grasper, look_rotation, quat_to_matrix
from physics.materials import Material
from physics.model import Model, build_model, inverted_tets, live_volume
from physics.procedural import tissue_block, vertices_in_box
from physics.reference import Problem, Springs, solve_static
from physics.scenes import BLOCK_SIZE, GRASPER_ID, Key, Track, block_cells, block_grasp_scene
from physics.solver import Solver
from physics.state import State, new_state

FRAME_DT = 1.0 / 60.0
REST_SPEED = 1e-5  # m/s: at rest when no vertex moves faster
MIN_FRAMES = 30
# Damping only speeds up coming to rest (the static equilibrium does not depend on it).
SETTLE_DAMPING = 20.0
END_ANCHOR_COMPLIANCE = 1e-7  # m/N: stiff next to any tissue here, so the end face follows its targets
BEND_SAG = 0.005  # converged tip sag, fraction of the length
STRETCH = 0.01
VOLUME_STRAIN = 0.2
RAMP_FRAMES = 30
# The grasp pull at 30 kPa (m); stiffer materials are pulled proportionally less, to stay in a similar force range.
GRASP_PULL = (0.004, 0.008, 0.0)
GRASP_PULL_MODULUS = 3.0e4

PRESS_DEPTH = 0.0015  # m, how far the lying grasper's lowest point goes below the block's top face
PRESS_FRAMES = 30  # frames of its descent (from 1 cm above)
PRESS_TOLERANCE = 1e-4  # m: a vertex this close to a capsule at rest counts as held by the instrument
HOLD_COMPLIANCE = 1e-9  # m/N: the reference's springs holding those vertices (stiff next to any tissue here)

YANK_SPEED = 1.5  # m/s, the grasper's speed while yanking (the hard yanks reach 1.6 m/s)
YANK = (0.015, 0.04, 0.0)  # m, each yank's travel
YANK_CYCLES = 4

MATERIALS = {  # name: (Young's modulus in Pa); all nu 0.45, density 1000 kg/m^3
    "5kPa": 5.0e3,
    "8kPa": 8.0e3,
    "30kPa": 3.0e4,
    "100kPa": 1.0e5,
    "1MPa": 1.0e6,
}


def material(young: float, poisson: float = 0.45) -> Material:
    """A test material: strength far above any load here (no tearing), damping for a quick rest."""
    return Material(f"E{young:g}", young=young, poisson=poisson, density=1000.0, damping=SETTLE_DAMPING, strength=1e15)


@dataclasses.dataclass
class Settled:
    state: State
    frames: int
    at_rest: bool
    median_ms: float
    inverted_max: int
    last_report: object


def settle(
    model: Model, state: State, substeps: int, max_frames: int, control=None, on_frame=None, solver=None
) -> Settled:
    """Step until at rest (after MIN_FRAMES and once on_frame has nothing left to ramp) or max_frames."""
    times, inverted = [], 0
    report = None
    frames = 0
    solver = Solver(model, **(solver or {}))
    for f in range(max_frames):
        ramping = on_frame(f) if on_frame is not None else False
        t0 = time.perf_counter()
        report = solver.step(state, control(f) if control else Control(), FRAME_DT, substeps)
        times.append(time.perf_counter() - t0)
        frames = f + 1
        if frames % 10 == 0:
            inverted = max(inverted, inverted_tets(model, state.x))
        if not ramping and frames >= MIN_FRAMES and float(np.abs(state.v).max()) < REST_SPEED:
            break
    at_rest = float(np.abs(state.v).max()) < REST_SPEED
    ms = float(np.median(times)) * 1e3
    return Settled(state, frames, at_rest, ms, max(inverted, inverted_tets(model, state.x)), report)


def bending(target_tets: int, young: float, substeps: int, max_frames: int, solver=None) -> dict:
    """Cantilever tip sag, converged against real time."""
    mat = material(young)
    mesh = tissue_block(size=BLOCK_SIZE, cells=block_cells(target_tets))
    v = mesh.vertices
    x0, x1 = float(v[:, 0].min()), float(v[:, 0].max())
    fixed = vertices_in_box(mesh, (-np.inf,) * 3, (x0 + 1e-9, np.inf, np.inf))
    tip = vertices_in_box(mesh, (x1 - 1e-9, -np.inf, -np.inf), (np.inf,) * 3)
    length, height = x1 - x0, float(v[:, 1].max() - v[:, 1].min())
    # Euler-Bernoulli: sag = 12 rho g L^4 / (8 E h^2); the load that gives BEND_SAG * L (the mesh is stiffer,
    # so the converged sag comes out a little smaller: the same load is used for both solvers).
    g = BEND_SAG * length * 8.0 * young * height**2 / (12.0 * mat.density * length**4)
    model = build_model(mesh, [mat], fixed=fixed, gravity=(0.0, -g, 0.0))
    run = settle(model, new_state(model), substeps, max_frames, solver=solver)
    ref = solve_static(Problem(model), run.state.x)
    rest = model.rest_positions[tip, 1]
    sag_rt = -float((run.state.x[tip, 1] - rest).mean())
    sag_ref = -float((ref.x[tip, 1] - rest).mean())
    return {
        "effective_stiffness": _r(sag_ref / sag_rt),
        "tip_sag_m": _r(sag_rt, 6),
        "converged_tip_sag_m": _r(sag_ref, 6),
        **_run_fields(run, ref),
    }


def _column(target_tets: int, mat: Material) -> tuple[Model, np.ndarray, float]:
    mesh = tissue_block(size=BLOCK_SIZE, cells=block_cells(target_tets))
    v = mesh.vertices
    x0, x1 = float(v[:, 0].min()), float(v[:, 0].max())
    fixed = vertices_in_box(mesh, (-np.inf,) * 3, (x0 + 1e-9, np.inf, np.inf))
    end = vertices_in_box(mesh, (x1 - 1e-9, -np.inf, -np.inf), (np.inf,) * 3)
    model = build_model(
        mesh, [mat], fixed=fixed, anchors=end, anchor_compliance=END_ANCHOR_COMPLIANCE, gravity=(0.0, 0.0, 0.0)
    )
    return model, end, x1 - x0


def axial(
    target_tets: int, young: float, poisson: float, strain: float, substeps: int, max_frames: int, solver=None
) -> dict:
    """The column's end face moved by strain x length: end force and volume change, converged against real time."""
    model, _, length = _column(target_tets, material(young, poisson))
    start = model.anchor_position.copy()

    def ramp(f: int) -> bool:
        s = min(1.0, (f + 1) / RAMP_FRAMES)
        model.anchor_position[:, 0] = start[:, 0] + s * strain * length
        return s < 1.0

    run = settle(model, new_state(model), substeps, max_frames, on_frame=ramp, solver=solver)
    ref = solve_static(Problem(model), run.state.x)
    v0 = live_volume(model, model.rest_positions)
    dv_rt = live_volume(model, run.state.x) / v0 - 1.0
    dv_ref = live_volume(model, ref.x) / v0 - 1.0
    f_rt = float(run.last_report.anchor_forces[:, 0].sum())
    springs = Problem(model).springs[0]
    f_ref = float(springs.forces(ref.x)[:, 0].sum())
    return {
        "effective_stiffness": _r(f_rt / f_ref),
        "end_force_n": _r(f_rt),
        "converged_end_force_n": _r(f_ref),
        "volume_change_pct": _r(100 * dv_rt),
        "converged_volume_change_pct": _r(100 * dv_ref),
        "volume_error_pp": _r(100 * (dv_rt - dv_ref)),
        **_run_fields(run, ref),
    }


def grasp(target_tets: int, young: float, substeps: int, max_frames: int, solver=None) -> dict:
    """The grasp-and-pull scene held at its end pose: grasp force, converged against real time."""
    scale = min(1.0, GRASP_PULL_MODULUS / young)
    pull = tuple(scale * p for p in GRASP_PULL)
    scene = block_grasp_scene(target_tets, pull_frames=30, pull=pull, material=material(young))
    model, state = scene.model, scene.state
    run = settle(
        model,
        state,
        substeps,
        scene.n_frames + max_frames,
        control=lambda f: scene.control(min(f, scene.n_frames)),
        on_frame=lambda f: f < scene.n_frames,  # the script first: not at rest before the pull is over
        solver=solver,
    )
    inst = state.instruments.get(GRASPER_ID)
    if inst is None or inst.grasp is None:
        return {"error": "the grasp did not hold"}
    g = inst.grasp
    targets = inst.position + g.local @ quat_to_matrix(inst.orientation).T
    springs = Springs(g.vertices.astype(np.int64), g.weights, targets, GRASP_COMPLIANCE)
    # The shaft's end presses on the surface beside the jaws: its contact is held in the reference too (the
    # vertices on it where they are), so the grasp's share of the load is compared, not the grasp alone.
    held = _held_on_capsules(model, state.x, inst.spec, inst.position, inst.orientation)
    problem = Problem(model, springs=springs)
    if held.vertices.shape[0]:
        problem.springs.append(held)
    ref = solve_static(problem, state.x)
    f_rt = np.asarray(run.last_report.grasp_forces[GRASPER_ID])
    f_ref = springs.forces(ref.x).sum(axis=0)
    return {
        "force_error": _r(float(np.linalg.norm(f_rt - f_ref) / np.linalg.norm(f_ref))),
        "force_ratio": _r(float(np.linalg.norm(f_rt) / np.linalg.norm(f_ref))),
        "force_n": _r(float(np.linalg.norm(f_rt))),
        "converged_force_n": _r(float(np.linalg.norm(f_ref))),
        "pull_m": [_r(p) for p in pull],
        "points": int(g.vertices.shape[0]),
        "shaft_held_vertices": int(held.vertices.shape[0]),
        **_run_fields(run, ref),
    }


def _held_on_capsules(model: Model, x: np.ndarray, spec, position, orientation) -> Springs:
    """Stiff springs holding the movable vertices that lie on the instrument's colliding capsules (the shaft; the
    jaws too when they collide) where they are: the converged problem's stand-in for the instrument's contact
    (jaws closed: the local capsules as they are)."""
    R = quat_to_matrix(np.asarray(orientation, dtype=np.float64))
    caps = spec.capsules[(spec.capsules[:, 7] == 0) | spec.jaws_collide]
    a = caps[:, 0:3] @ R.T + position
    b = caps[:, 3:6] @ R.T + position
    dist = np.full(x.shape[0], np.inf)
    for k in range(caps.shape[0]):
        ab = b[k] - a[k]
        u = np.clip(((x - a[k]) @ ab) / max(float(ab @ ab), 1e-30), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(x - (a[k] + u[:, None] * ab), axis=1) - caps[k, 6])
    held = np.flatnonzero((dist <= PRESS_TOLERANCE) & (model.inv_mass > 0))
    verts = np.repeat(held[:, None].astype(np.int64), 3, axis=1)
    weights = np.zeros((held.size, 3))
    weights[:, 0] = 1.0
    return Springs(verts, weights, x[held].copy(), HOLD_COMPLIANCE)


def press(target_tets: int, young: float, substeps: int, max_frames: int, solver=None) -> dict:
    """A closed grasper lying along x pressed into the top face and held: its instrument force against the
    converged reaction of the same indentation (see the module doc).

    The reference holds the vertices on the capsule (PRESS_TOLERANCE); the implicit solve also holds, in the
    normal of a surface triangle's centre that lies within its reach of the capsule, each of that triangle's
    vertices, the far one (millimetres off the capsule) too. On stiff tissue (30 kPa-1 MPa, 8k tets) those far
    vertices add 6-8% to the force: measured, not yet fixed (a triangle's contact would need one constraint on
    its centre, not one per vertex)."""
    mesh = tissue_block(size=BLOCK_SIZE, cells=block_cells(target_tets))
    fixed = vertices_in_box(mesh, (-np.inf,) * 3, (np.inf, float(mesh.vertices[:, 1].min()) + 1e-9, np.inf))
    model = build_model(mesh, [material(young)], fixed=fixed)
    spec = grasper()
    forward, up = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    q = look_rotation(forward, up)
    R = quat_to_matrix(q)
    caps = spec.capsules
    ends = np.concatenate([caps[:, 0:3], caps[:, 3:6]]) @ R.T
    lowest = float((ends[:, 1] - np.concatenate([caps[:, 6], caps[:, 6]])).min())
    v = mesh.vertices
    top = float(v[:, 1].max())
    on_top = np.flatnonzero(v[:, 1] >= top - 1e-9)
    middle = v[on_top].mean(axis=0)
    row = v[on_top[np.argmin(np.abs(v[on_top, 2] - middle[2]))], 2]  # the shaft lies over a row of vertices
    hinge = np.array([middle[0] + 0.01, top - PRESS_DEPTH - lowest, row + 1e-4])
    state = new_state(model)

    def control(f: int) -> Control:
        s = min(1.0, (f + 1) / PRESS_FRAMES)
        pos = hinge + np.array([0.0, (1.0 - s) * 0.01, 0.0])
        return Control([InstrumentInput(GRASPER_ID, spec, pos, q, 0.0)])

    run = settle(model, state, substeps, PRESS_FRAMES + max_frames, control=control,
                 on_frame=lambda f: f < PRESS_FRAMES, solver=solver)  # fmt: skip
    grasped = state.instruments.get(GRASPER_ID)
    if grasped is not None and grasped.grasp is not None:
        return {"error": "the closed grasper took a grasp"}
    springs = _held_on_capsules(model, state.x, spec, hinge, q)
    if springs.vertices.shape[0] == 0:
        return {"error": "the grasper touched no vertex"}
    ref = solve_static(Problem(model, springs=springs), state.x)
    f_rt = np.asarray(run.last_report.instrument_forces[GRASPER_ID])
    f_ref = -springs.forces(ref.x).sum(axis=0)  # what the held tissue pushes on the instrument
    return {
        "force_error": _r(float(np.linalg.norm(f_rt - f_ref) / np.linalg.norm(f_ref))),
        "force_ratio": _r(float(np.linalg.norm(f_rt) / np.linalg.norm(f_ref))),
        "force_n": _r(float(np.linalg.norm(f_rt))),
        "converged_force_n": _r(float(np.linalg.norm(f_ref))),
        "held_vertices": int(springs.vertices.shape[0]),
        **_run_fields(run, ref),
    }


def yank(target_tets: int, young: float, substeps: int, cycles: int = YANK_CYCLES, solver=None) -> dict:
    """Grasp the block's top, then `cycles` times: yank away at YANK_SPEED, hold 5 frames, open, return, close.
    Reports the most inverted tets in any frame (during the motion) and at the end (at rest after 60 frames)."""
    scene = block_grasp_scene(target_tets, pull_frames=1, pull=(0.0, 0.0, 0.0), material=material(young))
    model, state = scene.model, scene.state
    base = scene.tracks[0]
    hinge, down, up = base.keys[1].position, base.keys[1].forward, base.keys[1].up
    away = tuple(h + d for h, d in zip(hinge, YANK, strict=True))
    travel = max(1, round(float(np.linalg.norm(YANK)) / (YANK_SPEED * FRAME_DT)))
    keys = list(base.keys[:3])
    f = keys[-1].frame
    for _ in range(cycles):
        keys += [
            Key(f + travel, away, down, 0.0, up),  # the yank
            Key(f + travel + 5, away, down, 0.0, up),  # held
            Key(f + travel + 7, away, down, 0.8, up),  # let go
            Key(f + travel + 22, hinge, down, 0.8, up),  # back, jaws open
            Key(f + travel + 26, hinge, down, 0.0, up),  # close again
        ]
        f += travel + 26
    track = Track(GRASPER_ID, base.spec, keys)
    live = model.n_live_tets
    inverted, resets, grasps = [], 0, 0
    sim = Solver(model, **(solver or {}))
    times = []
    for frame in range(f + 60):
        cmd = track.input(min(frame, f))
        t0 = time.perf_counter()
        report = sim.step(state, Control([cmd] if cmd is not None else []), FRAME_DT, substeps)
        times.append(time.perf_counter() - t0)
        resets += report.counts["nonfinite_resets"]
        grasps += sum(e.kind == "grasp" for e in report.events)
        inverted.append(inverted_tets(model, state.x))
    worst = max(inverted[: f + 1])
    return {
        "inverted_tets_max": int(worst),
        "inverted_fraction_max": _r(worst / max(live, 1)),
        "inverted_tets_at_rest": int(inverted[-1]),
        "grasps_taken": grasps,
        "nonfinite_resets": resets,
        "yank_speed_m_s": _r(float(np.linalg.norm(YANK)) / (travel * FRAME_DT)),
        "median_ms_per_frame": _r(float(np.median(times)) * 1e3),
    }


def _run_fields(run: Settled, ref) -> dict:
    return {
        "frames": run.frames,
        "at_rest": run.at_rest,
        "median_ms_per_frame": _r(run.median_ms),
        "inverted_tets_max": run.inverted_max,
        "newton_iterations": ref.iterations,
        "newton_converged": ref.converged,
    }


def _r(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def fidelity(
    target_tets: int,
    substeps: int,
    materials: dict[str, float] | None = None,
    max_frames: int = 600,
    log=None,
    solver: dict | None = None,
) -> dict:
    """Every measurement for every material on one mesh size."""
    out = {}
    for name, young in (materials or MATERIALS).items():
        t0 = time.perf_counter()
        entry = {
            "young_pa": young,
            "bending": bending(target_tets, young, substeps, max_frames, solver),
            "stretching": axial(target_tets, young, 0.45, STRETCH, substeps, max_frames, solver),
            "compression": axial(target_tets, young, 0.45, -STRETCH, substeps, max_frames, solver),
            "volume": {
                f"nu{nu:g}_{kind}": axial(target_tets, young, nu, sign * VOLUME_STRAIN, substeps, max_frames, solver)
                for nu in (0.45, 0.49)
                for kind, sign in (("stretch20", 1.0), ("compress20", -1.0))
            },
            "grasp": grasp(target_tets, young, substeps, max_frames, solver),
            "press": press(target_tets, young, substeps, max_frames, solver),
            "yank": yank(target_tets, young, substeps, solver=solver),
        }
        vols = [abs(v["volume_error_pp"]) for v in entry["volume"].values()]
        entry["summary"] = {
            "bending_stiffness": entry["bending"]["effective_stiffness"],
            "stretching_stiffness": entry["stretching"]["effective_stiffness"],
            "compression_stiffness": entry["compression"]["effective_stiffness"],
            "volume_error_pp_max_abs": _r(max(vols)),
            "grasp_force_error": entry["grasp"].get("force_error"),
            "instrument_force_error": entry["press"].get("force_error"),
            "yank_inverted_fraction_max": entry["yank"]["inverted_fraction_max"],
        }
        out[name] = entry
        if log is not None:
            log(f"fidelity {target_tets} tets, {name}: {entry['summary']} ({time.perf_counter() - t0:.0f} s)")
    return out
