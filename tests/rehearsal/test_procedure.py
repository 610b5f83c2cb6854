"""Procedure steps: goals complete, constraints are violated and blamed, from the world's real state."""

from types import SimpleNamespace

import numpy as np
import pytest

from physics import new_state, remove_tets
from physics.instruments import SPECS, Kind
from physics.state import InstrumentState
from rehearsal.procedure import (
    HOLD_SECONDS,
    Procedure,
    knot_matches,
    piece_sizes,
    placed_stitches,
    tet_centres,
)
from rehearsal.scenario import ScenarioError, build_world, load_scenario


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("basic_skills")


@pytest.fixture
def world(scenario):
    model = build_world(scenario)
    return model, new_state(model), Procedure(scenario, model)


def _step(procedure, step_id):
    return next(s for s in procedure.steps if s.id == step_id)


def test_a_retraction_counts_only_when_far_enough_and_held(world):
    model, state, procedure = world
    top = np.flatnonzero(model.rest_positions[:, 1] > 0.019)
    state.x[top[:3], 1] += 0.008  # 8 mm: short of the 1 cm the step asks for
    assert procedure.evaluate(model, state, 0.0) == []
    state.x[top[:3], 1] += 0.004
    assert procedure.evaluate(model, state, 1.0) == []  # far enough, but not yet held
    assert _step(procedure, "retract").value == pytest.approx(0.012)
    [done] = procedure.evaluate(model, state, 1.0 + HOLD_SECONDS)
    assert done.id == "retract" and done.status == "done" and done.time == 1.0 + HOLD_SECONDS
    assert procedure.current().id == "divide"


def test_a_retraction_is_measured_from_where_the_tissue_lay_when_the_world_opened(scenario):
    """A room opens settled (the tissue sagged under gravity): that sag is no retraction, the move from it is."""
    model = build_world(scenario)
    state = new_state(model)
    top = np.flatnonzero(model.rest_positions[:, 1] > 0.019)
    state.x[top, 1] -= 0.015  # sagged 1.5 cm before anyone touched it
    procedure = Procedure(scenario, model, state.x)
    procedure.evaluate(model, state, 0.0)
    assert procedure.evaluate(model, state, 1.0 + HOLD_SECONDS) == []
    assert _step(procedure, "retract").value == 0.0
    state.x[top[:3], 1] += 0.012
    procedure.evaluate(model, state, 2.0)
    [done] = procedure.evaluate(model, state, 2.0 + HOLD_SECONDS)
    assert done.id == "retract" and _step(procedure, "retract").value == pytest.approx(0.012)


def test_a_procedure_pickled_without_a_start_measures_from_the_rest_shape(world):
    import pickle

    model, state, procedure = world
    raw = dict(procedure.__dict__)
    del raw["_start"]  # as a checkpoint written before rooms settled holds it
    old = Procedure.__new__(Procedure)
    old.__setstate__(pickle.loads(pickle.dumps(raw)))
    state.x[np.flatnonzero(model.rest_positions[:, 1] > 0.019)[0], 1] += 0.02
    old.evaluate(model, state, 0.0)
    assert _step(old, "retract").value == pytest.approx(0.02)


def test_letting_go_before_the_hold_time_restarts_it(world):
    model, state, procedure = world
    top = np.flatnonzero(model.rest_positions[:, 1] > 0.019)
    state.x[top[0], 1] += 0.02
    procedure.evaluate(model, state, 0.0)
    state.x[top[0], 1] -= 0.02
    procedure.evaluate(model, state, 0.2)
    state.x[top[0], 1] += 0.02
    assert procedure.evaluate(model, state, 0.6) == []  # held 0 s since it came back, not 0.6 s
    assert _step(procedure, "retract").status == "pending"


def test_a_cut_across_the_block_divides_it_but_a_nick_does_not(world):
    model, state, procedure = world
    centres = tet_centres(model.rest_positions, model.tets)
    corner = np.flatnonzero((centres[:, 0] > 0.027) & (centres[:, 2] > 0.017))[:2]
    remove_tets(model, corner)
    assert procedure.evaluate(model, state, 0.0) == []
    assert _step(procedure, "divide").value == 1
    slab = np.flatnonzero(np.abs(centres[:, 0]) < 0.003)
    remove_tets(model, slab)
    [done] = procedure.evaluate(model, state, 0.1)
    assert done.id == "divide" and done.value == 2


