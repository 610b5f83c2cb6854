"""step(): argument checks, adversarial instrument input, reaction forces, withdrawal and determinism."""

import dataclasses

import numba
import numpy as np
import pytest

from physics import Control, InstrumentInput, Solver, remove_tets, step
from physics.instruments import cautery_hook, grasper, look_rotation, scissors
from physics.mesh import signed_volumes
from tests.physics.scenes import DOWN, Driver, block

TOP = 0.012


def grasp_and_pull(frames: int = 12, threads: int | None = None) -> tuple[np.ndarray, list]:
    """A scripted run: grasp the block's top, pull it up, sweep a hook through its side."""
    before = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        model, state = block(on_table=True)
        g, h = grasper(), cautery_hook()
        side = look_rotation(forward=(0.0, 0.0, -1.0))
        events = []
        for f in range(frames):
            jaw = 0.8 if f == 0 else 0.0
            gp = np.array([0.0, TOP + 0.010 + 0.0008 * max(0, f - 1), 0.0])
            hp = np.array([-0.025 + 0.004 * f, 0.006, 0.02])
            ctl = Control([InstrumentInput(1, g, gp, DOWN, jaw), InstrumentInput(2, h, hp, side, 0.0)])
            events += [(e.kind, e.instrument) for e in step(model, state, ctl).events]
        return state.x.copy(), events
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dt", [0.0, -0.01, 0.2, float("nan"), float("inf")])
def test_invalid_dt_raises(dt):
    model, state = block()
    with pytest.raises(ValueError):
        step(model, state, Control(), dt=dt)
    assert state.frame == 0


@pytest.mark.parametrize("substeps", [0, -3, 2.5, 10_001, "20", None])
def test_invalid_substeps_raises(substeps):
    model, state = block()
    with pytest.raises(ValueError):
        step(model, state, Control(), substeps=substeps)


def test_resting_block_stays_put_and_the_clock_advances():
    model, state = block()
    for _ in range(10):
        report = step(model, state, Control(), dt=0.01)
    assert state.frame == report.frame == 10 and state.time == pytest.approx(0.1) == report.time
    assert report.counts["environment_contacts"] > 0 and report.counts["instrument_contacts"] == 0
    assert np.abs(state.x - model.rest_positions).max() < 5e-4
    assert report.events == [] and report.topology == []


def test_adversarial_instrument_input_never_reaches_the_tissue():
    model, state = block(on_table=True)
    spec, hook = grasper(), cautery_hook()
    start = np.array([-0.05, 0.008, 0.0])
    nan3, inf3 = np.array([np.nan, 0, 0]), np.array([0, np.inf, 0])
    side = look_rotation(forward=(0.0, 0.0, 1.0))
    script = [
        (start, DOWN, 0.5),
        (nan3, DOWN, 0.5),  # NaN position: rejected
        (start, np.array([np.nan, 0, 0, 0]), 0.5),  # NaN orientation: rejected
        (start, np.zeros(4), 0.5),  # zero quaternion: rejected
        (np.array([0.05, 0.008, 0.0]), DOWN, np.nan),  # teleport across the block: clamped; NaN jaw
        (inf3, DOWN, 0.5),
        (np.array([1e6, -1e6, 1e6]), DOWN, 5.0),  # out of the room and too fast; jaw out of range
        (np.zeros(2), DOWN, 0.5),  # malformed: wrong shape
    ]
    script += [(np.array([0.05 * (-1) ** k, 0.006, 0.0]), side, 0.0) for k in range(12)]  # thrash through
    kinds, contacts = [], 0
    for k, (p, q, jaw) in enumerate(script):
        hp = start + np.array([0.1 * k / len(script), 0.0, 0.0]) if k < 8 else p + np.array([0.0, 0.002, 0.0])
        ctl = Control([InstrumentInput(1, spec, p, q, jaw), InstrumentInput(2, hook, hp, q, 0.0)])
        report = step(model, state, ctl)
        kinds += [e.kind for e in report.events]
        contacts += report.counts["instrument_contacts"]
        for inst in state.instruments.values():
            assert np.all(np.isfinite(inst.position)) and np.all(np.isfinite(inst.orientation))
            assert np.isfinite(inst.jaw) and 0.0 <= inst.jaw <= inst.spec.max_jaw
        assert np.all(np.isfinite(state.x)) and np.all(np.isfinite(state.v))
        assert np.linalg.norm(state.v, axis=1).max() <= model.max_vertex_speed * (1 + 1e-9)
        assert all(np.all(np.isfinite(f)) for f in report.instrument_forces.values())
    c = state.counters
    # Grasper: NaN position, NaN orientation, Inf position; hook: the shared NaN orientation.
    assert c["pose_nonfinite"] == 4 and c["pose_bad_orientation"] == 2
    assert c["pose_too_fast"] > 12 and c["pose_out_of_workspace"] == 1
    assert c["pose_bad_jaw"] == 2 and c["pose_malformed"] == 1
    assert "pose_rejected" in kinds and "pose_clamped" in kinds
    assert kinds.count("pose_rejected") == c["pose_nonfinite"] + c["pose_bad_orientation"] + c["pose_malformed"]
    assert contacts > 0
    # Thrashing instruments push the block around (the shaft cannot pass through it), but it stays on the
    # table, within the instruments' reach, and no tet is left inverted.
    assert state.x[:, 1].min() > -0.001
    assert np.abs(state.x - model.rest_positions).max() < 0.2
    assert signed_volumes(state.x, model.tets).min() > 0.0


