"""The Solver: one frame of the world at a time, the engine's single entry point.

`Solver(model)` is the thin stateful shell around the numba frame kernel (like Newton's `SolverBase(model)`):
it sanitises instrument input, takes and releases grasps, runs the substeps, then applies the frame's topology
events (cuts, burns) and reports forces. It owns the arrays it derives from the model (anchors as attach
points, contact candidates' vertex sets) and from the instrument layout (capsules, grasp points), and is told
when the model changes (`notify_model_changed`): its own cuts and burns tell it; whoever changes the model
otherwise (remove_tets, add_anchors) calls it. `step(model, state, control)` is a one-frame convenience with a
fresh Solver (nothing kept between calls).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from physics import cautery, cutting, grasping, implicit
from physics.contact import frame_candidates
from physics.control import Control, InstrumentInput
from physics.instruments import quat_to_matrix
from physics.model import Model, remove_tets
from physics.pose_guard import PoseLimits, guard_jaw, guard_pose
from physics.smallvec import norm3
from physics.state import InstrumentState, State, block_alpha_dev
from physics.substeps import N_COUNTS, simulate_frame, simulate_frame_serial
from physics.topology import TopologyChange

CONTACT_MARGIN = 0.005  # m added around each instrument when picking candidate vertices
MODES = ("xpbd", "implicit")
_DEFAULT_LIMITS = PoseLimits()


@dataclass(frozen=True)
class Event:
    """Something that happened this frame: grasp, release, tear, cut, cut_refused, burn, pose_rejected,
    pose_clamped."""

    kind: str
    instrument: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class StepReport:
    frame: int
    time: float
    instrument_forces: dict[int, np.ndarray]  # N the tissue exerts on each instrument (contact + grasp)
    grasp_forces: dict[int, np.ndarray]  # N each held grasp pulls on the tissue
    anchor_forces: np.ndarray  # (k, 3) N each anchor (ligament) pulls on the tissue, in model.anchor_vertex order
    events: list[Event]
    topology: list[TopologyChange]
    counts: dict[str, int]


def solver_threads(n: int) -> int:
    """Run the steps this thread calls on up to n threads (numba's setting is per calling thread).

    One thread per room keeps a core for the network when a server runs many rooms; returns the count used."""
    used = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(used)
    return used


def step(
    model: Model,
    state: State,
    control: Control,
    dt: float = 1.0 / 60.0,
    substeps: int = 20,
    limits: PoseLimits | None = None,
    mode: str = "xpbd",
) -> StepReport:
    """One frame with a fresh Solver: for scripts and tests (a long run holds a Solver and calls its step)."""
    return Solver(model, limits, mode).step(state, control, dt, substeps)


class Solver:
    """The tissue solver of one Model: steps States of it and owns the arrays derived from the model.

    Call notify_model_changed() after changing the model's topology or anchors (remove_tets, add_anchors) from
    outside; a rebuilt or restored Model gets a new Solver. Per-tet constants (compliances, damage) are read
    from the model and state every frame and need no notice."""

    def __init__(
        self,
        model: Model,
        limits: PoseLimits | None = None,
        mode: str = "xpbd",
        cg_iterations: int = implicit.CG_ITERATIONS,
        newton_steps: int = implicit.NEWTON_STEPS,
    ) -> None:
        """mode "xpbd": `substeps` small steps of one sweep each (physics.substeps); "implicit": one backward-Euler
        frame of `newton_steps` Newton steps with `cg_iterations` preconditioned CG each (physics.implicit;
        `substeps` is not used)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for name, value in (("cg_iterations", cg_iterations), ("newton_steps", newton_steps)):
            if not (isinstance(value, int) and 1 <= value <= 10_000):
                raise ValueError(f"{name} must be an int in [1, 10000], got {value!r}")
        self.model = model
        self.limits = limits or _DEFAULT_LIMITS
        self.mode = mode
        self.cg_iterations = cg_iterations
        self.newton_steps = newton_steps
        self.last_residual = 0.0  # implicit mode: the last Newton step's residual norm (N) before its solve
        self.last_stats: dict[str, int] = {}  # implicit mode: the last frame's Newton steps, CG iterations, halvings
        self._capsules: tuple | None = None  # (layout key, arrays, the specs held so their ids stay unique)
        self._implicit: implicit.FrameTopology | None = None
        self._grasps: tuple | None = None  # (key, arrays, row spans, the arrays held)
        self.notify_seconds = 0.0  # what the last notify_model_changed cost
        self.notify_model_changed()

    def notify_model_changed(self) -> None:
        """Rebuild what depends on the model's topology and anchors: anchors as attach points, the movable
        vertices and the surface triangles with a movable corner (contact candidates)."""
        t0 = time.perf_counter()
        model = self.model
        anchor_v = np.repeat(model.anchor_vertex[:, None], 3, axis=1)
        anchor_w = np.zeros((anchor_v.shape[0], 3))
        anchor_w[:, 0] = 1.0
        self._anchors = (anchor_v, anchor_w)
        movable = np.flatnonzero(model.inv_mass > 0).astype(np.int32)
        tris = model.surface[(model.inv_mass[model.surface] > 0).any(axis=1)]
        self._contact_sets = (movable, tris)
        if self.mode == "implicit":
            self._implicit = implicit.FrameTopology(model, self._implicit)
            self._implicit.coarse(model, 1.0 / 60.0)  # built now for the usual frame: a cut's cost shows here
        self.notify_seconds = time.perf_counter() - t0

    def step(
        self, state: State, control: Control, dt: float = 1.0 / 60.0, substeps: int = 20, limits=None
    ) -> StepReport:
        """Advance the world by dt seconds in `substeps` XPBD substeps (one iteration each)."""
        return _step(self, self.model, state, control, dt, substeps, limits or self.limits)


def _step(
    solver: Solver, model: Model, state: State, control: Control, dt: float, substeps: int, limits: PoseLimits
) -> StepReport:
    if not (math.isfinite(dt) and 0.0 < dt <= 0.1):
        raise ValueError(f"dt must be in (0, 0.1] s, got {dt!r}")
    if not (isinstance(substeps, int) and 1 <= substeps <= 10_000):
        raise ValueError(f"substeps must be an int in [1, 10000], got {substeps!r}")
    events: list[Event] = []
    starts = _update_instruments(state, control, dt, limits, events)
    ids = list(state.instruments)
    for k in ids:
        _grasp_transition(model, state, k, starts[k], events)

    counts = np.zeros(N_COUNTS, dtype=np.int64)
    inst_force = np.zeros((len(ids), 3))
    arrays = _instrument_arrays(solver, state, ids, starts)
    grasps, grasp_rows = _grasp_arrays(solver, state, ids)
    anchor_v, anchor_w = solver._anchors
    anchor_force = np.zeros((anchor_v.shape[0], 3))
    grasp_force = np.zeros((grasps[0].size, 3))
    cand_verts, cand_weights, cand_inst = _contact_candidates(solver, model, state, arrays, dt)
    env = model.environment
    if solver.mode == "implicit":
        topo = solver._implicit
        live = topo.live
        k_dev, k_hyd = topo.stiffness(model)  # read every frame: scale_stiffness needs no notice
        if np.any(state.damage[live] > 0.0):  # coagulation stiffens: this frame's own deviatoric stiffness
            k_dev = 1.0 / state.effective_alpha_dev(model)[live]
        agg, factor = topo.coarse(model, float(dt))
        residual = np.zeros(1)
        stats = np.zeros(len(implicit.STATS), np.int64)
        kernel = implicit.solve_frame_serial if numba.get_num_threads() == 1 else implicit.solve_frame
        kernel(
            state.x, state.v, model.inv_mass, model.mass, model.vertex_damping, model.gravity, float(dt),
            solver.newton_steps, solver.cg_iterations, model.max_vertex_speed,
            topo.tets, topo.B, topo.Bt, k_dev, k_hyd, topo.gamma, topo.start, topo.slots,
            topo.shared, topo.shared_ids, agg, factor,
            topo.workspace(state.x.shape[0]),
            anchor_v, anchor_w, model.anchor_position, model.anchor_compliance,
            env.planes, env.spheres, env.boxes, env.friction,
            *arrays[:11], cand_verts, cand_weights, cand_inst, *grasps, grasping.GRASP_COMPLIANCE,
            inst_force, anchor_force, grasp_force, counts, residual, stats,
        )  # fmt: skip
        solver.last_residual = float(residual[0])
        solver.last_stats = dict(zip(implicit.STATS, stats.tolist(), strict=True))
    else:
        kernel = simulate_frame_serial if numba.get_num_threads() == 1 else simulate_frame
        kernel(
            state.x, state.v, model.inv_mass, model.mass, model.vertex_damping, model.gravity, float(dt), substeps,
            model.max_vertex_speed, model.block_corners, model.block_inv_mass, model.chunks, model.chunk_slots,
            model.slab_chunks, model.block_dm_inv, block_alpha_dev(model, state), model.block_alpha_hyd,
            model.block_gamma,
            anchor_v, anchor_w, model.anchor_position, model.anchor_compliance,
            env.planes, env.spheres, env.boxes, env.friction,
            *arrays[:11], cand_verts, cand_weights, cand_inst, *grasps, grasping.GRASP_COMPLIANCE,
            inst_force, anchor_force, grasp_force, counts,
        )  # fmt: skip

    report = StepReport(state.frame + 1, state.time + dt, {}, {}, anchor_force, events, [], {})
    _collect_forces(state, ids, grasp_rows, inst_force, grasp_force, report)
    _tear_overloaded(state, report)
    _topology_events(solver, model, state, ids, starts, dt, report)
    n_inst, n_env, n_reset, n_clamp = counts.tolist()
    report.counts = {
        "instrument_contacts": n_inst,
        "environment_contacts": n_env,
        "nonfinite_resets": n_reset,
        "speed_clamped": n_clamp,
    }
    state.counters["nonfinite_resets"] += n_reset
    state.counters["speed_clamped"] += n_clamp
    state.frame += 1
    state.time += dt
    return report


def _update_instruments(
    state: State, control: Control, dt: float, limits: PoseLimits, events: list[Event]
) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Apply sanitised commands; return each instrument's pose at the start of the frame."""
    starts = {}
    present = set()
    for cmd in control.instruments:
        if cmd.id in present:  # one command per instrument and frame: later duplicates are dropped
            state.counters["pose_duplicate"] += 1
            events.append(Event("pose_rejected", cmd.id, {"reason": "duplicate instrument id"}))
            continue
        present.add(cmd.id)
        prev = state.instruments.get(cmd.id)
        if prev is not None and not prev.spec.same_as(cmd.spec):  # instrument exchanged: the old one lets go
            if state.instruments.pop(cmd.id).grasp is not None:
                events.append(Event("release", cmd.id, {"reason": "exchanged"}))
            prev = None
        pose = _sanitised(cmd, prev, dt, limits, state, events)
        if pose is None:
            if prev is not None:  # rejected outright (malformed): the instrument holds its last pose
                starts[cmd.id] = (prev.position, prev.orientation, prev.jaw)
            continue
        position, orientation, jaw = pose
        if prev is None:
            prev = InstrumentState(cmd.spec, position, orientation, jaw)
            state.instruments[cmd.id] = prev
        starts[cmd.id] = (prev.position, prev.orientation, prev.jaw)
        prev.position, prev.orientation, prev.jaw = position, orientation, jaw
        prev.energy = bool(cmd.energy) and cmd.spec.energy_tip is not None
    for gone in [k for k in state.instruments if k not in present]:
        if state.instruments.pop(gone).grasp is not None:
            events.append(Event("release", gone, {"reason": "withdrawn"}))
    return starts


def _sanitised(
    cmd: InstrumentInput, prev: InstrumentState | None, dt: float, limits: PoseLimits, state: State, events
) -> tuple[np.ndarray, np.ndarray, float] | None:
    before = None if prev is None else (prev.position, prev.orientation)
    try:
        position, orientation, verdict = guard_pose(before, cmd.position, cmd.orientation, dt, limits)
        jaw, jaw_verdict = guard_jaw(None if prev is None else prev.jaw, float(cmd.jaw), cmd.spec.max_jaw)
    except (TypeError, ValueError) as exc:  # wrong shapes or types
        position, verdict, jaw_verdict, jaw = None, f"malformed: {exc}", None, 0.0
    for v in (verdict, jaw_verdict):
        if v is not None:
            key = v.split(":")[0]
            state.counters[f"pose_{key}"] += 1
            kind = "pose_clamped" if key in ("too_fast", "out_of_workspace", "bad_jaw") else "pose_rejected"
            events.append(Event(kind, cmd.id, {"reason": v}))
    if position is None:
        return None
    return position, orientation, jaw


def _grasp_transition(model: Model, state: State, k: int, start, events: list[Event]) -> None:
    inst = state.instruments[k]
    if not inst.spec.grasps:
        return
    if inst.grasp is not None and inst.jaw > grasping.OPEN_ABOVE:
        inst.grasp = None
        events.append(Event("release", k, {"reason": "opened"}))
    elif inst.grasp is None and start[2] > grasping.CLOSED_BELOW >= inst.jaw:
        grasp = grasping.find_grasp(model, state.x, inst.spec, start[0], quat_to_matrix(start[1]))
        if grasp is not None:
            inst.grasp = grasp
            events.append(Event("grasp", k, {"points": int(grasp.vertices.shape[0])}))


def _instrument_arrays(solver: Solver, state: State, ids: list[int], starts) -> tuple:
    """Kernel inputs for the instruments in row order: poses at the frame's start and end (p0, q0, j0, p1, q1,
    j1), friction, and the capsules (instrument row, local rows, radius, active), then whether any capsule is
    active. The capsule part depends only on which specs are held in which rows and which of them hold a
    grasp, so it is built once per such layout and reused."""
    insts = [state.instruments[key] for key in ids]
    if not insts:
        return _NO_INSTRUMENTS
    first = [starts[key] for key in ids]
    p0 = np.array([f[0] for f in first], dtype=np.float64)
    q0 = np.array([f[1] for f in first], dtype=np.float64)
    j0 = np.array([f[2] for f in first], dtype=np.float64)
    p1 = np.array([inst.position for inst in insts], dtype=np.float64)
    q1 = np.array([inst.orientation for inst in insts], dtype=np.float64)
    j1 = np.array([inst.jaw for inst in insts], dtype=np.float64)
    passing = [
        inst.spec.cuts and not cutting.blades_collide(f[2], inst.jaw) for inst, f in zip(insts, first, strict=True)
    ]
    return (p0, q0, j0, p1, q1, j1, *_capsule_layout(solver, insts, passing))


def _capsule_layout(solver: Solver, insts: list[InstrumentState], passing: list[bool]) -> tuple:
    """(mu, cap_inst, cap_local, cap_r, active, any_active) for these instruments, kept by the solver. Jaws
    collide when their spec says so, except while holding a grasp or, for scissors, unless the blades are closed
    and not closing (physics.cutting.blades_collide): open or closing blades pass through what they cut."""
    # Keyed by object ids; the solver holds the objects themselves, so an id cannot be reused while kept.
    key = tuple([(id(inst.spec), inst.grasp is not None, p) for inst, p in zip(insts, passing, strict=True)])
    cached = solver._capsules
    if cached is not None and cached[0] == key:
        return cached[1]
    mu = np.array([inst.spec.friction for inst in insts], dtype=np.float64)
    caps, cap_inst, active = [], [], []
    for row, inst in enumerate(insts):
        spec, holding = inst.spec, inst.grasp is not None
        for cap in spec.capsules:
            caps.append(cap)
            cap_inst.append(row)
            is_jaw = cap[7] != 0.0
            active.append(not is_jaw or (spec.jaws_collide and not holding and not passing[row]))
    cap_local = np.array(caps, dtype=np.float64).reshape(-1, 8)
    active_arr = np.array(active, dtype=np.bool_)
    layout = (
        mu, np.array(cap_inst, dtype=np.int32), cap_local, np.ascontiguousarray(cap_local[:, 6]), active_arr,
        bool(active_arr.any()),
    )  # fmt: skip
    solver._capsules = (key, layout, [inst.spec for inst in insts])
    return layout


_NO_INSTRUMENTS = (
    np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros(0), np.zeros(0),
    np.zeros(0, np.int32), np.zeros((0, 8)), np.zeros(0), np.zeros(0, np.bool_), False,
)  # fmt: skip
_NO_GRASPS = (np.zeros(0, np.int32), np.zeros((0, 3), np.int32), np.zeros((0, 3)), np.zeros((0, 3)))


def _grasp_arrays(
    solver: Solver, state: State, ids: list[int]
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """Kernel inputs of the held grasps (instrument row, vertex triples, weights, local targets) and each row's
    range of grasp points (first, last + 1; empty for a row that holds nothing). Rebuilt only when a grasp or its
    arrays change (kept by the solver)."""
    rows = [(row, state.instruments[k].grasp) for row, k in enumerate(ids) if state.instruments[k].grasp]
    if not rows:
        return _NO_GRASPS, (np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64))
    key = (len(ids), *[(row, id(g.vertices), id(g.weights), id(g.local)) for row, g in rows])  # held below
    cached = solver._grasps
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    g_inst = np.concatenate([np.full(g.vertices.shape[0], row, np.int32) for row, g in rows])
    arrays = (
        g_inst,
        np.ascontiguousarray(np.concatenate([g.vertices for _, g in rows]), dtype=np.int32),
        np.ascontiguousarray(np.concatenate([g.weights for _, g in rows])),
        np.ascontiguousarray(np.concatenate([g.local for _, g in rows])),
    )
    spans = (np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64))  # each row's first and last point + 1
    at = 0
    for row, g in rows:
        spans[0][row], spans[1][row] = at, at + g.vertices.shape[0]
        at += g.vertices.shape[0]
    held = [(g.vertices, g.weights, g.local) for _, g in rows]
    solver._grasps = (key, arrays, spans, held)
    return arrays, spans