def test_piece_sizes_follows_face_neighbours(world):
    model, _, _ = world
    everything = np.arange(model.n_tets)
    assert piece_sizes(model.neighbour, model.alive, everything) == [model.n_tets]
    assert piece_sizes(model.neighbour, model.alive, np.array([0, model.n_tets - 1])) == [1, 1]


def test_energy_near_the_forbidden_edge_violates_and_blames_the_energised_instrument(world):
    model, state, procedure = world
    centres = tet_centres(model.rest_positions, model.tets)
    far = int(np.argmax(centres[:, 0]))  # the right edge: allowed
    state.damage[far] = 0.5
    assert procedure.evaluate(model, state, 0.0) == []
    assert _step(procedure, "no_energy_at_edge").status == "ok"
    near = int(np.argmin(centres[:, 0]))
    state.damage[near] = 0.1
    hook = SPECS[Kind.CAUTERY_HOOK]()
    state.instruments[7] = InstrumentState(hook, centres[near] + [0, 0.01, 0], np.array([1.0, 0, 0, 0]), 0.0, True)
    state.instruments[4] = InstrumentState(hook, centres[far], np.array([1.0, 0, 0, 0]), 0.0, False)
    [violated] = procedure.evaluate(model, state, 2.0)
    assert violated.status == "violated" and violated.by == 7
    assert violated.to_dict()["instrument"] == 7
    state.damage[:] = 0
    assert procedure.evaluate(model, state, 3.0) == []  # a violation stands
    assert [s["status"] for s in procedure.summary()] == ["pending", "pending", "violated"]


# --- suturing ------------------------------------------------------------------------------------------------


def _pass(entry, exit_):
    """A needle pass as physics.needle.Stitch gives it: rest-coordinate entry and exit."""
    return SimpleNamespace(entry_rest=np.array(entry, float), exit_rest=np.array(exit_, float))


def _seam(*passes):
    return SimpleNamespace(needle=SimpleNamespace(passes=list(passes)))


@pytest.fixture(scope="module")
def suturing():
    return load_scenario("suturing")


def test_one_pass_or_two_bites_across_the_wound_make_a_stitch(suturing):
    targets = suturing.suture.targets
    first = suturing.suture.target("first")
    through = _pass([-0.0045, 0.02, -0.005], [0.0055, 0.02, -0.0045])
    [stitch], pending = placed_stitches([through], targets)
    assert pending is None and stitch.passes == (0,) and stitch.target is first and stitch.on_target
    assert stitch.entry_error == pytest.approx(0.0005) and stitch.exit_error == pytest.approx(np.hypot(5e-4, 5e-4))
    bite = _pass([-0.005, 0.02, 0.005], [0.0, 0.015, 0.005])  # out into the wound
    assert placed_stitches([bite], targets) == ([], 0)
    stitches, pending = placed_stitches([bite, _pass([0.0005, 0.016, 0.005], [0.0049, 0.02, 0.0052])], targets)
    assert pending is None and [s.passes for s in stitches] == [(0, 1)] and stitches[0].target.id == "second"
    assert stitches[0].on_target
    wide = _pass([-0.0125, 0.02, -0.005], [0.0125, 0.02, -0.005])  # 7.5 mm off at both ends: a stitch, off target
    [off], _ = placed_stitches([wide], targets)
    assert off.target is first and not off.on_target


def test_a_stitch_step_needs_its_target_and_each_stitch_counts_once(suturing):
    model = build_world(suturing)
    state, procedure = new_state(model), Procedure(suturing, model)
    assert procedure.evaluate(model, state, 0.1, _seam()) == []
    wrong = _pass([-0.005, 0.02, 0.005], [0.005, 0.02, 0.005])  # the second target's marks
    [done] = procedure.evaluate(model, state, 0.2, _seam(wrong))
    assert done.id == "stitch_second" and done.value == pytest.approx(0.0)
    assert _step(procedure, "stitch_first").status == "pending"
    assert _step(procedure, "stitch_first").value == pytest.approx(0.01)  # the best so far: 1 cm off
    right = _pass([-0.0045, 0.02, -0.005], [0.005, 0.02, -0.004])
    [done] = procedure.evaluate(model, state, 0.3, _seam(wrong, right))
    assert done.id == "stitch_first" and done.value == pytest.approx(0.001)


def test_a_knot_step_needs_a_tight_knot_of_its_kind():
    assert knot_matches({"kind": "square", "throws": 2, "tight": True}, "square")
    assert knot_matches({"kind": "granny", "throws": 2, "tight": True}, None)
    assert not knot_matches({"kind": "granny", "throws": 2, "tight": True}, "square")
    assert not knot_matches({"kind": "square", "throws": 2, "tight": False}, "square")
    assert not knot_matches({"kind": "square", "throws": 2, "tight": 1}, "square")  # only True is tight


