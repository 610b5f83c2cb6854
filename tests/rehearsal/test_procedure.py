"""Procedure steps: goals complete, constraints are violated and blamed, from the world's real state."""

import numpy as np
import pytest

from physics import new_state, remove_tets
from physics.instruments import SPECS, Kind
from physics.state import InstrumentState
from rehearsal.procedure import HOLD_SECONDS, Procedure, piece_sizes, tet_centres
from rehearsal.scenario import build_world, load_scenario


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