def _contact_candidates(
    solver: Solver, model: Model, state: State, arrays, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue points that may touch an instrument this frame, near an active capsule's path:
    (vertex triples, barycentric weights, instrument row). Movable vertices, plus the centre of each
    surface triangle so that a thin shaft cannot pass between the vertices of a coarse mesh."""
    p0, q0, j0, p1, q1, j1, _, cap_inst, cap_local, cap_r, active, any_active = arrays
    if not any_active:
        return _NO_CANDIDATES
    movable, tris = solver._contact_sets
    # Tissue moves too: allow what a vertex at the speed clamp could cover in a tenth of the frame.
    tissue = model.max_vertex_speed * dt * 0.1
    return frame_candidates(
        state.x, movable, tris, p0, q0, j0, p1, q1, j1, cap_inst, cap_local, cap_r, active, CONTACT_MARGIN, tissue
    )


_NO_CANDIDATES = (np.zeros((0, 3), np.int32), np.zeros((0, 3)), np.zeros(0, np.int32))


def _collect_forces(state, ids, grasp_rows, inst_force, grasp_force, report: StepReport) -> None:
    first, last = grasp_rows
    totals, pulls = _frame_forces(inst_force, grasp_force, first, last)
    for row, k in enumerate(ids):
        inst = state.instruments[k]
        total = totals[row]
        if inst.grasp is not None:
            pull = pulls[row]
            inst.grasp.force = pull
            report.grasp_forces[k] = pull
        inst.force = total
        report.instrument_forces[k] = total


@numba.njit(cache=True)  # holds the GIL: see below
def _frame_forces(inst_force, grasp_force, first, last):
    """Per instrument row: the grasp pull (sum of its grasp points' forces, rows first..last) and the total
    force on the instrument (minus contact minus pull), with numpy's rounding (sum(axis=0) adds rows in order).

    Microseconds of work, so it keeps the GIL: releasing it would let the reactor or another room take it, and a
    room thread waited for it back (beside a busy reactor, 3.7 ms mean in a 4-room bench for 0.02 ms of work)."""
    k = inst_force.shape[0]
    totals = np.empty((k, 3))
    pulls = np.zeros((k, 3))
    for row in range(k):
        for d in range(3):
            totals[row, d] = -inst_force[row, d]
        if last[row] > first[row]:
            for d in range(3):
                acc = grasp_force[first[row], d]
                for g in range(first[row] + 1, last[row]):
                    acc += grasp_force[g, d]
                pulls[row, d] = acc
                totals[row, d] -= acc
    return totals, pulls


def _tear_overloaded(state: State, report: StepReport) -> None:
    for k, inst in state.instruments.items():
        g = inst.grasp
        if g is not None and norm3(g.force) > g.tear_force:
            inst.grasp = None
            state.counters["grasp_torn"] += 1
            report.events.append(Event("tear", k, {"force": norm3(g.force), "limit": g.tear_force}))


def _topology_events(solver: Solver, model: Model, state: State, ids, starts, dt: float, report: StepReport) -> None:
    for k in ids:
        inst = state.instruments[k]
        doomed, cause = None, ""
        if inst.spec.cuts:
            if inst.jaw < starts[k][2]:  # only closing blades cut (cutting.swept_tets finds nothing otherwise)
                _split_cut(solver, model, state, k, inst, starts[k][2], report)
            continue
        if inst.energy:
            rotation = quat_to_matrix(inst.orientation)
            tip = inst.position + rotation @ np.asarray(inst.spec.energy_tip)
            heated, doomed = cautery.heat(
                model, state.x, state.damage, tip, inst.spec.energy_radius, inst.spec.heat_rate, dt
            )
            state.counters["energy_frames"] += 1
            if heated.size == 0:
                state.counters["energy_frames_without_tissue"] += 1
            cause = "burn"
        if doomed is not None and doomed.size:
            removed, tri_out, tri_in = remove_tets(model, doomed)
            solver.notify_model_changed()
            change = TopologyChange(model.epoch, cause, k, removed, tri_out, tri_in)
            report.topology.append(change)
            report.events.append(Event(cause, k, {"tets": int(removed.size), "epoch": model.epoch}))
            _drop_orphaned_grasps(model, state, report, cause)


def _split_cut(solver: Solver, model: Model, state: State, k: int, inst, jaw_before: float, report) -> None:
    """Closing blades split the tissue they cross (physics.cutting.cut); a refusal (vertex cap) is an event."""
    length = cutting.blade_length(inst.spec.capsules)
    rotation = quat_to_matrix(inst.orientation)
    done = cutting.cut(model, state, k, inst.position, rotation, jaw_before, inst.jaw, length)
    if isinstance(done, cutting.CutRefused):
        state.counters["cut_refused"] += 1
        report.events.append(Event("cut_refused", k, {"reason": done.reason, "tets": done.tets}))
    elif done is not None:
        change, split, crossed = done
        solver.notify_model_changed()
        report.topology.append(change)
        detail = {"tets": crossed, "faces": int(split.faces.shape[0]), "vertices": int(split.sources.size)}
        report.events.append(Event("cut", k, {**detail, "epoch": model.epoch}))


def _drop_orphaned_grasps(model: Model, state: State, report: StepReport, cause: str) -> None:
    """After tets go, grasp points on vertices that no longer belong to tissue are let go."""
    used = model.vertex_used()
    for k, inst in state.instruments.items():
        g = inst.grasp
        if g is None:
            continue
        keep = used[g.vertices].all(axis=1)
        if not keep.all():
            g.vertices, g.weights, g.local = g.vertices[keep], g.weights[keep], g.local[keep]
            if not keep.any():
                inst.grasp = None
                report.events.append(Event("release", k, {"reason": cause}))
