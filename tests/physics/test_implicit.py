"""The implicit (backward-Euler, Newton + PCG) frame: exact derivatives, convergence to the converged reference,
no softening with refinement, volume at nu 0.49, determinism across thread counts, topology changes."""

import numba
import numpy as np
import pytest

from physics import Control, InstrumentInput, Solver, fidelity, implicit, remove_tets
from physics.instruments import grasper
from physics.model import build_model, inverted_tets
from physics.procedural import tissue_block
from physics.reference import Problem, solve_static
from physics.state import new_state
from tests.physics.scenes import DOWN, block

TOP = 0.012


@pytest.fixture(autouse=True)
def one_thread():
    """Small meshes run serially (parallel launches on a tiny mesh only wait for each other)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


def _cantilever(young: float, cells=(6, 2, 2), size=(0.06, 0.02, 0.02), gravity=-9.81):
    mesh = tissue_block(size=size, cells=cells, origin=(0.0, 0.0, 0.0))
    fixed = np.flatnonzero(mesh.vertices[:, 0] < 1e-9)
    tip = np.flatnonzero(mesh.vertices[:, 0] > size[0] - 1e-9)
    return build_model(mesh, [fidelity.material(young)], fixed=fixed, gravity=(0.0, gravity, 0.0)), tip


def _kernel_inputs(model):
    live = np.flatnonzero(model.alive)
    tets = model.tets[live].astype(np.int64)
    start, slots = implicit.incidence(tets, model.n_vertices)
    k_dev, k_hyd = 1.0 / model.alpha_dev[live], 1.0 / model.alpha_hyd[live]
    return tets, np.ascontiguousarray(model.dm_inv[live]), k_dev, k_hyd, model.gamma[live].copy(), start, slots


SYM = [0, 1, 2, 1, 3, 4, 2, 4, 5]  # a (n, 6) diagonal block (xx xy xz yy yz zz) as 3x3 row-major


def _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots, direct=False, shared=None):
    """F, cof F, the limited det coefficient, the tets' energies, and the gathered (or directly added) gradient
    and diagonal blocks (n, 6) at x. shared: the vertices whose rows are gathered (default: every one)."""
    m, n = tets.shape[0], x.shape[0]
    shared = np.ones(n, np.uint8) if shared is None else shared
    Fs, Cs, geo, energy = np.empty((9, m)), np.empty((9, m)), np.empty(m), np.empty(m)
    rows = np.empty((4 * m, 7))
    grad, diag = np.zeros((n, 3)), np.zeros((n, 6))
    implicit.tet_setup_serial(
        x,
        tets,
        B,
        np.ascontiguousarray(B.T),
        k_dev,
        k_hyd,
        gamma,
        Fs,
        Cs,
        geo,
        energy,
        rows,
        grad,
        diag,
        direct,
        shared,
    )
    if not direct:
        ids = np.flatnonzero(shared).astype(np.int64)
        implicit.gather_setup_serial(rows, start, slots, k_hyd, grad, diag, ids)
    return Fs, Cs, geo, energy, grad, diag


def _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots, direct=False, shared=None):
    m = tets.shape[0]
    shared = np.ones(p.shape[0], np.uint8) if shared is None else shared
    rows, q = np.empty((4 * m, 3)), np.zeros_like(p)
    Bt = np.ascontiguousarray(B.T)
    # The direction z + beta p with z = p, beta = 0 (a zero p beside it).
    implicit.tet_product_serial(
        p, np.zeros_like(p), 0.0, tets, Bt, k_dev, k_hyd, Fs, Cs, geo, rows, q, direct, shared
    )  # fmt: skip
    if not direct:
        implicit.gather_rows_serial(rows, start, slots, q, np.flatnonzero(shared).astype(np.int64))
    return q


def test_gradient_diagonal_blocks_and_hessian_products_match_the_reference_energy():
    model, _ = _cantilever(1.0e5)
    rng = np.random.default_rng(3)
    # Stretched 1% (the det term's coefficient stays inside its limit) and a little noise.
    x = 1.01 * model.rest_positions + rng.normal(scale=2e-5, size=model.rest_positions.shape)
    tets, B, k_dev, k_hyd, gamma, start, slots = _kernel_inputs(model)
    n = model.n_vertices
    Fs, Cs, geo, energy, grad, diag = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots)
    np.testing.assert_allclose(geo, k_hyd * (np.linalg.det(Fs.T.reshape(-1, 3, 3)) - gamma), rtol=1e-9)
    problem = Problem(model, gravity=(0.0, 0.0, 0.0))
    e_ref = np.empty_like(energy)
    implicit.tet_energies_serial(x, tets, B, k_dev, k_hyd, gamma, e_ref)
    assert np.array_equal(energy, e_ref)  # the line search starts from the setup's energies
    ref = problem.gradient(x)
    assert np.abs(grad - ref)[problem.free].max() <= 1e-12 * np.abs(ref).max()
    K = problem.hessian(x)
    p = rng.normal(size=(n, 3))
    p[~problem.free] = 0.0
    q = _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots)
    expected = K @ p.ravel()[problem.free_dof]
    assert np.abs(q.ravel()[problem.free_dof] - expected).max() <= 1e-9 * np.abs(expected).max()
    dense = K.toarray()
    for k, i in enumerate(np.flatnonzero(problem.free)[:5]):
        np.testing.assert_allclose(diag[i][SYM].reshape(3, 3), dense[3 * k : 3 * k + 3, 3 * k : 3 * k + 3], rtol=1e-10)


def test_adding_corner_rows_directly_gives_the_gathered_bits():
    """The one-thread kernel adds each tet's rows straight into its vertices, in tet order: the same sums as the
    parallel kernel's gather in slot order, so the same bits (what makes 1 and 2 threads agree)."""
    model, _ = _cantilever(1.0e5, cells=(5, 3, 2))
    rng = np.random.default_rng(5)
    x = model.rest_positions + rng.normal(scale=3e-4, size=model.rest_positions.shape)
    tets, B, k_dev, k_hyd, gamma, start, slots = _kernel_inputs(model)
    gathered = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots)
    direct = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots, direct=True)
    for a, b in zip(gathered, direct, strict=True):
        assert np.array_equal(a, b)
    Fs, Cs, geo = gathered[:3]
    p = rng.normal(size=x.shape)
    q1 = _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots)
    q2 = _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots, direct=True)
    assert np.array_equal(q1, q2) and np.abs(q1).max() > 0.0


