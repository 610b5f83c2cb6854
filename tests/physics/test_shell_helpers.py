"""The numba helpers and caches of step()'s shell give what the plain numpy formulations give."""

import numba as nb
import numpy as np

from physics import Control, InstrumentInput, Solver
from physics.cautery import heat
from physics.contact import broad_phase
from physics.cutting import REACH_MARGIN, fan_swept, swept_tets
from physics.instruments import cautery_hook, grasper, look_rotation, quat_to_matrix
from physics.smallvec import dot, norm, norm3
from tests.physics.scenes import DOWN, block

TOP = 0.012


@nb.njit
def _dot(a, b):
    return dot(a, b)


@nb.njit
def _norm(a):
    return norm(a)


def test_small_vector_dot_and_norm_round_like_numpy():
    rng = np.random.default_rng(0)
    for n in (3, 4):
        for _ in range(500):
            a, b = rng.standard_normal(n) * rng.choice([1e-4, 1.0, 1e4]), rng.standard_normal(n)
            np.testing.assert_array_max_ulp(_dot(a, b), np.dot(a, b), maxulp=1)
            np.testing.assert_array_max_ulp(_norm(a), np.linalg.norm(a), maxulp=1)
    v = rng.standard_normal(3)
    np.testing.assert_array_max_ulp(norm3(v), np.linalg.norm(v), maxulp=1)


def _broad_phase_reference(x, movable, tris, a, b, reach, cap_inst, active, n_inst):
    """Every point against every active capsule, in numpy: candidates by instrument, then point order."""
    points = np.concatenate([x[movable], x[tris].sum(axis=1) / 3.0])
    rows = []
    for k in range(n_inst):
        near = np.zeros(points.shape[0], bool)
        for j in np.flatnonzero(active & (cap_inst == k)):
            e = b[j] - a[j]
            t = np.clip((points - a[j]) @ e / max(e @ e, 1e-300), 0.0, 1.0) if e @ e > 0 else np.zeros(len(points))
            d = points - (a[j] + t[:, None] * e)
            near |= np.einsum("ij,ij->i", d, d) <= reach[j] ** 2
        rows += [(k, p) for p in np.flatnonzero(near)]
    verts = np.array([[movable[p]] * 3 if p < movable.size else tris[p - movable.size] for _, p in rows])
    return verts.reshape(-1, 3), np.array([k for k, _ in rows], dtype=np.int32)


def test_broad_phase_finds_what_testing_every_point_against_every_capsule_finds():
    model, _ = block(on_table=False, pinned_bottom=True)
    rng = np.random.default_rng(1)
    movable = np.flatnonzero(model.inv_mass > 0).astype(np.int32)
    tris = model.surface
    found = 0
    for _ in range(40):
        x = model.rest_positions + rng.normal(0.0, 5e-4, model.rest_positions.shape)
        n_inst = int(rng.integers(1, 4))
        caps = int(rng.integers(1, 6))
        a = rng.uniform([-0.025, -0.005, -0.015], [0.025, 0.02, 0.015], (caps, 3))
        b = a + rng.normal(0.0, 0.01, (caps, 3))
        reach = rng.uniform(0.001, 0.01, caps)
        cap_inst = np.sort(rng.integers(0, n_inst, caps)).astype(np.int32)
        active = rng.random(caps) < 0.8
        verts, weights, inst = broad_phase(x, movable, tris, a, b, reach, cap_inst, active, n_inst)
        ref_verts, ref_inst = _broad_phase_reference(x, movable, tris, a, b, reach, cap_inst, active, n_inst)
        np.testing.assert_array_equal(verts, ref_verts)
        np.testing.assert_array_equal(inst, ref_inst)
        assert np.all(weights.sum(axis=1) > 0.999)
        found += inst.size
    assert found > 100