def test_a_new_instrument_with_a_nonfinite_pose_is_not_added():
    model, state = block()
    report = step(model, state, Control([InstrumentInput(7, grasper(), np.full(3, np.nan), DOWN, 0.0)]))
    assert 7 not in state.instruments
    assert [(e.kind, e.instrument) for e in report.events] == [("pose_rejected", 7)]


def test_extreme_speed_is_clamped_for_tissue():
    model, state = block(on_table=False, pinned_bottom=True)
    model.max_vertex_speed = 0.5
    hook = cautery_hook()
    d = Driver(model, state, hook, position=[-0.05, 0.006, 0.0], orientation=look_rotation((0.0, 0.0, 1.0)))
    d.step()
    for _ in range(4):
        d.position = d.position + np.array([0.03, 0.0, 0.0])  # 1.8 m/s through the block
        d.step()
        assert np.linalg.norm(state.v, axis=1).max() <= 0.5 * (1 + 1e-9)
    assert state.counters["speed_clamped"] > 0
    assert sum(r.counts["instrument_contacts"] for r in d.reports) > 0


def press(depth: float, frames: int = 20, cells=(8, 3, 8), z: float = 0.0) -> np.ndarray:
    """Lay the hook's shaft across the top of a block on the table (at depth z) and press it `depth` into it."""
    model, state = block(cells=cells, on_table=True)  # default: vertices 2.5 mm apart across the 5 mm shaft
    radius = cautery_hook().capsules[0, 6]
    d = Driver(model, state, cautery_hook(), position=[0.03, TOP + radius + 0.002, z],
               orientation=look_rotation((1.0, 0.0, 0.0)))  # fmt: skip
    d.step()
    for k in range(frames):
        d.position = np.array([0.03, TOP + radius + 0.002 - (0.002 + depth) * (k + 1) / frames, z])
        d.step()
    d.step(10)  # hold
    return np.mean([r.instrument_forces[1] for r in d.reports[-5:]], axis=0)


def test_pressing_into_tissue_pushes_back_harder_the_deeper():
    shallow, deep = press(0.001), press(0.003)
    assert shallow[1] > 0.0 and deep[1] > 1.5 * shallow[1]
    assert abs(deep[0]) < 0.3 * deep[1] and abs(deep[2]) < 0.3 * deep[1]
    free = press(-0.004)  # stops 2 mm above the tissue
    assert np.all(free == 0.0)


def test_a_shaft_between_the_vertices_of_a_coarse_mesh_still_meets_the_surface():
    """5 mm between vertex rows, a 5 mm shaft pressed 3 mm deep between two rows: surface-triangle contact
    points hold it, so the push-back is comparable to that of a fine mesh."""
    fine = press(0.003)
    coarse = press(0.003, cells=(8, 3, 4), z=0.0025)
    assert coarse[1] > 0.5 * fine[1]