def test_only_vertices_shared_by_two_parallel_runs_are_gathered_and_the_bits_stay():
    """The parallel kernel adds the rows of a vertex whose tets all lie in one of the TET_PARTS runs straight in
    (that run is one task) and gathers only the shared vertices' rows: the same bits as adding every row."""
    model, _ = _cantilever(1.0e5, cells=(8, 3, 2))
    rng = np.random.default_rng(6)
    x = model.rest_positions + rng.normal(scale=3e-4, size=model.rest_positions.shape)
    tets, B, k_dev, k_hyd, gamma, start, slots = _kernel_inputs(model)
    shared = implicit.shared_vertices(tets, model.n_vertices)
    # Exactly the vertices with tets in two runs (run of tet t: t // ceil(m / TET_PARTS)).
    run = np.arange(tets.shape[0]) // -(-tets.shape[0] // implicit.TET_PARTS)
    lo, hi = np.full(model.n_vertices, 99), np.full(model.n_vertices, -1)
    np.minimum.at(lo, tets.ravel(), np.repeat(run, 4))
    np.maximum.at(hi, tets.ravel(), np.repeat(run, 4))
    assert np.array_equal(shared.astype(bool), lo != hi) and 0 < shared.sum() < model.n_vertices
    partly = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots, shared=shared)
    direct = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots, direct=True)
    for a, b in zip(partly, direct, strict=True):
        assert np.array_equal(a, b)
    Fs, Cs, geo = partly[:3]
    p = rng.normal(size=x.shape)
    q1 = _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots, shared=shared)
    q2 = _product(p, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots, direct=True)
    assert np.array_equal(q1, q2) and np.abs(q1).max() > 0.0