def _swept_reference(model, x, position, rotation, jaw_before, jaw_after, blade_length):
    """cutting.swept_tets with its candidates found by plain numpy over every vertex and tet (its behaviour before
    the numba prefilter); the fan test itself is shared."""
    if not jaw_after < jaw_before:
        return np.zeros(0, dtype=np.int32)
    near = np.linalg.norm(x - position, axis=1) <= blade_length + REACH_MARGIN
    live = np.flatnonzero(model.alive & near[model.tets].any(axis=1))
    return fan_swept(model, x, live, position, rotation, jaw_before, jaw_after, blade_length)


def test_swept_tets_and_heat_match_the_plain_numpy_scans():
    model, _ = block(on_table=False, pinned_bottom=True)
    model.alive[::7] = False  # dead tets are never swept or heated
    rng = np.random.default_rng(2)
    swept = heated = 0
    for _ in range(60):
        x = model.rest_positions + rng.normal(0.0, 3e-4, model.rest_positions.shape)
        position = rng.uniform([-0.02, 0.0, -0.01], [0.02, 0.015, 0.01])
        q = rng.standard_normal(4)
        rotation = quat_to_matrix(q / np.linalg.norm(q))
        before, after = rng.uniform(0.0, 1.0, 2)
        got = swept_tets(model, x, position, rotation, before, after, 0.016)
        np.testing.assert_array_equal(got, _swept_reference(model, x, position, rotation, before, after, 0.016))
        swept += got.size
        damage = rng.random(model.n_tets) * 0.5
        expected = damage.copy()
        ids, _ = heat(model, x, damage, position, 0.004, 2.0, 0.1)
        live = np.flatnonzero(model.alive)
        dist = np.linalg.norm(x[model.tets[live]].mean(axis=1) - position, axis=1)
        ref = live[dist < 0.004]
        falloff = 1.0 - dist[dist < 0.004] / 0.004
        expected[ref] = np.minimum(1.0, expected[ref] + 2.0 * model.per_tet("burn_rate")[ref] * falloff * 0.1)
        np.testing.assert_array_equal(ids, ref)
        np.testing.assert_array_equal(damage, expected)
        heated += ids.size
    assert swept > 20 and heated > 20


def _script(forget_caches: bool) -> tuple[np.ndarray, list]:
    """Grasp and pull, bring a second and a third instrument in and out; with forget_caches a new Solver (nothing
    kept) every frame, else one Solver for the run."""
    model, state = block(on_table=True)
    g, h, g3 = grasper(), cautery_hook(), grasper()
    side = look_rotation(forward=(0.0, 0.0, -1.0))
    out = []
    solver = Solver(model)
    for f in range(14):
        if forget_caches:
            solver = Solver(model)
        gp = np.array([0.0, TOP + 0.010 + 0.0008 * max(0, f - 1), 0.0])
        cmds = [InstrumentInput(1, g, gp, DOWN, 0.8 if f == 0 else 0.0)]
        if 3 <= f < 9:
            cmds.insert(0, InstrumentInput(2, h, np.array([-0.025 + 0.004 * f, 0.006, 0.02]), side, 0.0))
        if 5 <= f < 11:
            cmds.append(InstrumentInput(3, g3, np.array([0.015, TOP + 0.010, 0.0]), DOWN, 0.8 if f == 5 else 0.0))
        report = solver.step(state, Control(cmds))
        out.append([(e.kind, e.instrument) for e in report.events])
        out.append({k: v.tolist() for k, v in report.instrument_forces.items()})
        out.append({k: v.tolist() for k, v in report.grasp_forces.items()})
    return state.x.copy(), out


def test_the_shells_caches_change_nothing():
    x1, out1 = _script(forget_caches=False)
    x2, out2 = _script(forget_caches=True)
    events = [e for frame in out1[0::3] for e in frame]
    assert ("grasp", 1) in events and ("grasp", 3) in events and ("release", 3) in events
    assert out1 == out2 and np.array_equal(x1, x2)