def test_withdrawing_an_instrument_releases_its_grasp():
    model, state = block(on_table=False, pinned_bottom=True)
    d = Driver(model, state, grasper(), position=[0.0, TOP + 0.01, 0.0], jaw=0.8)
    d.step()
    d.jaw = 0.0
    d.step()
    assert d.inst.grasp is not None
    held = np.unique(d.inst.grasp.vertices)
    d.position = d.position + np.array([0.0, 0.004, 0.0])
    d.step()
    lifted = state.x[held, 1].copy()
    report = step(model, state, Control())
    assert d.id not in state.instruments
    assert [(e.kind, e.instrument, e.detail["reason"]) for e in report.events] == [("release", 1, "withdrawn")]
    assert report.grasp_forces == {} and report.instrument_forces == {}
    for _ in range(30):
        step(model, state, Control())
    assert np.all(state.x[held, 1] < lifted - 0.002)


def test_exchanging_the_instrument_releases_its_grasp():
    model, state = block(on_table=False, pinned_bottom=True)
    d = Driver(model, state, grasper(), position=[0.0, TOP + 0.01, 0.0], jaw=0.8)
    d.step()
    d.jaw = 0.0
    d.step()
    assert d.inst.grasp is not None
    d.spec = scissors()
    d.step()
    assert d.inst.grasp is None and d.inst.spec is d.spec
    assert [e.detail["reason"] for e in d.events("release")] == ["exchanged"]


def test_malformed_input_keeps_the_previous_pose_and_grasp():
    model, state = block(on_table=False, pinned_bottom=True)
    d = Driver(model, state, grasper(), position=[0.0, TOP + 0.01, 0.0], jaw=0.8)
    d.step()
    d.jaw = 0.0
    d.step()
    before = d.inst.position.copy()
    report = step(model, state, Control([InstrumentInput(1, d.spec, np.zeros(2), DOWN, 0.0)]))
    assert [e.kind for e in report.events] == ["pose_rejected"]
    assert np.array_equal(d.inst.position, before) and d.inst.grasp is not None
    report = step(model, state, Control([InstrumentInput(1, d.spec, before, DOWN, None)]))
    assert [e.kind for e in report.events] == ["pose_rejected"] and d.inst.grasp is not None


def test_same_script_gives_bit_identical_state():
    x1, e1 = grasp_and_pull()
    x2, e2 = grasp_and_pull()
    assert ("grasp", 1) in e1 and e1 == e2
    assert np.array_equal(x1, x2)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_thread_count_does_not_change_the_result():
    before = numba.get_num_threads()
    x1, e1 = grasp_and_pull(threads=1)
    assert numba.get_num_threads() == before
    x2, e2 = grasp_and_pull(threads=2)
    assert e1 == e2 and np.array_equal(x1, x2)


def test_burning_away_the_held_tissue_releases_the_grasp_and_the_empty_world_still_steps():
    model, state = block(on_table=False, pinned_bottom=True)
    g, torch = grasper(), dataclasses.replace(cautery_hook(), energy_radius=0.1, heat_rate=1e4)
    far = np.array([0.0, 0.05, 0.0])
    grasp = [0.0, TOP + 0.01, 0.0]
    step(model, state, Control([InstrumentInput(1, g, grasp, DOWN, 0.8), InstrumentInput(2, torch, far, DOWN)]))
    step(model, state, Control([InstrumentInput(1, g, grasp, DOWN, 0.0), InstrumentInput(2, torch, far, DOWN)]))
    assert state.instruments[1].grasp is not None
    report = step(
        model,
        state,
        Control([InstrumentInput(1, g, grasp, DOWN, 0.0), InstrumentInput(2, torch, far, DOWN, energy=True)]),
    )
    assert model.n_live_tets == 0 and model.surface.shape == (0, 3)
    assert [(e.kind, e.instrument) for e in report.events] == [("burn", 2), ("release", 1)]
    assert report.events[1].detail["reason"] == "burn"
    assert state.instruments[1].grasp is None
    assert np.all(model.inv_mass == 0)
    for _ in range(3):
        report = step(model, state, Control([InstrumentInput(1, g, grasp, DOWN, 0.0)]))
    assert np.all(np.isfinite(state.x)) and np.all(state.v == 0)
    assert report.counts["instrument_contacts"] == 0