def test_the_limited_hessian_stays_positive_far_from_rest():
    """Far from rest the det term's coefficient is limited: CG multiplies by a positive semi-definite matrix."""
    model, _ = _cantilever(1.0e5, cells=(3, 1, 1))
    rng = np.random.default_rng(4)
    x = model.rest_positions + rng.normal(scale=4e-3, size=model.rest_positions.shape)
    tets, B, k_dev, k_hyd, gamma, start, slots = _kernel_inputs(model)
    n = model.n_vertices
    Fs, Cs, geo = _setup(x, tets, B, k_dev, k_hyd, gamma, start, slots)[:3]
    cols = []
    for j in range(3 * n):
        e = np.zeros((n, 3))
        e.ravel()[j] = 1.0
        cols.append(_product(e, tets, B, k_dev, k_hyd, Fs, Cs, geo, start, slots).ravel())
    H = np.array(cols).T
    assert np.allclose(H, H.T, atol=1e-9 * np.abs(H).max())
    assert np.linalg.eigvalsh(H).min() >= -1e-9 * np.abs(H).max()


def _sag(model, tip, frames, dt=1.0 / 60.0, **options):
    state = new_state(model)
    solver = Solver(model, mode="implicit", **options)
    for _ in range(frames):
        solver.step(state, Control(), dt)
    return -(state.x[tip, 1] - model.rest_positions[tip, 1]).mean(), state