def test_the_wound_closes_once_stitched_and_its_gap_held_below_the_tolerance(suturing):
    model = build_world(suturing)
    state, procedure = new_state(model), Procedure(suturing, model)
    closed = _step(procedure, "closed")
    procedure.evaluate(model, state, 0.0, _seam())
    assert closed.value == pytest.approx(0.002)  # the incision's gape
    left, right = model.wound_pairs[:, 0], model.wound_pairs[:, 1]
    state.x[right] = state.x[left] + [0.0005, 0.0, 0.0]  # lips within 0.5 mm
    assert procedure.evaluate(model, state, 1.0, _seam()) == [] and closed.status == "pending"  # not stitched
    stitched = _seam(_pass([-0.005, 0.02, -0.005], [0.005, 0.02, -0.005]))
    assert [s.id for s in procedure.evaluate(model, state, 1.0, stitched)] == ["stitch_first"]
    assert procedure.evaluate(model, state, 1.0 + HOLD_SECONDS / 2, stitched) == []
    assert closed.value == pytest.approx(0.0005)
    state.x[right[0]] += [0.002, 0.0, 0.0]  # one pair opens again: the hold starts over
    assert procedure.evaluate(model, state, 1.4, stitched) == []
    state.x[right[0]] -= [0.002, 0.0, 0.0]
    assert procedure.evaluate(model, state, 1.5, stitched) == []
    [done] = procedure.evaluate(model, state, 1.5 + HOLD_SECONDS, stitched)
    assert done.id == "closed" and done.status == "done"


def test_a_stitch_target_off_the_tissue_is_refused(suturing, tmp_path):
    text = suturing.source.read_text().replace("entry = [-0.005, 0.02, 0.005]", "entry = [-0.005, 0.05, 0.005]")
    path = tmp_path / "far.toml"
    path.write_text(text)
    far = load_scenario(path)
    with pytest.raises(ScenarioError, match=r"far\.toml: suture target 'second': its entry is 30\.\d mm from"):
        Procedure(far, build_world(far))


def test_each_stitch_is_tied_once_and_its_thread_cut_above_the_knot_with_a_short_tail():
    """The interrupted closure: a knot completes one knot step; a cut counts for the stitch it frees, once, when
    tied and its tail is within 3-5 mm (a long tail leaves the step pending until the piece is trimmed)."""
    scenario = load_scenario("interrupted_closure")
    model = build_world(scenario)
    state, procedure = new_state(model), Procedure(scenario, model)
    first = _pass([-0.005, 0.02, -0.005], [0.005, 0.02, -0.005])
    second = _pass([-0.005, 0.02, 0.005], [0.005, 0.02, 0.005])
    seam = _seam(first)
    square = {"kind": "square", "throws": 2, "tight": True}
    done = [s.id for s in procedure.evaluate(model, state, 0.1, seam, [square])]
    assert done == ["stitch_first", "knot_first"]  # one knot, one knot step
    cut = {"thread": 0, "stitches": [0], "tied": True, "tail_mm": 8.0, "kept": "frozen"}
    assert procedure.evaluate(model, state, 0.2, seam, (), [cut]) == []  # an 8 mm tail: too long
    assert _step(procedure, "cut_first").value == pytest.approx(0.008)
    untied = {**cut, "tied": False, "tail_mm": None}
    assert procedure.evaluate(model, state, 0.3, seam, (), [untied]) == []
    trimmed = {**cut, "thread": 1, "tail_mm": 4.0}  # the tied piece's tail trimmed to 4 mm
    assert [s.id for s in procedure.evaluate(model, state, 0.4, seam, (), [trimmed])] == ["cut_first"]
    assert procedure.evaluate(model, state, 0.5, seam, (), [trimmed]) == []  # that piece counted once
    seam = _seam(first, second)
    wrong = {**cut, "stitches": [0], "tail_mm": 4.0}  # the first stitch again: not the second's cut
    assert [s.id for s in procedure.evaluate(model, state, 0.6, seam, [square], [wrong])] == [
        "stitch_second", "knot_second"
    ]  # fmt: skip
    right = {**cut, "stitches": [1], "tail_mm": 3.5}
    [step] = procedure.evaluate(model, state, 0.7, seam, (), [right])
    assert step.id == "cut_second" and step.value == pytest.approx(0.0035)