def test_editing_the_command_array_in_place_cannot_teleport_an_instrument():
    model, state = block()
    spec, pos = grasper(), np.array([0.0, 0.1, 0.0])
    step(model, state, Control([InstrumentInput(1, spec, pos, DOWN)]))
    pos += [0.5, 0.0, 0.0]  # a client reusing its buffer
    report = step(model, state, Control([InstrumentInput(1, spec, pos, DOWN)]))
    assert [e.kind for e in report.events] == ["pose_clamped"]
    assert state.instruments[1].position[0] == pytest.approx(2.0 / 60.0)


def test_a_fresh_but_identical_spec_each_frame_is_the_same_instrument():
    # A client that builds grasper() anew every frame must neither lose its grasp nor escape the speed guard.
    model, state = block(on_table=False, pinned_bottom=True)
    grasp = np.array([0.0, TOP + 0.01, 0.0])
    step(model, state, Control([InstrumentInput(1, grasper(), grasp, DOWN, 0.8)]))
    step(model, state, Control([InstrumentInput(1, grasper(), grasp, DOWN, 0.0)]))
    assert state.instruments[1].grasp is not None
    report = step(model, state, Control([InstrumentInput(1, grasper(), grasp + np.array([0.0, 1.0, 0.0]), DOWN, 0.0)]))
    assert [e.kind for e in report.events] == ["pose_clamped"]
    assert state.instruments[1].grasp is not None
    assert state.instruments[1].position[1] == pytest.approx(grasp[1] + 2.0 / 60.0)
    assert grasper().same_as(grasper()) and not grasper().same_as(grasper(jaw_length=0.02))
    assert not grasper().same_as(scissors())


def test_a_second_command_for_the_same_instrument_is_dropped():
    model, state = block()
    spec = grasper()
    first = InstrumentInput(1, spec, np.array([0.0, 0.05, 0.0]), DOWN, 0.5)
    second = InstrumentInput(1, spec, np.array([0.01, 0.05, 0.0]), DOWN, 0.2)
    report = step(model, state, Control([first, second]))
    np.testing.assert_array_equal(state.instruments[1].position, first.position)
    assert state.instruments[1].jaw == 0.5
    assert state.counters["pose_duplicate"] == 1
    assert [e.kind for e in report.events] == ["pose_rejected"]


def _cut_and_step(solver_for):
    """Steps a pinned block with a grasper pressing on it, removes a slab of tets between two frames (as a cut
    does), steps on; solver_for(model) gives the Solver used for each frame."""
    model, state = block(on_table=False, pinned_bottom=True)
    g = grasper()
    out = []
    for f in range(8):
        if f == 4:
            centres = model.rest_positions[model.tets].mean(axis=1)
            remove_tets(model, np.flatnonzero(np.abs(centres[:, 0]) < 0.004))
            solver_for(model, changed=True)
        pos = np.array([0.004, TOP - 0.001 - 0.0005 * f, 0.0])
        report = solver_for(model).step(state, Control([InstrumentInput(1, g, pos, DOWN, 0.8)]))
        out.append((report.counts, {k: v.tolist() for k, v in report.instrument_forces.items()}))
    return state.x.copy(), out


def test_a_notified_solver_steps_exactly_as_a_fresh_one_after_a_topology_change():
    kept = {}

    def one_solver(model, changed=False):
        if "s" not in kept:
            kept["s"] = Solver(model)
        if changed:
            kept["s"].notify_model_changed()
        return kept["s"]

    x1, out1 = _cut_and_step(one_solver)
    x2, out2 = _cut_and_step(lambda model, changed=False: Solver(model))
    assert out1 == out2 and np.array_equal(x1, x2)
    assert kept["s"].notify_seconds > 0.0


def test_notify_model_changed_drops_orphaned_vertices_from_the_contact_sets():
    """After tets go (step() notifies itself after its cuts and burns), orphaned vertices are no contact candidates."""
    model, state = block(on_table=False, pinned_bottom=True)
    solver = Solver(model)
    movable_before = solver._contact_sets[0].size
    # Everything above the bottom layer goes: its vertices are orphans now.
    centres = model.rest_positions[model.tets].mean(axis=1)
    doomed = np.flatnonzero(centres[:, 1] > 0.004)
    removed, _, _ = remove_tets(model, doomed)
    assert removed.size
    solver.notify_model_changed()
    assert solver._contact_sets[0].size < movable_before
    assert np.all(model.inv_mass[solver._contact_sets[0]] > 0)
    solver.step(state, Control())