def test_a_stiff_cantilever_approaches_the_converged_reference_as_iterations_grow():
    """1 MPa, where XPBD at 20 substeps reaches about 5% of the stiffness. One long frame (inertia small next
    to the stiffness) comes closer to the converged sag with every CG budget; at rest, the frame's fixed point is
    the converged equilibrium whatever the budget."""
    model, tip = _cantilever(1.0e6, gravity=-100.0)  # a tip sag of about 3% of the length
    ref = solve_static(Problem(model), model.rest_positions)
    sag_ref = -(ref.x[tip, 1] - model.rest_positions[tip, 1]).mean()
    errors = [abs(_sag(model, tip, 1, 0.1, cg_iterations=cg, newton_steps=3)[0] / sag_ref - 1.0) for cg in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    sag, state = _sag(model, tip, 150, cg_iterations=20)
    assert np.abs(state.v).max() < 1e-6
    assert sag == pytest.approx(sag_ref, rel=1e-6)
    assert inverted_tets(model, state.x) == 0


@pytest.mark.parametrize("young", [5.0e3, 1.0e6])
def test_stiffness_does_not_soften_with_refinement(young):
    """Bending stiffness against the converged solution of the same mesh, on two meshes: both converged."""
    coarse = fidelity.bending(300, young, 20, 400, solver={"mode": "implicit"})
    fine = fidelity.bending(1000, young, 20, 400, solver={"mode": "implicit"})
    for r in (coarse, fine):
        assert r["at_rest"] and r["newton_converged"] and r["inverted_tets_max"] == 0
        assert r["effective_stiffness"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("strain", [-fidelity.VOLUME_STRAIN, fidelity.VOLUME_STRAIN])
def test_volume_at_nu_049_matches_the_converged_change(strain):
    r = fidelity.axial(300, 1.0e5, 0.49, strain, 20, 400, solver={"mode": "implicit"})
    assert r["at_rest"] and r["newton_converged"] and r["inverted_tets_max"] == 0
    assert abs(r["volume_error_pp"]) < 0.05 and r["effective_stiffness"] == pytest.approx(1.0, abs=0.01)


def test_grasp_force_matches_the_converged_pull_for_a_stiff_block():
    r = fidelity.grasp(300, 1.0e5, 20, 400, solver={"mode": "implicit"})
    assert r["points"] >= 1 and r["force_error"] < 0.02 and r["inverted_tets_max"] == 0


def _grasp_cut_run(threads: int, solver_kind: str = "kept"):
    """Grasp a pinned block's top and pull it up; a slab of tets goes in the middle of the run (a cut)."""
    numba.set_num_threads(threads)
    model, state = block(on_table=False, pinned_bottom=True)
    solver = Solver(model, mode="implicit")
    g = grasper()
    forces = []
    for f in range(10):
        if f == 5:
            centres = model.rest_positions[model.tets].mean(axis=1)
            remove_tets(model, np.flatnonzero(np.abs(centres[:, 0] - 0.012) < 0.003))
            solver.notify_model_changed()
            if solver_kind == "fresh":
                solver = Solver(model, mode="implicit")
        jaw = 0.8 if f == 0 else 0.0
        pos = np.array([0.0, TOP + 0.010 + 0.001 * max(0, f - 1), 0.0])
        report = solver.step(state, Control([InstrumentInput(1, g, pos, DOWN, jaw)]))
        forces.append(report.instrument_forces[1].tolist())
    return state, forces, solver, model


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_thread_count_and_a_topology_change_do_not_change_the_bits():
    s1, f1, solver, model = _grasp_cut_run(1)
    s2, f2, _, _ = _grasp_cut_run(2)
    s3, f3, _, _ = _grasp_cut_run(1, "fresh")
    assert s1.instruments[1].grasp is not None and np.linalg.norm(f1[-1]) > 0.0
    assert np.array_equal(s1.x, s2.x) and f1 == f2
    assert np.array_equal(s1.x, s3.x) and f1 == f3  # a notified solver steps as a fresh one
    assert np.all(np.isfinite(s1.x)) and solver.notify_seconds > 0.0
    assert inverted_tets(model, s1.x) == 0


def test_a_block_at_rest_on_the_table_has_no_inverted_tets_and_stays_put():
    model, state = block()
    solver = Solver(model, mode="implicit")
    for _ in range(60):
        report = solver.step(state, Control())
    assert report.counts["environment_contacts"] > 0
    assert inverted_tets(model, state.x) == 0 and np.abs(state.v).max() < 1e-3
    assert np.abs(state.x - model.rest_positions).max() < 5e-4


@pytest.mark.parametrize("kwargs", [{"mode": "newton"}, {"cg_iterations": 0}, {"newton_steps": 2.5}])
def test_bad_solver_options_raise(kwargs):
    model, _ = block()
    with pytest.raises(ValueError):
        Solver(model, **kwargs)


def test_a_notified_topology_filters_the_incidence_as_a_fresh_sort_would():
    model, _ = block(on_table=False, pinned_bottom=True)
    before = implicit.FrameTopology(model)
    centres = model.rest_positions[model.tets].mean(axis=1)
    remove_tets(model, np.flatnonzero(np.abs(centres[:, 0] - 0.012) < 0.003))
    after = implicit.FrameTopology(model, before)
    start, slots = implicit.incidence(after.tets, model.n_vertices)
    assert after.tets.shape[0] < before.tets.shape[0]
    assert np.array_equal(after.start, start) and np.array_equal(after.slots, slots)
    agg, factor = after.coarse(model, 1.0 / 60.0)
    fresh = implicit.FrameTopology(model).coarse(model, 1.0 / 60.0)
    assert np.array_equal(agg, fresh[0]) and np.array_equal(factor, fresh[1]) and factor.shape[0] > 0


def test_a_burn_reuses_the_lattice_and_the_workspace_memory():
    """A burn (tets removed, no vertex added) keeps the aggregates and the kernel's arrays (contiguous views of
    the same memory, so the first frame after it neither allocates nor compiles for a new layout)."""
    model, _ = block(on_table=False, pinned_bottom=True)
    before = implicit.FrameTopology(model)
    remove_tets(model, np.arange(5))
    after = implicit.FrameTopology(model, before)
    assert after.agg is before.agg and after.n_agg == before.n_agg
    old, new = before.workspace(model.n_vertices), after.workspace(model.n_vertices)
    for a, b in zip(old, new, strict=True):
        assert np.shares_memory(a, b) and b.flags.c_contiguous
    assert new[0].shape == (9, after.tets.shape[0]) and new[4].shape == (4 * after.tets.shape[0], 7)
    with pytest.raises(ValueError):
        after.workspace(model.n_vertices + 1)


@pytest.mark.parametrize("young", [8.0e3, 1.0e6])
def test_a_pressing_instrument_reports_the_converged_reaction(young):
    """The instrument's contact is a constraint of the solve (its vertices slide on the capsule), so the force it
    reports is the tissue's reaction to the indentation, soft or stiff (projected after the solve, a 1 MPa block
    reported 0.03% of it: m / h^2 times what one frame moves a vertex)."""
    out = fidelity.press(1000, young, 20, 300, {"mode": "implicit"})
    assert out["at_rest"] and out["held_vertices"] > 0 and out["inverted_tets_max"] == 0
    assert out["force_error"] < 0.05, out


def test_a_soft_block_pressed_by_a_lying_shaft_comes_to_rest_with_the_converged_reaction():
    """A row of vertices under the shaft stays held while the shaft pushes it: judged pressed at the frame's start
    positions (the last frame's reaction), not at x + h v, where the neighbours' momentum let it go every other
    frame (before: never at rest, 13% of the force missing on the frames it was let go)."""
    out = fidelity.press(2500, 5.0e3, 20, 300, {"mode": "implicit"})
    assert out["at_rest"] and out["frames"] < 100 and out["held_vertices"] >= 8, out
    assert out["force_error"] < 0.01, out


def _refresh_twin(limit: float):
    """The one-thread frame kernel with LOCAL_REFRESH = limit (below zero: the whole setup pass again after
    every contact filter; above one: always the local refresh)."""
    name = "solve_frame_serial_refresh_" + ("full" if limit < 0 else "local")
    twin = implicit.serial_twin(implicit._solve_frame, name, _DIRECT=True, LOCAL_REFRESH=limit, **implicit._serial)
    return numba.njit(**implicit._SERIAL)(twin)


def _pressed_block_run(kernel, monkeypatch):
    """A block on the table (environment contact), a grasper pressing into its top and then lifting it by a grasp."""
    monkeypatch.setattr(implicit, "solve_frame_serial", kernel)
    model, state = block()
    solver = Solver(model, mode="implicit")
    g = grasper()
    forces, counts = [], []
    for f in range(8):
        jaw = 0.8 if f < 2 else 0.0
        pos = np.array([0.0, TOP - 0.001 + 0.0015 * max(0, f - 3), 0.0])
        report = solver.step(state, Control([InstrumentInput(1, g, pos, DOWN, jaw)]))
        forces.append(report.instrument_forces[1].tolist())
        counts.append((report.counts["instrument_contacts"], report.counts["environment_contacts"]))
    return state, forces, counts


def test_a_local_refresh_after_the_contact_filter_gives_the_full_passs_bits(monkeypatch):
    """The contact filter moves the start of the vertices it holds; refreshing only what that changes (their tets,
    the vertices of those tets and of springs on them) gives the same bits as the whole setup pass again, with
    instrument and environment contact and a grasp (the contact reaction re-sums its vertices the same way)."""
    s_full, f_full, c_full = _pressed_block_run(_refresh_twin(-1.0), monkeypatch)
    s_local, f_local, c_local = _pressed_block_run(_refresh_twin(2.0), monkeypatch)
    assert any(i > 0 for i, _ in c_full) and any(e > 0 for _, e in c_full), c_full
    assert s_full.instruments[1].grasp is not None
    assert np.array_equal(s_full.x, s_local.x) and np.array_equal(s_full.v, s_local.v)
    assert f_full == f_local and c_full == c_local
